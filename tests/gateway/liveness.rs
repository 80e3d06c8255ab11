//! Liveness: replies to client health checks (array and object forms), server health checks
//! on the configured interval, idle timeouts, frames refused, and the shutdown close code.

use std::time::Duration;

use serde_json::json;

use crate::common::TestServer;
use crate::ws::{self, next, uid, Next};

#[tokio::test]
async fn client_health_checks_get_replies() {
    let s = TestServer::start().await;
    let id = uid("hc");
    let (mut sock, first) = ws::connect_user(&s, &id, json!({"id": id})).await;
    let conn_id = first["connection_id"].clone();
    ws::send(
        &mut sock,
        json!([{"type": "health.check", "client_id": format!("{id}--x")}]),
    )
    .await;
    match next(&mut sock, Duration::from_secs(5)).await {
        Next::Frame(f) => {
            assert_eq!(f["type"], "health.check");
            assert_eq!(f["connection_id"], conn_id);
            assert!(f.get("me").is_none());
        }
        other => panic!("{other:?}"),
    }
    ws::send(&mut sock, json!({"type": "health.check"})).await;
    match next(&mut sock, Duration::from_secs(5)).await {
        Next::Frame(f) => assert_eq!(f["type"], "health.check"),
        other => panic!("{other:?}"),
    }
    s.stop().await;
}

#[tokio::test]
async fn server_sends_health_checks_and_closes_silent_clients() {
    let s = TestServer::start_with(|c| {
        c.limits.health_check_interval_secs = 1;
        c.limits.idle_timeout_secs = 2;
    })
    .await;
    let id = uid("srv");
    let (mut sock, first) = ws::connect_user(&s, &id, json!({"id": id})).await;
    match next(&mut sock, Duration::from_millis(2500)).await {
        Next::Frame(f) => {
            assert_eq!(f["type"], "health.check");
            assert_eq!(f["connection_id"], first["connection_id"]);
        }
        other => panic!("no server health check: {other:?}"),
    }
    // Stay silent: the gateway closes the connection with a retryable code.
    loop {
        match next(&mut sock, Duration::from_secs(6)).await {
            Next::Frame(_) => continue,
            Next::Closed(code, _) => {
                assert_eq!(code, 1001);
                break;
            }
            other => panic!("expected an idle close, got {other:?}"),
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn binary_frames_are_refused() {
    let s = TestServer::start().await;
    let id = uid("bin");
    let (mut sock, _) = ws::connect_user(&s, &id, json!({"id": id})).await;
    use futures_util::SinkExt;
    sock.send(tokio_tungstenite::tungstenite::Message::Binary(
        vec![1u8, 2, 3].into(),
    ))
    .await
    .unwrap();
    match next(&mut sock, Duration::from_secs(5)).await {
        Next::Closed(code, _) => assert_eq!(code, 1003),
        other => panic!("{other:?}"),
    }
    s.stop().await;
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001() {
    let s = TestServer::start().await;
    let id = uid("bye");
    let (mut sock, _) = ws::connect_user(&s, &id, json!({"id": id})).await;
    let stopping = tokio::spawn(s.stop());
    match next(&mut sock, Duration::from_secs(5)).await {
        Next::Closed(code, _) => assert_eq!(code, 1001),
        other => panic!("{other:?}"),
    }
    stopping.await.unwrap();
}

#[tokio::test]
async fn a_client_close_is_answered_with_a_close_frame() {
    let s = TestServer::start().await;
    let id = uid("closer");
    let (mut sock, _) = ws::connect_user(&s, &id, json!({"id": id})).await;
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    let reason = "Manually closed connection by calling client.disconnect()";
    sock.send(tokio_tungstenite::tungstenite::Message::Close(Some(
        CloseFrame {
            code: 1000.into(),
            reason: reason.into(),
        },
    )))
    .await
    .unwrap();
    match next(&mut sock, Duration::from_secs(5)).await {
        Next::Closed(code, _) => assert_eq!(code, 1000),
        other => panic!("expected the server's close reply, got {other:?}"),
    }
    s.stop().await;
}

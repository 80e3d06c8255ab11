//! A client that never reads while events flood it: the gateway closes it as a slow consumer
//! (a retryable close, 1013) and the frames held for it stay within the configured bound.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::common::{encode, TestServer};
use crate::ws::{self, next, uid, Next};
use chat_gateway::hub::{CloseOrder, ConnHandle, PushOutcome};

#[test]
fn a_connection_queue_never_holds_more_than_its_bound() {
    let conn = ConnHandle::new("c1".into(), "u1".into(), None, false, false);
    let frame: Arc<str> = "x".repeat(1000).into();
    let mut outcomes = Vec::new();
    for _ in 0..10_000 {
        outcomes.push(conn.push(frame.clone(), 8));
    }
    assert!(outcomes[..8].iter().all(|o| *o == PushOutcome::Queued));
    assert_eq!(outcomes[8], PushOutcome::Overflowed);
    assert!(outcomes[9..].iter().all(|o| *o == PushOutcome::Closing));
    let (frames, order) = conn.drain();
    assert!(
        frames.is_empty(),
        "an overflowed queue is dropped, not sent"
    );
    assert_eq!(order, Some(CloseOrder::raw(1013, "slow consumer")));
    assert!(conn.is_closing());
}

#[tokio::test]
async fn a_client_that_never_reads_is_closed_as_a_slow_consumer() {
    let s = TestServer::start_with(|c| {
        c.limits.outbound_queue_frames = 16;
        c.limits.write_timeout_secs = 2;
        // The flood outruns Stream's 300 partial updates a minute.
        c.rate_limits.enabled = false;
    })
    .await;
    let id = uid("slow");
    // A tiny receive buffer so the kernel cannot hide the backlog.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = socket
        .connect(crate::addr_of(&s.public_url))
        .await
        .expect("connect");
    let url = ws::connect_url(&s, &id, json!({"id": id}), &s.user_token(&id), "jwt");
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let (mut sock, _) = tokio_tungstenite::client_async(url.as_str(), stream)
        .await
        .expect("upgrade");
    match next(&mut sock, Duration::from_secs(5)).await {
        Next::Frame(f) => assert_eq!(f["type"], "health.check"),
        other => panic!("{other:?}"),
    }
    // Stop reading; flood the user with ~4 KB user.updated events until it goes offline.
    let blob = "x".repeat(4000);
    let q = encode(&json!({"filter_conditions": {"id": id}}).to_string());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sent = 0u64;
    loop {
        let body = json!({"users": [{"id": id, "set": {"blob": blob, "n": sent}}]});
        s.admin_ok(Method::PATCH, "/users", Some(body)).await;
        sent += 1;
        if sent % 16 == 0 {
            let found = s
                .admin_ok(Method::GET, &format!("/users?payload={q}"), None)
                .await;
            if found["users"][0]["online"] == false {
                break;
            }
        }
        assert!(Instant::now() < deadline, "never disconnected");
    }
    // Reading now: what was already in flight, then the end. Far fewer frames arrive than
    // were sent: the rest were dropped with the queue, not buffered.
    let mut received = 0u64;
    let end = loop {
        match next(&mut sock, Duration::from_secs(5)).await {
            Next::Frame(_) => received += 1,
            other => break other,
        }
    };
    assert!(
        matches!(&end, Next::Closed(1013, r) if r == "slow consumer") || matches!(end, Next::Ended),
        "{end:?}"
    );
    assert!(received < sent, "received {received} of {sent}");
    // The gateway carries on.
    let other = uid("next");
    let (_other, first) = ws::connect_user(&s, &other, json!({"id": other})).await;
    assert_eq!(first["type"], "health.check");
    s.stop().await;
}

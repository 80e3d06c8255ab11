//! The admin WebSocket: operations as request/response frames over the REST dispatch table,
//! the event subscription, and its authentication.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{encode, TestServer};
use crate::ws::{self, next, uid, Next, Socket};

pub(crate) async fn admin_socket(s: &TestServer, token: &str) -> Socket {
    let url = format!(
        "{}/ws?api_key={}&authorization={}&stream-auth-type=jwt",
        s.admin_url.replacen("http", "ws", 1),
        s.api_key,
        encode(token)
    );
    ws::open(&url).await
}

pub(crate) async fn call(sock: &mut Socket, frame: Value) -> Value {
    let id = frame["id"].clone();
    ws::send(sock, frame).await;
    loop {
        match next(sock, Duration::from_secs(5)).await {
            Next::Frame(f) if f["id"] == id => return f,
            Next::Frame(_) => continue,
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn operations_and_errors_over_the_admin_socket() {
    let s = TestServer::start().await;
    let mut sock = admin_socket(&s, &s.server_token).await;
    let id = uid("aws");
    let reply = call(&mut sock, json!({"id": "1", "op": "upsertUsers", "body": {"users": {id.clone(): {"id": id, "name": "W"}}}})).await;
    assert_eq!(
        reply["result"]["users"][id.as_str()]["name"],
        "W",
        "{reply}"
    );
    let reply = call(&mut sock, json!({"id": "2", "op": "partialUpdateUsers", "body": {"users": [{"id": id, "set": {"k": 1}}]}})).await;
    assert_eq!(reply["result"]["users"][id.as_str()]["k"], 1);
    let reply = call(
        &mut sock,
        json!({"id": "3", "op": "queryUsers", "body": {"filter_conditions": {"id": id}}}),
    )
    .await;
    assert_eq!(reply["result"]["users"][0]["k"], 1);
    let reply = call(
        &mut sock,
        json!({"id": "4", "op": "deactivateUser", "params": {"id": id}}),
    )
    .await;
    assert!(
        reply["result"]["user"]["deactivated_at"].is_string(),
        "{reply}"
    );
    let reply = call(
        &mut sock,
        json!({"id": "5", "op": "upsertUsers", "body": {"users": {"bad id": {"id": "bad id"}}}}),
    )
    .await;
    assert_eq!(reply["error"]["code"], 4);
    assert_eq!(reply["error"]["StatusCode"], 400);
    let reply = call(&mut sock, json!({"id": "6", "op": "getApp"})).await;
    assert!(reply["result"]["app"].is_object());
    let reply = call(&mut sock, json!({"id": "7", "op": "noSuchOp"})).await;
    assert_eq!(reply["error"]["code"], 4);
    let reply = call(
        &mut sock,
        json!({"id": "8", "op": "deleteUser", "params": {"id": id, "hard_delete": "true"}}),
    )
    .await;
    assert!(reply["result"]["user"]["deleted_at"].is_string(), "{reply}");
    s.stop().await;
}

#[tokio::test]
async fn subscription_streams_user_and_presence_events() {
    let s = TestServer::start().await;
    let mut sock = admin_socket(&s, &s.server_token).await;
    let reply = call(&mut sock, json!({"id": "s", "op": "subscribe"})).await;
    assert_eq!(reply["result"]["subscribed"], true);
    let id = uid("sub");
    let (_client, _) = ws::connect_user(&s, &id, json!({"id": id, "name": "S"})).await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match next(&mut sock, Duration::from_secs(5)).await {
            Next::Frame(f) => {
                let ev = &f["event"];
                if ev["user"]["id"] == id.as_str() {
                    seen.push(ev["type"].as_str().unwrap().to_owned());
                }
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(seen.contains(&"user.updated".to_owned()), "{seen:?}");
    assert!(
        seen.contains(&"user.presence.changed".to_owned()),
        "{seen:?}"
    );
    s.stop().await;
}

#[tokio::test]
async fn the_admin_socket_needs_the_server_token() {
    let s = TestServer::start().await;
    let url = format!(
        "{}/ws?api_key={}&authorization={}&stream-auth-type=jwt",
        s.admin_url.replacen("http", "ws", 1),
        s.api_key,
        encode(&s.user_token("someone"))
    );
    let err = tokio_tungstenite::connect_async(&url).await.unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 401),
        other => panic!("{other:?}"),
    }
    // The public listener does not serve admin routes.
    let reply = s
        .public_with(
            reqwest::Method::POST,
            "/users/delete",
            Some(json!({"user_ids": ["x"]})),
            &s.server_creds(),
        )
        .await;
    assert_ne!(reply.0, 200);
    s.stop().await;
}

#[tokio::test]
async fn a_bad_frame_on_the_admin_socket_gets_a_close_code() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::Message;
    let s = TestServer::start().await;
    let mut sock = admin_socket(&s, &s.server_token).await;
    let invalid = Frame::message(
        b"{\"op\":\"getApp\xff\"}".to_vec(),
        OpCode::Data(Data::Text),
        true,
    );
    sock.send(Message::Frame(invalid)).await.unwrap();
    match next(&mut sock, Duration::from_secs(5)).await {
        Next::Closed(code, _) => assert_eq!(code, 1007),
        other => panic!("{other:?}"),
    }
    s.stop().await;
}

#[tokio::test]
async fn a_back_ends_close_is_answered_with_a_close_frame() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    let s = TestServer::start().await;
    let mut sock = admin_socket(&s, &s.server_token).await;
    let reply = call(&mut sock, json!({"id": "1", "op": "getApp"})).await;
    assert!(reply["result"]["app"].is_object(), "{reply}");
    sock.send(tokio_tungstenite::tungstenite::Message::Close(Some(
        CloseFrame {
            code: 1000.into(),
            reason: "done".into(),
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

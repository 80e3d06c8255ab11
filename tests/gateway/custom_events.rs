//! Custom user events (`POST /users/{id}/event`): every connection of the user gets the
//! event and no one else does; Stream's types, oversized events, unknown users and clients
//! are refused; the admin WebSocket sends them through the same dispatch table.

use std::time::Duration;

use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};

use crate::admin_ws::{admin_socket, call};
use crate::common::{Creds, TestServer};
use crate::ws::{self, expect_event, next, uid, Next, Socket};

/// Asserts that no frame of type `kind` arrives on `sock` within `wait`.
async fn expect_none(sock: &mut Socket, kind: &str, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next(sock, left).await {
            Next::Frame(f) if f["type"] == kind => panic!("unexpected {kind}: {f}"),
            Next::Frame(_) => continue,
            Next::Timeout => return,
            other => panic!("socket ended: {other:?}"),
        }
    }
}

async fn send_event(s: &TestServer, id: &str, event: Value) -> (u16, Value) {
    let (status, _, body) = s
        .admin(
            Method::POST,
            &format!("/users/{id}/event"),
            Some(json!({ "event": event })),
        )
        .await;
    (status, body)
}

#[tokio::test]
async fn a_custom_event_reaches_all_50_connections_of_its_user_and_no_one_else() {
    let s = TestServer::start().await;
    let id = uid("target");
    let other = uid("bystander");
    s.admin_ok(
        Method::POST,
        "/users",
        Some(json!({"users": {id.clone(): {"id": id}, other.clone(): {"id": other}}})),
    )
    .await;
    let mut mine: Vec<Socket> = Vec::new();
    for _ in 0..5 {
        let batch = join_all((0..10).map(|_| ws::connect_user(&s, &id, json!({"id": id})))).await;
        mine.extend(batch.into_iter().map(|(sock, _)| sock));
    }
    let mut theirs = Vec::new();
    for _ in 0..3 {
        theirs.push(ws::connect_user(&s, &other, json!({"id": other})).await.0);
    }
    let event =
        json!({"type": "friendship_request", "text": "hi", "from": {"id": "x", "n": [1, 2]}});
    let (status, body) = send_event(&s, &id, event).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["duration"].is_string(), "{body}");
    let got = join_all(
        mine.iter_mut()
            .map(|sock| expect_event(sock, "friendship_request", Duration::from_secs(10))),
    )
    .await;
    assert_eq!(got.len(), 50);
    for ev in &got {
        assert_eq!(ev["text"], "hi");
        assert_eq!(ev["from"], json!({"id": "x", "n": [1, 2]}));
        assert!(ev["created_at"].is_string(), "stamped by the gateway: {ev}");
    }
    for sock in &mut theirs {
        expect_none(sock, "friendship_request", Duration::from_millis(300)).await;
    }
    s.stop().await;
}

#[tokio::test]
async fn bad_custom_events_get_streams_error_codes() {
    let s = TestServer::start().await;
    let id = uid("target");
    let (mut sock, _) = ws::connect_user(&s, &id, json!({"id": id})).await;

    // Stream's own types (they all have a '.') are refused.
    for reserved in ["user.updated", "message.new", "health.check", "my.event"] {
        let (status, body) = send_event(&s, &id, json!({"type": reserved})).await;
        assert_eq!((status, body["code"].clone()), (400, json!(4)), "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.starts_with("SendUserCustomEvent failed with error: "),
            "{message}"
        );
    }
    // A type is required, and the event is an object.
    for bad in [
        json!({"text": "no type"}),
        json!({"type": ""}),
        json!({"type": 7}),
    ] {
        let (status, body) = send_event(&s, &id, bad).await;
        assert_eq!((status, body["code"].clone()), (400, json!(4)), "{body}");
    }
    let (status, _, body) = s
        .admin(
            Method::POST,
            &format!("/users/{id}/event"),
            Some(json!({"type": "x"})),
        )
        .await;
    assert_eq!((status, body["code"].clone()), (400, json!(4)), "{body}");
    // Over 5 KiB: 413, code 22; just under goes through.
    let big = json!({"type": "big", "blob": "x".repeat(5 * 1024)});
    let (status, body) = send_event(&s, &id, big).await;
    assert_eq!((status, body["code"].clone()), (413, json!(22)), "{body}");
    let fits = json!({"type": "big", "blob": "x".repeat(5000)});
    assert_eq!(send_event(&s, &id, fits).await.0, 200);
    let ev = expect_event(&mut sock, "big", Duration::from_secs(5)).await;
    assert_eq!(ev["blob"].as_str().unwrap().len(), 5000);
    // Unknown and deleted users: 404, code 16.
    let (status, body) = send_event(&s, &uid("nobody"), json!({"type": "t"})).await;
    assert_eq!((status, body["code"].clone()), (404, json!(16)), "{body}");
    let gone = uid("gone");
    s.admin_ok(
        Method::POST,
        "/users",
        Some(json!({"users": {gone.clone(): {"id": gone}}})),
    )
    .await;
    s.admin_ok(Method::DELETE, &format!("/users/{gone}"), None)
        .await;
    let (status, body) = send_event(&s, &gone, json!({"type": "t"})).await;
    assert_eq!((status, body["code"].clone()), (404, json!(16)), "{body}");
    s.stop().await;
}

#[tokio::test]
async fn clients_cannot_send_custom_events() {
    let s = TestServer::start().await;
    let me = uid("me");
    let you = uid("you");
    let (mut mine, _) = ws::connect_user(&s, &me, json!({"id": me})).await;
    let (mut yours, _) = ws::connect_user(&s, &you, json!({"id": you})).await;
    let creds = Creds {
        api_key: Some(s.api_key.clone()),
        token: Some(s.user_token(&me)),
        auth_type: Some("jwt".into()),
    };
    for target in [&you, &me] {
        let (status, _, body) = s
            .public_with(
                Method::POST,
                &format!("/users/{target}/event"),
                Some(json!({"event": {"type": "poke"}})),
                &creds,
            )
            .await;
        assert_eq!((status, body["code"].clone()), (403, json!(17)), "{body}");
    }
    let anonymous = Creds {
        api_key: Some(s.api_key.clone()),
        token: None,
        auth_type: Some("anonymous".into()),
    };
    let (status, _, body) = s
        .public_with(
            Method::POST,
            &format!("/users/{you}/event"),
            Some(json!({"event": {"type": "poke"}})),
            &anonymous,
        )
        .await;
    assert_eq!((status, body["code"].clone()), (403, json!(17)), "{body}");
    expect_none(&mut yours, "poke", Duration::from_millis(300)).await;
    expect_none(&mut mine, "poke", Duration::from_millis(100)).await;
    s.stop().await;
}

#[tokio::test]
async fn the_admin_socket_sends_custom_events_and_its_feed_does_not_carry_them() {
    let s = TestServer::start().await;
    let id = uid("wsev");
    let (mut user, _) = ws::connect_user(&s, &id, json!({"id": id})).await;
    let mut admin = admin_socket(&s, &s.server_token).await;
    let mut feed = admin_socket(&s, &s.server_token).await;
    let reply = call(&mut feed, json!({"id": "s", "op": "subscribe"})).await;
    assert_eq!(reply["result"]["subscribed"], true);

    let reply = call(
        &mut admin,
        json!({"id": "1", "op": "sendUserCustomEvent", "params": {"id": id},
               "body": {"event": {"type": "ping_from_ws", "n": 1}}}),
    )
    .await;
    assert!(reply["result"].is_object(), "{reply}");
    let ev = expect_event(&mut user, "ping_from_ws", Duration::from_secs(5)).await;
    assert_eq!(ev["n"], 1);
    let reply = call(
        &mut admin,
        json!({"id": "2", "op": "sendUserCustomEvent", "params": {"id": id},
               "body": {"event": {"type": "user.banned"}}}),
    )
    .await;
    assert_eq!(reply["error"]["code"], 4, "{reply}");

    // The feed's next frame about this user is the update made after the custom event.
    s.admin_ok(
        Method::PATCH,
        "/users",
        Some(json!({"users": [{"id": id, "set": {"k": 1}}]})),
    )
    .await;
    loop {
        match next(&mut feed, Duration::from_secs(5)).await {
            Next::Frame(f) => {
                let ev = &f["event"];
                assert_ne!(
                    ev["type"], "ping_from_ws",
                    "the feed carried a custom event"
                );
                if ev["type"] == "user.updated" && ev["user"]["id"] == id.as_str() {
                    break;
                }
            }
            other => panic!("{other:?}"),
        }
    }
    s.stop().await;
}

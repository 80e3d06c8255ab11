//! Events: `user.updated` to every connection of a user, deactivate / delete / revoke ending
//! live sockets at once, presence for subscribed connections, and slow consumers.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{encode, TestServer};
use crate::ws::{self, expect_event, next, uid, Next, Socket};

async fn expect_close(sock: &mut Socket, code: u16) -> Value {
    loop {
        match next(sock, Duration::from_secs(5)).await {
            Next::Frame(_) => continue,
            Next::Closed(c, reason) => {
                assert_eq!(c, code, "close reason {reason}");
                return serde_json::from_str(&reason).unwrap_or(Value::Null);
            }
            other => panic!("expected close {code}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn user_updated_reaches_every_connection() {
    let s = TestServer::start().await;
    let id = uid("upd");
    let (mut a, _) = ws::connect_user(&s, &id, json!({"id": id, "name": "U"})).await;
    let (mut b, _) = ws::connect_user(&s, &id, json!({"id": id})).await;
    s.admin_ok(
        Method::PATCH,
        "/users",
        Some(json!({"users": [{"id": id, "set": {"mood": "happy"}}]})),
    )
    .await;
    for sock in [&mut a, &mut b] {
        let ev = expect_event(sock, "user.updated", Duration::from_secs(5)).await;
        assert_eq!(ev["user"]["id"], id.as_str());
        assert_eq!(ev["user"]["mood"], "happy");
        assert_eq!(ev["user"]["name"], "U", "the whole user is sent");
        assert!(ev["created_at"].is_string());
    }
    s.stop().await;
}

#[tokio::test]
async fn deactivate_delete_and_revoke_end_live_connections() {
    let s = TestServer::start().await;

    let id = uid("deact");
    let (mut sock, _) = ws::connect_user(&s, &id, json!({"id": id})).await;
    let started = Instant::now();
    s.admin_ok(
        Method::POST,
        &format!("/users/{id}/deactivate"),
        Some(json!({})),
    )
    .await;
    let ev = expect_event(&mut sock, "user.deactivated", Duration::from_secs(5)).await;
    assert!(ev["user"]["deactivated_at"].is_string());
    let reason = expect_close(&mut sock, 1000).await;
    assert!(reason["code"].is_number(), "close reason is JSON: {reason}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );

    let id = uid("del");
    let (mut sock, _) = ws::connect_user(&s, &id, json!({"id": id})).await;
    s.admin_ok(Method::DELETE, &format!("/users/{id}"), None)
        .await;
    let ev = expect_event(&mut sock, "user.deleted", Duration::from_secs(5)).await;
    assert_eq!(ev["hard_delete"], false);
    assert!(ev["user"]["deleted_at"].is_string());
    expect_close(&mut sock, 1000).await;

    let id = uid("revoke");
    let (mut sock, _) = ws::connect_user(&s, &id, json!({"id": id})).await;
    let cutoff = chat_gateway::protocol::Timestamp::now().to_wire();
    s.admin_ok(
        Method::PATCH,
        "/users",
        Some(json!({"users": [{"id": id, "set": {"revoke_tokens_issued_before": cutoff}}]})),
    )
    .await;
    let err = expect_event(&mut sock, "connection.error", Duration::from_secs(5)).await;
    assert_eq!(err["error"]["code"], 40);
    let reason = expect_close(&mut sock, 1000).await;
    assert_eq!(reason["code"], 40);

    // App-level revocation ends everyone's connections.
    let id = uid("apprev");
    let (mut sock, _) = ws::connect_user(&s, &id, json!({"id": id})).await;
    let cutoff = chat_gateway::protocol::Timestamp::now().to_wire();
    s.admin_ok(
        Method::PATCH,
        "/app",
        Some(json!({"revoke_tokens_issued_before": cutoff})),
    )
    .await;
    let err = expect_event(&mut sock, "connection.error", Duration::from_secs(5)).await;
    assert_eq!(err["error"]["code"], 40);
    expect_close(&mut sock, 1000).await;
    s.stop().await;
}

#[tokio::test]
async fn presence_reaches_connections_that_asked_for_it() {
    let s = TestServer::start().await;
    let watcher = uid("watcher");
    let friend = uid("friend");
    s.admin_ok(
        Method::POST,
        "/users",
        Some(json!({"users": {friend.clone(): {"id": friend}}})),
    )
    .await;
    let (mut w, first) = ws::connect_user(&s, &watcher, json!({"id": watcher})).await;
    let conn_id = first["connection_id"].as_str().unwrap().to_owned();
    let payload = json!({"filter_conditions": {"id": {"$in": [friend]}}, "presence": true});
    let path = format!(
        "/users?payload={}&user_id={watcher}&connection_id={conn_id}",
        encode(&payload.to_string())
    );
    let creds = crate::common::Creds {
        api_key: Some(s.api_key.clone()),
        token: Some(s.user_token(&watcher)),
        auth_type: Some("jwt".into()),
    };
    let (status, _, body) = s.public_with(Method::GET, &path, None, &creds).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["users"][0]["online"], false);
    let (f, _) = ws::connect_user(&s, &friend, json!({"id": friend})).await;
    let ev = expect_event(&mut w, "user.presence.changed", Duration::from_secs(5)).await;
    assert_eq!(ev["user"]["id"], friend.as_str());
    assert_eq!(ev["user"]["online"], true);
    let (status, _, body) = s.public_with(Method::GET, &path, None, &creds).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["users"][0]["online"], true,
        "the watcher's query sees the friend online"
    );
    // Presence subscribers get the user.updated of those they watch.
    s.admin_ok(
        Method::PATCH,
        "/users",
        Some(json!({"users": [{"id": friend, "set": {"mood": "sunny"}}]})),
    )
    .await;
    let ev = expect_event(&mut w, "user.updated", Duration::from_secs(5)).await;
    assert_eq!(ev["user"]["id"], friend.as_str());
    assert_eq!(ev["user"]["mood"], "sunny");
    drop(f);
    let ev = expect_event(&mut w, "user.presence.changed", Duration::from_secs(5)).await;
    assert_eq!(ev["user"]["online"], false);
    assert!(ev["user"]["last_active"].is_string());
    s.stop().await;
}

#[tokio::test]
async fn a_client_that_never_reads_is_disconnected() {
    let s = TestServer::start_with(|c| {
        c.limits.outbound_queue_frames = 8;
        c.limits.write_timeout_secs = 1;
        // The flood outruns Stream's 300 partial updates a minute.
        c.rate_limits.enabled = false;
    })
    .await;
    let id = uid("slow");
    let (_sock, _) = ws::connect_user(&s, &id, json!({"id": id})).await;
    // Never read from `_sock`; flood it with large events until the gateway gives up on it.
    let blob = "x".repeat(4000);
    let q = encode(&json!({"filter_conditions": {"id": id}}).to_string());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0u64;
    loop {
        let body = json!({"users": [{"id": id, "set": {"blob": blob, "n": i}}]});
        s.admin_ok(Method::PATCH, "/users", Some(body)).await;
        i += 1;
        if i % 20 == 0 {
            let found = s
                .admin_ok(Method::GET, &format!("/users?payload={q}"), None)
                .await;
            if found["users"][0]["online"] == false {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the slow consumer was never disconnected"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn invisible_users_send_no_presence_to_watchers() {
    let s = TestServer::start().await;
    let watcher = uid("w");
    let hidden = uid("hidden");
    let friend = uid("friend");
    s.admin_ok(
        Method::POST,
        "/users",
        Some(json!({"users": {
            hidden.clone(): {"id": hidden, "invisible": true},
            friend.clone(): {"id": friend}
        }})),
    )
    .await;
    let (mut w, first) = ws::connect_user(&s, &watcher, json!({"id": watcher})).await;
    let conn_id = first["connection_id"].as_str().unwrap().to_owned();
    let payload = json!({"filter_conditions": {"id": {"$in": [hidden, friend]}}, "presence": true});
    let path = format!(
        "/users?payload={}&user_id={watcher}&connection_id={conn_id}",
        encode(&payload.to_string())
    );
    let creds = crate::common::Creds {
        api_key: Some(s.api_key.clone()),
        token: Some(s.user_token(&watcher)),
        auth_type: Some("jwt".into()),
    };
    assert_eq!(s.public_with(Method::GET, &path, None, &creds).await.0, 200);
    // The invisible user connects first, then the visible one: the first presence event the
    // watcher sees must be the visible user's.
    let (_h, _) = ws::connect_user(&s, &hidden, json!({"id": hidden})).await;
    let (_f, _) = ws::connect_user(&s, &friend, json!({"id": friend})).await;
    let ev = expect_event(&mut w, "user.presence.changed", Duration::from_secs(5)).await;
    assert_eq!(
        ev["user"]["id"],
        friend.as_str(),
        "an invisible user's presence leaked: {ev}"
    );
    s.stop().await;
}

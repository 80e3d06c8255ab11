//! What clients must not learn about other users: who is invisible (by filtering, sorting,
//! `last_active` or a presence event), and who was revoked and when.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{assert_error, encode, Api, TestServer};
use crate::ws::{self, expect_event, next, uid, Next};
use crate::{anonymous, jwt};

async fn client_query(
    api: &Api,
    creds: &crate::common::Creds,
    payload: Value,
) -> crate::common::Reply {
    let path = format!("/users?payload={}", encode(&payload.to_string()));
    api.public_with(Method::GET, &path, None, creds).await
}

#[tokio::test]
async fn clients_cannot_filter_or_sort_on_invisibility_or_revocation() {
    let s = TestServer::start().await;
    let me = uid("asker");
    s.admin_ok(
        Method::POST,
        "/users",
        Some(json!({"users": {&me: {"id": &me}}})),
    )
    .await;
    let user = jwt(&s, &s.user_token(&me));
    let anon = anonymous(&s);
    for payload in [
        json!({"filter_conditions": {"invisible": true}}),
        json!({"filter_conditions": {"$or": [{"id": "x"}, {"invisible": {"$eq": true}}]}}),
        json!({"filter_conditions": {"revoke_tokens_issued_before": {"$exists": true}}}),
        json!({"filter_conditions": {}, "sort": [{"field": "revoke_tokens_issued_before", "direction": -1}]}),
        json!({"filter_conditions": {}, "sort": [{"field": "invisible", "direction": 1}]}),
    ] {
        for creds in [&user, &anon] {
            let reply = client_query(&s, creds, payload.clone()).await;
            assert_error(&reply, 400, 4, None);
        }
        // The back end may.
        let path = format!("/users?payload={}", encode(&payload.to_string()));
        let (status, _, body) = s.admin(Method::GET, &path, None).await;
        assert_eq!(status, 200, "{body}");
    }
    s.stop().await;
}

#[tokio::test]
async fn an_invisible_user_shows_no_activity_and_leaves_silently() {
    let s = TestServer::start().await;
    let watcher = uid("watcher");
    let shy = uid("shy");
    s.admin_ok(
        Method::POST,
        "/users",
        Some(json!({"users": {&shy: {"id": &shy}}})),
    )
    .await;
    let (mut w, first) = ws::connect_user(&s, &watcher, json!({"id": &watcher})).await;
    let conn_id = first["connection_id"].as_str().unwrap().to_owned();
    let creds = jwt(&s, &s.user_token(&watcher));
    let payload = json!({"filter_conditions": {"id": &shy}, "presence": true});
    let path = format!(
        "/users?payload={}&connection_id={conn_id}",
        encode(&payload.to_string())
    );
    let (status, _, _) = s.public_with(Method::GET, &path, None, &creds).await;
    assert_eq!(status, 200);
    // She connects visibly, then turns invisible mid-session.
    let (shy_sock, _) = ws::connect_user(&s, &shy, json!({"id": &shy})).await;
    let ev = expect_event(&mut w, "user.presence.changed", Duration::from_secs(5)).await;
    assert_eq!(ev["user"]["online"], true);
    s.admin_ok(
        Method::PATCH,
        "/users",
        Some(json!({"users": [{"id": &shy, "set": {"invisible": true}}]})),
    )
    .await;
    // Others see her offline and without activity.
    let (_, _, body) = client_query(&s, &creds, json!({"filter_conditions": {"id": &shy}})).await;
    assert_eq!(body["users"][0]["online"], false, "{body}");
    assert!(body["users"][0].get("last_active").is_none(), "{body}");
    assert!(body["users"][0].get("invisible").is_none(), "{body}");
    // Her leaving is not announced.
    drop(shy_sock);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next(&mut w, left).await {
            Next::Frame(f) if f["type"] == "user.presence.changed" => {
                panic!("an invisible user's disconnect reached a watcher: {f}")
            }
            Next::Frame(_) => continue,
            Next::Timeout => break,
            other => panic!("{other:?}"),
        }
    }
    s.stop().await;
}

//! Bans: a back end (or an admin client) bans a user in the open or in the shadow, for a
//! while or until unbanned; `banned` / `shadow_banned` on the user and in queries,
//! `user.banned` / `user.unbanned` on the user's sockets (never for a shadow ban), and
//! `queryBannedUsers`.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{encode, Creds, TestServer};
use crate::ws::{self, expect_event, next, uid, Next, Socket};

async fn query_ids(s: &TestServer, filter: Value) -> Vec<String> {
    let payload = json!({"filter_conditions": filter, "limit": 100});
    let body = s
        .admin_ok(
            Method::GET,
            &format!("/users?payload={}", encode(&payload.to_string())),
            None,
        )
        .await;
    body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn bans(s: &TestServer, payload: Value) -> Vec<Value> {
    let body = s
        .admin_ok(
            Method::GET,
            &format!(
                "/query_banned_users?payload={}",
                encode(&payload.to_string())
            ),
            None,
        )
        .await;
    body["bans"].as_array().unwrap().clone()
}

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

#[tokio::test]
async fn a_ban_with_a_timeout_shows_in_the_user_and_in_queries_until_it_ends() {
    let s = TestServer::start().await;
    let (target, moderator) = (uid("target"), uid("mod"));
    s.admin_ok(
        Method::POST,
        "/users",
        Some(json!({"users": {moderator.clone(): {"id": moderator}}})),
    )
    .await;
    let (mut sock, first) = ws::connect_user(&s, &target, json!({"id": target})).await;
    assert_eq!(first["me"]["banned"], false);

    // 0.03 minutes: 1.8 seconds.
    s.admin_ok(
        Method::POST,
        "/moderation/ban",
        Some(
            json!({"target_user_id": target, "reason": "spam", "timeout": 0.03,
                    "banned_by_id": moderator}),
        ),
    )
    .await;
    let ev = expect_event(&mut sock, "user.banned", Duration::from_secs(5)).await;
    assert_eq!(ev["user"]["id"], target.as_str());
    assert_eq!(ev["reason"], "spam");
    assert!(ev["expiration"].is_string(), "{ev}");
    let (_again, first) = ws::connect_user(&s, &target, json!({"id": target})).await;
    assert_eq!(first["me"]["banned"], true);
    assert!(first["me"]["ban_expires"].is_string());
    let ids = json!([target, moderator]);
    assert_eq!(
        query_ids(&s, json!({"id": {"$in": ids}, "banned": true})).await,
        std::slice::from_ref(&target)
    );
    let listed = bans(&s, json!({"filter_conditions": {"user_id": target}})).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["user"]["id"], target.as_str());
    assert_eq!(listed[0]["reason"], "spam");
    assert_eq!(listed[0]["banned_by"]["id"], moderator.as_str());
    assert!(listed[0]["expires"].is_string());

    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(query_ids(&s, json!({"id": target, "banned": true}))
        .await
        .is_empty());
    assert_eq!(
        query_ids(&s, json!({"id": target, "banned": false})).await,
        std::slice::from_ref(&target),
        "an expired ban no longer holds"
    );
    assert!(bans(&s, json!({"filter_conditions": {"user_id": target}}))
        .await
        .is_empty());
    s.stop().await;
}

#[tokio::test]
async fn shadow_bans_are_told_to_no_client() {
    let s = TestServer::start().await;
    let (target, viewer) = (uid("shadowed"), uid("viewer"));
    let (mut sock, _) = ws::connect_user(&s, &target, json!({"id": target})).await;
    s.admin_ok(
        Method::POST,
        "/moderation/ban",
        Some(json!({"target_user_id": target, "shadow": true})),
    )
    .await;
    expect_none(&mut sock, "user.banned", Duration::from_millis(300)).await;
    assert_eq!(
        query_ids(&s, json!({"id": target, "shadow_banned": true})).await,
        std::slice::from_ref(&target)
    );
    let q = json!({"filter_conditions": {"id": target}});
    let body = s
        .admin_ok(
            Method::GET,
            &format!("/users?payload={}", encode(&q.to_string())),
            None,
        )
        .await;
    assert_eq!(body["users"][0]["shadow_banned"], true);
    assert_eq!(body["users"][0]["banned"], false);

    // A client neither sees it nor filters on it.
    let creds = Creds {
        api_key: Some(s.api_key.clone()),
        token: Some(s.user_token(&viewer)),
        auth_type: Some("jwt".into()),
    };
    let (status, _, body) = s
        .public_with(
            Method::GET,
            &format!("/users?payload={}", encode(&q.to_string())),
            None,
            &creds,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["users"][0].get("shadow_banned").is_none(), "{body}");
    let bad = json!({"filter_conditions": {"shadow_banned": true}});
    let (status, _, body) = s
        .public_with(
            Method::GET,
            &format!("/users?payload={}", encode(&bad.to_string())),
            None,
            &creds,
        )
        .await;
    assert_eq!((status, body["code"].clone()), (400, json!(4)), "{body}");
    let (_again, first) = ws::connect_user(&s, &target, json!({"id": target})).await;
    assert!(first["me"].get("shadow_banned").is_none());
    assert_eq!(first["me"]["banned"], false);

    // removeShadowBan lifts it; a plain unban would not have.
    s.admin_ok(
        Method::DELETE,
        &format!("/moderation/ban?target_user_id={target}"),
        None,
    )
    .await;
    assert_eq!(
        query_ids(&s, json!({"id": target, "shadow_banned": true})).await,
        std::slice::from_ref(&target)
    );
    s.admin_ok(
        Method::DELETE,
        &format!("/moderation/ban?target_user_id={target}&shadow=true"),
        None,
    )
    .await;
    assert!(query_ids(&s, json!({"id": target, "shadow_banned": true}))
        .await
        .is_empty());
    s.stop().await;
}

#[tokio::test]
async fn unban_is_told_and_bad_bans_are_refused() {
    let s = TestServer::start().await;
    let (target, plain, admin) = (uid("target"), uid("plain"), uid("admin"));
    s.admin_ok(
        Method::POST,
        "/users",
        Some(json!({"users": {
            plain.clone(): {"id": plain},
            admin.clone(): {"id": admin, "role": "admin"},
        }})),
    )
    .await;
    let (mut sock, _) = ws::connect_user(&s, &target, json!({"id": target})).await;

    // A ban without a target (4), of an unknown user (16).
    let (status, _, body) = s
        .admin(
            Method::POST,
            "/moderation/ban",
            Some(json!({"reason": "x"})),
        )
        .await;
    assert_eq!((status, body["code"].clone()), (400, json!(4)), "{body}");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .starts_with("BanUser failed with error: "));
    let (status, _, body) = s
        .admin(
            Method::POST,
            "/moderation/ban",
            Some(json!({"target_user_id": uid("nobody")})),
        )
        .await;
    assert_eq!((status, body["code"].clone()), (404, json!(16)), "{body}");

    // A client bans only with the admin role.
    let creds = |id: &str| Creds {
        api_key: Some(s.api_key.clone()),
        token: Some(s.user_token(id)),
        auth_type: Some("jwt".into()),
    };
    let ban = json!({"target_user_id": target});
    let (status, _, body) = s
        .public_with(
            Method::POST,
            "/moderation/ban",
            Some(ban.clone()),
            &creds(&plain),
        )
        .await;
    assert_eq!((status, body["code"].clone()), (403, json!(17)), "{body}");
    let (status, _, body) = s
        .public_with(Method::POST, "/moderation/ban", Some(ban), &creds(&admin))
        .await;
    assert_eq!(status, 200, "{body}");
    let ev = expect_event(&mut sock, "user.banned", Duration::from_secs(5)).await;
    assert_eq!(ev["created_by"]["id"], admin.as_str());
    let listed = bans(&s, json!({"filter_conditions": {"banned_by_id": admin}})).await;
    assert_eq!(listed.len(), 1);

    s.admin_ok(
        Method::DELETE,
        &format!("/moderation/ban?target_user_id={target}"),
        None,
    )
    .await;
    let ev = expect_event(&mut sock, "user.unbanned", Duration::from_secs(5)).await;
    assert_eq!(ev["user"]["banned"], false);
    s.stop().await;
}

//! Mutes and blocks: a client mutes and blocks for itself only, a back end for the user it
//! names; `me` carries them on connect, `notification.mutes_updated` announces mute changes
//! to the user's own connections, a timeout ends a mute, and both go in the GDPR export.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{Creds, TestServer};
use crate::ws::{self, expect_event, uid};

fn client(s: &TestServer, id: &str) -> Creds {
    Creds {
        api_key: Some(s.api_key.clone()),
        token: Some(s.user_token(id)),
        auth_type: Some("jwt".into()),
    }
}

async fn public(
    s: &TestServer,
    creds: &Creds,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let (status, _, body) = s.public_with(method, path, body, creds).await;
    (status, body)
}

async fn users(s: &TestServer, ids: &[&str]) {
    let users: serde_json::Map<String, Value> = ids
        .iter()
        .map(|id| ((*id).to_owned(), json!({ "id": id })))
        .collect();
    s.admin_ok(Method::POST, "/users", Some(json!({ "users": users })))
        .await;
}

/// The ids of the users muted in a `me`.
fn muted(me: &Value) -> Vec<String> {
    me["mutes"]
        .as_array()
        .unwrap_or_else(|| panic!("me.mutes is a list: {me}"))
        .iter()
        .map(|m| m["target"]["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_client_mutes_for_itself_and_its_connections_hear_of_it() {
    let s = TestServer::start().await;
    let (me, bore, other) = (uid("me"), uid("bore"), uid("other"));
    users(&s, &[&bore, &other]).await;
    let (mut sock, first) = ws::connect_user(&s, &me, json!({"id": me})).await;
    assert_eq!(first["me"]["mutes"], json!([]));
    let creds = client(&s, &me);

    let (status, body) = public(
        &s,
        &creds,
        Method::POST,
        "/moderation/mute",
        Some(json!({"target_id": bore})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["mute"]["user"]["id"], me.as_str());
    assert_eq!(body["mute"]["target"]["id"], bore.as_str());
    assert!(body["mute"]["created_at"].is_string());
    assert!(body["mute"].get("expires").is_none(), "{body}");
    assert_eq!(muted(&body["own_user"]), std::slice::from_ref(&bore));
    let ev = expect_event(
        &mut sock,
        "notification.mutes_updated",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(muted(&ev["me"]), std::slice::from_ref(&bore));

    // A new connection's me lists the mute; muting again keeps one mute.
    public(
        &s,
        &creds,
        Method::POST,
        "/moderation/mute",
        Some(json!({"target_id": bore})),
    )
    .await;
    let (_again, first) = ws::connect_user(&s, &me, json!({"id": me})).await;
    assert_eq!(muted(&first["me"]), std::slice::from_ref(&bore));

    // Refusals: for another user (17), oneself (4), an unknown user (16), anonymous (17).
    let for_other = json!({"target_id": bore, "user_id": other});
    let (status, body) = public(
        &s,
        &creds,
        Method::POST,
        "/moderation/mute",
        Some(for_other),
    )
    .await;
    assert_eq!((status, body["code"].clone()), (403, json!(17)), "{body}");
    let (status, body) = public(
        &s,
        &creds,
        Method::POST,
        "/moderation/mute",
        Some(json!({"target_id": me})),
    )
    .await;
    assert_eq!((status, body["code"].clone()), (400, json!(4)), "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("MuteUser failed with error: "),
        "{body}"
    );
    let (status, body) = public(
        &s,
        &creds,
        Method::POST,
        "/moderation/mute",
        Some(json!({"target_id": uid("nobody")})),
    )
    .await;
    assert_eq!((status, body["code"].clone()), (404, json!(16)), "{body}");
    let anonymous = Creds {
        token: None,
        auth_type: Some("anonymous".into()),
        ..creds.clone()
    };
    let (status, body) = public(
        &s,
        &anonymous,
        Method::POST,
        "/moderation/mute",
        Some(json!({"target_id": bore})),
    )
    .await;
    assert_eq!((status, body["code"].clone()), (403, json!(17)), "{body}");

    // Unmute: the connections hear of it, and me lists no mute.
    let (status, body) = public(
        &s,
        &creds,
        Method::POST,
        "/moderation/unmute",
        Some(json!({"target_id": bore})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    loop {
        let ev = expect_event(
            &mut sock,
            "notification.mutes_updated",
            Duration::from_secs(5),
        )
        .await;
        if muted(&ev["me"]).is_empty() {
            break;
        }
    }
    let (_third, first) = ws::connect_user(&s, &me, json!({"id": me})).await;
    assert_eq!(first["me"]["mutes"], json!([]));
    s.stop().await;
}

#[tokio::test]
async fn a_back_end_mutes_for_a_user_and_the_timeout_ends_it() {
    let s = TestServer::start().await;
    let (me, a, b) = (uid("me"), uid("a"), uid("b"));
    users(&s, &[&me, &a, &b]).await;
    let (status, _, body) = s
        .admin(
            Method::POST,
            "/moderation/mute",
            Some(json!({"target_id": a})),
        )
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (400, json!(4)),
        "no user_id: {body}"
    );

    // 0.03 minutes: 1.8 seconds.
    let body = s
        .admin_ok(
            Method::POST,
            "/moderation/mute",
            Some(json!({"target_ids": [a, b], "user_id": me, "timeout": 0.03})),
        )
        .await;
    assert_eq!(body["mutes"].as_array().unwrap().len(), 2, "{body}");
    assert!(body["mute"]["expires"].is_string(), "{body}");
    let (_sock, first) = ws::connect_user(&s, &me, json!({"id": me})).await;
    let mut now_muted = muted(&first["me"]);
    now_muted.sort();
    let mut expected = vec![a.clone(), b.clone()];
    expected.sort();
    assert_eq!(now_muted, expected);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_sock, first) = ws::connect_user(&s, &me, json!({"id": me})).await;
    assert_eq!(first["me"]["mutes"], json!([]), "the mutes expired");

    // Bad timeouts are refused.
    for timeout in [json!(0), json!(-1), json!("5")] {
        let (status, _, body) = s
            .admin(
                Method::POST,
                "/moderation/mute",
                Some(json!({"target_id": a, "user_id": me, "timeout": timeout})),
            )
            .await;
        assert_eq!((status, body["code"].clone()), (400, json!(4)), "{body}");
    }
    s.stop().await;
}

#[tokio::test]
async fn a_client_blocks_for_itself_and_lists_its_blocks() {
    let s = TestServer::start().await;
    let (me, troll, other) = (uid("me"), uid("troll"), uid("other"));
    users(&s, &[&troll, &other]).await;
    let (_sock, first) = ws::connect_user(&s, &me, json!({"id": me})).await;
    assert_eq!(first["me"]["blocked_user_ids"], json!([]));
    let creds = client(&s, &me);

    let (status, body) = public(
        &s,
        &creds,
        Method::POST,
        "/users/block",
        Some(json!({"blocked_user_id": troll})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["blocked_by_user_id"], me.as_str());
    assert_eq!(body["blocked_user_id"], troll.as_str());
    assert!(body["blocked_at"].is_string());
    let (status, body) = public(&s, &creds, Method::GET, "/users/block", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["blocks"][0]["user_id"], me.as_str());
    assert_eq!(body["blocks"][0]["blocked_user_id"], troll.as_str());
    assert_eq!(body["blocks"][0]["blocked_user"]["id"], troll.as_str());
    let (_sock2, first) = ws::connect_user(&s, &me, json!({"id": me})).await;
    assert_eq!(first["me"]["blocked_user_ids"], json!([troll]));

    // Refusals: for another user (17), oneself (4), an unknown user (16).
    let (status, body) = public(
        &s,
        &creds,
        Method::POST,
        "/users/block",
        Some(json!({"blocked_user_id": troll, "user_id": other})),
    )
    .await;
    assert_eq!((status, body["code"].clone()), (403, json!(17)), "{body}");
    let (status, body) = public(
        &s,
        &creds,
        Method::GET,
        &format!("/users/block?user_id={other}"),
        None,
    )
    .await;
    // On the public listener a `user_id` in the query must name the token's user (5).
    assert_eq!((status, body["code"].clone()), (401, json!(5)), "{body}");
    let (status, body) = public(
        &s,
        &creds,
        Method::POST,
        "/users/block",
        Some(json!({"blocked_user_id": me})),
    )
    .await;
    assert_eq!((status, body["code"].clone()), (400, json!(4)), "{body}");
    let (status, body) = public(
        &s,
        &creds,
        Method::POST,
        "/users/block",
        Some(json!({"blocked_user_id": uid("nobody")})),
    )
    .await;
    assert_eq!((status, body["code"].clone()), (404, json!(16)), "{body}");

    // The back end lists and lifts the block for the user.
    let body = s
        .admin_ok(Method::GET, &format!("/users/block?user_id={me}"), None)
        .await;
    assert_eq!(body["blocks"].as_array().unwrap().len(), 1, "{body}");
    s.admin_ok(
        Method::POST,
        "/users/unblock",
        Some(json!({"blocked_user_id": troll, "user_id": me})),
    )
    .await;
    let (status, body) = public(&s, &creds, Method::GET, "/users/block", None).await;
    assert_eq!((status, body["blocks"].clone()), (200, json!([])), "{body}");
    s.stop().await;
}

#[tokio::test]
async fn mutes_and_blocks_are_exported_and_erased_with_the_user() {
    let s = TestServer::start().await;
    let (me, a) = (uid("me"), uid("a"));
    users(&s, &[&me, &a]).await;
    s.admin_ok(
        Method::POST,
        "/moderation/mute",
        Some(json!({"target_id": a, "user_id": me})),
    )
    .await;
    s.admin_ok(
        Method::POST,
        "/users/block",
        Some(json!({"blocked_user_id": a, "user_id": me})),
    )
    .await;
    let export = s
        .admin_ok(Method::GET, &format!("/users/{me}/export"), None)
        .await;
    assert_eq!(export["mutes"][0]["target_id"], a.as_str(), "{export}");
    assert_eq!(
        export["blocks"][0]["blocked_user_id"],
        a.as_str(),
        "{export}"
    );

    // A hard-deleted target drops out of the muter's me; the muter's own hard delete erases
    // its mutes with it.
    s.admin_ok(
        Method::DELETE,
        &format!("/users/{a}?hard_delete=true"),
        None,
    )
    .await;
    let (sock, first) = ws::connect_user(&s, &me, json!({"id": me})).await;
    assert_eq!(first["me"]["mutes"], json!([]));
    drop(sock);
    s.admin_ok(
        Method::DELETE,
        &format!("/users/{me}?hard_delete=true"),
        None,
    )
    .await;
    let (status, _, _) = s
        .admin(Method::GET, &format!("/users/{me}/export"), None)
        .await;
    assert_eq!(status, 404);
    s.stop().await;
}

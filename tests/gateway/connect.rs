//! `/connect`: the first frame, every refusal code, merge semantics, role and teams rules,
//! anonymous users, guests, the per-user limit and the connect frame.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{encode, TestServer};
use crate::ws::{self, connect_url, expect_refusal, next, uid, Next};
use chat_gateway::auth::Secret;

fn sign(claims: Value, secret: &str) -> String {
    use jsonwebtoken::{encode, EncodingKey, Header};
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn first_frame_carries_the_full_me() {
    let s = TestServer::start().await;
    let id = uid("alice");
    let details =
        json!({"id": id, "name": "Alice", "image": "http://x/y.png", "favorite_color": "green"});
    let (_sock, frame) = ws::connect_user(&s, &id, details).await;
    assert_eq!(frame["type"], "health.check");
    assert_eq!(frame["cid"], "*");
    assert!(!frame["connection_id"].as_str().unwrap().is_empty());
    let me = &frame["me"];
    assert_eq!(me["id"], id.as_str());
    assert_eq!(me["role"], "user");
    assert_eq!(me["name"], "Alice");
    assert_eq!(me["favorite_color"], "green", "custom fields are flat");
    assert_eq!(me["online"], true);
    assert_eq!(me["teams"], json!([]));
    for key in ["devices", "mutes", "channel_mutes", "blocked_user_ids"] {
        assert!(me[key].is_array(), "{key} must be an array: {me}");
    }
    assert_eq!(me["unread_count"], 0);
    assert!(me["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(me["last_active"].is_string());
    s.stop().await;
}

#[tokio::test]
async fn every_refusal_code() {
    let s = TestServer::start().await;
    let secret = s.config.api_secret.clone();
    let id = uid("bob");
    let details = json!({"id": id});
    let url = |token: &str| connect_url(&s, &id, details.clone(), token, "jwt");

    // Wrong api key: code 2.
    let bad_key = url(&s.user_token(&id)).replace("api_key=test-key", "api_key=nope");
    expect_refusal(&bad_key, 2).await;
    // Malformed token, other user's token, server token, missing token: code 5.
    expect_refusal(&url("not-a-jwt"), 5).await;
    expect_refusal(&url(&s.user_token("someone-else")), 5).await;
    expect_refusal(&url(&s.server_token), 5).await;
    expect_refusal(&url(""), 5).await;
    expect_refusal(&url(&sign(json!({"user_id": 42}), &secret)), 5).await;
    // Bad auth type: code 5.
    let t = s.user_token(&id);
    expect_refusal(&connect_url(&s, &id, details.clone(), &t, "magic"), 5).await;
    // Expired 40, not yet valid 41, issued in the future 42, bad signature 43.
    expect_refusal(
        &url(&sign(json!({"user_id": id, "exp": now() - 10}), &secret)),
        40,
    )
    .await;
    expect_refusal(
        &url(&sign(json!({"user_id": id, "nbf": now() + 600}), &secret)),
        41,
    )
    .await;
    expect_refusal(
        &url(&sign(json!({"user_id": id, "iat": now() + 600}), &secret)),
        42,
    )
    .await;
    let err = expect_refusal(&url(&sign(json!({"user_id": id}), "wrong-secret")), 43).await;
    assert_eq!(err["StatusCode"], 401);
    // A dev token while auth checks are on: signature invalid.
    let dev = format!(
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.{}.devtoken",
        base64_std(&json!({"user_id": id}).to_string())
    );
    expect_refusal(&url(&dev), 43).await;
    // Missing user_details: code 4.
    let ws_base = s.public_url.replacen("http", "ws", 1);
    let no_details = format!(
        "{ws_base}/connect?json={}&api_key=test-key&authorization={}&stream-auth-type=jwt",
        encode(&json!({"user_id": id}).to_string()),
        encode(&t)
    );
    let err = expect_refusal(&no_details, 4).await;
    assert!(err["message"]
        .as_str()
        .unwrap()
        .contains("user_details is a required field"));

    // With auth checks disabled, the dev token connects.
    s.admin_ok(
        Method::PATCH,
        "/app",
        Some(json!({"disable_auth_checks": true})),
    )
    .await;
    let mut sock = ws::open(&url(&dev)).await;
    match next(&mut sock, Duration::from_secs(5)).await {
        Next::Frame(f) => assert_eq!(f["type"], "health.check", "{f}"),
        other => panic!("dev token refused: {other:?}"),
    }
    s.stop().await;
}

fn base64_std(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn revoked_tokens_are_refused_with_40() {
    let s = TestServer::start().await;
    let id = uid("rev");
    let secret = s.config.api_secret.clone();
    let old = sign(json!({"user_id": id, "iat": now() - 100}), &secret);
    ws::connect_user(&s, &id, json!({"id": id})).await;
    let cutoff = chat_gateway::protocol::Timestamp::now().to_wire();
    s.admin_ok(
        Method::PATCH,
        "/users",
        Some(json!({"users":[{"id": id, "set": {"revoke_tokens_issued_before": cutoff}}]})),
    )
    .await;
    let err = expect_refusal(&connect_url(&s, &id, json!({"id": id}), &old, "jwt"), 40).await;
    assert_eq!(
        err["message"],
        "This token has been revoked, please generate a new token"
    );
    // A token without iat is revoked too; one issued later is fine.
    expect_refusal(
        &connect_url(&s, &id, json!({"id": id}), &s.user_token(&id), "jwt"),
        40,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fresh = sign(json!({"user_id": id, "iat": now()}), &secret);
    let mut sock = ws::open(&connect_url(&s, &id, json!({"id": id}), &fresh, "jwt")).await;
    assert!(
        matches!(next(&mut sock, Duration::from_secs(5)).await, Next::Frame(f) if f["type"] == "health.check")
    );
    s.stop().await;
}

#[tokio::test]
async fn connect_merges_and_never_removes() {
    let s = TestServer::start().await;
    let id = uid("merge");
    let (_a, first) =
        ws::connect_user(&s, &id, json!({"id": id, "name": "M", "color": "red"})).await;
    let (_b, second) = ws::connect_user(&s, &id, json!({"id": id, "hobby": "chess"})).await;
    let me = &second["me"];
    assert_eq!(me["name"], "M");
    assert_eq!(me["color"], "red");
    assert_eq!(me["hobby"], "chess");
    assert_ne!(first["me"]["updated_at"], me["updated_at"]);
    // Nothing changed: no write, updated_at stays.
    let (_c, third) = ws::connect_user(&s, &id, json!({"id": id, "color": "red"})).await;
    assert_eq!(third["me"]["updated_at"], me["updated_at"]);
    let stored = s
        .admin_ok(
            Method::GET,
            &format!(
                "/users?payload={}",
                encode(&json!({"filter_conditions": {"id": id}}).to_string())
            ),
            None,
        )
        .await;
    assert_eq!(stored["users"][0]["hobby"], "chess");
    assert_eq!(stored["users"][0]["updated_at"], me["updated_at"]);
    assert_eq!(stored["users"][0]["online"], true);
    s.stop().await;
}

#[tokio::test]
async fn role_and_teams_cannot_change_at_connect() {
    let s = TestServer::start().await;
    let id = uid("rt");
    s.admin_ok(
        Method::POST,
        "/users",
        Some(json!({"users": {id.clone(): {"id": id, "role": "admin", "teams": ["red", "blue"]}}})),
    )
    .await;
    let t = s.user_token(&id);
    // Same values (teams as a set) are accepted.
    let (_ok, f) = ws::connect_user(
        &s,
        &id,
        json!({"id": id, "role": "admin", "teams": ["blue", "red"]}),
    )
    .await;
    assert_eq!(f["me"]["role"], "admin");
    let err = expect_refusal(
        &connect_url(&s, &id, json!({"id": id, "role": "user"}), &t, "jwt"),
        17,
    )
    .await;
    assert!(
        err["message"].as_str().unwrap().contains("UpdateUserRole"),
        "{err}"
    );
    let err = expect_refusal(
        &connect_url(&s, &id, json!({"id": id, "teams": ["red"]}), &t, "jwt"),
        17,
    )
    .await;
    assert_eq!(
        err["message"],
        "user teams cannot be changed at connection time"
    );
    // A new user may not give itself a role or teams.
    let fresh = uid("new");
    let ft = s.user_token(&fresh);
    expect_refusal(
        &connect_url(
            &s,
            &fresh,
            json!({"id": fresh, "role": "admin"}),
            &ft,
            "jwt",
        ),
        17,
    )
    .await;
    expect_refusal(
        &connect_url(&s, &fresh, json!({"id": fresh, "teams": ["x"]}), &ft, "jwt"),
        17,
    )
    .await;
    // A server-owned field with a different value: code 4.
    expect_refusal(
        &connect_url(&s, &id, json!({"id": id, "banned": true}), &t, "jwt"),
        4,
    )
    .await;
    // Deactivated and deleted users are refused.
    s.admin_ok(
        Method::POST,
        &format!("/users/{id}/deactivate"),
        Some(json!({})),
    )
    .await;
    expect_refusal(&connect_url(&s, &id, json!({"id": id}), &t, "jwt"), 17).await;
    let gone = uid("gone");
    s.admin_ok(
        Method::POST,
        "/users",
        Some(json!({"users": {gone.clone(): {"id": gone}}})),
    )
    .await;
    s.admin_ok(
        Method::DELETE,
        &format!("/users/{gone}?hard_delete=true"),
        None,
    )
    .await;
    let gt = s.user_token(&gone);
    expect_refusal(&connect_url(&s, &gone, json!({"id": gone}), &gt, "jwt"), 16).await;
    s.stop().await;
}

#[tokio::test]
async fn anonymous_users_connect_and_are_not_stored() {
    let s = TestServer::start().await;
    let id = uuid::Uuid::new_v4().to_string();
    let url = connect_url(&s, &id, json!({"id": id, "anon": true}), "", "anonymous");
    let mut sock = ws::open(&url).await;
    let frame = match next(&mut sock, Duration::from_secs(5)).await {
        Next::Frame(f) => f,
        other => panic!("{other:?}"),
    };
    assert_eq!(frame["type"], "health.check");
    assert!(frame["me"]["id"].as_str().unwrap().starts_with("!anon"));
    assert_eq!(frame["me"]["role"], "anonymous");
    let q = json!({"filter_conditions": {"id": frame["me"]["id"]}});
    let found = s
        .admin_ok(
            Method::GET,
            &format!("/users?payload={}", encode(&q.to_string())),
            None,
        )
        .await;
    assert_eq!(found["users"], json!([]));
    s.stop().await;
}

#[tokio::test]
async fn guests_get_a_token_and_cannot_hijack() {
    let s = TestServer::start().await;
    let id = uid("guest");
    let creds = crate::common::Creds {
        api_key: Some(s.api_key.clone()),
        token: None,
        auth_type: Some("anonymous".into()),
    };
    let (status, _, body) = s
        .public_with(
            Method::POST,
            "/guest",
            Some(json!({"user": {"id": id, "name": "Guesty"}})),
            &creds,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["role"], "guest");
    let token = body["access_token"].as_str().unwrap().to_owned();
    let identity =
        chat_gateway::auth::verify(&token, &Secret::new(s.config.api_secret.clone()), false)
            .unwrap();
    assert!(
        matches!(identity, chat_gateway::auth::Identity::User(ref c) if c.user_id == id && c.guest)
    );
    // The SDK connects with role guest and banned false echoed back: accepted.
    let details = json!({"id": id, "name": "Guesty", "role": "guest", "banned": false});
    let mut sock = ws::open(&connect_url(&s, &id, details, &token, "jwt")).await;
    match next(&mut sock, Duration::from_secs(5)).await {
        Next::Frame(f) => assert_eq!(f["me"]["role"], "guest", "{f}"),
        other => panic!("{other:?}"),
    }
    // A guest token for an existing non-guest user is refused.
    let owner = uid("owner");
    s.admin_ok(
        Method::POST,
        "/users",
        Some(json!({"users": {owner.clone(): {"id": owner}}})),
    )
    .await;
    let reply = s
        .public_with(
            Method::POST,
            "/guest",
            Some(json!({"user": {"id": owner}})),
            &creds,
        )
        .await;
    crate::common::assert_error(&reply, 400, 4, None);
    // Disabled guests: 17.
    s.admin_ok(
        Method::PATCH,
        "/app",
        Some(json!({"guest_user_creation_disabled": true})),
    )
    .await;
    let reply = s
        .public_with(
            Method::POST,
            "/guest",
            Some(json!({"user": {"id": uid("g2")}})),
            &creds,
        )
        .await;
    crate::common::assert_error(&reply, 403, 17, None);
    s.stop().await;
}

#[tokio::test]
async fn per_user_connection_limit_is_71() {
    let s = TestServer::start_with(|c| c.limits.max_connections_per_user = 2).await;
    let id = uid("many");
    let _a = ws::connect_user(&s, &id, json!({"id": id})).await;
    let _b = ws::connect_user(&s, &id, json!({"id": id})).await;
    let t = s.user_token(&id);
    expect_refusal(&connect_url(&s, &id, json!({"id": id}), &t, "jwt"), 71).await;
    s.stop().await;
}

#[tokio::test]
async fn connect_data_can_come_in_the_first_frame() {
    let s = TestServer::start().await;
    let id = uid("frame");
    let url = format!(
        "{}/connect?api_key=test-key",
        s.public_url.replacen("http", "ws", 1)
    );
    let mut sock = ws::open(&url).await;
    ws::send(
        &mut sock,
        json!({"user_id": id, "user_details": {"id": id, "name": "F"}, "authorization": s.user_token(&id), "stream-auth-type": "jwt"}),
    )
    .await;
    match next(&mut sock, Duration::from_secs(5)).await {
        Next::Frame(f) => {
            assert_eq!(f["type"], "health.check");
            assert_eq!(f["me"]["name"], "F");
        }
        other => panic!("{other:?}"),
    }
    s.stop().await;
}

#[tokio::test]
async fn a_silent_handshake_is_refused_after_the_deadline() {
    let s = TestServer::start_with(|c| c.limits.handshake_timeout_secs = 1).await;
    let url = format!(
        "{}/connect?api_key=test-key",
        s.public_url.replacen("http", "ws", 1)
    );
    expect_refusal(&url, 23).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_new_users_all_connect() {
    // Each new user is a durable write; 200 at once once deadlocked the store's flushes.
    let s = TestServer::start().await;
    let mut joins = Vec::new();
    for i in 0..200 {
        let api = s.api().clone();
        joins.push(tokio::spawn(async move {
            let id = format!("burst-{i}-{}", uuid::Uuid::new_v4().simple());
            let (sock, frame) = ws::connect_user(&api, &id, json!({"id": id, "n": i})).await;
            assert_eq!(frame["me"]["n"], i);
            sock
        }));
    }
    let all = tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(joins),
    )
    .await
    .expect("200 concurrent connects finish");
    assert_eq!(all.into_iter().filter(|r| r.is_ok()).count(), 200);
    let (status, _, _) = s.admin(Method::GET, "/app", None).await;
    assert_eq!(status, 200, "the admin listener still answers");
    s.stop().await;
}

#[tokio::test]
async fn connect_refuses_requests_that_are_not_websocket_upgrades() {
    let s = TestServer::start().await;
    let url = format!("{}/connect", s.public_url);
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[], "Connection"),
        (&[("Connection", "upgrade")], "Upgrade"),
        (
            &[
                ("Connection", "keep-alive, Upgrade"),
                ("Upgrade", "websocket"),
            ],
            "Sec-WebSocket-Version",
        ),
        (
            &[
                ("Connection", "Upgrade"),
                ("Upgrade", "WebSocket"),
                ("Sec-WebSocket-Version", "13"),
            ],
            "Sec-WebSocket-Key",
        ),
    ];
    for (headers, missing) in cases {
        let mut req = s.http.get(&url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{headers:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], 4, "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("WebSocket endpoint") && message.contains(missing),
            "{headers:?}: {message}"
        );
    }
    let resp = s.http.post(&url).send().await.unwrap();
    assert_ne!(resp.status().as_u16(), 101);
}

/// A client that sends its connect frame right behind the upgrade request, before the 101
/// arrives: the bytes hyper read past the request head reach the handshake.
#[tokio::test]
async fn a_connect_frame_sent_with_the_upgrade_request_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start().await;
    let id = uid("eager");
    let token = sign(json!({"user_id": id}), s.secret.expose());
    let addr = s.public_url.trim_start_matches("http://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "GET /connect?api_key={}&authorization={}&stream-auth-type=jwt HTTP/1.1\r\n\
         Host: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        s.api_key, token
    );
    let payload = json!({"user_id": id, "user_details": {"id": id}}).to_string();
    // A masked client text frame (mask 0: the payload as is).
    let mut frame = vec![0x81u8];
    assert!(payload.len() < 126);
    frame.push(0x80 | payload.len() as u8);
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload.as_bytes());
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&frame);
    tcp.write_all(&bytes).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let text = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            if text.contains("health.check") && text.contains(&id) {
                return text;
            }
        }
    })
    .await
    .expect("first frame in time");
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    assert!(text.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{text}");
}

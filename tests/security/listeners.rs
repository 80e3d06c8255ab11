//! Each listener serves its own callers: user tokens never open the admin listener (REST or
//! its WebSocket), admin routes do not exist on the public listener whatever token is sent,
//! and forged server tokens are refused — also while auth checks are disabled.

use jsonwebtoken::Algorithm;
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{assert_error, encode, TestServer};
use crate::ws::uid;
use crate::{forge, hs256, jwt, stored_user};

/// The admin WebSocket upgrade with this token: the HTTP status and error body when refused
/// (`None` when it upgraded).
async fn admin_ws(s: &TestServer, token: &str) -> Option<(u16, Value)> {
    let url = format!(
        "{}/ws?api_key={}&authorization={}&stream-auth-type=jwt",
        s.admin_url.replacen("http", "ws", 1),
        s.api_key,
        encode(token)
    );
    match tokio_tungstenite::connect_async(&url).await {
        Ok(_) => None,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Some((resp.status().as_u16(), body))
        }
        Err(e) => panic!("admin /ws: {e}"),
    }
}

#[tokio::test]
async fn user_tokens_never_open_the_admin_listener() {
    let s = TestServer::start().await;
    let id = uid("eve");
    let user = s.user_token(&id);
    // Control: the server token opens both.
    assert!(admin_ws(&s, &s.server_token).await.is_none());
    let (status, _, _) = s.admin(Method::GET, "/app", None).await;
    assert_eq!(status, 200);
    // A user token: REST refused with 5 on every route, the WebSocket before the upgrade.
    let routes = [
        (Method::GET, "/app"),
        (Method::PATCH, "/app"),
        (Method::GET, "/users?payload=%7B%7D"),
        (Method::POST, "/users"),
        (Method::PATCH, "/users"),
        (Method::POST, "/users/delete"),
        (Method::DELETE, "/users/someone"),
        (Method::POST, "/users/someone/deactivate"),
        (Method::GET, "/users/someone/export"),
        (Method::GET, "/tasks/x"),
        (Method::POST, "/guest"),
    ];
    for (method, path) in routes {
        let reply = s
            .admin_with(method.clone(), path, Some(json!({})), &jwt(&s, &user))
            .await;
        assert_error(&reply, 401, 5, None);
    }
    let (status, body) = admin_ws(&s, &user)
        .await
        .expect("refused before the upgrade");
    assert_eq!(status, 401, "{body}");
    // A guest's token, minted by the gateway itself, is a user token too.
    let guest = s
        .public_with(
            Method::POST,
            "/guest",
            Some(json!({"user": {"id": uid("g")}})),
            &crate::anonymous(&s),
        )
        .await;
    let guest_token = guest.2["access_token"].as_str().expect("guest token");
    let reply = s
        .admin_with(Method::GET, "/app", None, &jwt(&s, guest_token))
        .await;
    assert_error(&reply, 401, 5, None);
    s.stop().await;
}

#[tokio::test]
async fn forged_server_tokens_are_refused_on_the_admin_listener() {
    let s = TestServer::start().await;
    let secret = s.config.api_secret.clone();
    let server = json!({"server": true});
    let cases = [
        (
            forge(
                json!({"alg": "none"}),
                server.clone(),
                &secret,
                Algorithm::HS256,
            ),
            5,
        ),
        (
            forge(
                json!({"alg": "HS512", "typ": "JWT"}),
                server.clone(),
                &secret,
                Algorithm::HS512,
            ),
            5,
        ),
        (
            forge(
                json!({"alg": "RS256", "typ": "JWT"}),
                server.clone(),
                &secret,
                Algorithm::HS256,
            ),
            5,
        ),
        (hs256(server.clone(), "guessed-secret"), 43),
        (
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzZXJ2ZXIiOnRydWV9.devtoken".to_owned(),
            43,
        ),
    ];
    for (token, code) in &cases {
        let reply = s
            .admin_with(Method::GET, "/app", None, &jwt(&s, token))
            .await;
        assert_error(&reply, 401, *code, None);
        let (status, body) = admin_ws(&s, token).await.expect("refused");
        assert_eq!((status, body["code"].as_i64()), (401, Some(*code)));
    }
    // Auth checks off lets unsigned dev tokens in for users, never an unsigned server token.
    s.admin_ok(
        Method::PATCH,
        "/app",
        Some(json!({"disable_auth_checks": true})),
    )
    .await;
    let forged = &cases[4].0;
    let reply = s
        .admin_with(
            Method::PATCH,
            "/app",
            Some(json!({"disable_auth_checks": false})),
            &jwt(&s, forged),
        )
        .await;
    assert_error(&reply, 401, 43, None);
    assert!(admin_ws(&s, forged).await.is_some());
    let app = s.admin_ok(Method::GET, "/app", None).await;
    assert_eq!(app["app"]["disable_auth_checks"], true);
    s.stop().await;
}

#[tokio::test]
async fn admin_routes_do_not_exist_on_the_public_listener() {
    let s = TestServer::start().await;
    let victim = uid("victim");
    s.admin_ok(
        Method::POST,
        "/users",
        Some(json!({"users": {victim.clone(): {"id": victim, "name": "V"}}})),
    )
    .await;
    let routes = [
        (Method::POST, "/users/delete".to_owned()),
        (Method::DELETE, format!("/users/{victim}")),
        (Method::DELETE, format!("/users/{victim}?hard_delete=true")),
        (Method::POST, format!("/users/{victim}/deactivate")),
        (Method::POST, "/users/deactivate".to_owned()),
        (Method::POST, "/users/restore".to_owned()),
        (Method::GET, format!("/users/{victim}/export")),
        (Method::POST, "/export/users".to_owned()),
        (
            Method::GET,
            "/tasks/00000000-0000-0000-0000-000000000000".to_owned(),
        ),
        (Method::GET, "/app".to_owned()),
        (Method::PATCH, "/app".to_owned()),
        (Method::GET, "/metrics".to_owned()),
        (Method::GET, "/ws".to_owned()),
    ];
    let body = json!({"user_ids": [victim], "user": "hard", "disable_auth_checks": true,
        "revoke_tokens_issued_before": chat_gateway::protocol::Timestamp::now().to_wire()});
    let user = s.user_token(&victim);
    for creds in [s.server_creds(), jwt(&s, &user), crate::anonymous(&s)] {
        for (method, path) in &routes {
            let reply = s
                .public_with(method.clone(), path, Some(body.clone()), &creds)
                .await;
            assert_eq!(
                reply.0, 404,
                "{method} {path} on the public listener: {:?}",
                reply.2
            );
            assert_error(&reply, 404, 16, None);
        }
    }
    // Nothing happened to the user or the app.
    let stored = stored_user(&s, &victim).await;
    assert_eq!(stored["name"], "V", "{stored}");
    assert!(stored.get("deleted_at").is_none_or(Value::is_null));
    assert!(stored.get("deactivated_at").is_none_or(Value::is_null));
    let app = s.admin_ok(Method::GET, "/app", None).await;
    assert_ne!(app["app"]["disable_auth_checks"], true);
    assert!(app["app"]["revoke_tokens_issued_before"].is_null());
    // The public listener refuses the server token on its own routes too.
    let creds = s.server_creds();
    let reply = s
        .public_with(
            Method::PATCH,
            "/users",
            Some(json!({"users": [{"id": victim, "set": {"role": "admin"}}]})),
            &creds,
        )
        .await;
    assert_error(&reply, 401, 5, None);
    s.stop().await;
}

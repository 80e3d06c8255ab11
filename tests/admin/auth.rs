//! §2 on the admin listener: api key, token and auth type checks, each with its code.

use chat_gateway::auth::{server_token, Secret};
use jsonwebtoken::{encode, EncodingKey, Header};
use reqwest::Method;
use serde_json::json;

use crate::common::{assert_error, Creds, TestServer};

fn signed(claims: serde_json::Value, secret: &Secret) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.expose().as_bytes()),
    )
    .expect("token signs")
}

fn now() -> i64 {
    chat_gateway::protocol::Timestamp::now().unix()
}

#[tokio::test]
async fn the_server_token_is_accepted() {
    let srv = TestServer::start().await;
    let body = srv.admin_ok(Method::GET, "/app", None).await;
    assert_eq!(body["app"]["api_key"], "test-key");
    srv.stop().await;
}

#[tokio::test]
async fn api_key_missing_or_wrong_is_code_2() {
    let srv = TestServer::start().await;
    let mut creds = srv.server_creds();
    creds.api_key = None;
    let reply = srv.admin_with(Method::GET, "/app", None, &creds).await;
    assert_error(&reply, 401, 2, None);
    creds.api_key = Some("other-key".into());
    let reply = srv.admin_with(Method::GET, "/app", None, &creds).await;
    assert_error(&reply, 401, 2, None);
    srv.stop().await;
}

#[tokio::test]
async fn token_missing_or_garbage_is_code_5() {
    let srv = TestServer::start().await;
    let mut creds = srv.server_creds();
    creds.token = None;
    assert_error(
        &srv.admin_with(Method::GET, "/app", None, &creds).await,
        401,
        5,
        None,
    );
    for garbage in ["garbage", "a.b.c", "", "Bearer x"] {
        creds.token = Some(garbage.into());
        let reply = srv.admin_with(Method::GET, "/app", None, &creds).await;
        assert_error(&reply, 401, 5, None);
    }
    // A `Bearer ` prefix is not how Stream sends tokens: the raw JWT only.
    creds.token = Some(format!("Bearer {}", srv.server_token));
    assert_error(
        &srv.admin_with(Method::GET, "/app", None, &creds).await,
        401,
        5,
        None,
    );
    srv.stop().await;
}

#[tokio::test]
async fn user_tokens_are_refused_with_code_5() {
    let srv = TestServer::start().await;
    let mut creds = srv.server_creds();
    creds.token = Some(srv.user_token("alice"));
    let reply = srv.admin_with(Method::GET, "/app", None, &creds).await;
    assert_error(&reply, 401, 5, None);
    // Not even for writes on that same user.
    let body = json!({"users": {"alice": {"id": "alice", "role": "admin"}}});
    let reply = srv
        .admin_with(Method::POST, "/users", Some(body), &creds)
        .await;
    assert_error(&reply, 401, 5, None);
    srv.stop().await;
}

#[tokio::test]
async fn stream_auth_type_missing_or_wrong_is_code_5() {
    let srv = TestServer::start().await;
    let mut creds = srv.server_creds();
    creds.auth_type = None;
    assert_error(
        &srv.admin_with(Method::GET, "/app", None, &creds).await,
        401,
        5,
        None,
    );
    creds.auth_type = Some("anonymous".into());
    assert_error(
        &srv.admin_with(Method::GET, "/app", None, &creds).await,
        401,
        5,
        None,
    );
    srv.stop().await;
}

#[tokio::test]
async fn wrong_secret_is_code_43() {
    let srv = TestServer::start().await;
    let mut creds = srv.server_creds();
    creds.token = Some(server_token(&Secret::new("not-the-secret")));
    let reply = srv.admin_with(Method::GET, "/app", None, &creds).await;
    assert_error(&reply, 401, 43, None);
    // A dev token is a bad signature while auth checks are on.
    creds.token =
        Some("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzZXJ2ZXIiOnRydWV9.devtoken".to_owned());
    let reply = srv.admin_with(Method::GET, "/app", None, &creds).await;
    assert_error(&reply, 401, 43, None);
    srv.stop().await;
}

#[tokio::test]
async fn token_time_claims_have_their_codes() {
    let srv = TestServer::start().await;
    let mut creds = srv.server_creds();
    let cases = [
        (json!({"server": true, "exp": now() - 10}), 40),
        (json!({"server": true, "nbf": now() + 600}), 41),
        (json!({"server": true, "iat": now() + 600}), 42),
        (json!({"server": true, "exp": "tomorrow"}), 5),
    ];
    for (claims, code) in cases {
        creds.token = Some(signed(claims.clone(), &srv.secret));
        let reply = srv.admin_with(Method::GET, "/app", None, &creds).await;
        assert_error(&reply, 401, code, None);
    }
    // A server token that is still valid passes.
    creds.token = Some(signed(
        json!({"server": true, "exp": now() + 600}),
        &srv.secret,
    ));
    let (status, _, body) = srv.admin_with(Method::GET, "/app", None, &creds).await;
    assert_eq!(status, 200, "{body}");
    srv.stop().await;
}

#[tokio::test]
async fn only_hs256_is_accepted() {
    let srv = TestServer::start().await;
    let mut creds = srv.server_creds();
    let hs512 = encode(
        &Header::new(jsonwebtoken::Algorithm::HS512),
        &json!({"server": true}),
        &EncodingKey::from_secret(srv.secret.expose().as_bytes()),
    )
    .unwrap();
    creds.token = Some(hs512);
    assert_error(
        &srv.admin_with(Method::GET, "/app", None, &creds).await,
        401,
        5,
        None,
    );
    srv.stop().await;
}

#[tokio::test]
async fn health_and_export_downloads_need_no_credentials() {
    let srv = TestServer::start().await;
    let none = Creds {
        api_key: None,
        token: None,
        auth_type: None,
    };
    let (status, _, _) = srv.admin_with(Method::GET, "/healthz", None, &none).await;
    assert_eq!(status, 200);
    // Every operation route does.
    for (method, path) in [
        (Method::POST, "/users"),
        (Method::PATCH, "/users"),
        (Method::GET, "/users"),
        (Method::POST, "/users/delete"),
        (Method::POST, "/users/restore"),
        (Method::POST, "/users/deactivate"),
        (Method::POST, "/users/reactivate"),
        (Method::DELETE, "/users/alice"),
        (Method::POST, "/users/alice/deactivate"),
        (Method::POST, "/users/alice/reactivate"),
        (Method::GET, "/users/alice/export"),
        (Method::POST, "/export/users"),
        (Method::GET, "/tasks/x"),
        (Method::GET, "/app"),
        (Method::PATCH, "/app"),
        (Method::POST, "/guest"),
    ] {
        let reply = srv
            .admin_with(method.clone(), path, Some(json!({})), &none)
            .await;
        assert_error(&reply, 401, 2, None);
    }
    srv.stop().await;
}

#[tokio::test]
async fn disabled_auth_checks_never_let_an_unsigned_server_token_in() {
    let srv = TestServer::start().await;
    srv.admin_ok(
        Method::PATCH,
        "/app",
        Some(json!({"disable_auth_checks": true})),
    )
    .await;
    let mut creds = srv.server_creds();
    // `{"server":true}` as a dev token: standard base64 payload, signature `devtoken`.
    creds.token =
        Some("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzZXJ2ZXIiOnRydWV9.devtoken".to_owned());
    let reply = srv.admin_with(Method::GET, "/app", None, &creds).await;
    assert_error(&reply, 401, 43, None);
    creds.token = Some(server_token(&Secret::new("forged")));
    let reply = srv.admin_with(Method::GET, "/app", None, &creds).await;
    assert_error(&reply, 401, 43, None);
    // The real server token still works.
    srv.admin_ok(Method::GET, "/app", None).await;
    srv.stop().await;
}

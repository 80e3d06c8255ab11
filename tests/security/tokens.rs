//! Forged, tampered, mistimed and revoked tokens: each refused with its code on the WebSocket
//! `/connect` and on client REST (and, for server tokens, on the admin listener).

use jsonwebtoken::Algorithm;
use reqwest::Method;
use serde_json::json;

use crate::common::{assert_error, Creds, TestServer};
use crate::ws::{self, connect_url, expect_refusal, uid};
use crate::{anonymous, client_query, forge, hs256, jwt, now};

/// Refused with `code` on `/connect` as `user_id` and on a client query (401).
async fn refused_everywhere(s: &TestServer, user_id: &str, token: &str, code: i64) {
    let url = connect_url(s, user_id, json!({"id": user_id}), token, "jwt");
    expect_refusal(&url, code).await;
    let reply = client_query(s, &jwt(s, token), user_id).await;
    assert_error(&reply, 401, code, None);
}

#[tokio::test]
async fn forged_and_foreign_algorithms_are_refused() {
    let s = TestServer::start().await;
    let secret = s.config.api_secret.clone();
    let id = uid("alice");
    let claims = json!({"user_id": id});
    // Control: the genuine token works on both channels.
    ws::connect_user(&s, &id, json!({"id": id})).await;
    let (status, _, body) = client_query(&s, &jwt(&s, &s.user_token(&id)), &id).await;
    assert_eq!(status, 200, "{body}");

    // alg none, with and without a signature part.
    let none = forge(
        json!({"alg": "none", "typ": "JWT"}),
        claims.clone(),
        &secret,
        Algorithm::HS256,
    );
    let unsigned = format!("{}.", none.rsplit_once('.').unwrap().0);
    refused_everywhere(&s, &id, &unsigned, 5).await;
    refused_everywhere(&s, &id, &none, 5).await;
    // Other HMAC algorithms, correctly signed with the app's secret.
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let header = json!({"alg": format!("{alg:?}"), "typ": "JWT"});
        refused_everywhere(&s, &id, &forge(header, claims.clone(), &secret, alg), 5).await;
    }
    // Algorithm confusion: an RS256 header over an HMAC signature made with the secret.
    let rs = forge(
        json!({"alg": "RS256", "typ": "JWT"}),
        claims.clone(),
        &secret,
        Algorithm::HS256,
    );
    refused_everywhere(&s, &id, &rs, 5).await;
    // Wrong secret.
    refused_everywhere(&s, &id, &hs256(claims.clone(), "not-the-secret"), 43).await;
    // Tampered payload: another user's id under alice's signature.
    let mallory = uid("mallory");
    let genuine = s.user_token(&mallory);
    let parts: Vec<&str> = genuine.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        crate::b64(json!({"user_id": id}).to_string().as_bytes()),
        parts[2]
    );
    refused_everywhere(&s, &id, &tampered, 43).await;
    // A dev token while auth checks are on.
    let dev = format!(
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.{}.devtoken",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            claims.to_string()
        )
    );
    refused_everywhere(&s, &id, &dev, 43).await;
    // Garbage, and a token that claims to be both a server and a user.
    refused_everywhere(&s, &id, "not.a.jwt", 5).await;
    let both = hs256(json!({"server": true, "user_id": id}), &secret);
    refused_everywhere(&s, &id, &both, 5).await;
    s.stop().await;
}

#[tokio::test]
async fn time_claims_and_claim_types_have_their_codes() {
    let s = TestServer::start().await;
    let secret = s.config.api_secret.clone();
    let id = uid("bob");
    let t = |claims| hs256(claims, &secret);
    refused_everywhere(&s, &id, &t(json!({"user_id": id, "exp": now() - 10})), 40).await;
    refused_everywhere(&s, &id, &t(json!({"user_id": id, "nbf": now() + 600})), 41).await;
    refused_everywhere(&s, &id, &t(json!({"user_id": id, "iat": now() + 600})), 42).await;
    // Strict claim types.
    refused_everywhere(&s, &id, &t(json!({"user_id": 42})), 5).await;
    refused_everywhere(&s, &id, &t(json!({"user_id": id, "exp": "later"})), 5).await;
    refused_everywhere(&s, &id, &t(json!({"user_id": ""})), 5).await;
    // RFC 7519 NumericDates may carry fractions: accepted, and compared as numbers.
    let fractional =
        t(json!({"user_id": id, "exp": now() as f64 + 600.5, "iat": now() as f64 - 0.5}));
    let url = connect_url(&s, &id, json!({"id": id}), &fractional, "jwt");
    let mut sock = crate::ws::open(&url).await;
    match crate::ws::next(&mut sock, std::time::Duration::from_secs(5)).await {
        crate::ws::Next::Frame(f) => assert_eq!(f["type"], "health.check", "{f}"),
        other => panic!("a fractional exp is a valid token, got {other:?}"),
    }
    refused_everywhere(
        &s,
        &id,
        &t(json!({"user_id": id, "exp": now() as f64 - 0.5})),
        40,
    )
    .await;
    // A user id no stored user can have (anonymous ids start with "!anon").
    let anon_like = "!anon0123";
    let url = connect_url(
        &s,
        anon_like,
        json!({"id": anon_like}),
        &t(json!({"user_id": anon_like})),
        "jwt",
    );
    expect_refusal(&url, 4).await;
    s.stop().await;
}

#[tokio::test]
async fn wrong_user_server_token_and_missing_credentials_are_refused() {
    let s = TestServer::start().await;
    let id = uid("carol");
    let details = json!({"id": id});
    // Another user's valid token: /connect compares it with the requested user.
    let other = s.user_token(&uid("dave"));
    expect_refusal(&connect_url(&s, &id, details.clone(), &other, "jwt"), 5).await;
    // On REST the acting user is the token's; a different user_id parameter is refused.
    let own = s.user_token(&id);
    let reply = s
        .public_with(
            Method::GET,
            &format!("/users?user_id={}&payload=%7B%7D", uid("dave")),
            None,
            &jwt(&s, &own),
        )
        .await;
    assert_error(&reply, 401, 5, None);
    // A server token is not a user token.
    expect_refusal(
        &connect_url(&s, &id, details.clone(), &s.server_token, "jwt"),
        5,
    )
    .await;
    assert_error(
        &client_query(&s, &jwt(&s, &s.server_token), &id).await,
        401,
        5,
        None,
    );
    // Empty token with auth type jwt (the SDK sends authorization= for anonymous users).
    expect_refusal(&connect_url(&s, &id, details.clone(), "", "jwt"), 5).await;
    let no_token = Creds {
        token: None,
        ..jwt(&s, "")
    };
    assert_error(&client_query(&s, &no_token, &id).await, 401, 5, None);
    // A token on an anonymous connect.
    expect_refusal(&connect_url(&s, &id, details.clone(), &own, "anonymous"), 5).await;
    // No or a wrong stream-auth-type.
    expect_refusal(&connect_url(&s, &id, details.clone(), &own, "server"), 5).await;
    let no_type = Creds {
        auth_type: None,
        ..jwt(&s, &own)
    };
    assert_error(&client_query(&s, &no_type, &id).await, 401, 5, None);
    // Missing or wrong api key: code 2, on every channel.
    let url = connect_url(&s, &id, details.clone(), &own, "jwt");
    expect_refusal(&url.replace("api_key=test-key", "api_key=wrong"), 2).await;
    expect_refusal(&url.replace("api_key=test-key&", ""), 2).await;
    for key in [None, Some("wrong".to_owned())] {
        let creds = Creds {
            api_key: key.clone(),
            ..jwt(&s, &own)
        };
        assert_error(&client_query(&s, &creds, &id).await, 401, 2, None);
        let anon = Creds {
            api_key: key.clone(),
            ..anonymous(&s)
        };
        assert_error(&client_query(&s, &anon, &id).await, 401, 2, None);
        let server = Creds {
            api_key: key,
            ..s.server_creds()
        };
        let reply = s.admin_with(Method::GET, "/app", None, &server).await;
        assert_error(&reply, 401, 2, None);
    }
    s.stop().await;
}

#[tokio::test]
async fn revoked_tokens_are_refused_with_40_at_user_and_app_level() {
    let s = TestServer::start().await;
    let secret = s.config.api_secret.clone();
    let message = "This token has been revoked, please generate a new token";
    let (u1, u2) = (uid("rev1"), uid("rev2"));
    for id in [&u1, &u2] {
        ws::connect_user(&s, id, json!({"id": id})).await;
    }
    let old = |id: &str| hs256(json!({"user_id": id, "iat": now() - 100}), &secret);
    let cutoff = chat_gateway::protocol::Timestamp::now().to_wire();
    // User level: tokens issued before the cutoff, and tokens without iat.
    s.admin_ok(
        Method::PATCH,
        "/users",
        Some(json!({"users": [{"id": u1, "set": {"revoke_tokens_issued_before": cutoff}}]})),
    )
    .await;
    for token in [old(&u1), s.user_token(&u1)] {
        let url = connect_url(&s, &u1, json!({"id": u1}), &token, "jwt");
        assert_eq!(expect_refusal(&url, 40).await["message"], message);
        assert_error(
            &client_query(&s, &jwt(&s, &token), &u1).await,
            401,
            40,
            Some(message),
        );
    }
    // The other user is untouched.
    let (status, _, _) = client_query(&s, &jwt(&s, &old(&u2)), &u2).await;
    assert_eq!(status, 200);
    // App level: every user token issued before it.
    s.admin_ok(
        Method::PATCH,
        "/app",
        Some(json!({"revoke_tokens_issued_before": cutoff})),
    )
    .await;
    for token in [old(&u2), s.user_token(&u2)] {
        let url = connect_url(&s, &u2, json!({"id": u2}), &token, "jwt");
        assert_eq!(expect_refusal(&url, 40).await["message"], message);
        assert_error(
            &client_query(&s, &jwt(&s, &token), &u2).await,
            401,
            40,
            Some(message),
        );
    }
    // The server token is not a user token: never revoked.
    let (status, _, _) = s.admin(Method::GET, "/app", None).await;
    assert_eq!(status, 200);
    s.stop().await;
}

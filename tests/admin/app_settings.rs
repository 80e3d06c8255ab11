//! `GET /app` and `PATCH /app`: the exact answer shape, validation, unknown keys merged and
//! `event_hooks` kept verbatim.

use reqwest::Method;
use serde_json::json;

use crate::common::{assert_error, TestServer};

#[tokio::test]
async fn get_app_is_exactly_app_then_duration() {
    let srv = TestServer::start().await;
    let (status, _, body) = srv.admin(Method::GET, "/app", None).await;
    assert_eq!(status, 200);
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["app", "duration"]);
    let app = &body["app"];
    assert_eq!(app["api_key"], "test-key");
    assert_eq!(app["enforce_unique_usernames"], "no");
    assert_eq!(app["disable_auth_checks"], false);
    assert_eq!(app["disable_permissions_checks"], false);
    assert_eq!(app["guest_user_creation_disabled"], false);
    assert_eq!(app["revoke_tokens_issued_before"], json!(null));
    srv.stop().await;
}

#[tokio::test]
async fn patch_app_validates_enforce_unique_usernames() {
    let srv = TestServer::start().await;
    for bad in [
        json!("yes"),
        json!("APP"),
        json!(""),
        json!(true),
        json!(null),
        json!(1),
    ] {
        let reply = srv
            .admin(
                Method::PATCH,
                "/app",
                Some(json!({"enforce_unique_usernames": bad})),
            )
            .await;
        assert_error(
            &reply,
            400,
            4,
            Some("UpdateApp failed with error: \"enforce_unique_usernames must be one of [no app team]\""),
        );
    }
    for mode in ["app", "team", "no"] {
        let body = srv
            .admin_ok(
                Method::PATCH,
                "/app",
                Some(json!({"enforce_unique_usernames": mode})),
            )
            .await;
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["duration"], "PATCH /app answers {{}}");
        let app = srv.admin_ok(Method::GET, "/app", None).await;
        assert_eq!(app["app"]["enforce_unique_usernames"], mode);
    }
    // A refused patch changes nothing, not even its valid keys.
    let reply = srv
        .admin(
            Method::PATCH,
            "/app",
            Some(json!({"disable_permissions_checks": true, "enforce_unique_usernames": "x"})),
        )
        .await;
    assert_error(&reply, 400, 4, None);
    let app = srv.admin_ok(Method::GET, "/app", None).await;
    assert_eq!(app["app"]["disable_permissions_checks"], false);
    // Flags must be booleans.
    for key in [
        "disable_auth_checks",
        "disable_permissions_checks",
        "guest_user_creation_disabled",
    ] {
        let reply = srv
            .admin(Method::PATCH, "/app", Some(json!({key: "true"})))
            .await;
        assert_error(&reply, 400, 4, None);
    }
    srv.stop().await;
}

#[tokio::test]
async fn unknown_keys_are_stored_and_merged() {
    let srv = TestServer::start().await;
    srv.admin_ok(
        Method::PATCH,
        "/app",
        Some(json!({"custom_thing": {"a": 1}, "webhook_url": "http://x/hook"})),
    )
    .await;
    srv.admin_ok(
        Method::PATCH,
        "/app",
        Some(json!({"other_thing": [1, 2], "custom_thing": {"b": 2}, "disable_auth_checks": true})),
    )
    .await;
    let app = srv.admin_ok(Method::GET, "/app", None).await["app"].clone();
    assert_eq!(app["custom_thing"], json!({"b": 2}));
    assert_eq!(app["webhook_url"], "http://x/hook");
    assert_eq!(app["other_thing"], json!([1, 2]));
    assert_eq!(app["disable_auth_checks"], true);
    assert_eq!(app["api_key"], "test-key");
    srv.stop().await;
}

#[tokio::test]
async fn event_hooks_are_returned_verbatim() {
    let srv = TestServer::start().await;
    let hooks = json!([
        {"id": "h1", "enabled": true, "hook_type": "webhook",
         "webhook_url": "https://example.invalid/hook", "event_types": ["user.updated"],
         "timeout_ms": 1500, "nested": {"z": null, "a": [1.5, "x", false]}},
        {"hook_type": "sqs", "sqs_queue_url": "q", "sqs_auth_type": "keys"}
    ]);
    srv.admin_ok(
        Method::PATCH,
        "/app",
        Some(json!({"event_hooks": hooks.clone()})),
    )
    .await;
    let app = srv.admin_ok(Method::GET, "/app", None).await;
    assert_eq!(app["app"]["event_hooks"], hooks);
    // Key order inside the hooks is kept too.
    assert_eq!(app["app"]["event_hooks"].to_string(), hooks.to_string());
    srv.stop().await;
}

#[tokio::test]
async fn app_revoke_tokens_issued_before_accepts_three_formats() {
    let srv = TestServer::start().await;
    for input in [
        "2024-01-01T00:00:00.000Z",
        "2024-01-01T00:00:00+00:00",
        "2024-01-01T00:00:00",
        "2024-01-01T02:00:00+02:00",
    ] {
        srv.admin_ok(
            Method::PATCH,
            "/app",
            Some(json!({"revoke_tokens_issued_before": input})),
        )
        .await;
        let app = srv.admin_ok(Method::GET, "/app", None).await;
        assert_eq!(
            app["app"]["revoke_tokens_issued_before"], "2024-01-01T00:00:00.000000Z",
            "input {input}"
        );
    }
    srv.admin_ok(
        Method::PATCH,
        "/app",
        Some(json!({"revoke_tokens_issued_before": null})),
    )
    .await;
    let app = srv.admin_ok(Method::GET, "/app", None).await;
    assert_eq!(app["app"]["revoke_tokens_issued_before"], json!(null));
    for bad in [json!("yesterday"), json!(12345), json!(true)] {
        let reply = srv
            .admin(
                Method::PATCH,
                "/app",
                Some(json!({"revoke_tokens_issued_before": bad})),
            )
            .await;
        assert_error(&reply, 400, 4, None);
    }
    // App-level revocation is for user tokens: the server token keeps working.
    srv.admin_ok(
        Method::PATCH,
        "/app",
        Some(json!({"revoke_tokens_issued_before": chat_gateway::protocol::Timestamp::now().to_wire()})),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    srv.admin_ok(Method::GET, "/app", None).await;
    srv.stop().await;
}

#[tokio::test]
async fn patch_app_needs_an_object() {
    let srv = TestServer::start().await;
    let reply = srv.admin(Method::PATCH, "/app", Some(json!([1]))).await;
    assert_error(&reply, 400, 4, None);
    srv.stop().await;
}

#[tokio::test]
async fn the_api_key_shown_is_always_the_real_one() {
    let srv = TestServer::start().await;
    srv.admin_ok(
        Method::PATCH,
        "/app",
        Some(json!({"api_key": "someone-elses", "x": 1})),
    )
    .await;
    let app = srv.admin_ok(Method::GET, "/app", None).await["app"].clone();
    assert_eq!(app["api_key"], "test-key");
    assert_eq!(app["x"], 1);
    srv.stop().await;
}

/// Settings are a conditional write on their stored version: concurrent `PATCH /app` calls
/// each merge into what the others saved, so none of their keys is lost.
#[tokio::test]
async fn concurrent_settings_patches_lose_no_update() {
    let srv = TestServer::start().await;
    let patches: Vec<_> = (0..24)
        .map(|i| {
            let api = srv.api().clone();
            tokio::spawn(async move {
                let body = serde_json::json!({ format!("key_{i}"): i });
                let (status, _, reply) = api.admin(Method::PATCH, "/app", Some(body)).await;
                assert_eq!(status, 200, "{reply}");
            })
        })
        .collect();
    for p in patches {
        p.await.unwrap();
    }
    let (_, _, body) = srv.admin(Method::GET, "/app", None).await;
    for i in 0..24 {
        assert_eq!(body["app"][format!("key_{i}")], i, "key_{i} lost: {body}");
    }
    srv.stop().await;
}

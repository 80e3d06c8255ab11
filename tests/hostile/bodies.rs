//! Request bodies: malformed, truncated, wrongly typed, deeply nested and oversized JSON on
//! every route that reads one, on both listeners.

use serde_json::json;

use crate::common::TestServer;
use crate::{
    assert_envelope, assert_refused, assert_serving, nested_arrays, raw_http, send_bytes, Side,
    BODY_ROUTES,
};

/// Bodies that are not JSON at all: each is refused with 400, code 4, on every route.
fn malformed() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("open brace", b"{".to_vec()),
        ("truncated object", br#"{"users":{"a":{"id":"a","#.to_vec()),
        ("truncated literal", b"nul".to_vec()),
        ("truncated array", b"[1,2".to_vec()),
        ("missing colon", br#"{"a" 1}"#.to_vec()),
        ("trailing garbage", br#"{"users":{}}}"#.to_vec()),
        ("invalid utf-8", b"{\"users\":\"\xff\xfe\"}".to_vec()),
        ("lone surrogate", br#"{"a":"\ud800"}"#.to_vec()),
        ("NaN", br#"{"a":NaN}"#.to_vec()),
        ("number out of range", br#"{"a":1e400}"#.to_vec()),
        ("nul byte", b"{\"a\":\x00}".to_vec()),
        ("100k nested arrays", nested_arrays(100_000).into_bytes()),
        (
            "100k nested objects",
            format!("{}1{}", r#"{"a":"#.repeat(100_000), "}".repeat(100_000)).into_bytes(),
        ),
        ("129 nested arrays", nested_arrays(129).into_bytes()),
    ]
}

#[tokio::test]
async fn malformed_json_is_refused_with_code_4_on_every_route() {
    let _shared = crate::memory::SHARED.read().await;
    let server = TestServer::start().await;
    for (side, method, path) in BODY_ROUTES {
        for (what, body) in malformed() {
            let reply = send_bytes(&server, *side, method, path, body, "").await;
            let what = format!("{side:?} {method} {path}: {what}");
            assert_envelope(&what, &reply, 400, &[4]);
            assert!(
                reply.2["message"].as_str().unwrap_or("").len() < 500,
                "{what}: the message does not echo the body"
            );
        }
    }
    assert_serving(&server).await;
}

/// Valid JSON of the wrong shape for every route: refused with a 4xx envelope, never a 500.
#[tokio::test]
async fn wrongly_typed_json_is_refused_on_every_route() {
    let _shared = crate::memory::SHARED.read().await;
    let server = TestServer::start().await;
    let bodies = [
        json!([]),
        json!("users"),
        json!(42),
        json!(null),
        json!(true),
        json!({"users": 5}),
        json!({"users": []}),
        json!({"users": {}}),
        json!({"users": {"a": 5}}),
        json!({"users": {"a": {"id": 5}}}),
        json!({"users": {"a": {"id": "a", "teams": "x", "role": 7}}}),
        json!({"users": [{"id": ["a"], "set": 1, "unset": "x"}]}),
        json!({"users": [{"id": "a", "set": {"a..b": 1}}]}),
        json!({"users": [5]}),
        json!({"user_ids": "a"}),
        json!({"user_ids": [1, 2]}),
        json!({"user_ids": [], "user": 5}),
        json!({"user": ["x"]}),
        json!({"user": {"id": {"nested": true}}}),
        json!({"enforce_unique_usernames": 5, "revoke_tokens_issued_before": []}),
        json!({"filter_conditions": "x", "limit": -1, "sort": {}}),
    ];
    for (side, method, path) in BODY_ROUTES {
        for body in &bodies {
            let bytes = serde_json::to_vec(body).expect("encodes");
            let reply = send_bytes(&server, *side, method, path, bytes, "").await;
            let (status, _, answer) = &reply;
            let what = format!("{side:?} {method} {path} with {body}");
            if *status == 200 {
                // Reads ignore a body of the wrong shape (GET /users takes it as a query
                // payload), PATCH /app stores unknown keys verbatim.
                assert!(
                    *method == "GET" || *path == "/app",
                    "{what}: accepted: {answer}"
                );
                continue;
            }
            assert_refused(&what, &reply);
        }
    }
    assert_serving(&server).await;
}

/// A dotted key of 100k segments (a 200 KB body) used to overflow the stack and abort the
/// whole gateway; from the public listener any user can send one on their own user.
#[tokio::test]
async fn a_dotted_key_of_100k_segments_is_refused() {
    let _shared = crate::memory::SHARED.read().await;
    let server = TestServer::start().await;
    let users = json!({"users": {"target": {"id": "target"}, crate::USER: {"id": crate::USER}}});
    server
        .admin_ok(reqwest::Method::POST, "/users", Some(users))
        .await;
    let key = vec!["a"; 100_000].join(".");
    for (side, id) in [(Side::Admin, "target"), (Side::User, crate::USER)] {
        for body in [
            json!({"users": [{"id": id, "set": {&key: 1}}]}),
            json!({"users": [{"id": id, "unset": [&key]}]}),
        ] {
            let bytes = serde_json::to_vec(&body).expect("encodes");
            let reply = send_bytes(&server, side, "PATCH", "/users", bytes, "").await;
            assert_envelope(&format!("{side:?} long key"), &reply, 400, &[4]);
        }
    }
    // Values nested past what the store can decode back are refused too.
    let deep = format!(
        r#"{{"users":{{"target":{{"id":"target","deep":{}}}}}}}"#,
        nested_arrays(120)
    );
    let reply = send_bytes(
        &server,
        Side::Admin,
        "POST",
        "/users",
        deep.into_bytes(),
        "",
    )
    .await;
    assert_envelope("120 levels of custom data", &reply, 400, &[4]);
    assert_serving(&server).await;
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413_on_every_route() {
    let _shared = crate::memory::SHARED.read().await;
    let server = TestServer::start_with(|c| c.limits.max_body_bytes = 64 * 1024).await;
    let big = {
        let mut b = br#"{"users":{"a":{"id":"a","blob":""#.to_vec();
        b.extend(std::iter::repeat_n(b'x', 100 * 1024));
        b.extend(br#""}}}"#);
        b
    };
    for (side, method, path) in BODY_ROUTES {
        let reply = send_bytes(&server, *side, method, path, big.clone(), "").await;
        assert_envelope(&format!("{side:?} {method} {path}"), &reply, 413, &[22]);
    }
    // Without Content-Length (chunked), the limit is enforced while reading.
    let mut request =
        crate::raw_request(&server, "POST", "/users", "Transfer-Encoding: chunked\r\n");
    for _ in 0..4 {
        request.extend(format!("{:x}\r\n", 32 * 1024).as_bytes());
        request.extend(std::iter::repeat_n(b' ', 32 * 1024));
        request.extend(b"\r\n");
    }
    request.extend(b"0\r\n\r\n");
    let url = server.admin_url.clone();
    let (status, body) = tokio::task::spawn_blocking(move || raw_http(&url, &request))
        .await
        .expect("raw request");
    assert_eq!(status, 413, "{body}");
    let envelope: serde_json::Value = serde_json::from_str(&body).expect("an envelope");
    assert_eq!(envelope["code"], 22);
    assert_serving(&server).await;
}

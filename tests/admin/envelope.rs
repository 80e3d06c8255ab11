//! §4.1: success and error envelopes, rate-limit headers, body limits and the HTTP quirks the
//! SDKs bring (a body on DELETE, Content-Type on GET, URL-encoded path ids).

use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{assert_error, TestServer};
use crate::{fetch, is_wire_time, upsert, upsert_ok};

fn is_duration(v: &Value) -> bool {
    let Some(s) = v.as_str().and_then(|s| s.strip_suffix("ms")) else {
        return false;
    };
    match s.split_once('.') {
        Some((int, frac)) => {
            !int.is_empty()
                && int.bytes().all(|b| b.is_ascii_digit())
                && frac.len() == 2
                && frac.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

#[tokio::test]
async fn success_carries_a_duration() {
    let srv = TestServer::start().await;
    let body = srv
        .admin_ok(
            Method::POST,
            "/users",
            Some(json!({"users": {"bob": {"id": "bob", "name": "Bob"}}})),
        )
        .await;
    assert!(is_duration(&body["duration"]), "{body}");
    assert_eq!(body["users"]["bob"]["name"], "Bob");
    srv.stop().await;
}

#[tokio::test]
async fn error_envelope_has_exactly_streams_keys() {
    let srv = TestServer::start().await;
    let reply = srv
        .admin(
            Method::POST,
            "/users",
            Some(json!({"users": {"x": {"name": "no id"}}})),
        )
        .await;
    assert_error(
        &reply,
        400,
        4,
        Some("UpdateUsers failed with error: \"user.id is a required field\""),
    );
    let body = reply.2.as_object().unwrap();
    let keys: Vec<&str> = body.keys().map(String::as_str).collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [
            "StatusCode",
            "code",
            "details",
            "duration",
            "exception_fields",
            "message",
            "more_info"
        ]
    );
    assert_eq!(
        body["exception_fields"],
        json!({"user.id": "user.id is a required field"})
    );
    assert_eq!(body["details"], json!([]));
    assert_eq!(
        body["more_info"],
        "https://getstream.io/chat/docs/api_errors_response"
    );
    assert!(is_duration(&body["duration"]));
    assert_eq!(
        reply.1.get("content-type").unwrap().to_str().unwrap(),
        "application/json"
    );
    srv.stop().await;
}

#[tokio::test]
async fn timestamps_are_rfc3339_utc_with_a_fraction() {
    let srv = TestServer::start().await;
    let users = upsert_ok(&srv, &[json!({"id": "t1"})]).await;
    assert!(is_wire_time(&users["t1"]["created_at"]), "{users}");
    assert!(is_wire_time(&users["t1"]["updated_at"]), "{users}");
    srv.stop().await;
}

/// Sends a raw HTTP/1.1 request and returns the response head as the bytes came.
async fn raw_head(addr: &str, request: &str) -> String {
    let host = addr.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    text.split("\r\n\r\n").next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn rate_limit_headers_are_lower_case_on_every_response() {
    let srv = TestServer::start().await;
    let request = format!(
        "GET /app?api_key=test-key HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\
         stream-auth-type: jwt\r\nConnection: close\r\n\r\n",
        srv.server_token
    );
    let head = raw_head(&srv.admin_url, &request).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    for name in [
        "x-ratelimit-limit: ",
        "x-ratelimit-remaining: ",
        "x-ratelimit-reset: ",
    ] {
        assert!(head.contains(name), "{name} missing in\n{head}");
    }
    // Error answers carry them too.
    let head = raw_head(
        &srv.admin_url,
        "GET /app HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(head.contains("x-ratelimit-limit: "), "{head}");

    let num = |h: &reqwest::header::HeaderMap, k: &str| -> u64 {
        h.get(k).unwrap().to_str().unwrap().parse().unwrap()
    };
    // Two requests in the same one-minute window: the second has one fewer left.
    loop {
        let (_, h1, _) = srv.admin(Method::GET, "/app", None).await;
        let (_, h2, _) = srv.admin(Method::GET, "/app", None).await;
        // GetApp's budget (Stream's 10,000 a minute), closer to running out than the
        // per-caller guard of 60,000.
        assert_eq!(num(&h1, "x-ratelimit-limit"), 10000);
        if num(&h1, "x-ratelimit-reset") != num(&h2, "x-ratelimit-reset") {
            continue; // crossed a window boundary between the two
        }
        assert_eq!(
            num(&h1, "x-ratelimit-remaining") - 1,
            num(&h2, "x-ratelimit-remaining")
        );
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let reset = num(&h2, "x-ratelimit-reset");
        assert!(reset > now && reset <= now + 60, "reset {reset} now {now}");
        break;
    }
    srv.stop().await;
}

#[tokio::test]
async fn over_the_rate_limit_is_429_code_9() {
    let srv = TestServer::start_with(|c| c.limits.requests_per_minute = 3).await;
    let reset = |r: &crate::common::Reply| r.1.get("x-ratelimit-reset").cloned();
    // Four requests inside one window (retried if they straddle a minute boundary).
    loop {
        let replies = [
            srv.admin(Method::GET, "/app", None).await,
            srv.admin(Method::GET, "/app", None).await,
            srv.admin(Method::GET, "/app", None).await,
            srv.admin(Method::GET, "/app", None).await,
        ];
        if replies.iter().any(|r| reset(r) != reset(&replies[0])) {
            continue;
        }
        if replies[0].0 != 200 {
            continue; // the previous attempt used up this window
        }
        for r in &replies[..3] {
            assert_eq!(r.0, 200, "{}", r.2);
        }
        assert_error(&replies[3], 429, 9, None);
        assert_eq!(replies[3].1.get("x-ratelimit-remaining").unwrap(), "0");
        assert_eq!(replies[3].1.get("x-ratelimit-limit").unwrap(), "3");
        break;
    }
    srv.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_code_22() {
    let srv = TestServer::start_with(|c| c.limits.max_body_bytes = 2048).await;
    let big = json!({"users": {"big": {"id": "big", "note": "x".repeat(4096)}}});
    let reply = srv.admin(Method::POST, "/users", Some(big)).await;
    assert_error(&reply, 413, 22, None);
    assert_eq!(fetch(&srv, "big").await, None, "nothing was written");
    // Just under the limit passes.
    let small = json!({"users": {"small": {"id": "small", "note": "x".repeat(1500)}}});
    let (status, _, body) = srv.admin(Method::POST, "/users", Some(small)).await;
    assert_eq!(status, 200, "{body}");
    srv.stop().await;
}

#[tokio::test]
async fn custom_data_over_5_kib_is_413_code_22() {
    let srv = TestServer::start().await;
    // 5 KiB of custom data in total, JSON-encoded: `{"note":"…"}` is 11 bytes of framing.
    let fits = json!({"id": "fits", "note": "x".repeat(5 * 1024 - 11)});
    upsert_ok(&srv, &[fits]).await;
    let over = json!({"id": "over", "note": "x".repeat(5 * 1024 - 10)});
    assert_error(&upsert(&srv, &[over]).await, 413, 22, None);
    assert_eq!(fetch(&srv, "over").await, None);
    // Through a partial update too, and the stored user stays as it was.
    let reply = crate::partial(&srv, json!([{"id": "fits", "set": {"more": "y"}}])).await;
    assert_error(&reply, 413, 22, None);
    let stored = fetch(&srv, "fits").await.unwrap();
    assert_eq!(stored.get("more"), None);
    // Built-in fields do not count as custom data: they have bounds of their own (a name
    // over 1 KiB is an input error, code 4).
    let named = json!({"id": "named", "name": "n".repeat(1024), "note": "x".repeat(5000)});
    upsert_ok(&srv, &[named]).await;
    let named = json!({"id": "named", "name": "n".repeat(6000)});
    assert_error(&upsert(&srv, &[named]).await, 400, 4, None);
    srv.stop().await;
}

#[tokio::test]
async fn delete_accepts_a_body_and_get_a_content_type() {
    let srv = TestServer::start().await;
    upsert_ok(&srv, &[json!({"id": "del-me"})]).await;
    let (status, _, body) = srv
        .admin(Method::DELETE, "/users/del-me", Some(json!({})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(is_wire_time(&body["user"]["deleted_at"]), "{body}");
    // reqwest sets `Content-Type: application/json` with a JSON body; an empty object on a
    // GET is what the async Python client sends.
    let path = format!(
        "/users?payload={}",
        crate::common::encode(&json!({"filter_conditions": {}}).to_string())
    );
    let (status, _, body) = srv.admin(Method::GET, &path, Some(json!({}))).await;
    assert_eq!(status, 200, "{body}");
    srv.stop().await;
}

#[tokio::test]
async fn path_ids_arrive_raw_or_url_encoded() {
    let srv = TestServer::start().await;
    upsert_ok(&srv, &[json!({"id": "a@b"}), json!({"id": "c@d"})]).await;
    let (status, _, body) = srv.admin(Method::GET, "/users/a%40b/export", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["id"], "a@b");
    let (status, _, body) = srv.admin(Method::GET, "/users/c@d/export", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["id"], "c@d");
    srv.stop().await;
}

#[tokio::test]
async fn invalid_json_is_code_4() {
    let srv = TestServer::start().await;
    let resp = srv
        .http
        .post(format!("{}/users?api_key=test-key", srv.admin_url))
        .header("Authorization", &srv.server_token)
        .header("stream-auth-type", "jwt")
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 4);
    srv.stop().await;
}

#[tokio::test]
async fn a_query_string_over_the_header_limit_is_431_code_24() {
    let srv = TestServer::start().await;
    // The default limit is 16 KiB for the query string or the header section.
    let filter = json!({"filter_conditions": {"id": {"$in": vec!["x".repeat(50); 400]}}});
    let reply = crate::query(&srv, filter).await;
    assert_error(&reply, 431, 24, None);
    let resp = srv
        .http
        .get(format!("{}/app?api_key=test-key", srv.admin_url))
        .header("Authorization", &srv.server_token)
        .header("stream-auth-type", "jwt")
        .header("x-padding", "p".repeat(20_000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 24);
    // A large but acceptable query passes.
    let filter = json!({"filter_conditions": {"id": {"$in": vec!["x".repeat(50); 100]}}});
    let (status, _, body) = crate::query(&srv, filter).await;
    assert_eq!(status, 200, "{body}");
    srv.stop().await;
}

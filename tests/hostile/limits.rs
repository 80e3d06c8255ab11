//! Oversized query strings and headers, requests hyper refuses before the router, and
//! requests for routes or methods that do not exist.

use reqwest::Method;
use serde_json::Value;

use crate::common::TestServer;
use crate::{assert_envelope, assert_serving, raw_http, raw_request, send_bytes, Side};

/// What a raw request got: status and the body parsed as JSON (`Null` if it is not).
async fn raw(url: &str, request: Vec<u8>) -> (u16, Value) {
    let url = url.to_owned();
    let (status, body) = tokio::task::spawn_blocking(move || raw_http(&url, &request))
        .await
        .expect("raw request");
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[track_caller]
fn assert_431(what: &str, (status, body): &(u16, Value)) {
    assert_eq!(*status, 431, "{what}: {body}");
    assert_eq!(body["code"], 24, "{what}: {body}");
    assert_eq!(body["StatusCode"], 431, "{what}: {body}");
}

/// Over `limits.max_header_bytes` (16 KiB by default) but under hyper's own limits: the
/// gateway answers 431 with code 24 in the envelope, on both listeners.
#[tokio::test]
async fn query_strings_and_headers_over_the_limit_get_431_code_24() {
    let _shared = crate::memory::SHARED.read().await;
    let server = TestServer::start().await;
    let long = "a".repeat(20 * 1024);
    for url in [&server.admin_url, &server.public_url] {
        let query = raw(
            url,
            raw_request(&server, "GET", &format!("/app?x={long}"), ""),
        )
        .await;
        assert_431(&format!("{url} query"), &query);
        let header = raw(
            url,
            raw_request(&server, "GET", "/app", &format!("x-big: {long}\r\n")),
        )
        .await;
        assert_431(&format!("{url} header"), &header);
        let many: String = (0..90)
            .map(|i| format!("x-h{i}: {}\r\n", "b".repeat(200)))
            .collect();
        let headers = raw(url, raw_request(&server, "GET", "/app", &many)).await;
        assert_431(&format!("{url} 90 headers of 200 bytes"), &headers);
    }
    // A query payload that large is refused before it is parsed.
    let payload = format!("{{\"filter_conditions\":{{\"id\":{{\"$in\":[\"{long}\"]}}}}}}");
    let reply = send_bytes(
        &server,
        Side::Admin,
        "GET",
        &format!("/users?payload={}", crate::common::encode(&payload)),
        Vec::new(),
        "",
    )
    .await;
    assert_envelope("large query payload", &reply, 431, &[24]);
    // Just under the limit is served.
    let ok = raw(
        &server.admin_url,
        raw_request(&server, "GET", &format!("/app?x={}", &long[..8 * 1024]), ""),
    )
    .await;
    assert_eq!(ok.0, 200, "{}", ok.1);
    assert_serving(&server).await;
}

/// Past hyper's own limits (URI over 64 KiB, more than 100 headers, a head over ~400 KiB,
/// garbage) hyper answers before the router runs: the right status with an empty body, and
/// the connection closed. The gateway keeps serving.
#[tokio::test]
async fn hyper_refuses_what_it_cannot_parse_and_the_server_keeps_serving() {
    let _shared = crate::memory::SHARED.read().await;
    let server = TestServer::start().await;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "70 KiB URI",
            raw_request(
                &server,
                "GET",
                &format!("/app?x={}", "a".repeat(70 * 1024)),
                "",
            ),
            414,
        ),
        (
            "150 headers",
            raw_request(
                &server,
                "GET",
                "/app",
                &(0..150)
                    .map(|i| format!("x-h{i}: v\r\n"))
                    .collect::<String>(),
            ),
            431,
        ),
        (
            "500 KiB header",
            raw_request(
                &server,
                "GET",
                "/app",
                &format!("x-big: {}\r\n", "a".repeat(500 * 1024)),
            ),
            431,
        ),
        ("garbage request line", b"GARBAGE\r\n\r\n".to_vec(), 400),
        (
            "bad content-length",
            raw_request(&server, "POST", "/users", "Content-Length: abc\r\n"),
            400,
        ),
        (
            "bad chunk size",
            {
                let mut r =
                    raw_request(&server, "POST", "/users", "Transfer-Encoding: chunked\r\n");
                r.extend(b"zz\r\n{}\r\n0\r\n\r\n");
                r
            },
            400,
        ),
    ];
    for url in [&server.admin_url, &server.public_url] {
        for (what, request, status) in &cases {
            let got = raw(url, request.clone()).await;
            assert_eq!(got.0, *status, "{url} {what}: {:?}", got.1);
            if got.1 != Value::Null {
                assert!(
                    got.1["code"].is_i64(),
                    "{url} {what}: a body is an envelope: {}",
                    got.1
                );
            }
        }
    }
    assert_serving(&server).await;
}

/// Unknown routes, known routes with another method, and plain HTTP on the WebSocket
/// routes: all answered in the envelope (no empty 405, no plain-text rejection).
#[tokio::test]
async fn unknown_routes_methods_and_plain_http_on_websocket_routes_get_envelopes() {
    let _shared = crate::memory::SHARED.read().await;
    let server = TestServer::start().await;
    let cases = [
        (Side::Admin, "GET", "/nope", 404, 16),
        (Side::Admin, "PUT", "/users", 404, 16),
        (Side::Admin, "DELETE", "/app", 404, 16),
        (Side::Admin, "POST", "/healthz", 404, 16),
        (Side::Admin, "GET", "/ws", 400, 4),
        (Side::User, "PUT", "/users", 404, 16),
        (Side::User, "DELETE", "/users", 404, 16),
        (Side::User, "GET", "/nope/../../etc/passwd", 404, 16),
        (Side::User, "POST", "/connect", 404, 16),
        (Side::User, "GET", "/connect", 400, 4),
    ];
    for (side, method, path, status, code) in cases {
        let reply = send_bytes(&server, side, method, path, Vec::new(), "").await;
        assert_envelope(
            &format!("{side:?} {method} {path}"),
            &reply,
            status,
            &[code],
        );
    }
    let (status, _, body) = server.admin(Method::GET, "/app", None).await;
    assert_eq!(status, 200, "{body}");
}

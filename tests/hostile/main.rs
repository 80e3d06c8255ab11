//! Hostile input against a gateway served in-process: malformed, truncated, wrongly typed and
//! deeply nested JSON on every REST route of both listeners, oversized bodies, query strings
//! and headers, odd path ids, bad WebSocket frames on `/connect`, oversized users, expensive
//! or oversized queries, and floods of guests. Every case must get a clear refusal (Stream's
//! error envelope with the right code, or a WebSocket close code), the server must keep
//! serving, and memory must stay bounded.

#[path = "../common/mod.rs"]
mod common;
use common::ws;

mod bodies;
mod frames;
mod guests;
mod ids;
mod limits;
mod memory;
mod profiles;
mod queries;
mod users;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use common::{Api, Creds, Reply};

/// Which listener a route lives on, and the credentials it is called with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Admin listener, server token.
    Admin,
    /// Public listener, a user token (user `hostile-user`).
    User,
    /// Public listener, anonymous.
    Anonymous,
}

/// Every route that reads a JSON body: (side, method, path).
pub const BODY_ROUTES: &[(Side, &str, &str)] = &[
    (Side::Admin, "POST", "/users"),
    (Side::Admin, "PATCH", "/users"),
    (Side::Admin, "GET", "/users"),
    (Side::Admin, "POST", "/users/delete"),
    (Side::Admin, "POST", "/users/restore"),
    (Side::Admin, "POST", "/users/deactivate"),
    (Side::Admin, "POST", "/users/reactivate"),
    (Side::Admin, "DELETE", "/users/target"),
    (Side::Admin, "POST", "/users/target/deactivate"),
    (Side::Admin, "POST", "/users/target/reactivate"),
    (Side::Admin, "GET", "/users/target/export"),
    (Side::Admin, "POST", "/export/users"),
    (
        Side::Admin,
        "GET",
        "/tasks/00000000-0000-4000-8000-000000000000",
    ),
    (Side::Admin, "GET", "/app"),
    (Side::Admin, "PATCH", "/app"),
    (Side::Admin, "POST", "/guest"),
    (Side::User, "POST", "/users"),
    (Side::User, "PATCH", "/users"),
    (Side::Anonymous, "POST", "/guest"),
];

/// The user the public routes act as.
pub const USER: &str = "hostile-user";

/// Base URL and credentials of a side.
pub fn side(api: &Api, side: Side) -> (String, Creds) {
    match side {
        Side::Admin => (api.admin_url.clone(), api.server_creds()),
        Side::User => (
            api.public_url.clone(),
            Creds {
                api_key: Some(api.api_key.clone()),
                token: Some(api.user_token(USER)),
                auth_type: Some("jwt".into()),
            },
        ),
        Side::Anonymous => (
            api.public_url.clone(),
            Creds {
                api_key: Some(api.api_key.clone()),
                token: None,
                auth_type: Some("anonymous".into()),
            },
        ),
    }
}

/// Sends raw body bytes (no JSON encoding) with the side's credentials.
pub async fn send_bytes(
    api: &Api,
    s: Side,
    method: &str,
    path: &str,
    body: Vec<u8>,
    extra_query: &str,
) -> Reply {
    let (base, creds) = side(api, s);
    let sep = if path.contains('?') { '&' } else { '?' };
    let url = format!(
        "{base}{path}{sep}api_key={}{extra_query}",
        common::encode(creds.api_key.as_deref().unwrap_or(""))
    );
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = api
        .http
        .request(method, &url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = &creds.token {
        req = req.header("Authorization", t);
    }
    if let Some(a) = &creds.auth_type {
        req = req.header("stream-auth-type", a);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("response body");
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Asserts that a reply is Stream's error envelope with this status and one of `codes`.
#[track_caller]
pub fn assert_envelope(what: &str, reply: &Reply, status: u16, codes: &[i64]) {
    let (got, _, body) = reply;
    assert_eq!(*got, status, "{what}: status; body {body}");
    let code = body["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("{what}: not an error envelope: {body}"));
    assert!(codes.contains(&code), "{what}: code {code}; body {body}");
    assert_eq!(
        body["StatusCode"], status,
        "{what}: StatusCode; body {body}"
    );
    assert!(body["message"].is_string(), "{what}: message; body {body}");
    assert!(
        body["duration"].is_string(),
        "{what}: duration; body {body}"
    );
}

/// Asserts a refusal of any kind: a 4xx envelope whose `StatusCode` matches (never a 5xx,
/// never a bare body).
#[track_caller]
pub fn assert_refused(what: &str, reply: &Reply) {
    let (got, _, body) = reply;
    assert!(
        (400..500).contains(got),
        "{what}: status {got}; body {body}"
    );
    assert_envelope(what, reply, *got, &[2, 4, 5, 6, 16, 17, 22, 24, 43]);
}

/// Both listeners still answer, and a normal write and read succeed.
pub async fn assert_serving(api: &Api) {
    let id = ws::uid("alive");
    let body = json!({"users": {&id: {"id": &id, "name": "Still Here"}}});
    api.admin_ok(Method::POST, "/users", Some(body)).await;
    let payload = json!({"filter_conditions": {"id": &id}});
    let path = format!("/users?payload={}", common::encode(&payload.to_string()));
    let found = api.admin_ok(Method::GET, &path, None).await;
    assert_eq!(found["users"][0]["id"], id.as_str(), "{found}");
    let (status, _) = api.get_url(&format!("{}/healthz", api.public_url)).await;
    assert_eq!(status, 200);
}

/// One raw HTTP/1.1 exchange: writes `request`, reads until the server closes (or 10 s);
/// returns the status (0 when none arrived) and the body.
pub fn raw_http(url: &str, request: &[u8]) -> (u16, String) {
    let addr = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // The server may answer and close before it has read everything: ignore write errors.
    let _ = stream.write_all(request);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A raw request head with the server credentials, `Connection: close`, and `extra` lines.
pub fn raw_request(api: &Api, method: &str, target: &str, extra: &str) -> Vec<u8> {
    let sep = if target.contains('?') { '&' } else { '?' };
    format!(
        "{method} {target}{sep}api_key={} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nstream-auth-type: jwt\r\nConnection: close\r\n{extra}\r\n",
        api.api_key, api.server_token
    )
    .into_bytes()
}

/// `levels` nested arrays around `1`.
pub fn nested_arrays(levels: usize) -> String {
    format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
}

//! The admin REST API as a back end calls it: `api_key` in the query, the server token in
//! `Authorization`, `stream-auth-type: jwt`. Every answer is classified as acknowledged,
//! refused (an error envelope) or lost (no complete answer: the outcome is unknown).

use std::net::SocketAddr;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{json, Value};

/// What became of one request.
#[derive(Debug)]
pub enum Outcome {
    /// HTTP 200 with a complete JSON body: the write is acknowledged.
    Acked(Value),
    /// An error envelope: the write was refused and must leave no trace.
    Refused {
        /// HTTP status.
        status: u16,
        /// Stream error code (`-100` when the body has none).
        code: i64,
        /// The body.
        body: Value,
    },
    /// No complete answer (the gateway died): the write may or may not have happened.
    Lost(String),
}

/// A server-side client of one gateway's admin listener.
#[derive(Clone)]
pub struct Admin {
    base: String,
    api_key: String,
    token: String,
    http: reqwest::Client,
}

/// A server token (`{"server":true}`, HS256) for `secret`.
pub fn server_token(secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"server": true}),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}

impl Admin {
    /// A client of the admin listener at `addr`.
    pub fn new(addr: SocketAddr, api_key: &str, secret: &str) -> Self {
        Self {
            base: format!("http://{addr}"),
            api_key: api_key.to_owned(),
            token: server_token(secret),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("HTTP client builds"),
        }
    }

    /// Calls `path` (which may carry its own query) with the server credentials.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Outcome {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!("{}{path}{sep}api_key={}", self.base, encode(&self.api_key));
        let mut req = self
            .http
            .request(method, &url)
            .header("Authorization", &self.token)
            .header("stream-auth-type", "jwt");
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Outcome::Lost(error_chain(&e)),
        };
        let status = resp.status().as_u16();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return Outcome::Lost(format!("body of a {status}: {}", error_chain(&e))),
        };
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status == 200 && body.is_object() {
            Outcome::Acked(body)
        } else {
            let code = body.get("code").and_then(Value::as_i64).unwrap_or(-100);
            Outcome::Refused { status, code, body }
        }
    }

    /// `GET /users?payload=...`: the users answered, or why not.
    pub async fn query(&self, payload: &Value) -> Result<Vec<Value>, String> {
        let path = format!("/users?payload={}", encode(&payload.to_string()));
        match self.call(Method::GET, &path, None).await {
            Outcome::Acked(body) => body["users"]
                .as_array()
                .cloned()
                .ok_or_else(|| format!("query answered without users: {body}")),
            other => Err(format!("query failed: {other:?}")),
        }
    }
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Percent-encodes a query component.
pub fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

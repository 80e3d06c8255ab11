//! What both listeners share at the HTTP edge: Stream's success and error envelopes, the JSON
//! body reader with its size limit, and credential extraction. (Rate limits: `ratelimit`.)

use std::time::Instant;

use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::protocol::time::duration_text;
use crate::protocol::{ApiError, ErrorCode};

/// Largest body a request may carry, put into the request by the listener.
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);

/// Time a request body may take to arrive in full, put into the request by the listener.
/// A total deadline, not one per read: a body trickled a byte at a time must not hold its
/// socket (and a descriptor of the budget) for longer than this.
#[derive(Clone, Copy)]
pub struct BodyTimeout(pub std::time::Duration);

/// Without a [`BodyTimeout`] in the request (a router served on its own, in tests).
const DEFAULT_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.code == ErrorCode::Internal {
            tracing::error!(error = %self.detail, "internal error");
        }
        let status = StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::BAD_REQUEST);
        let body = serde_json::to_vec(&self.envelope("0.00ms")).expect("envelope encodes");
        json_response(status, body)
    }
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A success body: the object with `duration` appended.
pub fn ok(mut body: Map<String, Value>, started: Instant) -> Response {
    body.insert(
        "duration".into(),
        Value::String(duration_text(started.elapsed())),
    );
    json_response(
        StatusCode::OK,
        serde_json::to_vec(&Value::Object(body)).expect("body encodes"),
    )
}

/// `GET /healthz` on both listeners: 200 `ok` while the store takes writes; 503 with
/// `{"status":"degraded","reason":...}` while it refuses them (reads and connects of existing
/// users still work, so this is a readiness signal: restarting cannot free a full volume).
pub fn healthz(svc: &crate::users::UsersService) -> Response {
    match svc.store_health() {
        crate::store::StoreHealth::Ok => "ok".into_response(),
        crate::store::StoreHealth::Degraded(reason) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::to_vec(&serde_json::json!({"status": "degraded", "reason": reason}))
                .expect("health encodes"),
        ),
    }
}

/// A JSON request body, read under the listener's size limit. An empty body reads as `{}`.
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map(|l| l.0)
            .unwrap_or(1 << 20);
        if let Some(len) = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
        {
            if len > limit {
                drain_announced(req, len, limit).await;
                return Err(too_big(limit));
            }
        }
        let timeout = req
            .extensions()
            .get::<BodyTimeout>()
            .map_or(DEFAULT_BODY_TIMEOUT, |t| t.0);
        let read = axum::body::to_bytes(req.into_body(), limit);
        let bytes = tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| body_timed_out(timeout))?
            .map_err(|e| {
                // Either the body itself failed (malformed chunking, a client that went
                // away: axum's own error inside) or it passed the length limit.
                let read_failed =
                    std::error::Error::source(&e).is_some_and(|s| s.is::<axum::Error>());
                if read_failed {
                    ApiError::input(format!("the request body could not be read: {e}"))
                } else {
                    too_big(limit)
                }
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(Value::Object(Map::new())));
        }
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::input(format!("invalid JSON body: {e}")))?;
        Ok(Self(value))
    }
}

/// The body did not arrive in time: 408, code 23. The body is left unread, so hyper closes
/// the connection after the answer.
fn body_timed_out(timeout: std::time::Duration) -> ApiError {
    metrics::counter!("http_body_timeouts").increment(1);
    ApiError::new(
        ErrorCode::RequestTimeout,
        format!(
            "the request body did not arrive within {} s",
            timeout.as_secs_f64()
        ),
    )
}

/// Reads and discards a body announced too large, when it is at most four times the limit,
/// under the body deadline: a client still sending it then reads the 413 instead of a
/// connection reset (the answer and the close would otherwise meet its writes). Larger
/// bodies are refused at once.
async fn drain_announced(req: Request, len: usize, limit: usize) {
    use futures_util::StreamExt;
    if len > limit.saturating_mul(4) {
        return;
    }
    let timeout = req
        .extensions()
        .get::<BodyTimeout>()
        .map_or(DEFAULT_BODY_TIMEOUT, |t| t.0);
    let mut chunks = req.into_body().into_data_stream();
    let drain = async {
        let mut seen = 0usize;
        while let Some(Ok(chunk)) = chunks.next().await {
            seen += chunk.len();
            if seen >= len {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(timeout, drain).await;
}

fn too_big(limit: usize) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooBig,
        format!("request body is larger than the limit of {limit} bytes"),
    )
}

/// A `{id}` path segment, percent-decoded. Undecodable segments (invalid UTF-8) are refused
/// in Stream's envelope (code 4) rather than with axum's plain-text rejection.
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(Self(id)),
            Err(e) => Err(ApiError::input(format!("invalid path: {}", e.body_text()))),
        }
    }
}

/// A WebSocket upgrade. A plain HTTP request to a WebSocket route is refused in Stream's
/// envelope (code 4) rather than with axum's plain-text rejection.
pub struct WsUpgrade(pub WebSocketUpgrade);

impl<S: Send + Sync> FromRequestParts<S> for WsUpgrade {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match WebSocketUpgrade::from_request_parts(parts, state).await {
            Ok(ws) => Ok(Self(ws)),
            Err(e) => Err(ApiError::input(format!(
                "{} is a WebSocket endpoint: {}",
                parts.uri.path(),
                e.body_text()
            ))),
        }
    }
}

/// Middleware: refuses a request whose query string or header section is larger than the
/// limit (`limits.max_header_bytes`) with 431, code 24. Requests past hyper's own limits
/// (a 64 KiB URI, 100 headers, a ~400 KiB head) are answered by hyper before this runs:
/// 414 or 431 with an empty body, and the connection closed.
pub async fn limit_headers(State(max): State<usize>, req: Request, next: Next) -> Response {
    let query = req.uri().query().map_or(0, str::len);
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if query > max || headers > max {
        return ApiError::new(
            ErrorCode::HeadersTooLarge,
            format!("the query string or headers are larger than the limit of {max} bytes"),
        )
        .into_response();
    }
    next.run(req).await
}

/// Answer for a known path with a method it does not serve (instead of an empty 405).
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        ErrorCode::DoesNotExist,
        format!("no such route: {method} {}", uri.path()),
    )
}

/// The query string as a map (form-decoded: `+` is a space); repeated keys keep the last.
pub fn query_map(query: Option<&str>) -> std::collections::HashMap<String, String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// Credentials a REST request carries.
pub struct Credentials {
    /// `api_key` query parameter.
    pub api_key: Option<String>,
    /// `Authorization` header (raw JWT).
    pub token: Option<String>,
    /// `stream-auth-type` header.
    pub auth_type: Option<String>,
}

impl Credentials {
    /// Reads them from a request's query map and headers.
    pub fn from_parts(
        query: &std::collections::HashMap<String, String>,
        headers: &HeaderMap,
    ) -> Self {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        // WebSocket clients cannot set headers: they carry the same values as query parameters.
        Self {
            api_key: query.get("api_key").cloned(),
            token: header("authorization")
                .or_else(|| query.get("authorization").cloned())
                .filter(|t| !t.is_empty() && t != "undefined" && t != "null"),
            auth_type: header("stream-auth-type")
                .or_else(|| query.get("stream-auth-type").cloned()),
        }
    }
}

/// Middleware: records request latency per route.
pub async fn observe(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let resp = next.run(req).await;
    metrics::histogram!("http_request_seconds", "method" => method.clone(), "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    tracing::debug!(%method, %route, status = resp.status().as_u16(), "request");
    resp
}

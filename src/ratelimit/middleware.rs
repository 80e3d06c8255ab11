//! The middleware both listeners run every request through: it names the endpoint, the
//! caller and the platform, counts the request, refuses it past a budget (429, code 9, in
//! Stream's envelope) and puts the `x-ratelimit-*` headers on every answer.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{Caller, Endpoint, Platform, Presented, RateLimits, Verdict};
use crate::http::{query_map, Credentials};
use crate::protocol::{ApiError, ErrorCode};

/// The limiter as one listener uses it.
#[derive(Clone)]
pub struct ListenerLimits {
    /// The node's budgets, shared by both listeners.
    pub limits: Arc<RateLimits>,
    /// Whether this is the admin listener (which routes it serves, who counts as a caller).
    pub admin: bool,
}

/// The answer to a request over a budget.
pub fn too_many_requests() -> ApiError {
    ApiError::new(
        ErrorCode::RateLimited,
        "Too many requests, check response headers",
    )
}

/// Puts a verdict's budget on an answer as `x-ratelimit-limit`, `-remaining` and `-reset`.
pub fn put_headers(resp: &mut Response, verdict: &Verdict) {
    if let Some(count) = verdict.shown {
        let h = resp.headers_mut();
        h.insert("x-ratelimit-limit", HeaderValue::from(count.limit));
        h.insert("x-ratelimit-remaining", HeaderValue::from(count.remaining));
        h.insert("x-ratelimit-reset", HeaderValue::from(count.reset));
    }
}

/// Middleware: counts the request and answers 429 past a budget.
pub async fn rate_limit(
    State(listener): State<ListenerLimits>,
    req: Request,
    next: Next,
) -> Response {
    let endpoint = Endpoint::of_request(listener.admin, req.method(), req.uri().path());
    let query = query_map(req.uri().query());
    let creds = Credentials::from_parts(&query, req.headers());
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let presented = Presented {
        token: creds.token.as_deref(),
        auth_type: creds.auth_type.as_deref(),
        api_key: creds.api_key.as_deref(),
        peer,
    };
    let limits = &listener.limits;
    let caller = limits.caller(listener.admin, presented);
    let platform = match caller {
        Caller::Server => Platform::ServerSide,
        _ => {
            // Browsers cannot set headers on a WebSocket: `/connect` carries it in the query.
            let client = req
                .headers()
                .get("x-stream-client")
                .and_then(|v| v.to_str().ok())
                .or_else(|| query.get("X-Stream-Client").map(String::as_str));
            Platform::of_client(client)
        }
    };
    // `/connect` has its own per-address connect limits instead of the per-caller guard.
    let guard = endpoint != Some(Endpoint::CONNECT);
    let verdict = limits.admit(&caller, platform, endpoint, guard);
    let mut resp = if verdict.refused {
        metrics::counter!(
            "http_rate_limited",
            "endpoint" => endpoint.map_or("other", Endpoint::name),
            "platform" => platform.key()
        )
        .increment(1);
        too_many_requests().into_response()
    } else {
        next.run(req).await
    };
    put_headers(&mut resp, &verdict);
    resp
}

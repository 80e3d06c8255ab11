//! Admin REST routes: each decodes the request into an [`OpRequest`], calls the dispatch
//! table, and encodes the answer in Stream's envelope. Everything but `/healthz`, `/metrics`
//! and export downloads (capability URLs) requires the server token.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::Uri;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;

use super::ops::{dispatch, OpRequest};
use super::AdminState;
use crate::auth::Identity;
use crate::http::{self, Credentials, JsonBody, PathId};
use crate::protocol::{ApiError, ErrorCode};
use crate::ratelimit::middleware::{rate_limit, ListenerLimits};
use crate::users::UsersService;

/// Checks the server token on an admin request: api key, auth type and a server token.
pub async fn require_server(svc: &UsersService, creds: &Credentials) -> Result<(), ApiError> {
    match creds.api_key.as_deref() {
        Some(k) if k == svc.api_key() => {}
        _ => return Err(ApiError::new(ErrorCode::ApiKey, "api_key not found")),
    }
    if !creds
        .auth_type
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("jwt"))
    {
        return Err(ApiError::new(
            ErrorCode::AuthFailed,
            "stream-auth-type must be jwt on the admin listener",
        ));
    }
    let token = creds
        .token
        .as_deref()
        .ok_or_else(|| ApiError::new(ErrorCode::AuthFailed, "Authorization header is missing"))?;
    match svc.authenticate(token).await? {
        Identity::Server => Ok(()),
        Identity::User(_) => Err(ApiError::new(
            ErrorCode::AuthFailed,
            "user tokens are not accepted on the admin listener",
        )),
    }
}

async fn server_auth(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let query = http::query_map(req.uri().query());
    let creds = Credentials::from_parts(&query, req.headers());
    match require_server(&state.svc, &creds).await {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn run(
    state: &AdminState,
    op: &'static str,
    id: Option<String>,
    uri: &Uri,
    body: serde_json::Value,
) -> Response {
    let started = Instant::now();
    let req = OpRequest {
        id,
        params: http::query_map(uri.query()),
        body,
        base_url: state.base_url.clone(),
    };
    match dispatch(&state.svc, op, req).await {
        Ok(out) => http::ok(out, started),
        Err(e) => e.into_response(),
    }
}

macro_rules! op {
    ($op:literal) => {
        |State(s): State<AdminState>, uri: Uri, JsonBody(body): JsonBody| async move {
            run(&s, $op, None, &uri, body).await
        }
    };
    ($op:literal, id) => {
        |State(s): State<AdminState>,
         PathId(id): PathId,
         uri: Uri,
         JsonBody(body): JsonBody| async move { run(&s, $op, Some(id), &uri, body).await }
    };
}

async fn healthz(State(s): State<AdminState>) -> Response {
    http::healthz(&s.svc)
}

async fn metrics_text(State(s): State<AdminState>) -> Response {
    match &s.metrics {
        Some(h) => h.render().into_response(),
        None => "".into_response(),
    }
}

/// `GET /rate_limits`: the app's budgets (this request already counted).
async fn rate_limits(State(s): State<AdminState>, uri: Uri) -> Response {
    let started = Instant::now();
    match crate::ratelimit::report::rate_limits(&s.rate_limits, &http::query_map(uri.query())) {
        Ok(out) => http::ok(out, started),
        Err(e) => e.in_operation("GetRateLimits").into_response(),
    }
}

async fn export_download(State(s): State<AdminState>, PathId(file): PathId) -> Response {
    let started = Instant::now();
    let id = file.trim_end_matches(".json");
    match s.svc.export_document(id).await {
        Ok(serde_json::Value::Object(doc)) => http::ok(doc, started),
        Ok(_) => ApiError::internal("export is not an object").into_response(),
        Err(e) => e.into_response(),
    }
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    let limits = ListenerLimits {
        limits: state.rate_limits.clone(),
        admin: true,
    };
    let authed = Router::new()
        .route(
            "/users",
            post(op!("upsertUsers"))
                .patch(op!("partialUpdateUsers"))
                .get(op!("queryUsers")),
        )
        .route("/users/delete", post(op!("deleteUsers")))
        .route("/users/restore", post(op!("restoreUsers")))
        .route("/users/deactivate", post(op!("deactivateUsers")))
        .route("/users/reactivate", post(op!("reactivateUsers")))
        .route("/users/{id}", delete(op!("deleteUser", id)))
        .route("/users/{id}/deactivate", post(op!("deactivateUser", id)))
        .route("/users/{id}/reactivate", post(op!("reactivateUser", id)))
        .route("/users/{id}/export", get(op!("exportUser", id)))
        .route("/users/{id}/event", post(op!("sendUserCustomEvent", id)))
        .route("/moderation/mute", post(op!("muteUser")))
        .route("/moderation/unmute", post(op!("unmuteUser")))
        .route(
            "/users/block",
            post(op!("blockUser")).get(op!("getBlockedUsers")),
        )
        .route("/users/unblock", post(op!("unblockUser")))
        .route(
            "/moderation/ban",
            post(op!("banUser")).delete(op!("unbanUser")),
        )
        .route("/query_banned_users", get(op!("queryBannedUsers")))
        .route("/export/users", post(op!("exportUsers")))
        .route("/tasks/{id}", get(op!("getTask", id)))
        .route("/app", get(op!("getApp")).patch(op!("updateApp")))
        .route("/guest", post(op!("createGuest")))
        .route("/rate_limits", get(rate_limits))
        .route("/ws", get(super::ws::upgrade))
        .route_layer(middleware::from_fn_with_state(state.clone(), server_auth));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/exports/users/{file}", get(export_download))
        .merge(authed)
        .fallback(|| async { ApiError::new(ErrorCode::DoesNotExist, "no such route") })
        .method_not_allowed_fallback(http::method_not_allowed)
        .layer(middleware::from_fn(http::observe))
        .layer(middleware::from_fn_with_state(limits, rate_limit))
        .with_state(state)
}

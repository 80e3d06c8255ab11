//! Client-side REST on the public listener: guests, the caller's own user, queries, and the
//! server-side-only routes a client may call by mistake (refused in Stream's envelope).
//! Anonymous callers may only query.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::GatewayState;
use crate::admin::ops::{dispatch_as, OpRequest};
use crate::auth::{Identity, TokenClaims};
use crate::http::{self, Credentials, JsonBody};
use crate::protocol::{ApiError, ErrorCode};
use crate::users::access::{authorize, Action};
use crate::users::requests::{CreateGuest, PartialUpdate, UpsertUsers};
use crate::users::{Caller, UsersService};

/// Authenticates a client request: api key, then a user token (`jwt`) or nobody
/// (`anonymous`). A `user_id` query parameter must name the token's user.
async fn caller(
    svc: &UsersService,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    let creds = Credentials::from_parts(query, headers);
    match creds.api_key.as_deref() {
        Some(k) if k == svc.api_key() => {}
        _ => return Err(ApiError::new(ErrorCode::ApiKey, "api_key not found")),
    }
    match creds.auth_type.as_deref() {
        Some("anonymous") => Ok(Caller::Anonymous),
        Some("jwt") => {
            let token = creds.token.ok_or_else(|| {
                ApiError::new(ErrorCode::AuthFailed, "JWTAuth error: token is missing")
            })?;
            match svc.authenticate(&token).await? {
                Identity::User(TokenClaims { user_id, .. }) => {
                    if query.get("user_id").is_some_and(|q| q != &user_id) {
                        return Err(ApiError::new(
                            ErrorCode::AuthFailed,
                            "user_id does not match the token",
                        ));
                    }
                    Ok(Caller::User(user_id))
                }
                Identity::Server => Err(ApiError::new(
                    ErrorCode::AuthFailed,
                    "server tokens are only accepted on the admin listener",
                )),
            }
        }
        _ => Err(ApiError::new(
            ErrorCode::AuthFailed,
            "stream-auth-type must be jwt or anonymous",
        )),
    }
}

fn respond(result: Result<Map<String, Value>, ApiError>, started: Instant) -> Response {
    match result {
        Ok(body) => http::ok(body, started),
        Err(e) => e.into_response(),
    }
}

/// `POST /guest`: no token needed; the gateway mints one for the new guest. Each request
/// with the right api key counts against the guest quota of its address and of the listener.
pub async fn guest(
    State(state): State<GatewayState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Response {
    let started = Instant::now();
    let query = http::query_map(uri.query());
    let result = async {
        let creds = Credentials::from_parts(&query, &headers);
        if creds.api_key.as_deref() != Some(state.svc.api_key()) {
            return Err(ApiError::new(ErrorCode::ApiKey, "api_key not found"));
        }
        state.guests.admit(peer.ip())?;
        let (user, token) = async { state.svc.create_guest(&CreateGuest::parse(&body)?).await }
            .await
            .map_err(|e| e.in_operation("CreateGuest"))?;
        Ok(
            json!({"access_token": token, "user": state.svc.wire(&user).await})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        )
    }
    .await;
    respond(result, started)
}

/// Which own-user write a client asks for.
#[derive(Clone, Copy)]
enum OwnWrite {
    Upsert,
    Partial,
}

/// `POST /users` and `PATCH /users`: the caller's own user, without role or teams changes.
async fn write_own(
    state: GatewayState,
    uri: Uri,
    headers: HeaderMap,
    body: Value,
    kind: OwnWrite,
) -> Response {
    let started = Instant::now();
    let query = http::query_map(uri.query());
    let result = async {
        let who = caller(&state.svc, &query, &headers).await?;
        let svc = &state.svc;
        let users = match kind {
            // Who may write at all is decided before the body is read: an anonymous client
            // is refused (17) whatever it sent.
            OwnWrite::Upsert => async {
                authorize(&who, Action::UpdateUser, None)?;
                svc.upsert_users(&UpsertUsers::parse(&body)?, &who).await
            }
            .await
            .map_err(|e| e.in_operation("UpdateUsers"))?,
            OwnWrite::Partial => async {
                authorize(&who, Action::UpdateUser, None)?;
                let update = PartialUpdate::parse(&body, &who)?;
                svc.partial_update_users(&update, &who).await
            }
            .await
            .map_err(|e| e.in_operation("UpdateUsersPartial"))?,
        };
        let mut out = Map::new();
        out.insert("users".into(), svc.users_by_id(&users).await);
        Ok(out)
    }
    .await;
    respond(result, started)
}

/// `POST /users`: full replace of the caller's own user.
pub async fn upsert_users(
    State(state): State<GatewayState>,
    uri: Uri,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Response {
    write_own(state, uri, headers, body, OwnWrite::Upsert).await
}

/// `PATCH /users`: partial update of the caller's own user.
pub async fn partial_update_users(
    State(state): State<GatewayState>,
    uri: Uri,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Response {
    write_own(state, uri, headers, body, OwnWrite::Partial).await
}

/// An operation of the dispatch table the public listener serves
/// ([`CLIENT_OPERATIONS`](crate::admin::ops::CLIENT_OPERATIONS)), run for the calling client:
/// the users service decides what it may do (mute and block for itself, never send custom
/// events).
pub async fn client_op(
    state: &GatewayState,
    op: &str,
    id: Option<String>,
    uri: &Uri,
    headers: &HeaderMap,
    body: Value,
) -> Response {
    let started = Instant::now();
    let query = http::query_map(uri.query());
    let result = async {
        let who = caller(&state.svc, &query, headers).await.map_err(|e| {
            match crate::admin::ops::operation_name(op) {
                Some(name) => e.in_operation(name),
                None => e,
            }
        })?;
        let req = OpRequest {
            id,
            params: query.clone(),
            body,
            base_url: String::new(),
        };
        dispatch_as(&state.svc, &who, op, req).await
    }
    .await;
    respond(result, started)
}

/// `GET /users?payload=`: a query; with `presence: true` and the caller's `connection_id`,
/// that connection receives presence changes of the users returned.
pub async fn query_users(
    State(state): State<GatewayState>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let query = http::query_map(uri.query());
    let result = async {
        let who = caller(&state.svc, &query, &headers).await?;
        let payload: Value = match query.get("payload") {
            Some(p) => serde_json::from_str(p).map_err(|e| {
                ApiError::input(format!("payload is not valid JSON: {e}"))
                    .in_operation("QueryUsers")
            })?,
            None => json!({}),
        };
        let users = state
            .svc
            .query_users(&payload, &who)
            .await
            .map_err(|e| e.in_operation("QueryUsers"))?;
        let wants_presence = payload.get("presence").and_then(Value::as_bool) == Some(true);
        if let (true, Some(conn_id)) = (wants_presence, query.get("connection_id")) {
            if let Some(conn) = state.hub.connection(conn_id) {
                let own = match &who {
                    Caller::User(id) => conn.user_id.as_ref() == id,
                    _ => conn.anonymous,
                };
                if own {
                    let ids = users
                        .iter()
                        .filter_map(|u| u.get("id").and_then(Value::as_str).map(str::to_owned));
                    state
                        .hub
                        .watch_presence(&conn, ids.collect::<Vec<_>>().into_iter());
                }
            }
        }
        let mut out = Map::new();
        out.insert(
            "users".into(),
            Value::Array(users.into_iter().map(Value::Object).collect()),
        );
        Ok(out)
    }
    .await;
    respond(result, started)
}

//! The public listener: the `/connect` WebSocket, `POST /guest` and client-side REST, with
//! CORS for browsers, plus the liveness ticker that sends server health checks and closes
//! silent connections.

pub mod connection;
pub mod guest_quota;
pub mod handshake;
pub mod ip_sockets;
pub mod rest;
pub mod socket;
pub mod upgrade;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use dashmap::DashMap;
use tokio::sync::watch;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::config::{Config, Cors};
use crate::http::{self, JsonBody, PathId};
use crate::hub::{CloseOrder, Hub, CLOSE_GOING_AWAY};
use crate::protocol::{ApiError, ErrorCode};
use crate::ratelimit::middleware::{rate_limit, ListenerLimits};
use crate::users::UsersService;

/// Per-address connect-rate buckets kept before the stale ones (from earlier seconds) are
/// dropped: a bound on memory, not a limit any client meets — only the current second's
/// buckets count, and they are never pruned.
const CONNECT_BUCKETS_BEFORE_PRUNE: usize = 50_000;

/// Seconds since the gateway started; cheap to read from every connection.
#[derive(Clone)]
pub struct Clock(Instant);

impl Clock {
    /// A clock starting now.
    pub fn new() -> Self {
        Self(Instant::now())
    }

    /// Seconds elapsed.
    pub fn now_secs(&self) -> u64 {
        self.0.elapsed().as_secs()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// The connection limits a socket task needs.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Time allowed to complete the connect.
    pub handshake_timeout: Duration,
    /// Time a single write may take before the client is dropped.
    pub write_timeout: Duration,
    /// Initial read buffer.
    pub read_buffer: usize,
    /// Largest frame.
    pub max_frame: usize,
    /// Largest message.
    pub max_message: usize,
    /// Largest unflushed write buffer.
    pub max_write_buffer: usize,
    /// Largest first frame (the `health.check` carrying `me`).
    pub max_connect_frame: usize,
}

/// What the public routes share: one pointer, so that each request and each open
/// connection holds a word rather than a copy of every field.
#[derive(Clone)]
pub struct GatewayState(Arc<Shared>);

impl std::ops::Deref for GatewayState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The fields of [`GatewayState`].
pub struct Shared {
    /// The users service.
    pub svc: Arc<UsersService>,
    /// This node's connections.
    pub hub: Arc<Hub>,
    /// Socket limits.
    pub limits: Arc<ConnLimits>,
    /// Shared seconds clock.
    pub clock: Clock,
    /// Per-IP connect buckets: (window second, count).
    connects: Arc<DashMap<IpAddr, (u64, u32)>>,
    connects_per_second: u32,
    /// Live sockets per client address.
    pub ip_sockets: Arc<ip_sockets::IpSockets>,
    /// Guest creations allowed per address and in all.
    pub guests: Arc<guest_quota::GuestQuota>,
    /// Shutdown flag.
    pub stop: watch::Receiver<bool>,
}

impl GatewayState {
    /// Builds the state from the configuration.
    pub fn new(
        svc: Arc<UsersService>,
        hub: Arc<Hub>,
        config: &Config,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let l = &config.limits;
        Self(Arc::new(Shared {
            svc,
            hub,
            limits: Arc::new(ConnLimits {
                handshake_timeout: Duration::from_secs(l.handshake_timeout_secs),
                write_timeout: Duration::from_secs(l.write_timeout_secs),
                read_buffer: l.read_buffer_bytes,
                max_frame: l.max_frame_bytes,
                max_message: l.max_message_bytes,
                max_write_buffer: l.max_write_buffer_bytes,
                max_connect_frame: l.max_connect_frame_bytes,
            }),
            clock: Clock::new(),
            connects: Arc::new(DashMap::new()),
            connects_per_second: l.connects_per_second_per_ip,
            ip_sockets: Arc::new(ip_sockets::IpSockets::new(l.max_connections_per_ip)),
            guests: Arc::new(guest_quota::GuestQuota::new(
                l.guests_per_minute_per_ip,
                l.guests_per_minute,
            )),
            stop,
        }))
    }

    fn admit_connect(&self, ip: IpAddr) -> bool {
        let now = self.clock.now_secs();
        if self.connects.len() > CONNECT_BUCKETS_BEFORE_PRUNE {
            self.connects.retain(|_, (s, _)| *s == now);
        }
        let mut e = self.connects.entry(ip).or_insert((now, 0));
        if e.0 != now {
            *e = (now, 0);
        }
        e.1 += 1;
        e.1 <= self.connects_per_second
    }
}

async fn connect(
    State(state): State<GatewayState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (mut parts, _) = request.into_parts();
    let upgrade = match upgrade::Upgrade::from_parts(&mut parts) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    if *state.stop.borrow() {
        return ApiError::new(ErrorCode::RateLimited, "server is shutting down").into_response();
    }
    if !state.admit_connect(peer.ip()) {
        metrics::counter!("gateway_connects_refused", "code" => "9").increment(1);
        crate::telemetry::tally::refused("9");
        return ApiError::new(
            ErrorCode::RateLimited,
            "too many connects from this address",
        )
        .into_response();
    }
    let Some(slot) = state.ip_sockets.try_hold(peer.ip()) else {
        metrics::counter!("gateway_connects_refused", "code" => "per_ip").increment(1);
        crate::telemetry::tally::refused("per_ip");
        return ApiError::new(
            ErrorCode::RateLimited,
            "too many open connections from this address",
        )
        .into_response();
    };
    let req = handshake::ConnectRequest::from_query(&http::query_map(parts.uri.query()));
    let (response, on_upgrade) = upgrade.accept();
    tokio::spawn(connection::serve(on_upgrade, state, req, slot));
    response
}

async fn healthz(State(state): State<GatewayState>) -> Response {
    http::healthz(&state.svc)
}

/// Sends every connection a server `health.check` each `interval` and closes those silent
/// for longer than `idle_timeout` (with 1001, so a live client reconnects).
pub fn spawn_liveness(hub: Arc<Hub>, clock: Clock, interval: Duration, idle_timeout: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = clock.now_secs();
            let limit = hub.queue_frames();
            hub.prune_watchers();
            hub.for_each_conn(|c| {
                let silent = now.saturating_sub(c.last_seen.load(Ordering::Relaxed));
                if silent > idle_timeout.as_secs() {
                    c.close_with(None, CloseOrder::raw(CLOSE_GOING_AWAY, "idle timeout"));
                    return;
                }
                let frame = crate::protocol::events::health_check(&c.conn_id, None);
                c.push(frame.into(), limit);
            });
        }
    });
}

fn cors_layer(cors: &Cors) -> CorsLayer {
    let origin = if cors.allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            cors.allowed_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(Any)
        .expose_headers(Any)
        .max_age(Duration::from_secs(86400))
}

/// A route to an operation of the dispatch table, run for the calling client.
macro_rules! client_op {
    ($op:literal) => {
        |State(s): State<GatewayState>,
         uri: Uri,
         headers: HeaderMap,
         JsonBody(body): JsonBody| async move {
            rest::client_op(&s, $op, None, &uri, &headers, body).await
        }
    };
    ($op:literal, id) => {
        |State(s): State<GatewayState>,
         PathId(id): PathId,
         uri: Uri,
         headers: HeaderMap,
         JsonBody(body): JsonBody| async move {
            rest::client_op(&s, $op, Some(id), &uri, &headers, body).await
        }
    };
}

/// The public router.
pub fn router(state: GatewayState, limits: ListenerLimits, cors: &Cors) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/connect", get(connect))
        .route("/guest", post(rest::guest))
        .route(
            "/users",
            get(rest::query_users)
                .post(rest::upsert_users)
                .patch(rest::partial_update_users),
        )
        .route(
            "/users/{id}/event",
            post(client_op!("sendUserCustomEvent", id)),
        )
        .route("/moderation/mute", post(client_op!("muteUser")))
        .route("/moderation/unmute", post(client_op!("unmuteUser")))
        .route(
            "/users/block",
            post(client_op!("blockUser")).get(client_op!("getBlockedUsers")),
        )
        .route("/users/unblock", post(client_op!("unblockUser")))
        .route(
            "/moderation/ban",
            post(client_op!("banUser")).delete(client_op!("unbanUser")),
        )
        .route("/query_banned_users", get(client_op!("queryBannedUsers")))
        .fallback(|| async { ApiError::new(ErrorCode::DoesNotExist, "no such route") })
        .method_not_allowed_fallback(http::method_not_allowed)
        .layer(middleware::from_fn(http::observe))
        .layer(middleware::from_fn_with_state(limits, rate_limit))
        .layer(cors_layer(cors))
        .with_state(state)
}

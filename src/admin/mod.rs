//! The admin listener: every server-side operation over REST and over an admin WebSocket,
//! both served by one dispatch table (`ops`) and authenticated with the server token.

pub mod feed;
pub mod ops;
pub mod rest;
pub mod ws;

pub use rest::router;

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::users::UsersService;

/// What the admin routes and the admin WebSocket share.
#[derive(Clone)]
pub struct AdminState {
    /// The users service.
    pub svc: Arc<UsersService>,
    /// Events for admin WebSocket subscribers.
    pub feed: Arc<feed::AdminFeed>,
    /// Prometheus renderer.
    pub metrics: Option<PrometheusHandle>,
    /// Base URL of this listener as back ends reach it (export links).
    pub base_url: String,
    /// Time one write to an admin WebSocket may take.
    pub write_timeout: std::time::Duration,
    /// The node's rate limits (admin WebSocket operations count against them too).
    pub rate_limits: Arc<crate::ratelimit::RateLimits>,
    /// Becomes true when the gateway shuts down (admin WebSockets close).
    pub stop: tokio::sync::watch::Receiver<bool>,
}

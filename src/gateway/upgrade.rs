//! The `/connect` upgrade done by hand: the WebSocket request checks, the 101 answer, and
//! the upgraded TCP stream taken back from hyper, so the connection's task owns exactly what
//! it needs (axum's upgrade would wrap the stream in two more layers and keep its own copy of
//! the socket configuration and callback for the connection's whole life).

use axum::http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::protocol::ApiError;
use crate::serve::Slotted;

/// A checked upgrade request: the key to answer and hyper's handle on the socket.
pub struct Upgrade {
    accept: HeaderValue,
    on_upgrade: OnUpgrade,
}

fn has_token(headers: &HeaderMap, name: axum::http::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    })
}

impl Upgrade {
    /// Checks that `parts` is a WebSocket upgrade (RFC 6455 §4.2.1) and takes hyper's upgrade
    /// handle out of it; a request that is not one gets code 4 naming what is missing.
    pub fn from_parts(parts: &mut Parts) -> Result<Self, ApiError> {
        let refuse = |what: &str| {
            ApiError::input(format!(
                "{} is a WebSocket endpoint: {what}",
                parts.uri.path()
            ))
        };
        if parts.method != Method::GET {
            return Err(refuse("the upgrade request must be a GET"));
        }
        if !has_token(&parts.headers, CONNECTION, "upgrade") {
            return Err(refuse("the Connection header must include `upgrade`"));
        }
        if !has_token(&parts.headers, UPGRADE, "websocket") {
            return Err(refuse("the Upgrade header must be `websocket`"));
        }
        if parts
            .headers
            .get("sec-websocket-version")
            .is_none_or(|v| v.as_bytes() != b"13")
        {
            return Err(refuse("Sec-WebSocket-Version must be 13"));
        }
        let Some(key) = parts.headers.get(SEC_WEBSOCKET_KEY) else {
            return Err(refuse("the Sec-WebSocket-Key header is missing"));
        };
        let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
            .map_err(|_| refuse("the Sec-WebSocket-Key header is malformed"))?;
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or_else(|| refuse("the connection cannot be upgraded"))?;
        Ok(Self { accept, on_upgrade })
    }

    /// The `101 Switching Protocols` answer, and the future of the upgraded socket.
    pub fn accept(self) -> (Response, OnUpgrade) {
        let response = (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (CONNECTION, HeaderValue::from_static("upgrade")),
                (UPGRADE, HeaderValue::from_static("websocket")),
                (SEC_WEBSOCKET_ACCEPT, self.accept),
            ],
        )
            .into_response();
        (response, self.on_upgrade)
    }
}

/// The accepted TCP stream under an upgraded connection, with the bytes hyper read past the
/// request head (a client may send its first frame without waiting for the 101).
pub async fn stream_of(on_upgrade: OnUpgrade) -> Option<(Slotted, Vec<u8>)> {
    let upgraded = match on_upgrade.await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return None;
        }
    };
    match upgraded.downcast::<TokioIo<Slotted>>() {
        Ok(parts) => Some((parts.io.into_inner(), parts.read_buf.to_vec())),
        Err(_) => {
            tracing::error!("an upgraded /connect socket is not a listener socket");
            None
        }
    }
}

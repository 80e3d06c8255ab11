//! The least a WebSocket server can do for the `/connect` job: upgrade, verify the token,
//! send one `health.check`, then keep the socket open (answering pings and health checks).
//!
//! It uses the same tungstenite buffers as the gateway so that the comparison isolates what
//! the gateway adds: user store, registry, presence, event fan-out.

use crate::auth::TokenVerifier;
use crate::timefmt::rfc3339_now;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;

/// What the baseline server needs to know.
pub struct BaselineConfig {
    /// App secret the user tokens are signed with.
    pub secret: String,
    /// Send a server `health.check` on every connection this often (`None`: never).
    pub health_check: Option<Duration>,
    /// tungstenite's initial read buffer per connection, in bytes.
    pub read_buffer: usize,
}

/// The baseline's initial read buffer: the gateway's default (`limits.read_buffer_bytes`), so both
/// run the same WebSocket configuration.
pub const DEFAULT_READ_BUFFER: usize = 128;

/// The gateway's WebSocket buffers and limits, with the given initial read buffer.
pub fn server_ws_config(read_buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(16 * 1024))
}

struct Shared {
    verifier: TokenVerifier,
    read_buffer: usize,
    health_check: Option<Duration>,
    next_id: AtomicU64,
}

/// Serves `/connect` on `listener` until `shutdown` completes.
pub async fn run(listener: TcpListener, config: BaselineConfig, shutdown: impl Future) {
    let shared = Arc::new(Shared {
        verifier: TokenVerifier::new(&config.secret),
        read_buffer: config.read_buffer,
        health_check: config.health_check,
        next_id: AtomicU64::new(1),
    });
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    tokio::spawn(serve_connection(stream, shared.clone()));
                }
                // Out of descriptors or similar: back off briefly instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let mut query = None;
    // The signature is tungstenite's `Callback`; its error type is not ours to shrink.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        if request.uri().path() != "/connect" {
            let mut not_found = ErrorResponse::new(None);
            *not_found.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::NOT_FOUND;
            return Err(not_found);
        }
        query = request.uri().query().map(str::to_owned);
        Ok(response)
    };
    let Ok(mut socket) = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        callback,
        Some(server_ws_config(shared.read_buffer)),
    )
    .await
    else {
        return;
    };
    let user_id = match authenticate(query.as_deref().unwrap_or(""), &shared.verifier) {
        Ok(user_id) => user_id,
        Err((code, message)) => {
            let frame = json!({
                "type": "connection.error", "connection_id": "", "created_at": rfc3339_now(),
                "error": {"code": code, "message": message, "StatusCode": 401,
                          "duration": "", "more_info": "", "details": []},
            });
            let _ = socket.send(Message::text(frame.to_string())).await;
            let _ = socket
                .close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "".into(),
                }))
                .await;
            return;
        }
    };
    let connection_id = format!("bl-{}", shared.next_id.fetch_add(1, Ordering::Relaxed));
    let hello = json!({
        "type": "health.check", "connection_id": connection_id, "cid": "*",
        "created_at": rfc3339_now(),
        "me": {"id": user_id, "role": "user", "online": true, "mutes": [], "channel_mutes": []},
    });
    if socket.send(Message::text(hello.to_string())).await.is_err() {
        return;
    }
    drop(user_id);
    let period = shared.health_check.unwrap_or(Duration::from_secs(3600));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            frame = socket.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    if text.as_str().contains("health.check")
                        && socket.send(Message::text(health_check(&connection_id))).await.is_err()
                    {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            _ = ticker.tick(), if shared.health_check.is_some() => {
                if socket.send(Message::text(health_check(&connection_id))).await.is_err() {
                    break;
                }
            }
        }
    }
}

fn health_check(connection_id: &str) -> String {
    json!({"type": "health.check", "connection_id": connection_id, "cid": "*",
           "created_at": rfc3339_now()})
    .to_string()
}

/// Checks the `/connect` query: api key present, `stream-auth-type=jwt`, a valid token whose
/// `user_id` is the one in `json`. Returns the user id, or a Stream error code and message.
fn authenticate(query: &str, verifier: &TokenVerifier) -> Result<String, (i64, &'static str)> {
    let (mut json_param, mut api_key, mut token, mut auth_type) = (None, None, None, None);
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "json" => json_param = Some(value.into_owned()),
            "api_key" => api_key = Some(value.into_owned()),
            "authorization" => token = Some(value.into_owned()),
            "stream-auth-type" => auth_type = Some(value.into_owned()),
            _ => {}
        }
    }
    if api_key.as_deref().unwrap_or("").is_empty() {
        return Err((2, "api_key not found"));
    }
    if auth_type.as_deref() != Some("jwt") {
        return Err((5, "stream-auth-type must be jwt"));
    }
    let requested: Value = json_param
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok())
        .ok_or((4, "json is invalid"))?;
    let user_id = requested
        .get("user_id")
        .and_then(Value::as_str)
        .ok_or((4, "user_id is a required field"))?;
    let claims = verifier
        .verify(token.as_deref().unwrap_or(""))
        .ok_or((43, "JWTAuth error: signature is invalid"))?;
    if claims.user_id != user_id {
        return Err((5, "token user_id does not match"));
    }
    Ok(claims.user_id)
}

//! A small WebSocket client for the tests: connect to `/connect` with the SDK's query, read
//! frames with a deadline, and observe closes.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{encode, Api};

/// A client socket.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the next read produced.
#[derive(Debug)]
pub enum Next {
    /// A text frame, parsed.
    Frame(Value),
    /// A close frame: code and reason.
    Closed(u16, String),
    /// The connection ended without a close frame.
    Ended,
    /// Nothing arrived in time.
    Timeout,
}

/// The `/connect` URL the JS SDK would use.
pub fn connect_url(
    api: &Api,
    user_id: &str,
    details: Value,
    token: &str,
    auth_type: &str,
) -> String {
    let payload =
        json!({"user_id": user_id, "user_details": details, "client_request_id": "req-1"});
    let ws_base = api.public_url.replacen("http", "ws", 1);
    format!(
        "{ws_base}/connect?json={}&api_key={}&authorization={}&stream-auth-type={auth_type}&X-Stream-Client=tests",
        encode(&payload.to_string()),
        encode(&api.api_key),
        encode(token),
    )
}

/// Opens a socket to `url`.
pub async fn open(url: &str) -> Socket {
    let (socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .unwrap_or_else(|e| panic!("upgrade of {url} failed: {e}"));
    socket
}

/// Reads the next frame within `wait`, skipping pings.
pub async fn next(socket: &mut Socket, wait: Duration) -> Next {
    loop {
        match tokio::time::timeout(wait, socket.next()).await {
            Err(_) => return Next::Timeout,
            Ok(None) | Ok(Some(Err(_))) => return Next::Ended,
            Ok(Some(Ok(Message::Text(t)))) => {
                return Next::Frame(serde_json::from_str(t.as_str()).expect("text frames are JSON"))
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                return match frame {
                    Some(f) => Next::Closed(u16::from(f.code), f.reason.to_string()),
                    None => Next::Closed(u16::from(CloseCode::Status), String::new()),
                }
            }
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Reads frames until one of type `kind` arrives (panics after `wait`).
pub async fn expect_event(socket: &mut Socket, kind: &str, wait: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next(socket, left).await {
            Next::Frame(f) if f["type"] == kind => return f,
            Next::Frame(_) => continue,
            other => panic!("expected a {kind} frame, got {other:?}"),
        }
    }
}

/// Connects a user with a token and returns the socket and the first frame, which must be
/// the `health.check` with `me`.
pub async fn connect_user(api: &Api, user_id: &str, details: Value) -> (Socket, Value) {
    let token = api.user_token(user_id);
    let mut socket = open(&connect_url(api, user_id, details, &token, "jwt")).await;
    match next(&mut socket, Duration::from_secs(5)).await {
        Next::Frame(f) if f["type"] == "health.check" => (socket, f),
        other => panic!("expected health.check, got {other:?}"),
    }
}

/// Connects with a given token and expects a refusal: one `connection.error` frame with
/// `code`, then close 1000. Returns the error object.
pub async fn expect_refusal(url: &str, code: i64) -> Value {
    let mut socket = open(url).await;
    let frame = match next(&mut socket, Duration::from_secs(5)).await {
        Next::Frame(f) => f,
        other => panic!("expected connection.error, got {other:?}"),
    };
    assert_eq!(frame["type"], "connection.error", "{frame}");
    assert_eq!(frame["error"]["code"], code, "{frame}");
    match next(&mut socket, Duration::from_secs(5)).await {
        Next::Closed(1000, reason) => {
            let r: Value = serde_json::from_str(&reason).expect("close reason is JSON");
            assert_eq!(r["code"], code);
        }
        other => panic!("expected close 1000 after the error frame, got {other:?}"),
    }
    frame["error"].clone()
}

/// Sends a text frame.
pub async fn send(socket: &mut Socket, v: Value) {
    socket
        .send(Message::Text(v.to_string().into()))
        .await
        .expect("send");
}

/// A unique id for a test.
pub fn uid(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

//! One client connection: the `/connect` handshake, from a chosen loopback source address.

use crate::auth::TokenMinter;
use crate::stats::micros;
use futures_util::StreamExt;
use serde_json::Value;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A client socket after a successful handshake.
pub type ClientSocket = WebSocketStream<TcpStream>;

/// Where and as what app the clients connect.
#[derive(Clone)]
pub struct Target {
    /// The public listener, e.g. `127.0.0.1:4600`.
    pub addr: SocketAddr,
    /// The app's API key.
    pub api_key: String,
    /// Mints each user's token.
    pub minter: TokenMinter,
}

/// A prepared `/connect` request: the URL is built (token minted) before the clock starts.
pub struct ConnectRequest {
    /// The user this request authenticates as.
    pub user_id: String,
    /// `ws://host:port/connect?json=...&api_key=...&authorization=...&stream-auth-type=jwt`.
    pub url: String,
}

impl Target {
    /// The `/connect` request the JS SDK would make for `user_id`.
    pub fn request(&self, user_id: &str, request_no: u64) -> ConnectRequest {
        let json = serde_json::json!({
            "user_id": user_id,
            "user_details": {"id": user_id},
            "client_request_id": format!("bench-{request_no}"),
        })
        .to_string();
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("json", &json)
            .append_pair("api_key", &self.api_key)
            .append_pair("authorization", &self.minter.user_token(user_id))
            .append_pair("stream-auth-type", "jwt")
            .finish();
        ConnectRequest {
            user_id: user_id.to_owned(),
            url: format!("ws://{}/connect?{query}", self.addr),
        }
    }
}

/// A connection whose first frame was a `health.check`.
pub struct Connected {
    /// The open socket.
    pub socket: ClientSocket,
    /// `connection_id` from the first frame.
    pub connection_id: String,
    /// TCP connect time, in microseconds.
    pub tcp_us: u64,
    /// From sending the upgrade request to receiving the first text frame, in microseconds.
    pub upgrade_us: u64,
}

/// Why a connection attempt failed; the `kind` groups failures in reports.
#[derive(Debug)]
pub enum ConnectError {
    /// Socket creation, bind or TCP connect failed.
    Tcp(std::io::Error),
    /// The HTTP upgrade failed (status or protocol error).
    Handshake(String),
    /// The server answered with a `connection.error` frame.
    Refused { code: i64, message: String },
    /// The socket closed (or sent a non-text frame) before the first text frame.
    Closed,
    /// The first frame was not a `health.check` with a `connection_id`.
    BadFrame(String),
    /// Nothing arrived within the deadline.
    Timeout,
}

impl ConnectError {
    /// A short stable label for grouping failures.
    pub fn kind(&self) -> String {
        match self {
            Self::Tcp(e) => format!("tcp: {}", e.kind()),
            Self::Handshake(s) => format!("handshake: {s}"),
            Self::Refused { code, .. } => format!("refused: code {code}"),
            Self::Closed => "closed before first frame".into(),
            Self::BadFrame(_) => "unexpected first frame".into(),
            Self::Timeout => "timeout".into(),
        }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused { code, message } => write!(f, "refused: code {code}: {message}"),
            Self::BadFrame(frame) => write!(f, "unexpected first frame: {frame}"),
            other => f.write_str(&other.kind()),
        }
    }
}

/// The client-side WebSocket buffers: small, since a load generator holds thousands of sockets.
pub fn client_ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
}

/// Opens a TCP connection from `source` (port chosen by the kernel) to `addr`.
pub async fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Connects, upgrades and waits for the first text frame, all within `timeout`.
pub async fn connect(
    target: &Target,
    request: &ConnectRequest,
    source: Option<IpAddr>,
    timeout: Duration,
) -> Result<Connected, ConnectError> {
    tokio::time::timeout(timeout, connect_inner(target, request, source))
        .await
        .unwrap_or(Err(ConnectError::Timeout))
}

async fn connect_inner(
    target: &Target,
    request: &ConnectRequest,
    source: Option<IpAddr>,
) -> Result<Connected, ConnectError> {
    let start = Instant::now();
    let stream = tcp_connect(target.addr, source)
        .await
        .map_err(ConnectError::Tcp)?;
    let upgrade_start = Instant::now();
    let (mut socket, _response) = tokio_tungstenite::client_async_with_config(
        request.url.as_str(),
        stream,
        Some(client_ws_config()),
    )
    .await
    .map_err(|e| ConnectError::Handshake(handshake_label(&e)))?;
    let frame = loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => break text,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            _ => return Err(ConnectError::Closed),
        }
    };
    let upgrade_us = micros(upgrade_start.elapsed());
    let value: Value = serde_json::from_str(frame.as_str())
        .map_err(|_| ConnectError::BadFrame(truncate(frame.as_str())))?;
    match value.get("type").and_then(Value::as_str) {
        Some("health.check") => {}
        Some("connection.error") => {
            let error = value.get("error").cloned().unwrap_or_default();
            return Err(ConnectError::Refused {
                code: error.get("code").and_then(Value::as_i64).unwrap_or(-1),
                message: error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            });
        }
        _ => return Err(ConnectError::BadFrame(truncate(frame.as_str()))),
    }
    let connection_id = value
        .get("connection_id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| ConnectError::BadFrame(truncate(frame.as_str())))?
        .to_owned();
    let me_matches = value
        .pointer("/me/id")
        .and_then(Value::as_str)
        .is_some_and(|id| id == request.user_id);
    if !me_matches {
        return Err(ConnectError::BadFrame(truncate(frame.as_str())));
    }
    Ok(Connected {
        socket,
        connection_id,
        tcp_us: micros(upgrade_start.duration_since(start)),
        upgrade_us,
    })
}

fn handshake_label(e: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error;
    match e {
        Error::Http(response) => format!("HTTP {}", response.status().as_u16()),
        Error::Io(io) => format!("io {}", io.kind()),
        other => {
            let text = other.to_string();
            text.split(':').next().unwrap_or("error").to_owned()
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}

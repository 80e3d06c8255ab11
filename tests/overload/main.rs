//! Overload at CI size: sockets that connect and never finish their handshake, a client that
//! never reads while events flood it, per-IP connect and per-user REST rate limits, and a
//! gateway process that runs out of file descriptors. The full-size runs (a 25k burst, a
//! reconnect storm) are `scripts/overload.sh`.

#[path = "../common/mod.rs"]
mod common;
use common::ws;

mod burst;
mod descriptors;
mod handshakes;
mod per_ip;
mod rate_limits;
mod slow_bodies;
mod slow_consumer;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The socket address behind an `http://host:port` URL.
pub fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://")
        .parse()
        .expect("URL is http://ip:port")
}

/// Sends a WebSocket upgrade request for `path` over raw TCP (from `source` when given) and
/// returns the status and the JSON body of the answer (`Value::Null` for a 101 or no body).
pub async fn raw_upgrade(addr: SocketAddr, path: &str, source: Option<[u8; 4]>) -> (u16, Value) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::from((ip, 0)))
            .expect("bind a loopback source address");
    }
    let mut stream = socket.connect(addr).await.expect("TCP connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let (head, mut body) = read_head(&mut stream).await;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    if status == 101 {
        return (status, Value::Null);
    }
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while body.len() < length {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("body in time")
            .expect("read");
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Reads up to the end of an HTTP response head; returns it and the bytes read past it.
async fn read_head(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut data = Vec::new();
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).into_owned();
            return (head, data[end + 4..].to_vec());
        }
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("response head in time")
            .expect("read");
        assert!(n > 0, "connection closed before a response head");
        data.extend_from_slice(&buf[..n]);
    }
}

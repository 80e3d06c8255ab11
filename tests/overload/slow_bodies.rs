//! Request bodies trickled a byte at a time: each is answered 408, code 23, once
//! `body_timeout_secs` has passed since its head, and its connection closed — on both
//! listeners — instead of holding its socket for as long as the client keeps trickling.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::addr_of;
use crate::common::{TestServer, API_KEY};

/// What a trickling client saw: the status, the body and when the server closed.
struct Outcome {
    status: u16,
    body: Value,
    closed_after: Duration,
}

/// Sends a request head announcing 1,000 body bytes, then one byte every 200 ms until the
/// server answers and closes (or 8 s pass).
async fn trickle(addr: SocketAddr, path: &str, extra: &str) -> Outcome {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let head = format!(
        "POST {path}?api_key={API_KEY} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 1000\r\n{extra}\r\n"
    );
    let started = Instant::now();
    wr.write_all(head.as_bytes()).await.expect("head");
    let writer = tokio::spawn(async move {
        for _ in 0..1000 {
            if wr.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(8), rd.read_to_end(&mut out)).await;
    let closed_after = started.elapsed();
    writer.abort();
    assert!(
        read.is_ok(),
        "{path}: no answer and still open after 8 s ({} bytes read)",
        out.len()
    );
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    Outcome {
        status,
        body,
        closed_after,
    }
}

#[tokio::test]
async fn slow_bodies_are_cut_after_the_body_timeout_on_both_listeners() {
    let server = TestServer::start_with(|c| c.limits.body_timeout_secs = 1).await;
    let public = addr_of(&server.public_url);
    let admin = addr_of(&server.admin_url);
    let auth = format!(
        "Authorization: {}\r\nstream-auth-type: jwt\r\n",
        server.server_token
    );
    let mut clients = Vec::new();
    for i in 0..120 {
        clients.push(if i % 6 == 0 {
            let auth = auth.clone();
            tokio::spawn(async move { trickle(admin, "/users", &auth).await })
        } else {
            tokio::spawn(async move { trickle(public, "/guest", "").await })
        });
    }
    // While they trickle, the public listener serves others.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = server
        .get_url(&format!("{}/healthz", server.public_url))
        .await;
    assert_eq!(status, 200);
    for c in clients {
        let o = c.await.expect("client task");
        assert_eq!(o.status, 408, "body {}", o.body);
        assert_eq!(o.body["code"], 23, "{}", o.body);
        assert_eq!(o.body["StatusCode"], 408, "{}", o.body);
        assert!(
            o.closed_after >= Duration::from_millis(900) && o.closed_after < Duration::from_secs(4),
            "closed after {:?}",
            o.closed_after
        );
    }
}

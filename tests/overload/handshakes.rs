//! Half-open handshakes: TCP connections that never send a request, requests whose headers
//! trickle in, and upgrades that never send their connect data. The gateway closes them all
//! after `limits.handshake_timeout_secs` and keeps serving.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::addr_of;
use crate::common::TestServer;
use crate::ws::{self, next, Next};

/// Waits until the peer closes `stream` (EOF or reset); returns how long that took, or
/// `None` if it stayed open for `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(started + limit),
            stream.read(&mut buf),
        )
        .await
        {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn silent_tcp_connections_are_closed_after_the_handshake_timeout() {
    let s = TestServer::start_with(|c| c.limits.handshake_timeout_secs = 1).await;
    let addr = addr_of(&s.public_url);
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(TcpStream::connect(addr).await.expect("connect"));
    }
    let waits = futures_util::future::join_all(
        silent
            .iter_mut()
            .map(|st| closed_within(st, Duration::from_secs(5))),
    )
    .await;
    for (i, w) in waits.iter().enumerate() {
        let w = w.unwrap_or_else(|| panic!("silent connection {i} still open after 5 s"));
        assert!(
            w >= Duration::from_millis(800),
            "closed too early ({w:?}): the timeout is 1 s"
        );
    }
    // The listener still serves.
    let (status, _) = s.get_url(&format!("{}/healthz", s.public_url)).await;
    assert_eq!(status, 200);
    s.stop().await;
}

#[tokio::test]
async fn trickled_headers_are_cut_off() {
    let s = TestServer::start_with(|c| c.limits.handshake_timeout_secs = 1).await;
    let mut stream = TcpStream::connect(addr_of(&s.public_url))
        .await
        .expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    // One header line every 200 ms: each write keeps the socket busy, never finishes the head.
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let mut i = 0;
    let outcome = loop {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a trickled request head was held for 5 s"
        );
        if stream
            .write_all(format!("x-slow-{i}: y\r\n").as_bytes())
            .await
            .is_err()
        {
            break "write failed";
        }
        i += 1;
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => break "closed",
            Ok(Ok(n)) => panic!(
                "answered a request that never ended: {}",
                String::from_utf8_lossy(&buf[..n])
            ),
        }
    };
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{outcome} after {:?}: the timeout is 1 s",
        started.elapsed()
    );
    s.stop().await;
}

#[tokio::test]
async fn keep_alive_requests_are_not_cut_by_the_header_timeout() {
    let s = TestServer::start_with(|c| c.limits.handshake_timeout_secs = 1).await;
    let mut stream = TcpStream::connect(addr_of(&s.public_url))
        .await
        .expect("connect");
    // Three requests on one connection, each well within the timeout of the previous answer.
    for _ in 0..3 {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
            .await
            .expect("answer in time")
            .expect("read");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // Idle after the last answer: closed once the timeout runs out.
    assert!(closed_within(&mut stream, Duration::from_secs(5))
        .await
        .is_some());
    s.stop().await;
}

#[tokio::test]
async fn an_upgrade_without_connect_data_is_refused_and_closed() {
    let s = TestServer::start_with(|c| c.limits.handshake_timeout_secs = 1).await;
    let url = format!(
        "{}/connect?api_key=test-key",
        s.public_url.replacen("http", "ws", 1)
    );
    let mut quiet = ws::open(&url).await;
    match next(&mut quiet, Duration::from_secs(5)).await {
        Next::Frame(f) => {
            assert_eq!(f["type"], "connection.error", "{f}");
            assert_eq!(f["error"]["code"], 23, "{f}");
        }
        other => panic!("expected a code-23 refusal, got {other:?}"),
    }
    assert!(matches!(
        next(&mut quiet, Duration::from_secs(5)).await,
        Next::Closed(1000, _)
    ));
    // Pings do not count as connect data: the deadline covers the whole handshake.
    let mut pinging = ws::open(&url).await;
    let started = Instant::now();
    let mut refused = false;
    loop {
        assert!(started.elapsed() < Duration::from_secs(4), "still open");
        match next(&mut pinging, Duration::from_millis(150)).await {
            Next::Timeout => pinging
                .send(Message::Ping(vec![1].into()))
                .await
                .expect("ping"),
            Next::Frame(f) => {
                assert_eq!(f["error"]["code"], 23, "{f}");
                refused = true;
            }
            Next::Closed(code, _) => {
                assert_eq!(code, 1000);
                break;
            }
            Next::Ended => panic!("dropped without a refusal"),
        }
    }
    assert!(refused, "closed without a connection.error frame");
    assert!(started.elapsed() >= Duration::from_millis(800));
    s.stop().await;
}

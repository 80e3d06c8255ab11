//! One address cannot fill the node: its open `/connect` sockets are bounded
//! (`max_connections_per_ip`, HTTP 429 code 9 before the upgrade), and anonymous sockets have
//! a budget of their own (`max_anonymous_connections`, close 1013) so that users with a token
//! still get in when anonymous ones have taken theirs.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;

use crate::common::{Api, TestServer};
use crate::ws::{connect_url, next, uid, Next, Socket};
use crate::{addr_of, raw_upgrade};

/// Opens `url` over a TCP connection from `source`; returns the socket and its first event.
async fn open_from(source: [u8; 4], url: &str) -> (Socket, Next) {
    let addr: SocketAddr = addr_of(
        &url.replacen("ws://", "http://", 1)
            .split('/')
            .take(3)
            .collect::<Vec<_>>()
            .join("/"),
    );
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("bind a loopback source address");
    let stream = socket.connect(addr).await.expect("TCP connect");
    let (mut ws, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .unwrap_or_else(|e| panic!("upgrade from {source:?} failed: {e}"));
    let first = next(&mut ws, Duration::from_secs(5)).await;
    (ws, first)
}

fn anonymous_url(api: &Api) -> String {
    connect_url(api, "anon", json!({"id": "anon"}), "", "anonymous")
}

fn user_url(api: &Api) -> String {
    let id = uid("per-ip");
    connect_url(api, &id, json!({"id": &id}), &api.user_token(&id), "jwt")
}

#[track_caller]
fn assert_connected(what: &str, first: &Next) {
    assert!(
        matches!(first, Next::Frame(f) if f["type"] == "health.check"),
        "{what}: {first:?}"
    );
}

#[tokio::test]
async fn one_address_and_anonymous_users_cannot_fill_the_node() {
    let server = TestServer::start_with(|c| {
        c.limits.max_connections = 100;
        c.limits.max_connections_per_ip = 20;
        c.limits.max_anonymous_connections = 30;
    })
    .await;
    let public = addr_of(&server.public_url);
    let path = |url: &str| url[url.find("/connect").expect("path")..].to_owned();

    // One address: 20 anonymous sockets, then every upgrade from it is refused before the
    // upgrade, a token or none.
    let mut from_a = Vec::new();
    for _ in 0..20 {
        let (ws, first) = open_from([127, 0, 0, 1], &anonymous_url(&server)).await;
        assert_connected("anonymous from A", &first);
        from_a.push(ws);
    }
    for url in [anonymous_url(&server), user_url(&server)] {
        let (status, body) = raw_upgrade(public, &path(&url), Some([127, 0, 0, 1])).await;
        assert_eq!(status, 429, "{body}");
        assert_eq!(body["code"], 9, "{body}");
        assert_eq!(body["StatusCode"], 429, "{body}");
    }

    // Another address fills the anonymous budget (30 in all).
    let mut from_b = Vec::new();
    for _ in 0..10 {
        let (ws, first) = open_from([127, 0, 0, 2], &anonymous_url(&server)).await;
        assert_connected("anonymous from B", &first);
        from_b.push(ws);
    }
    // A third address: no anonymous place left (1013, retryable), a user gets in.
    let (_ws, first) = open_from([127, 0, 0, 3], &anonymous_url(&server)).await;
    assert!(matches!(first, Next::Closed(1013, _)), "{first:?}");
    let (_user, first) = open_from([127, 0, 0, 3], &user_url(&server)).await;
    assert_connected("user from C", &first);

    // Slots come back when sockets close.
    from_a.truncate(15);
    from_b.clear();
    let mut admitted = false;
    for _ in 0..50 {
        let (status, _) =
            raw_upgrade(public, &path(&anonymous_url(&server)), Some([127, 0, 0, 1])).await;
        if status == 101 {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(admitted, "address A never got a slot back");
    let (_again, first) = open_from([127, 0, 0, 2], &anonymous_url(&server)).await;
    assert_connected("anonymous from B after closes", &first);
}

//! Events across nodes (issue 10, behaviour 3): a write on one node reaches the sockets of
//! the user, of its presence watchers and of admin subscribers on every other node, and a
//! delete, deactivate or revocation made on one node ends the user's sockets everywhere; a
//! custom event sent through one node reaches the user's sockets on all of them.
//!
//! Times are printed (`--nocapture`), not asserted: the latency budget is a benchmark's
//! business; a test only bounds how long it waits.

use std::time::{Duration, Instant};

use jsonwebtoken::{encode as sign, EncodingKey, Header};
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{assert_error, encode, Creds};
use crate::harness::{Cluster, Node};
use crate::ws::{self, expect_event, next, uid, Next, Socket};
use crate::{partial, set_mode, upsert, upsert_ok};

/// How long a test waits for something that should take milliseconds.
const WAIT: Duration = Duration::from_secs(5);

/// Reads until the socket closes; asserts the close code; returns the JSON reason (or null).
async fn expect_close(sock: &mut Socket, code: u16) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next(sock, left).await {
            Next::Frame(_) => continue,
            Next::Closed(c, reason) => {
                assert_eq!(c, code, "close reason {reason}");
                return serde_json::from_str(&reason).unwrap_or(Value::Null);
            }
            other => panic!("expected close {code}, got {other:?}"),
        }
    }
}

/// Waits for the ending of a user's socket: the frame of type `kind` (with `error.code` =
/// `code` for a `connection.error`), then close 1000. Returns the time it took from `since`.
async fn expect_ended(
    sock: &mut Socket,
    kind: &str,
    code: Option<i64>,
    since: Instant,
) -> Duration {
    let frame = expect_event(sock, kind, WAIT).await;
    if let Some(code) = code {
        assert_eq!(frame["error"]["code"], code, "{frame}");
    }
    let reason = expect_close(sock, 1000).await;
    if let Some(code) = code {
        assert_eq!(reason["code"], code, "{reason}");
    }
    since.elapsed()
}

/// A user token carrying `iat` (seconds since the epoch).
fn token_issued_at(node: &Node, user_id: &str, iat: i64) -> String {
    let key = EncodingKey::from_secret(node.secret.expose().as_bytes());
    sign(
        &Header::default(),
        &json!({"user_id": user_id, "iat": iat}),
        &key,
    )
    .expect("token")
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// Subscribes an admin socket of `node` to every event.
async fn subscriber(node: &Node) -> Socket {
    let mut sock = node.admin_socket().await;
    ws::send(&mut sock, json!({"id": "sub", "op": "subscribe"})).await;
    loop {
        match next(&mut sock, WAIT).await {
            Next::Frame(f) if f["id"] == "sub" => {
                assert_eq!(f["result"]["subscribed"], true, "{f}");
                return sock;
            }
            Next::Frame(_) => continue,
            other => panic!("subscribe: {other:?}"),
        }
    }
}

/// Reads an admin subscriber's frames until an event of `kind` about `user_id` arrives.
async fn expect_feed(sock: &mut Socket, kind: &str, user_id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next(sock, left).await {
            Next::Frame(f) if f["event"]["type"] == kind && f["event"]["user"]["id"] == user_id => {
                return f["event"].clone()
            }
            Next::Frame(_) => continue,
            other => panic!("admin feed: expected {kind} of {user_id}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn user_updated_on_one_node_reaches_the_users_sockets_on_the_others() {
    let cluster = Cluster::start(3).await;
    let id = uid("upd");
    upsert_ok(cluster.node(0), &[json!({"id": id, "name": "U"})]).await;
    let (mut on1, _) = cluster.node(1).connect(&id).await;
    let (mut on2, _) = cluster.node(2).connect(&id).await;

    let sent = Instant::now();
    cluster
        .node(0)
        .admin_ok(
            Method::PATCH,
            "/users",
            Some(json!({"users": [{"id": id, "set": {"mood": "happy"}}]})),
        )
        .await;
    let answered = sent.elapsed();
    for (node, sock) in [(1, &mut on1), (2, &mut on2)] {
        let ev = expect_event(sock, "user.updated", WAIT).await;
        println!(
            "partial update on node 0 -> user.updated on node {node}: {:?} (write answered after {answered:?})",
            sent.elapsed()
        );
        assert_eq!(ev["user"]["id"], id.as_str());
        assert_eq!(ev["user"]["mood"], "happy");
        assert_eq!(ev["user"]["name"], "U", "the whole user is sent");
    }

    // An upsert through node 2 reaches the socket on node 1 (and node 2's own).
    upsert_ok(
        cluster.node(2),
        &[json!({"id": id, "name": "U", "mood": "calm"})],
    )
    .await;
    for sock in [&mut on1, &mut on2] {
        let ev = expect_event(sock, "user.updated", WAIT).await;
        assert_eq!(ev["user"]["mood"], "calm");
    }

    // A user whose frame is far over a NOTIFY payload (8000 bytes): 250 teams of 100 bytes
    // and 5 KiB of custom data arrive whole on the other node.
    let teams: Vec<String> = (0..250)
        .map(|i| format!("{i:03}{}", "t".repeat(97)))
        .collect();
    let blob = "b".repeat(5000);
    let (status, _, body) = partial(
        cluster.node(0),
        json!([{"id": id, "set": {"teams": teams, "blob": blob}}]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let ev = expect_event(&mut on1, "user.updated", WAIT).await;
    assert_eq!(ev["user"]["teams"], json!(teams));
    assert_eq!(ev["user"]["blob"], blob.as_str());
}

#[tokio::test]
async fn a_custom_event_sent_on_one_node_reaches_the_users_sockets_on_every_node() {
    let cluster = Cluster::start(3).await;
    let (id, other) = (uid("custom"), uid("other"));
    upsert_ok(cluster.node(0), &[json!({"id": id}), json!({"id": other})]).await;
    let (mut on0, _) = cluster.node(0).connect(&id).await;
    let (mut on1, _) = cluster.node(1).connect(&id).await;
    let (mut on2, _) = cluster.node(2).connect(&id).await;
    let (mut bystander, _) = cluster.node(1).connect(&other).await;

    let sent = Instant::now();
    cluster
        .node(0)
        .admin_ok(
            Method::POST,
            &format!("/users/{id}/event"),
            Some(json!({"event": {"type": "friendship_request", "n": 7}})),
        )
        .await;
    for (node, sock) in [(0, &mut on0), (1, &mut on1), (2, &mut on2)] {
        let ev = expect_event(sock, "friendship_request", WAIT).await;
        println!(
            "custom event sent on node 0 -> socket on node {node}: {:?}",
            sent.elapsed()
        );
        assert_eq!(ev["n"], 7);
    }
    // The bystander's next frame is a later event of its own, not the custom one.
    cluster
        .node(2)
        .admin_ok(
            Method::POST,
            &format!("/users/{other}/event"),
            Some(json!({"event": {"type": "own_event"}})),
        )
        .await;
    let ev = loop {
        match next(&mut bystander, WAIT).await {
            Next::Frame(f) if f["type"] == "health.check" => continue,
            Next::Frame(f) => break f,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(ev["type"], "own_event", "{ev}");
}

#[tokio::test]
async fn presence_watchers_and_admin_subscribers_hear_from_every_node() {
    let cluster = Cluster::start(3).await;
    let mut feed = subscriber(cluster.node(0)).await;
    let (watcher, friend) = (uid("watcher"), uid("friend"));
    upsert_ok(cluster.node(0), &[json!({"id": friend, "name": "F"})]).await;
    let (mut w, first) = cluster.node(1).connect(&watcher).await;
    let conn_id = first["connection_id"].as_str().expect("connection_id");
    // The watcher asks for the friend's presence through its own node.
    let payload = json!({"filter_conditions": {"id": {"$in": [friend]}}, "presence": true});
    let path = format!(
        "/users?payload={}&user_id={watcher}&connection_id={conn_id}",
        encode(&payload.to_string())
    );
    let creds = Creds {
        api_key: Some(cluster.node(1).api_key.clone()),
        token: Some(cluster.node(1).user_token(&watcher)),
        auth_type: Some("jwt".into()),
    };
    let (status, _, body) = cluster
        .node(1)
        .public_with(Method::GET, &path, None, &creds)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["users"][0]["online"], false);

    // The friend connects on node 2: the watcher on node 1 and the subscriber on node 0 hear.
    let (f, _) = cluster.node(2).connect(&friend).await;
    let ev = expect_event(&mut w, "user.presence.changed", WAIT).await;
    assert_eq!(ev["user"]["id"], friend.as_str());
    assert_eq!(ev["user"]["online"], true);
    let ev = expect_feed(&mut feed, "user.presence.changed", &friend).await;
    assert_eq!(ev["user"]["online"], true);

    // A write on node 0 reaches the watcher (it watches the friend) and the subscriber.
    cluster
        .node(0)
        .admin_ok(
            Method::PATCH,
            "/users",
            Some(json!({"users": [{"id": friend, "set": {"mood": "sunny"}}]})),
        )
        .await;
    let ev = expect_event(&mut w, "user.updated", WAIT).await;
    assert_eq!(ev["user"]["mood"], "sunny");
    assert_eq!(ev["user"]["online"], true, "online is the cluster's: {ev}");
    expect_feed(&mut feed, "user.updated", &friend).await;

    // Deactivate, reactivate and delete made on nodes 1 and 2 reach node 0's subscriber.
    let other = uid("other");
    upsert_ok(cluster.node(1), &[json!({"id": other})]).await;
    expect_feed(&mut feed, "user.updated", &other).await;
    cluster
        .node(1)
        .admin_ok(
            Method::POST,
            &format!("/users/{other}/deactivate"),
            Some(json!({})),
        )
        .await;
    expect_feed(&mut feed, "user.deactivated", &other).await;
    cluster
        .node(2)
        .admin_ok(
            Method::POST,
            &format!("/users/{other}/reactivate"),
            Some(json!({})),
        )
        .await;
    expect_feed(&mut feed, "user.reactivated", &other).await;
    cluster
        .node(2)
        .admin_ok(Method::DELETE, &format!("/users/{other}"), None)
        .await;
    expect_feed(&mut feed, "user.deleted", &other).await;

    // The friend leaves node 2: offline for the watcher on node 1 and the subscriber.
    drop(f);
    let ev = expect_event(&mut w, "user.presence.changed", WAIT).await;
    assert_eq!(ev["user"]["id"], friend.as_str());
    assert_eq!(ev["user"]["online"], false);
    assert!(ev["user"]["last_active"].is_string(), "{ev}");
    let ev = expect_feed(&mut feed, "user.presence.changed", &friend).await;
    assert_eq!(ev["user"]["online"], false);
}

#[tokio::test]
async fn endings_made_on_one_node_close_the_users_sockets_on_every_node() {
    let cluster = Cluster::start(3).await;

    // Each ending: the user holds a socket on nodes 1 and 2; node 0 ends it.
    struct Ending {
        what: &'static str,
        kind: &'static str,
        code: Option<i64>,
        refused_with: i64,
    }
    let endings = [
        Ending {
            what: "deactivate",
            kind: "user.deactivated",
            code: None,
            refused_with: 17,
        },
        Ending {
            what: "soft delete",
            kind: "user.deleted",
            code: None,
            refused_with: 16,
        },
        Ending {
            what: "hard delete",
            kind: "user.deleted",
            code: None,
            refused_with: 16,
        },
        Ending {
            what: "user revocation",
            kind: "connection.error",
            code: Some(40),
            refused_with: 40,
        },
    ];
    for ending in endings {
        let id = uid("end");
        let (mut on1, _) = cluster.node(1).connect(&id).await;
        let (mut on2, _) = cluster.node(2).connect(&id).await;
        let since = Instant::now();
        let admin = cluster.node(0);
        match ending.what {
            "deactivate" => {
                admin
                    .admin_ok(
                        Method::POST,
                        &format!("/users/{id}/deactivate"),
                        Some(json!({})),
                    )
                    .await
            }
            "soft delete" => {
                admin
                    .admin_ok(Method::DELETE, &format!("/users/{id}"), None)
                    .await
            }
            "hard delete" => {
                admin
                    .admin_ok(
                        Method::DELETE,
                        &format!("/users/{id}?hard_delete=true"),
                        None,
                    )
                    .await
            }
            _ => {
                let cutoff = chat_gateway::protocol::Timestamp::now().to_wire();
                admin
                    .admin_ok(
                        Method::PATCH,
                        "/users",
                        Some(json!({"users": [{"id": id, "set": {"revoke_tokens_issued_before": cutoff}}]})),
                    )
                    .await
            }
        };
        let answered = since.elapsed();
        for (node, sock) in [(1, &mut on1), (2, &mut on2)] {
            let took = expect_ended(sock, ending.kind, ending.code, since).await;
            println!(
                "{} on node 0 -> socket on node {node} closed after {took:?} (answered after {answered:?})",
                ending.what
            );
        }
        // And the user cannot come back through any node.
        for node in cluster.nodes() {
            ws::expect_refusal(&node.connect_url(&id), ending.refused_with).await;
        }
    }

    // App-level revocation through node 0 ends everyone's sockets on nodes 1 and 2, and
    // node 2 refuses older tokens from then on, newer ones not.
    let (a, b) = (uid("app-a"), uid("app-b"));
    let (mut sa, _) = cluster.node(1).connect(&a).await;
    let (mut sb, _) = cluster.node(2).connect(&b).await;
    let since = Instant::now();
    let cutoff = chat_gateway::protocol::Timestamp::now().to_wire();
    cluster
        .node(0)
        .admin_ok(
            Method::PATCH,
            "/app",
            Some(json!({"revoke_tokens_issued_before": cutoff})),
        )
        .await;
    for (node, sock) in [(1, &mut sa), (2, &mut sb)] {
        let took = expect_ended(sock, "connection.error", Some(40), since).await;
        println!("app revocation on node 0 -> socket on node {node} closed after {took:?}");
    }
    let old = token_issued_at(cluster.node(2), &a, now_unix() - 60);
    let url = ws::connect_url(cluster.node(2), &a, json!({"id": a}), &old, "jwt");
    ws::expect_refusal(&url, 40).await;
    // Tokens carry whole seconds and may not be issued in the future: wait for the next
    // second past the cutoff.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fresh = token_issued_at(cluster.node(2), &a, now_unix());
    let url = ws::connect_url(cluster.node(2), &a, json!({"id": a}), &fresh, "jwt");
    let mut sock = ws::open(&url).await;
    match next(&mut sock, WAIT).await {
        Next::Frame(f) if f["type"] == "health.check" => {}
        other => panic!("a token issued after the cutoff: {other:?}"),
    }
}

/// Polls `node`'s `GET /app` until `key` has `value`; returns how long it took.
async fn wait_for_setting(node: &Node, key: &str, value: Value) -> Duration {
    let since = Instant::now();
    loop {
        let app = node.admin_ok(Method::GET, "/app", None).await;
        if app["app"][key] == value {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < WAIT,
            "node {} still shows {key} = {} after {WAIT:?}",
            node.index,
            app["app"][key]
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn app_settings_changed_on_one_node_apply_on_the_others() {
    let cluster = Cluster::start(3).await;
    upsert_ok(
        cluster.node(0),
        &[json!({"id": uid("holder"), "name": "Taken Name"})],
    )
    .await;
    set_mode(cluster.node(0), "app").await;
    for node in &cluster.nodes()[1..] {
        let took = wait_for_setting(node, "enforce_unique_usernames", json!("app")).await;
        println!(
            "enforce_unique_usernames on node 0 -> node {}: {took:?}",
            node.index
        );
        let reply = upsert(node, &[json!({"id": uid("late"), "name": "taken.name"})]).await;
        assert_error(&reply, 400, 6, None);
    }

    cluster
        .node(1)
        .admin_ok(
            Method::PATCH,
            "/app",
            Some(json!({"guest_user_creation_disabled": true})),
        )
        .await;
    for i in [0, 2] {
        let node = cluster.node(i);
        wait_for_setting(node, "guest_user_creation_disabled", json!(true)).await;
        let reply = node
            .public_with(
                Method::POST,
                "/guest",
                Some(json!({"user": {"id": uid("g")}})),
                &Creds {
                    api_key: Some(node.api_key.clone()),
                    token: None,
                    auth_type: Some("anonymous".into()),
                },
            )
            .await;
        assert_error(&reply, 403, 17, None);
    }
}

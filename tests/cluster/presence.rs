//! Presence across nodes (issue 10, behaviour 5): `online`, `last_active` and the per-user
//! connection limit are facts of the cluster, and a node that dies (kill -9), stalls past its
//! lease (SIGSTOP) or stops (SIGTERM) leaves neither ghosts online nor connections counted.
//!
//! Cleanup times are printed (`--nocapture`); the tests bound them generously.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::encode;
use crate::harness::{Cluster, Node};
use crate::ws::{self, expect_event, next, uid, Next, Socket};
use crate::{query_users, upsert_ok};

/// The per-user connection limit (the default, `limits.max_connections_per_user`).
const PER_USER: usize = 50;
/// How long a dead or paused node's users may stay online ("within a few seconds").
const CLEANUP_BOUND: Duration = Duration::from_secs(15);
/// How long a test waits for something that should take milliseconds.
const WAIT: Duration = Duration::from_secs(5);

/// `online` and `last_active` of `id` as `node` answers a server query.
async fn presence_of(node: &Node, id: &str) -> (bool, Value) {
    let users = query_users(node, json!({"filter_conditions": {"id": id}})).await;
    let user = users.first().unwrap_or_else(|| panic!("{id} not found"));
    (
        user["online"].as_bool().expect("online is a boolean"),
        user["last_active"].clone(),
    )
}

/// Polls `node` until `id`'s `online` is `want`; returns how long it took (panics past
/// `limit`).
async fn wait_online(node: &Node, id: &str, want: bool, limit: Duration) -> Duration {
    let since = Instant::now();
    loop {
        if presence_of(node, id).await.0 == want {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < limit,
            "node {} still shows {id} online = {} after {limit:?}",
            node.index,
            !want
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Closes a client socket with a close frame, as a well-behaved client does.
async fn close(mut sock: Socket) {
    let _ = sock.close(None).await;
    // Drain until the server's answer or the end.
    let _ = next(&mut sock, Duration::from_secs(2)).await;
}

/// Connects `id` to `node`, retrying while the connect is refused with code 71 (a count
/// released on another node may take a moment to be seen); panics past `limit`.
async fn connect_when_allowed(node: &Node, id: &str, limit: Duration) -> Socket {
    let since = Instant::now();
    loop {
        let mut sock = ws::open(&node.connect_url(id)).await;
        match next(&mut sock, WAIT).await {
            Next::Frame(f) if f["type"] == "health.check" => return sock,
            Next::Frame(f) if f["type"] == "connection.error" && f["error"]["code"] == 71 => {
                assert!(
                    since.elapsed() < limit,
                    "node {} still refuses {id} with 71 after {limit:?}",
                    node.index
                );
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            other => panic!("connect of {id} on node {}: {other:?}", node.index),
        }
    }
}

/// Opens `count` sockets of `id` on `node`.
async fn open_many(node: &Node, id: &str, count: usize) -> Vec<Socket> {
    let mut socks = Vec::with_capacity(count);
    for _ in 0..count {
        socks.push(node.connect(id).await.0);
    }
    socks
}

/// Reads frames until the socket closes with `code` within `limit`; returns how long it took.
async fn expect_close_within(sock: &mut Socket, code: u16, limit: Duration) -> Duration {
    let since = Instant::now();
    loop {
        let left = limit.saturating_sub(since.elapsed());
        match next(sock, left).await {
            Next::Frame(_) => continue,
            Next::Closed(c, reason) => {
                assert_eq!(c, code, "close reason {reason}");
                return since.elapsed();
            }
            other => panic!("expected close {code} within {limit:?}, got {other:?}"),
        }
    }
}

/// A watcher connected to `node` that asked for the presence of `ids`.
async fn watcher(node: &Node, ids: &[&str]) -> Socket {
    let me = uid("watcher");
    let (sock, first) = node.connect(&me).await;
    let conn_id = first["connection_id"].as_str().expect("connection_id");
    let payload = json!({"filter_conditions": {"id": {"$in": ids}}, "presence": true});
    let path = format!(
        "/users?payload={}&user_id={me}&connection_id={conn_id}",
        encode(&payload.to_string())
    );
    let creds = crate::common::Creds {
        api_key: Some(node.api_key.clone()),
        token: Some(node.user_token(&me)),
        auth_type: Some("jwt".into()),
    };
    let (status, _, body) = node.public_with(Method::GET, &path, None, &creds).await;
    assert_eq!(status, 200, "{body}");
    sock
}

#[tokio::test]
async fn online_and_last_active_are_the_clusters() {
    let cluster = Cluster::start(3).await;
    let id = uid("here");
    upsert_ok(cluster.node(0), &[json!({"id": id})]).await;
    for node in cluster.nodes() {
        assert!(!presence_of(node, &id).await.0);
    }
    let (on1, _) = cluster.node(1).connect(&id).await;
    for node in cluster.nodes() {
        let took = wait_online(node, &id, true, WAIT).await;
        println!(
            "connect on node 1 -> online on node {}: {took:?}",
            node.index
        );
    }
    let (on2, _) = cluster.node(2).connect(&id).await;
    close(on1).await;
    // Still connected through node 2: online everywhere, and it stays so.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for node in cluster.nodes() {
        assert!(presence_of(node, &id).await.0, "node {}", node.index);
    }
    let (_, while_online) = presence_of(cluster.node(0), &id).await;
    close(on2).await;
    for node in cluster.nodes() {
        wait_online(node, &id, false, WAIT).await;
    }
    // The last disconnect sets last_active, and every node comes to show that one (it is
    // written a moment after the user goes offline: the nodes are polled until they agree).
    let since = Instant::now();
    loop {
        let mut seen = Vec::new();
        for node in cluster.nodes() {
            seen.push(presence_of(node, &id).await.1);
        }
        let settled =
            seen[0].is_string() && seen[0] != while_online && seen.windows(2).all(|w| w[0] == w[1]);
        if settled {
            break;
        }
        assert!(
            since.elapsed() < WAIT,
            "the nodes do not agree on the last disconnect's last_active: {seen:?} \
             (before: {while_online})"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    println!(
        "last disconnect -> same last_active on every node after {:?}",
        since.elapsed()
    );
}

#[tokio::test]
async fn the_connection_limit_counts_every_node() {
    let cluster = Cluster::start(3).await;
    let id = uid("many");
    let mut socks: Vec<(usize, Socket)> = Vec::new();
    for i in 0..PER_USER {
        let n = i % 3;
        socks.push((n, cluster.node(n).connect(&id).await.0));
    }
    for node in cluster.nodes() {
        ws::expect_refusal(&node.connect_url(&id), 71).await;
    }
    // One socket closed on node 0 makes room on node 2.
    let at = socks
        .iter()
        .position(|(n, _)| *n == 0)
        .expect("a socket on node 0");
    let (_, sock) = socks.swap_remove(at);
    close(sock).await;
    let since = Instant::now();
    let again = connect_when_allowed(cluster.node(2), &id, WAIT).await;
    println!(
        "close on node 0 -> connect allowed on node 2: {:?}",
        since.elapsed()
    );
    socks.push((2, again));
    ws::expect_refusal(&cluster.node(1).connect_url(&id), 71).await;
}

/// kill -9 of a node: its users go offline on the others within seconds (measured), once,
/// with `last_active` set; their connection counts are released; users also connected
/// elsewhere stay online; and the node restarted wipes nobody else's presence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_users_go_offline_within_seconds() {
    let mut cluster = Cluster::start(3).await;
    let (gone, both, elsewhere) = (uid("gone"), uid("both"), uid("elsewhere"));
    // `gone` holds all its connections on node 1; `both` one on node 1 and one on node 2;
    // `elsewhere` one on node 0.
    let gone_socks = open_many(cluster.node(1), &gone, PER_USER).await;
    let (both1, _) = cluster.node(1).connect(&both).await;
    let (_both2, _) = cluster.node(2).connect(&both).await;
    let (_elsewhere0, _) = cluster.node(0).connect(&elsewhere).await;
    let mut watching = watcher(cluster.node(0), &[&gone, &both]).await;
    for id in [&gone, &both, &elsewhere] {
        wait_online(cluster.node(0), id, true, WAIT).await;
    }
    ws::expect_refusal(&cluster.node(2).connect_url(&gone), 71).await;

    // Measure the steady state: a node reaps others only once its own lease has been renewed
    // for a whole lease (5 s), so that nodes back from a database outage do not take each
    // other for dead; right after a start the figure would include that wait.
    if let Some(left) = Duration::from_secs(6).checked_sub(cluster.uptime()) {
        tokio::time::sleep(left).await;
    }
    let killed = Instant::now();
    cluster.node_mut(1).kill().await;
    drop((gone_socks, both1));
    let took = wait_online(cluster.node(0), &gone, false, CLEANUP_BOUND).await;
    println!("kill -9 of node 1 -> its user offline on node 0 after {took:?}");
    wait_online(cluster.node(2), &gone, false, WAIT).await;
    let (_, last_active) = presence_of(cluster.node(2), &gone).await;
    assert!(
        last_active.is_string(),
        "last_active after the reap: {last_active}"
    );
    // Its fifty connections no longer count.
    let mut again = vec![connect_when_allowed(cluster.node(0), &gone, CLEANUP_BOUND).await];
    println!(
        "kill -9 of node 1 -> connection count released after {:?}",
        killed.elapsed()
    );

    // The watcher heard exactly one offline event for `gone` (then, as it connected again,
    // an online one), none for `both`.
    let ev = expect_event(&mut watching, "user.presence.changed", WAIT).await;
    assert_eq!(ev["user"]["id"], gone.as_str(), "{ev}");
    assert_eq!(ev["user"]["online"], false);
    let quiet_until = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let left = quiet_until.saturating_duration_since(tokio::time::Instant::now());
        match next(&mut watching, left).await {
            Next::Timeout => break,
            Next::Frame(f) if f["type"] == "user.presence.changed" => {
                let user = &f["user"];
                assert_ne!(user["id"], both.as_str(), "{both} never went offline: {f}");
                assert_eq!(user["online"], true, "a second offline event: {f}");
            }
            Next::Frame(_) => continue,
            other => panic!("the watcher's socket: {other:?}"),
        }
    }
    for node in [0, 2] {
        assert!(
            presence_of(cluster.node(node), &both).await.0,
            "both, node {node}"
        );
        assert!(presence_of(cluster.node(node), &elsewhere).await.0);
    }

    for i in 1..PER_USER {
        again.push(
            cluster
                .node(if i % 2 == 0 { 0 } else { 2 })
                .connect(&gone)
                .await
                .0,
        );
    }
    ws::expect_refusal(&cluster.node(2).connect_url(&gone), 71).await;

    // The node comes back under a new id and clears nobody's presence but its own past.
    cluster.node_mut(1).restart().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for node in cluster.nodes() {
        for id in [&gone, &both, &elsewhere] {
            assert!(presence_of(node, id).await.0, "{id} on node {}", node.index);
        }
    }
    ws::expect_refusal(&cluster.node(1).connect_url(&gone), 71).await;
    let (_back, _) = cluster.node(1).connect(&both).await;
}

/// SIGSTOP past the lease: the others reap the paused node (its users offline, their counts
/// released); on SIGCONT it fences itself — closes its sockets with 1013 — and registers
/// anew, after which it serves and counts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_past_its_lease_is_reaped_and_fences_itself() {
    let cluster = Cluster::start(3).await;
    let (paused, full, steady) = (uid("paused"), uid("full"), uid("steady"));
    let (mut paused_sock, _) = cluster.node(1).connect(&paused).await;
    let mut full_socks = open_many(cluster.node(1), &full, PER_USER).await;
    let (_steady0, _) = cluster.node(0).connect(&steady).await;
    wait_online(cluster.node(0), &paused, true, WAIT).await;

    cluster.node(1).pause();
    let took = wait_online(cluster.node(0), &paused, false, CLEANUP_BOUND).await;
    println!("SIGSTOP of node 1 -> its user offline on node 0 after {took:?}");
    assert!(presence_of(cluster.node(2), &steady).await.0);
    // The paused node's connections no longer count.
    let extra = connect_when_allowed(cluster.node(2), &full, WAIT).await;

    cluster.node(1).resume();
    let resumed = Instant::now();
    let took = expect_close_within(&mut paused_sock, 1013, Duration::from_secs(10)).await;
    println!("SIGCONT of node 1 -> its sockets closed with 1013 after {took:?}");
    for sock in &mut full_socks {
        expect_close_within(sock, 1013, Duration::from_secs(10)).await;
    }
    // It registers anew: healthy again, and what connects to it counts everywhere.
    let health = format!("{}/healthz", cluster.node(1).public_url);
    loop {
        let (status, body) = cluster.node(1).get_url(&health).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            resumed.elapsed() < Duration::from_secs(15),
            "node 1 is not healthy again: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_again, _) = cluster.node(1).connect(&paused).await;
    wait_online(cluster.node(0), &paused, true, WAIT).await;
    let _more = open_many(cluster.node(1), &full, PER_USER - 1).await;
    ws::expect_refusal(&cluster.node(0).connect_url(&full), 71).await;
    drop(extra);
    assert!(presence_of(cluster.node(2), &steady).await.0);
}

/// SIGTERM: the node closes its sockets with 1001 and its users go offline everywhere.
#[tokio::test]
async fn a_stopped_nodes_users_go_offline_at_once() {
    let mut cluster = Cluster::start(3).await;
    let id = uid("leaving");
    let (mut sock, _) = cluster.node(1).connect(&id).await;
    wait_online(cluster.node(0), &id, true, WAIT).await;
    let since = Instant::now();
    let stopping = {
        let node = cluster.node_mut(1);
        node.terminate()
    };
    let (status, took) = tokio::join!(stopping, async {
        expect_close_within(&mut sock, 1001, WAIT).await
    });
    assert!(status.success(), "{status}");
    println!("SIGTERM of node 1 -> socket closed with 1001 after {took:?}");
    wait_online(cluster.node(0), &id, false, WAIT).await;
    println!(
        "SIGTERM of node 1 -> user offline on node 0 after {:?}",
        since.elapsed()
    );
}

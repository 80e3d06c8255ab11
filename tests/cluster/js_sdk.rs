//! The update and kill paths with the official JS SDK as the client (see `sdk`): what an app
//! built on `stream-chat` sees when its user is changed or ended through another node, and
//! when the node it is connected to is killed.
//!
//! Times are printed (`--nocapture`), not asserted; a test only bounds how long it waits.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{Cluster, Node};
use crate::sdk::{now_ms, Sdk};
use crate::ws::uid;

/// How long a test waits for something that should take milliseconds.
const WAIT: Duration = Duration::from_secs(5);
/// How long a killed node's users may stay online ("within a few seconds").
const CLEANUP_BOUND: Duration = Duration::from_secs(15);
/// The SDK's first retry after an abnormal close comes within 0.25–2.5 s, later ones farther
/// apart; its `connection.changed` offline event comes 5 s after the close.
const SDK_RETRY_BOUND: Duration = Duration::from_secs(10);

/// How long after `since_ms` (wall clock) a driver line was written.
fn after(line: &Value, since_ms: i64) -> Duration {
    let at = line["at"].as_i64().expect("lines carry at");
    Duration::from_millis(at.saturating_sub(since_ms).max(0) as u64)
}

/// Polls a server-side `queryUsers` on `node` until `id`'s `online` is `want`; returns the
/// user.
async fn until_online(sdk: &mut Sdk, node: &Node, id: &str, want: bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let answer = sdk
            .server(
                node,
                "queryUsers",
                json!([{"id": id}, [], {"include_deactivated_users": true}]),
            )
            .await;
        let user = answer["users"][0].clone();
        if user["online"] == want {
            return user;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a server queryUsers on node {} still shows {id} online = {} after {WAIT:?}",
            node.index,
            user["online"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A close the server ended for good: code 1000 with a JSON reason carrying `code`.
fn assert_ended_for_good(closed: &Value, code: i64) {
    assert_eq!(closed["closed"]["code"], 1000, "{closed}");
    let reason: Value = serde_json::from_str(closed["closed"]["reason"].as_str().unwrap_or(""))
        .unwrap_or_else(|e| panic!("the close reason is JSON ({e}): {closed}"));
    assert_eq!(reason["code"], code, "{closed}");
}

#[tokio::test]
async fn an_sdk_client_follows_updates_and_endings_made_through_another_node() {
    let cluster = Cluster::start(2).await;
    let (a, b) = (cluster.node(0), cluster.node(1));
    let mut sdk = Sdk::start(a).await;
    let (id, other) = (uid("sdk-upd"), uid("sdk-rev"));

    // The back end creates the user through node A; the app connects through node B.
    sdk.server(
        a,
        "upsertUser",
        json!([{"id": id, "name": "Before", "mood": "calm"}]),
    )
    .await;
    let first = sdk.connect("b", &b.public_url, json!({"id": id})).await;
    assert_eq!(first["me"]["name"], "Before", "{first}");
    assert_eq!(first["me"]["mood"], "calm", "{first}");

    // A partial update on A: user.updated on B, and client.user follows.
    let sent = now_ms();
    sdk.server(
        a,
        "partialUpdateUser",
        json!([{"id": id, "set": {"name": "After", "mood": "happy", "color": "blue"}}]),
    )
    .await;
    let line = sdk
        .event("b", "user.updated", WAIT, |e| e["user"]["name"] == "After")
        .await;
    println!(
        "partialUpdateUser on node A -> user.updated at the SDK on node B after {:?}",
        after(&line, sent)
    );
    let ev = &line["event"]["user"];
    assert_eq!(
        (&ev["name"], &ev["mood"], &ev["color"]),
        (&json!("After"), &json!("happy"), &json!("blue")),
        "{line}"
    );
    let user = sdk.ok("user", json!({"client": "b"})).await;
    assert_eq!(
        (&user["name"], &user["mood"], &user["color"]),
        (&json!("After"), &json!("happy"), &json!("blue")),
        "client.user after the partial update: {user}"
    );

    // An upsert on A replaces the user: the field it leaves out leaves client.user too.
    let sent = now_ms();
    sdk.server(
        a,
        "upsertUser",
        json!([{"id": id, "name": "Again", "color": "green"}]),
    )
    .await;
    let line = sdk
        .event("b", "user.updated", WAIT, |e| e["user"]["name"] == "Again")
        .await;
    println!(
        "upsertUser on node A -> user.updated at the SDK on node B after {:?}",
        after(&line, sent)
    );
    let user = sdk.ok("user", json!({"client": "b"})).await;
    assert_eq!(user["name"], "Again", "{user}");
    assert_eq!(user["color"], "green", "{user}");
    assert!(user.get("mood").is_none(), "mood was replaced away: {user}");

    // A deactivate on A ends the socket on B: user.deactivated, then close 1000.
    sdk.server(a, "upsertUser", json!([{"id": other}])).await;
    sdk.connect("rev", &b.public_url, json!({"id": other}))
        .await;
    let sent = now_ms();
    sdk.server(a, "deactivateUser", json!([id])).await;
    let line = sdk
        .event("b", "user.deactivated", WAIT, |e| {
            e["user"]["id"] == id.as_str()
        })
        .await;
    println!(
        "deactivateUser on node A -> user.deactivated at the SDK on node B after {:?}",
        after(&line, sent)
    );
    let closed = sdk.closed("b", WAIT).await;
    println!(
        "deactivateUser on node A -> the SDK's socket on node B closed after {:?}",
        after(&closed, sent)
    );
    assert_ended_for_good(&closed, 17);

    // A token revocation on A ends the other user's socket on B: connection.error 40, then
    // close 1000. The SDK's server helper mints tokens without iat, which any cutoff revokes.
    let sent = now_ms();
    sdk.server(a, "revokeUserToken", json!([other])).await;
    let line = sdk
        .event("rev", "connection.error", WAIT, |e| {
            e["error"]["code"] == 40
        })
        .await;
    println!(
        "revokeUserToken on node A -> connection.error 40 at the SDK on node B after {:?}",
        after(&line, sent)
    );
    let closed = sdk.closed("rev", WAIT).await;
    assert_ended_for_good(&closed, 40);

    // Ended for good: neither SDK tries again (its first retry would come within 2.5 s),
    // and node A counts neither as online.
    assert_eq!(
        sdk.reconnects("b", Duration::from_secs(3)).await,
        0,
        "client b retries"
    );
    assert_eq!(
        sdk.reconnects("rev", Duration::ZERO).await,
        0,
        "client rev retries"
    );
    let stored = until_online(&mut sdk, a, &id, false).await;
    assert!(stored["deactivated_at"].is_string(), "{stored}");
    until_online(&mut sdk, a, &other, false).await;
}

/// kill -9 of the node an SDK client is connected to: an SDK watcher on another node hears
/// the user go offline (measured), a server query agrees, and an SDK client that reached the
/// killed node through a load balancer comes back through a live node by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_clients_see_a_killed_nodes_user_go_offline_and_come_back_elsewhere() {
    let mut cluster = Cluster::start(3).await;
    let (a, b, c) = (0, 1, 2);
    let mut sdk = Sdk::start(cluster.node(a)).await;
    let (gone, mover, watcher) = (uid("sdk-gone"), uid("sdk-mover"), uid("sdk-watcher"));

    // `gone`'s app is pointed at node C itself; `mover`'s at a load balancer in front of C
    // and B (C first, while it accepts); the watcher is on node A.
    sdk.connect("gone", &cluster.node(c).public_url, json!({"id": gone}))
        .await;
    let balancer = sdk
        .ok(
            "balancer",
            json!({"backends": [cluster.node(c).public_url, cluster.node(b).public_url]}),
        )
        .await;
    let balanced = balancer["url"].as_str().expect("the balancer's url");
    sdk.connect("mover", balanced, json!({"id": mover})).await;
    sdk.connect(
        "watcher",
        &cluster.node(a).public_url,
        json!({"id": watcher}),
    )
    .await;
    // The watcher asks for their presence (so it hears of changes) until both show online.
    let query = json!({
        "client": "watcher",
        "filter": {"id": {"$in": [gone, mover]}},
        "sort": [{"id": 1}],
        "options": {"presence": true},
    });
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let seen = sdk.ok("query_users", query.clone()).await;
        let users = seen.as_array().expect("users");
        if users.len() == 2 && users.iter().all(|u| u["online"] == true) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watcher's queryUsers on node A: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Measure the steady state: a node reaps others only once its own lease has been renewed
    // for a whole lease (5 s); right after a start the figure would include that wait.
    if let Some(left) = Duration::from_secs(6).checked_sub(cluster.uptime()) {
        tokio::time::sleep(left).await;
    }
    let killed = now_ms();
    cluster.node_mut(c).kill().await;

    // The watcher on A: user.presence.changed, offline, for `gone`.
    let line = sdk
        .event("watcher", "user.presence.changed", CLEANUP_BOUND, |e| {
            e["user"]["id"] == gone.as_str()
        })
        .await;
    println!(
        "kill -9 of node C -> user.presence.changed offline at the SDK watcher on node A after {:?}",
        after(&line, killed)
    );
    assert_eq!(line["event"]["user"]["online"], false, "{line}");
    assert!(line["event"]["user"]["last_active"].is_string(), "{line}");
    // A server query on A agrees.
    let stored = until_online(&mut sdk, cluster.node(a), &gone, false).await;
    assert!(stored["last_active"].is_string(), "{stored}");

    // `gone`'s SDK saw its socket drop without a close frame and keeps trying its dead node.
    let closed = sdk.closed("gone", WAIT).await;
    assert_ne!(closed["closed"]["code"], 1000, "{closed}");
    println!(
        "kill -9 of node C -> the SDK's socket on node C closed ({}) after {:?}",
        closed["closed"]["code"],
        after(&closed, killed)
    );

    // `mover`'s SDK reconnects through the balancer, now to node B, and is online again.
    let closed = sdk.closed("mover", WAIT).await;
    assert_ne!(closed["closed"]["code"], 1000, "{closed}");
    let line = sdk
        .event("mover", "connection.changed", SDK_RETRY_BOUND, |e| {
            e["online"] == true
        })
        .await;
    println!(
        "kill -9 of node C -> the balanced SDK client connected again (node B) after {:?}",
        after(&line, killed)
    );
    until_online(&mut sdk, cluster.node(a), &mover, true).await;
    // Its new socket gets what node A publishes.
    sdk.server(
        cluster.node(a),
        "partialUpdateUser",
        json!([{"id": mover, "set": {"mood": "moved"}}]),
    )
    .await;
    sdk.event("mover", "user.updated", WAIT, |e| {
        e["user"]["id"] == mover.as_str() && e["user"]["mood"] == "moved"
    })
    .await;
    let user = sdk.ok("user", json!({"client": "mover"})).await;
    assert_eq!(user["mood"], "moved", "{user}");

    // `gone`'s SDK, its node still dead, tells the app it is offline and retries.
    sdk.event("gone", "connection.changed", SDK_RETRY_BOUND, |e| {
        e["online"] == false
    })
    .await;
    let retries = sdk.reconnects("gone", Duration::ZERO).await;
    assert!(retries > 0, "the SDK of a dropped socket tries again");
    // The watcher heard `gone` go offline once.
    let again = sdk.unclaimed_events("watcher", |e| {
        e["type"] == "user.presence.changed" && e["user"]["id"] == gone.as_str()
    });
    assert!(
        again.is_empty(),
        "a second presence change of {gone}: {again:?}"
    );
}

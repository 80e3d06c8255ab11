//! Catching up after the event listener lost its connection (issue 10, behaviour 4): ending
//! a user's sockets on other nodes never rests on one notification arriving. The listener's
//! database session is terminated (`pg_terminate_backend`) while a deactivate is made on
//! another node, so its notification goes nowhere; the node must still end the socket, by
//! replaying the outbox after it reconnects. A change no event describes at all (written
//! straight into the database) is caught by the re-check of live sockets that follows.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use tokio_postgres::NoTls;

use crate::common::ws::{expect_event, next, uid, Next, Socket};
use crate::harness::Cluster;

/// How long a test waits for a socket to end.
const WAIT: Duration = Duration::from_secs(10);

/// A client of the cluster's database.
async fn database(cluster: &Cluster) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(cluster.db().url(), NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(connection);
    client
}

/// Terminates the listener sessions of every node, once each node has one again; returns
/// how many there were.
async fn terminate_listeners(db: &tokio_postgres::Client, name: &str) -> i64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let row = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = $1 AND application_name LIKE 'chat-gateway listener %'",
                &[&name],
            )
            .await
            .expect("count listeners");
        if row.get::<_, i64>(0) >= 2 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let row = db
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = $1 AND application_name LIKE 'chat-gateway listener %'",
            &[&name],
        )
        .await
        .expect("terminate listeners");
    row.get(0)
}

/// Waits until the socket is closed; returns the close code.
async fn closed(sock: &mut Socket) -> u16 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next(sock, left).await {
            Next::Frame(_) => continue,
            Next::Closed(code, _) => return code,
            other => panic!("expected the socket to close, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_deactivate_sent_while_the_listener_is_down_still_ends_the_socket() {
    let cluster = Cluster::start(2).await;
    let db = database(&cluster).await;
    for round in 0..5 {
        let id = uid("missed");
        let (mut sock, _) = cluster.node(1).connect(&id).await;
        let killed = terminate_listeners(&db, cluster.db().name()).await;
        assert_eq!(killed, 2, "one listener session per node");
        let since = Instant::now();
        cluster
            .node(0)
            .admin_ok(
                Method::POST,
                &format!("/users/{id}/deactivate"),
                Some(json!({})),
            )
            .await;
        expect_event(&mut sock, "user.deactivated", WAIT).await;
        assert_eq!(closed(&mut sock).await, 1000);
        println!(
            "round {round}: socket on node 1 ended {} ms after the deactivate on node 0",
            since.elapsed().as_millis()
        );
    }
    // At least one deactivate reached node 1 by the replay (not by a notification).
    let log = cluster.node(1).log();
    let replayed = log
        .lines()
        .filter(|l| l.contains("cluster listener caught up"))
        .any(|l| !l.contains("replayed=0"));
    assert!(replayed, "node 1 never replayed a missed event:\n{log}");
}

#[tokio::test]
async fn changes_no_event_describes_are_caught_by_the_recheck_after_a_reconnect() {
    let cluster = Cluster::start(2).await;
    let db = database(&cluster).await;
    let gone = uid("gone");
    let revoked = uid("revoked");
    let kept = uid("kept");
    let (mut gone_sock, _) = cluster.node(1).connect(&gone).await;
    let (mut revoked_sock, _) = cluster.node(1).connect(&revoked).await;
    let (mut kept_sock, _) = cluster.node(1).connect(&kept).await;
    // Straight into the database: no outbox row, no notification.
    let later = chat_gateway::protocol::Timestamp::now().to_wire();
    db.execute(
        "UPDATE users SET version = version + 1,
             doc = (doc::jsonb || jsonb_build_object('deactivated_at', $2::text))::text
         WHERE id = $1",
        &[&gone, &later],
    )
    .await
    .expect("deactivate behind the gateway's back");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let cutoff = chat_gateway::protocol::Timestamp::now().to_wire();
    db.execute(
        "UPDATE users SET version = version + 1,
             doc = (doc::jsonb || jsonb_build_object('revoke_tokens_issued_before', $2::text))::text
         WHERE id = $1",
        &[&revoked, &cutoff],
    )
    .await
    .expect("revoke behind the gateway's back");
    // Nothing happens until the listener reconnects.
    assert!(
        matches!(
            next(&mut gone_sock, Duration::from_millis(500)).await,
            Next::Timeout
        ),
        "no event describes the change yet"
    );
    assert_eq!(terminate_listeners(&db, cluster.db().name()).await, 2);
    expect_event(&mut gone_sock, "user.deactivated", WAIT).await;
    assert_eq!(closed(&mut gone_sock).await, 1000);
    let frame = expect_event(&mut revoked_sock, "connection.error", WAIT).await;
    assert_eq!(frame["error"]["code"], 40, "{frame}");
    assert_eq!(closed(&mut revoked_sock).await, 1000);
    // A user with nothing against it keeps its socket.
    assert!(
        matches!(
            next(&mut kept_sock, Duration::from_millis(1500)).await,
            Next::Timeout | Next::Frame(_)
        ),
        "an untouched user's socket stays open"
    );
    let pong = json!({"type": "health.check"});
    crate::common::ws::send(&mut kept_sock, pong).await;
    assert!(!matches!(
        next(&mut kept_sock, Duration::from_millis(500)).await,
        Next::Closed(..)
    ));
}

//! A PostgreSQL restart (issue 10, behaviour 6): the nodes reconnect and rebuild what they
//! keep in the database — their leases, their presence rows, their listeners — without
//! being restarted, and the users' sockets stay open. Runs on a server of its own (restarting
//! the shared one would pull it from under every other test), once with a clean restart and
//! once with a crash (`-m immediate`), after which PostgreSQL empties the unlogged tables the
//! leases and presence live in.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::common::pg::{OwnServer, TestDb};
use crate::common::ws::{expect_event, next, uid, Next};
use crate::fetch;
use crate::harness::Cluster;

/// How long the nodes may take to work again after the database is back.
const RECOVERY: Duration = Duration::from_secs(30);

/// Retries a partial update through node `i` until it succeeds; returns how long it took.
async fn write_until_it_works(cluster: &Cluster, i: usize, id: &str, mood: &str) -> Duration {
    let since = Instant::now();
    loop {
        let body = json!({"users": [{"id": id, "set": {"mood": mood}}]});
        let (status, _, reply) = cluster
            .node(i)
            .admin(Method::PATCH, "/users", Some(body))
            .await;
        if status == 200 {
            return since.elapsed();
        }
        assert!(
            status == 503 || status == 500,
            "an outage is a 503 (or a failed statement), got {status}: {reply}"
        );
        assert!(
            since.elapsed() < RECOVERY,
            "node {i} did not recover: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn nodes_ride_out_database_restarts_without_being_restarted() {
    let server = OwnServer::start();
    let db = TestDb::create_on(server.url()).await;
    let cluster = Cluster::start_on(2, db, &[]).await;
    let alice = uid("alice");
    let (mut sock, _) = cluster.node(1).connect(&alice).await;

    for mode in ["fast", "immediate"] {
        let restarting = {
            let url = server.url().to_owned();
            let started = Instant::now();
            // pg_ctl blocks until the server is back.
            let s = &server;
            std::thread::scope(|scope| scope.spawn(|| s.restart(mode)).join())
                .unwrap_or_else(|_| panic!("restart of {url} panicked"));
            started.elapsed()
        };
        let took = write_until_it_works(&cluster, 0, &alice, mode).await;
        println!(
            "restart -m {mode}: database back after {} ms, node 0 writing again {} ms later",
            restarting.as_millis(),
            took.as_millis()
        );
        // The write reaches the socket on node 1 once its listener is back: the socket
        // stayed open through the outage.
        let deadline = Instant::now() + RECOVERY;
        loop {
            let ev = expect_event(&mut sock, "user.updated", RECOVERY).await;
            if ev["user"]["mood"] == mode {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no user.updated with mood {mode}"
            );
        }
        // Presence was rebuilt (after a crash the table came back empty): alice is online.
        let deadline = Instant::now() + RECOVERY;
        loop {
            let seen = fetch(cluster.node(0), &alice).await.expect("alice");
            if seen["online"] == true {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "alice never back online after -m {mode}: {seen}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Both nodes answer /healthz with 200 again.
        for node in cluster.nodes() {
            let deadline = Instant::now() + RECOVERY;
            loop {
                let (status, _, _) = node.admin(Method::GET, "/healthz", None).await;
                if status == 200 {
                    break;
                }
                assert!(Instant::now() < deadline, "a node stayed unhealthy");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    // The cluster still ends sockets across nodes.
    cluster
        .node(0)
        .admin_ok(
            Method::POST,
            &format!("/users/{alice}/deactivate"),
            Some(json!({})),
        )
        .await;
    expect_event(&mut sock, "user.deactivated", RECOVERY).await;
    loop {
        match next(&mut sock, RECOVERY).await {
            Next::Frame(_) => continue,
            Next::Closed(code, _) => {
                assert_eq!(code, 1000);
                break;
            }
            other => panic!("expected a close, got {other:?}"),
        }
    }
    let log = cluster.node(1).log();
    assert!(
        !log.contains("fenced"),
        "no node fences over a restart:\n{log}"
    );
}

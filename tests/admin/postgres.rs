//! The real gateway on `store.kind = "postgres"`: admin operations end to end (upsert,
//! partial update, delete, query, app settings, tasks), data that outlives the node that
//! wrote it, and a database outage answered with 503 instead of a hang (and shown by
//! `/healthz` until the database is back).

use std::time::{Duration, Instant};

use chat_gateway::config::StoreKind;
use reqwest::Method;
use serde_json::json;

use crate::common::pg::TestDb;
use crate::common::{assert_error, TestServer};
use crate::{fetch, partial, query_ids, set_mode, upsert, upsert_ok};

/// A gateway whose store is the database `db` (and a data dir of its own).
async fn start_on(db: &TestDb) -> TestServer {
    let url = db.url().to_owned();
    TestServer::start_with(move |c| {
        c.store.kind = StoreKind::Postgres;
        c.store.postgres_url = url;
        c.store.postgres_connect_timeout_ms = 1000;
        c.store.postgres_call_timeout_ms = 3000;
    })
    .await
}

async fn psql(db: &TestDb, sql: &str) {
    let admin = crate::common::pg::server_url();
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let sql = sql.replace("{db}", db.name());
    client.batch_execute(&sql).await.unwrap();
}

#[tokio::test]
async fn admin_operations_run_on_postgres_and_outlive_the_node() {
    let db = TestDb::create().await;
    let srv = start_on(&db).await;
    set_mode(&srv, "app").await;
    upsert_ok(
        &srv,
        &[
            json!({"id": "alice", "name": "Alice", "teams": ["red"], "color": "green"}),
            json!({"id": "bob", "name": "Bob"}),
            json!({"id": "soft", "name": "Soft"}),
            json!({"id": "hard", "name": "Hard"}),
        ],
    )
    .await;
    // Unique names, checked in the database.
    assert_error(
        &upsert(&srv, &[json!({"id": "carol", "name": "ALICE"})]).await,
        400,
        6,
        Some("UpdateUsers failed with error: \"username 'ALICE' already exists\""),
    );
    let (status, _, body) = partial(
        &srv,
        json!([{"id": "alice", "set": {"a.b": 1}, "unset": ["color"]}]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let alice = fetch(&srv, "alice").await.unwrap();
    assert_eq!(alice["a"], json!({"b": 1}));
    assert_eq!(alice.get("color"), None);
    srv.admin_ok(Method::DELETE, "/users/soft", None).await;
    srv.admin_ok(Method::DELETE, "/users/hard?hard_delete=true", None)
        .await;
    assert_error(&upsert(&srv, &[json!({"id": "hard"})]).await, 404, 16, None);
    let everyone = json!({"filter_conditions": {}, "sort": [{"field": "id", "direction": 1}]});
    assert_eq!(query_ids(&srv, everyone.clone()).await, ["alice", "bob"]);
    let answer = srv
        .admin_ok(
            Method::POST,
            "/users/delete",
            Some(json!({"user_ids": ["bob"]})),
        )
        .await;
    let task_path = format!("/tasks/{}", answer["task_id"].as_str().unwrap());
    let task = srv.admin_ok(Method::GET, &task_path, None).await;
    assert_eq!(task["status"], "completed", "{task}");
    srv.stop().await;

    // Another node (another data dir) on the same database sees everything.
    let srv = start_on(&db).await;
    assert_eq!(fetch(&srv, "alice").await.unwrap(), alice);
    assert_eq!(query_ids(&srv, everyone).await, ["alice"]);
    let app = srv.admin_ok(Method::GET, "/app", None).await;
    assert_eq!(app["app"]["enforce_unique_usernames"], "app");
    let mut again = srv.admin_ok(Method::GET, &task_path, None).await;
    again["duration"] = task["duration"].clone();
    assert_eq!(again, task);
    assert_error(&upsert(&srv, &[json!({"id": "hard"})]).await, 404, 16, None);
    assert_error(
        &upsert(&srv, &[json!({"id": "carol", "name": "alice"})]).await,
        400,
        6,
        None,
    );
    srv.stop().await;
}

#[tokio::test]
async fn a_database_outage_is_a_503_not_a_hang() {
    let db = TestDb::create().await;
    let srv = start_on(&db).await;
    upsert_ok(&srv, &[json!({"id": "alice"})]).await;
    // The database stops taking connections and drops the ones it has.
    psql(
        &db,
        "ALTER DATABASE {db} ALLOW_CONNECTIONS false;
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}';",
    )
    .await;
    for _ in 0..2 {
        let start = Instant::now();
        let reply = upsert(&srv, &[json!({"id": "bob"})]).await;
        assert_error(&reply, 503, -1, None);
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        let reply = srv
            .admin(
                Method::GET,
                "/users?payload=%7B%22filter_conditions%22%3A%7B%7D%7D",
                None,
            )
            .await;
        assert_error(&reply, 503, -1, None);
    }
    // /healthz says so, and recovers by itself (the probe) once the database is back.
    let (status, health) = srv.get_url(&format!("{}/healthz", srv.admin_url)).await;
    assert_eq!(status, 503, "{health}");
    assert!(
        health["reason"]
            .as_str()
            .is_some_and(|r| r.contains("database unreachable")),
        "{health}"
    );
    psql(&db, "ALTER DATABASE {db} ALLOW_CONNECTIONS true").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while srv.get_url(&format!("{}/healthz", srv.public_url)).await.0 != 200 {
        assert!(Instant::now() < deadline, "/healthz did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    upsert_ok(&srv, &[json!({"id": "bob"})]).await;
    assert!(fetch(&srv, "alice").await.is_some());
    srv.stop().await;
}

//! Durability with the real binary: a graceful stop and a SIGKILL, each followed by a start
//! on the same data dir.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{assert_error, random_secret, ProcessServer, API_KEY};
use crate::{fetch, partial, query_ids, upsert, upsert_ok};

#[tokio::test]
async fn everything_survives_a_graceful_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let secret = random_secret();
    let srv = ProcessServer::start(&data, API_KEY, &secret).await;
    srv.admin_ok(
        Method::PATCH,
        "/app",
        Some(
            json!({"enforce_unique_usernames": "app", "custom_key": {"x": 1},
                    "event_hooks": [{"hook_type": "webhook", "webhook_url": "http://h"}],
                    "revoke_tokens_issued_before": "2024-01-01T00:00:00"}),
        ),
    )
    .await;
    upsert_ok(
        &srv,
        &[
            json!({"id": "alice", "name": "Alice", "teams": ["red"], "color": "green"}),
            json!({"id": "soft", "name": "Soft"}),
            json!({"id": "hard", "name": "Hard"}),
            json!({"id": "sleepy", "name": "Sleepy"}),
        ],
    )
    .await;
    partial(&srv, json!([{"id": "alice", "set": {"a.b": 1}}])).await;
    srv.admin_ok(Method::DELETE, "/users/soft", None).await;
    srv.admin_ok(Method::DELETE, "/users/hard?hard_delete=true", None)
        .await;
    srv.admin_ok(Method::POST, "/users/sleepy/deactivate", None)
        .await;
    let task = srv
        .admin_ok(
            Method::POST,
            "/export/users",
            Some(json!({"user_ids": ["alice"]})),
        )
        .await;
    let task_path = format!("/tasks/{}", task["task_id"].as_str().unwrap());
    let task_before = srv.admin_ok(Method::GET, &task_path, None).await;
    let alice_before = fetch(&srv, "alice").await.unwrap();
    let app_before = srv.admin_ok(Method::GET, "/app", None).await["app"].clone();

    let status = srv.terminate().await;
    assert!(status.success(), "graceful stop exits 0, got {status}");

    let srv = ProcessServer::start(&data, API_KEY, &secret).await;
    assert_eq!(fetch(&srv, "alice").await.unwrap(), alice_before);
    assert_eq!(fetch(&srv, "alice").await.unwrap()["a"], json!({"b": 1}));
    assert_eq!(
        srv.admin_ok(Method::GET, "/app", None).await["app"],
        app_before
    );
    // The soft-deleted user is still hidden but restorable; the deactivated one still is.
    assert_eq!(fetch(&srv, "soft").await, None);
    assert!(fetch(&srv, "sleepy").await.unwrap()["deactivated_at"].is_string());
    // The tombstone holds: the hard-deleted id can't come back by any path.
    assert_error(&upsert(&srv, &[json!({"id": "hard"})]).await, 404, 16, None);
    let reply = srv
        .admin(
            Method::POST,
            "/guest",
            Some(json!({"user": {"id": "hard"}})),
        )
        .await;
    assert_error(&reply, 404, 16, None);
    // Enforcement is still on, and the name index is intact.
    assert_error(
        &upsert(&srv, &[json!({"id": "x", "name": "ALICE"})]).await,
        400,
        6,
        None,
    );
    // Tasks and exports too.
    let mut task_after = srv.admin_ok(Method::GET, &task_path, None).await;
    let mut before = task_before.clone();
    before.as_object_mut().unwrap().remove("duration");
    task_after.as_object_mut().unwrap().remove("duration");
    // The export URL names the old port; its path serves the same document.
    let old_url = task_after["result"]["url"].as_str().unwrap().to_owned();
    assert_eq!(task_after, before);
    let path = &old_url[old_url.find("/exports/users/").unwrap()..];
    let (status, doc) = srv.get_url(&format!("{}{path}", srv.admin_url)).await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["users"][0]["user"]["id"], "alice");
    srv.admin_ok(
        Method::POST,
        "/users/restore",
        Some(json!({"user_ids": ["soft"]})),
    )
    .await;
    assert_eq!(fetch(&srv, "soft").await.unwrap()["name"], "Soft");
    let status = srv.terminate().await;
    assert!(status.success());
}

#[tokio::test]
async fn an_acknowledged_batch_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let secret = random_secret();
    let srv = ProcessServer::start(&data, API_KEY, &secret).await;
    let users: Vec<Value> = (0..100)
        .map(|i| json!({"id": format!("k{i:03}"), "name": format!("Killed {i}"), "n": i}))
        .collect();
    upsert_ok(&srv, &users).await;
    // Killed the moment the answer arrives.
    srv.kill().await;

    let srv = ProcessServer::start(&data, API_KEY, &secret).await;
    let ids = query_ids(&srv, json!({"filter_conditions": {}, "limit": 100})).await;
    assert_eq!(ids.len(), 100, "{}", srv.log());
    assert_eq!(fetch(&srv, "k042").await.unwrap()["n"], 42);

    // The same for a hard delete, a partial update and a settings change.
    srv.admin_ok(
        Method::PATCH,
        "/app",
        Some(json!({"enforce_unique_usernames": "team"})),
    )
    .await;
    srv.admin_ok(Method::DELETE, "/users/k000?hard_delete=true", None)
        .await;
    let (status, _, body) = partial(&srv, json!([{"id": "k001", "set": {"n": "changed"}}])).await;
    assert_eq!(status, 200, "{body}");
    srv.kill().await;

    let srv = ProcessServer::start(&data, API_KEY, &secret).await;
    assert_eq!(fetch(&srv, "k001").await.unwrap()["n"], "changed");
    assert_error(&upsert(&srv, &[json!({"id": "k000"})]).await, 404, 16, None);
    let app = srv.admin_ok(Method::GET, "/app", None).await;
    assert_eq!(app["app"]["enforce_unique_usernames"], "team");
    srv.kill().await;
}

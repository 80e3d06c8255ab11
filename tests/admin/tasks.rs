//! Batch tasks: `GET /tasks/{id}` and the results the official SDK tests check.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{assert_error, TestServer};
use crate::{is_wire_time, upsert_ok};

/// Asserts the task shape and returns the task.
async fn task(srv: &TestServer, answer: &Value) -> Value {
    let id = answer["task_id"].as_str().expect("task_id");
    assert_eq!(id.len(), 36, "{id}");
    let parsed = uuid::Uuid::parse_str(id).expect("a uuid");
    assert_eq!(parsed.get_version_num(), 4, "{id}");
    let body = srv
        .admin_ok(Method::GET, &format!("/tasks/{id}"), None)
        .await;
    assert_eq!(body["task_id"], id);
    assert_eq!(body["status"], "completed");
    assert!(is_wire_time(&body["created_at"]), "{body}");
    assert!(is_wire_time(&body["updated_at"]), "{body}");
    assert!(body["result"].is_object(), "{body}");
    assert_eq!(body.get("error"), None);
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "task_id",
            "status",
            "created_at",
            "updated_at",
            "result",
            "duration"
        ]
    );
    body
}

#[tokio::test]
async fn delete_task_result_is_status_per_id() {
    let srv = TestServer::start().await;
    upsert_ok(&srv, &[json!({"id": "a"}), json!({"id": "b"})]).await;
    let answer = srv
        .admin_ok(
            Method::POST,
            "/users/delete",
            Some(json!({"user_ids": ["a", "b"]})),
        )
        .await;
    let keys: Vec<&String> = answer.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["task_id", "duration"]);
    let t = task(&srv, &answer).await;
    assert_eq!(
        t["result"],
        json!({"a": {"status": "ok"}, "b": {"status": "ok"}})
    );
    srv.stop().await;
}

#[tokio::test]
async fn deactivate_and_reactivate_task_results_list_users() {
    let srv = TestServer::start().await;
    upsert_ok(&srv, &[json!({"id": "a"}), json!({"id": "b"})]).await;
    let answer = srv
        .admin_ok(
            Method::POST,
            "/users/deactivate",
            Some(json!({"user_ids": ["a", "b"]})),
        )
        .await;
    let t = task(&srv, &answer).await;
    let users = t["result"]["users"].as_array().expect("users list");
    let ids: Vec<&str> = users.iter().map(|u| u["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a", "b"]);
    for u in users {
        assert!(is_wire_time(&u["deactivated_at"]), "{u}");
    }
    let answer = srv
        .admin_ok(
            Method::POST,
            "/users/reactivate",
            Some(json!({"user_ids": ["a", "b"]})),
        )
        .await;
    let t = task(&srv, &answer).await;
    let users = t["result"]["users"].as_array().expect("users list");
    assert_eq!(users.len(), 2);
    assert!(users.iter().all(|u| u.get("deactivated_at").is_none()));
    srv.stop().await;
}

#[tokio::test]
async fn export_task_result_is_a_url_serving_the_export() {
    let srv = TestServer::start().await;
    upsert_ok(
        &srv,
        &[json!({"id": "a", "color": "red"}), json!({"id": "b"})],
    )
    .await;
    let answer = srv
        .admin_ok(
            Method::POST,
            "/export/users",
            Some(json!({"user_ids": ["a", "b"]})),
        )
        .await;
    let t = task(&srv, &answer).await;
    let url = t["result"]["url"].as_str().expect("url");
    assert!(url.contains("/exports/users/"), "{url}");
    assert!(url.starts_with(&srv.admin_url), "{url}");
    let (status, doc) = srv.get_url(url).await;
    assert_eq!(status, 200, "{doc}");
    let users = doc["users"].as_array().expect("users");
    assert_eq!(users.len(), 2);
    assert_eq!(users[0]["user"]["id"], "a");
    assert_eq!(users[0]["user"]["color"], "red");
    assert_eq!(users[0]["messages"], json!([]));
    // An unknown export is 404.
    let (status, _) = srv
        .get_url(&format!(
            "{}/exports/users/{}.json",
            srv.admin_url,
            uuid::Uuid::new_v4()
        ))
        .await;
    assert_eq!(status, 404);
    // At most 25 users.
    let ids: Vec<String> = (0..26).map(|i| format!("x{i}")).collect();
    let reply = srv
        .admin(
            Method::POST,
            "/export/users",
            Some(json!({"user_ids": ids})),
        )
        .await;
    assert_error(&reply, 400, 4, None);
    srv.stop().await;
}

#[tokio::test]
async fn an_unknown_task_is_code_16() {
    let srv = TestServer::start().await;
    let path = format!("/tasks/{}", uuid::Uuid::new_v4());
    assert_error(&srv.admin(Method::GET, &path, None).await, 404, 16, None);
    srv.stop().await;
}

/// A hard delete erases the user from what earlier exports and task results serve, and export
/// links are never built from the caller's `Host` header.
#[tokio::test]
async fn hard_deleted_users_leave_exports_and_task_results() {
    let srv = TestServer::start().await;
    upsert_ok(
        &srv,
        &[json!({"id": "gone", "secret": "s3"}), json!({"id": "kept"})],
    )
    .await;
    // An export asked for with a forged Host header.
    let client = reqwest::Client::new();
    let answer: Value = client
        .post(format!(
            "{}/export/users?api_key={}",
            srv.admin_url, srv.api_key
        ))
        .header("Authorization", &srv.server_token)
        .header("stream-auth-type", "jwt")
        .header("Host", "evil.example")
        .json(&json!({"user_ids": ["gone", "kept"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let export = task(&srv, &answer).await;
    let url = export["result"]["url"].as_str().expect("url").to_owned();
    assert!(!url.contains("evil.example"), "{url}");
    assert!(url.starts_with(&srv.admin_url), "{url}");
    let deactivated = srv
        .admin_ok(
            Method::POST,
            "/users/deactivate",
            Some(json!({"user_ids": ["gone", "kept"]})),
        )
        .await;
    let deactivated = task(&srv, &deactivated).await["task_id"].clone();
    srv.admin_ok(
        Method::DELETE,
        "/users/gone?hard_delete=true&mark_messages_deleted=true",
        None,
    )
    .await;
    let (status, doc) = srv.get_url(&url).await;
    assert_eq!(status, 200, "{doc}");
    let ids: Vec<&Value> = doc["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| &u["user"]["id"])
        .collect();
    assert_eq!(ids, [&json!("kept")]);
    assert!(!doc.to_string().contains("s3"), "{doc}");
    let t = srv
        .admin_ok(
            Method::GET,
            &format!("/tasks/{}", deactivated.as_str().unwrap()),
            None,
        )
        .await;
    let ids: Vec<&Value> = t["result"]["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| &u["id"])
        .collect();
    assert_eq!(ids, [&json!("kept")], "{t}");
    srv.stop().await;
}

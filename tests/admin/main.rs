//! The admin listener through real HTTP: every route of spec §4.2 and every user rule of §5,
//! against a gateway served in-process (and the real binary for the restart tests).

#[path = "../common/mod.rs"]
mod common;

mod app_settings;
mod auth;
mod bus;
mod envelope;
mod lifecycle;
mod partial;
mod persistence;
mod postgres;
mod query;
mod revocation;
mod tasks;
mod upsert;
mod usernames;

use reqwest::Method;
use serde_json::{json, Value};

use common::{encode, Api, Reply};

/// `POST /users` with `{"users": {id: user, ...}}` built from a list of users.
pub async fn upsert(api: &Api, users: &[Value]) -> Reply {
    let mut map = serde_json::Map::new();
    for u in users {
        map.insert(u["id"].as_str().expect("id").to_owned(), u.clone());
    }
    api.admin(Method::POST, "/users", Some(json!({ "users": map })))
        .await
}

/// Upserts and asserts success; returns the `users` map.
pub async fn upsert_ok(api: &Api, users: &[Value]) -> Value {
    let (status, _, body) = upsert(api, users).await;
    assert_eq!(status, 200, "upsert failed: {body}");
    body["users"].clone()
}

/// `PATCH /users` with the given entries.
pub async fn partial(api: &Api, entries: Value) -> Reply {
    api.admin(Method::PATCH, "/users", Some(json!({ "users": entries })))
        .await
}

/// `GET /users?payload=...`.
pub async fn query(api: &Api, payload: Value) -> Reply {
    let path = format!("/users?payload={}", encode(&payload.to_string()));
    api.admin(Method::GET, &path, None).await
}

/// The ids a successful query returns, in order.
pub async fn query_ids(api: &Api, payload: Value) -> Vec<String> {
    let (status, _, body) = query(api, payload).await;
    assert_eq!(status, 200, "query failed: {body}");
    body["users"]
        .as_array()
        .expect("users array")
        .iter()
        .map(|u| u["id"].as_str().expect("id").to_owned())
        .collect()
}

/// One user as queries return it (deactivated included), if it is visible at all.
pub async fn fetch(api: &Api, id: &str) -> Option<Value> {
    let (status, _, body) = query(
        api,
        json!({"filter_conditions": {"id": id}, "include_deactivated_users": true}),
    )
    .await;
    assert_eq!(status, 200, "query failed: {body}");
    body["users"].as_array().expect("users").first().cloned()
}

/// Sets `enforce_unique_usernames`.
pub async fn set_mode(api: &Api, mode: &str) {
    api.admin_ok(
        Method::PATCH,
        "/app",
        Some(json!({ "enforce_unique_usernames": mode })),
    )
    .await;
}

/// Whether a wire timestamp has the form `YYYY-MM-DDTHH:MM:SS.ffffffZ` (fraction required).
pub fn is_wire_time(v: &Value) -> bool {
    let Some(s) = v.as_str() else { return false };
    let b = s.as_bytes();
    s.len() > 21
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'.'
        && s.ends_with('Z')
        && s[20..s.len() - 1].bytes().all(|c| c.is_ascii_digit())
        && chat_gateway::protocol::Timestamp::parse(s).is_some()
}

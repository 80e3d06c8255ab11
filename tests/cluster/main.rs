//! Several real gateway processes on one PostgreSQL database, driven over real sockets: what
//! each node must agree on (`users`: users, batches, tombstones; `names`: unique names), what
//! reaches sockets on other nodes (`events`), presence and connection counts across nodes and
//! what happens when a node dies or stalls (`presence`), catching up after the event
//! listener lost its connection (`catchup`), a database restart under the nodes
//! (`restart`), `scripts/cluster.sh` (`script`), and the update and kill paths with the
//! official JS SDK as the client (`js_sdk`, driving it through `sdk`).

#[path = "../common/mod.rs"]
mod common;
use common::ws;

mod catchup;
mod events;
mod harness;
mod js_sdk;
mod names;
mod presence;
mod restart;
mod script;
mod sdk;
mod users;

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

/// The users a server query returns, in order (asserts a 200).
pub async fn query_users(api: &Api, payload: Value) -> Vec<Value> {
    let path = format!("/users?payload={}", encode(&payload.to_string()));
    let (status, _, body) = api.admin(Method::GET, &path, None).await;
    assert_eq!(status, 200, "query failed: {body}");
    body["users"].as_array().expect("users array").clone()
}

/// The ids of the users whose id is in `ids`, sorted by id, deactivated users included.
pub async fn ids_among(api: &Api, ids: &[String]) -> Vec<String> {
    let payload = json!({
        "filter_conditions": {"id": {"$in": ids}},
        "sort": [{"field": "id", "direction": 1}],
        "include_deactivated_users": true,
        "limit": 100,
    });
    query_users(api, payload)
        .await
        .iter()
        .map(|u| u["id"].as_str().expect("id").to_owned())
        .collect()
}

/// One user as queries return it (deactivated included), if it is visible at all.
pub async fn fetch(api: &Api, id: &str) -> Option<Value> {
    let payload = json!({"filter_conditions": {"id": id}, "include_deactivated_users": true});
    query_users(api, payload).await.first().cloned()
}

/// Sets `enforce_unique_usernames` through `api`'s node.
pub async fn set_mode(api: &Api, mode: &str) {
    api.admin_ok(
        Method::PATCH,
        "/app",
        Some(json!({ "enforce_unique_usernames": mode })),
    )
    .await;
}

//! Expensive and oversized queries (issue 11, item 3): a filter's conditions are bounded (an
//! anonymous query with 255 `$autocomplete` conditions took 18 s of CPU), and so is the size
//! of an answer (one 73-byte anonymous query returned 99 MB of users stored before the
//! bounds of a user existed).

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{encode, Api, TestServer};
use crate::ws::uid;
use crate::{assert_envelope, assert_serving, send_bytes, Side};

/// `GET /users` with `payload` on a side.
async fn query(api: &Api, side: Side, payload: &Value) -> crate::Reply {
    let path = format!("/users?payload={}", encode(&payload.to_string()));
    send_bytes(api, side, "GET", &path, Vec::new(), "").await
}

/// Writes `count` users with `name_bytes`-long names straight to the store in `data`, as a
/// gateway without the size bounds could have.
async fn store_legacy_users(data: &std::path::Path, count: usize, name_bytes: usize) {
    use chat_gateway::model::user::User;
    use chat_gateway::protocol::Timestamp;
    use chat_gateway::store::{Expect, SledStore, Store, UserChange};

    std::fs::create_dir_all(data).expect("data dir");
    let store = SledStore::open(&data.join("db")).expect("store opens");
    let changes = (0..count)
        .map(|i| {
            let mut user = User::new(&format!("legacy-{i}"), Timestamp::now());
            user.role = "guest".into();
            user.name = Some("x".repeat(name_bytes));
            UserChange::Put {
                user,
                expect: Expect::Absent,
                check_names: Vec::new(),
                tombstone: false,
            }
        })
        .collect();
    store.apply_user_batch(changes).await.expect("written");
    store.flush().await.expect("flushed");
}

#[tokio::test]
async fn a_filter_with_too_many_conditions_is_refused_with_code_4() {
    let _shared = crate::memory::SHARED.read().await;
    let server = TestServer::start().await;
    let autocompletes = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|_| json!({"name": {"$autocomplete": "zz"}}))
            .collect()
    };
    // The reported query: 255 conditions, anonymous, within the query-string limit.
    let payload = json!({"filter_conditions": {"$or": autocompletes(255)}});
    assert!(encode(&payload.to_string()).len() < 16 * 1024);
    for side in [Side::Anonymous, Side::User, Side::Admin] {
        let reply = query(&server, side, &payload).await;
        assert_envelope(&format!("{side:?}: 255 conditions"), &reply, 400, &[4]);
        let message = reply.2["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("QueryUsers failed with error: \""),
            "{message}"
        );
    }
    // The same spread over `$and`, `$or` and `$nor`, and nested.
    let spread = json!({"filter_conditions": {"$and": [
        {"$or": autocompletes(12)}, {"$nor": autocompletes(12)},
        {"$and": [{"$or": autocompletes(12)}]}]}});
    assert_envelope(
        "36 conditions spread out",
        &query(&server, Side::Anonymous, &spread).await,
        400,
        &[4],
    );
    // A long `$autocomplete` operand.
    let long = json!({"filter_conditions": {"name": {"$autocomplete": "a".repeat(256)}}});
    assert_envelope(
        "a 256-byte $autocomplete",
        &query(&server, Side::Anonymous, &long).await,
        400,
        &[4],
    );
    // Within the bounds, the same kinds of query are answered.
    let fine = json!({"filter_conditions": {"$or": autocompletes(31)}});
    let (status, _, body) = query(&server, Side::Anonymous, &fine).await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<String> = (0..100).map(|i| format!("u{i}")).collect();
    let fine = json!({"filter_conditions": {"id": {"$in": ids}}});
    let (status, _, body) = query(&server, Side::Anonymous, &fine).await;
    assert_eq!(status, 200, "{body}");
    assert_serving(&server).await;
}

/// Users stored before the bounds: a page of them larger than
/// `limits.max_query_response_bytes` (8 MiB by default) is refused with 413, code 22, and
/// asks for fewer users; a smaller page is served.
#[tokio::test]
async fn an_answer_over_the_size_bound_is_refused_with_code_22() {
    let _shared = crate::memory::SHARED.read().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    store_legacy_users(&data, 10, 900 * 1024).await;
    let server = TestServer::start_with(|c| c.data_dir = data.clone()).await;
    // Tiny queries, as in the finding: every user, then a page of 100.
    for payload in [json!({}), json!({"limit": 100})] {
        for side in [Side::Anonymous, Side::Admin] {
            let reply = query(&server, side, &payload).await;
            let what = format!("{side:?} {payload}");
            assert_envelope(&what, &reply, 413, &[22]);
            let message = reply.2["message"].as_str().unwrap_or_default();
            assert!(
                message.starts_with("QueryUsers failed with error: \"")
                    && message.contains("smaller limit"),
                "{what}: {message}"
            );
        }
    }
    let (status, _, body) = query(&server, Side::Anonymous, &json!({"limit": 2})).await;
    assert_eq!(status, 200);
    assert_eq!(body["users"].as_array().map(Vec::len), Some(2));
    // Users within the bounds are not affected.
    let id = uid("small");
    let users = json!({"users": {&id: {"id": &id, "name": "Small"}}});
    server.admin_ok(Method::POST, "/users", Some(users)).await;
    let payload = json!({"filter_conditions": {"role": "user"}, "limit": 100});
    let (status, _, body) = query(&server, Side::Anonymous, &payload).await;
    assert_eq!(status, 200);
    assert_eq!(body["users"][0]["id"], id.as_str());
    assert_serving(&server).await;
}

/// The answer bound is a setting.
#[tokio::test]
async fn the_answer_bound_is_configurable() {
    let _shared = crate::memory::SHARED.read().await;
    let server = TestServer::start_with(|c| c.limits.max_query_response_bytes = 4096).await;
    let users: serde_json::Map<String, Value> = (0..30)
        .map(|i| {
            let id = format!("member-{i:02}");
            (id.clone(), json!({"id": id, "name": "x".repeat(200)}))
        })
        .collect();
    server
        .admin_ok(Method::POST, "/users", Some(json!({ "users": users })))
        .await;
    let reply = query(&server, Side::User, &json!({"limit": 30})).await;
    assert_envelope("30 users of ~400 bytes over 4 KiB", &reply, 413, &[22]);
    let (status, _, body) = query(&server, Side::User, &json!({"limit": 5})).await;
    assert_eq!(status, 200, "{body}");
}

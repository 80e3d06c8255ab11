//! `GET /users?payload=...`: operators, sort, paging and their limits.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{assert_error, encode, TestServer};
use crate::{query, query_ids, upsert_ok};

async fn seeded() -> TestServer {
    let srv = TestServer::start().await;
    upsert_ok(
        &srv,
        &[
            json!({"id": "alice", "name": "Alice Smith", "age": 30, "teams": ["red", "blue"],
                   "role": "admin", "profile": {"city": "Paris"}}),
            json!({"id": "bob", "name": "Bob Jones", "age": 25, "teams": ["blue"],
                   "profile": {"city": "Berlin"}}),
            json!({"id": "carol", "name": "carol smithers", "age": 35, "teams": []}),
            json!({"id": "dave", "name": "Dave", "nickname": "d"}),
        ],
    )
    .await;
    srv
}

async fn ids(srv: &TestServer, filter: Value) -> Vec<String> {
    let mut out = query_ids(
        srv,
        json!({"filter_conditions": filter, "sort": [{"field": "id", "direction": 1}]}),
    )
    .await;
    out.sort();
    out
}

#[tokio::test]
async fn every_operator() {
    let srv = seeded().await;
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({"id": "bob"}), vec!["bob"]),
        (json!({"id": {"$eq": "bob"}}), vec!["bob"]),
        (
            json!({"id": {"$ne": "bob"}}),
            vec!["alice", "carol", "dave"],
        ),
        (
            json!({"id": {"$in": ["alice", "bob", "zed"]}}),
            vec!["alice", "bob"],
        ),
        (
            json!({"id": {"$nin": ["alice", "bob"]}}),
            vec!["carol", "dave"],
        ),
        (json!({"age": {"$gt": 30}}), vec!["carol"]),
        (json!({"age": {"$gte": 30}}), vec!["alice", "carol"]),
        (json!({"age": {"$lt": 30}}), vec!["bob"]),
        (json!({"age": {"$lte": 30}}), vec!["alice", "bob"]),
        (json!({"age": {"$gt": 24, "$lt": 35}}), vec!["alice", "bob"]),
        (json!({"nickname": {"$exists": true}}), vec!["dave"]),
        (json!({"age": {"$exists": false}}), vec!["dave"]),
        (
            json!({"name": {"$autocomplete": "smi"}}),
            vec!["alice", "carol"],
        ),
        (json!({"name": {"$autocomplete": "Jo"}}), vec!["bob"]),
        (json!({"name": {"$autocomplete": "mith"}}), vec![]),
        (
            json!({"teams": {"$contains": "blue"}}),
            vec!["alice", "bob"],
        ),
        (json!({"teams": {"$contains": "red"}}), vec!["alice"]),
        (json!({"role": "admin"}), vec!["alice"]),
        (json!({"profile.city": "Berlin"}), vec!["bob"]),
        (
            json!({"$and": [{"age": {"$gte": 25}}, {"teams": {"$contains": "blue"}}]}),
            vec!["alice", "bob"],
        ),
        (
            json!({"$or": [{"id": "dave"}, {"age": 35}]}),
            vec!["carol", "dave"],
        ),
        (
            json!({"$nor": [{"id": "dave"}, {"age": 35}]}),
            vec!["alice", "bob"],
        ),
        (
            json!({"$or": [{"$and": [{"role": "admin"}, {"age": 30}]}, {"id": "dave"}]}),
            vec!["alice", "dave"],
        ),
        (json!({}), vec!["alice", "bob", "carol", "dave"]),
    ];
    for (filter, expected) in cases {
        assert_eq!(ids(&srv, filter.clone()).await, expected, "filter {filter}");
    }
    srv.stop().await;
}

#[tokio::test]
async fn sort_limit_and_offset() {
    let srv = seeded().await;
    let q = |sort: Value, limit: Value, offset: Value| {
        json!({"filter_conditions": {"age": {"$exists": true}}, "sort": sort,
               "limit": limit, "offset": offset})
    };
    let by_age = json!([{"field": "age", "direction": -1}]);
    assert_eq!(
        query_ids(&srv, q(by_age.clone(), json!(10), json!(0))).await,
        ["carol", "alice", "bob"],
        "custom fields are sortable"
    );
    assert_eq!(
        query_ids(
            &srv,
            q(
                json!([{"field": "age", "direction": 1}]),
                json!(10),
                json!(0)
            )
        )
        .await,
        ["bob", "alice", "carol"]
    );
    assert_eq!(
        query_ids(&srv, q(by_age.clone(), json!(2), json!(1))).await,
        ["alice", "bob"]
    );
    assert_eq!(
        query_ids(&srv, q(by_age.clone(), json!(2), json!(2))).await,
        ["bob"]
    );
    assert_eq!(
        query_ids(&srv, q(by_age, json!(2), json!(10))).await,
        Vec::<String>::new()
    );
    // Several keys: the second breaks ties of the first.
    upsert_ok(&srv, &[json!({"id": "erin", "age": 30})]).await;
    let two = json!([{"field": "age", "direction": 1}, {"field": "id", "direction": -1}]);
    assert_eq!(
        query_ids(&srv, q(two, json!(10), json!(0))).await,
        ["bob", "erin", "alice", "carol"]
    );
    let by_id = json!([{"field": "id", "direction": -1}]);
    assert_eq!(
        query_ids(&srv, json!({"filter_conditions": {}, "sort": by_id})).await,
        ["erin", "dave", "carol", "bob", "alice"]
    );
    srv.stop().await;
}

#[tokio::test]
async fn the_default_limit_is_30_and_the_maximum_100() {
    let srv = TestServer::start().await;
    let users: Vec<Value> = (0..100)
        .map(|i| json!({"id": format!("u{i:03}")}))
        .collect();
    upsert_ok(&srv, &users).await;
    upsert_ok(&srv, &[json!({"id": "u100"})]).await;
    assert_eq!(
        query_ids(&srv, json!({"filter_conditions": {}}))
            .await
            .len(),
        30
    );
    assert_eq!(
        query_ids(&srv, json!({"filter_conditions": {}, "limit": 100}))
            .await
            .len(),
        100
    );
    // Default sort: newest first.
    let newest = query_ids(&srv, json!({"filter_conditions": {}, "limit": 1})).await;
    assert_eq!(newest, ["u100"]);
    srv.stop().await;
}

#[tokio::test]
async fn limits_and_malformed_payloads_are_code_4() {
    let srv = seeded().await;
    let six: Vec<Value> = (0..6).map(|i| json!({"field": format!("f{i}")})).collect();
    let five: Vec<Value> = (0..5).map(|i| json!({"field": format!("f{i}")})).collect();
    let bad = [
        json!({"filter_conditions": {}, "limit": 101}),
        json!({"filter_conditions": {}, "limit": -1}),
        json!({"filter_conditions": {}, "offset": 1001}),
        json!({"filter_conditions": {}, "sort": six}),
        json!({"filter_conditions": {"id": {"$regex": "a"}}}),
        json!({"filter_conditions": {"$where": "x"}}),
        json!({"filter_conditions": {"id": {"$in": "alice"}}}),
        json!({"filter_conditions": {"$and": {"id": "x"}}}),
        json!({"filter_conditions": "id"}),
        json!({"filter_conditions": {}, "sort": [{"field": "id", "direction": 2}]}),
    ];
    for payload in bad {
        let reply = query(&srv, payload.clone()).await;
        assert_error(&reply, 400, 4, None);
        let message = reply.2["message"].as_str().unwrap();
        assert!(
            message.starts_with("QueryUsers failed with error: "),
            "{message}"
        );
    }
    for ok in [
        json!({"filter_conditions": {}, "limit": 100, "offset": 1000}),
        json!({"filter_conditions": {}, "sort": five}),
    ] {
        let (status, _, body) = query(&srv, ok).await;
        assert_eq!(status, 200, "{body}");
    }
    // A payload that is not JSON.
    let reply = srv
        .admin(
            Method::GET,
            &format!("/users?payload={}", encode("{nope")),
            None,
        )
        .await;
    assert_error(&reply, 400, 4, None);
    srv.stop().await;
}

#[tokio::test]
async fn the_sdk_payload_shape_is_accepted() {
    let srv = seeded().await;
    let payload = json!({"filter_conditions": {"id": {"$in": ["alice", "bob"]}},
                         "sort": [{"field": "last_active", "direction": -1}],
                         "limit": 10, "offset": 0, "presence": false,
                         "include_deactivated_users": true});
    let (status, _, body) = query(&srv, payload).await;
    assert_eq!(status, 200, "{body}");
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["users", "duration"]);
    let mut got: Vec<&str> = body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, ["alice", "bob"]);
    // Users come back flat, with their custom fields at the top level.
    let alice = body["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == "alice")
        .unwrap();
    assert_eq!(alice["age"], 30);
    assert_eq!(alice["profile"], json!({"city": "Paris"}));
    srv.stop().await;
}

/// `id_gt` / `id_gte` / `id_lt` / `id_lte` beside the filter page by id.
#[tokio::test]
async fn paging_by_id_beside_the_filter() {
    let srv = TestServer::start().await;
    let users: Vec<Value> = (1..=6)
        .map(|i| json!({"id": format!("pg{i}"), "kind": "paged"}))
        .collect();
    upsert_ok(&srv, &users).await;
    let page = |extra: Value| {
        let mut payload = json!({"filter_conditions": {"kind": "paged"},
                                 "sort": [{"field": "id", "direction": 1}]});
        for (k, v) in extra.as_object().unwrap() {
            payload[k] = v.clone();
        }
        query_ids(&srv, payload)
    };
    assert_eq!(
        page(json!({"id_gt": "pg2"})).await,
        ["pg3", "pg4", "pg5", "pg6"]
    );
    assert_eq!(
        page(json!({"id_gte": "pg2", "id_lt": "pg5"})).await,
        ["pg2", "pg3", "pg4"]
    );
    assert_eq!(page(json!({"id_lte": "pg2"})).await, ["pg1", "pg2"]);
    let (status, _, body) = query(&srv, json!({"id_gt": 5})).await;
    assert_eq!(status, 400, "{body}");
    srv.stop().await;
}

//! §5.4 through `PATCH /users`: set, unset, dotted paths and the key rules.

use serde_json::{json, Value};

use crate::common::{assert_error, TestServer};
use crate::{fetch, partial, upsert, upsert_ok};
use reqwest::Method;

#[tokio::test]
async fn set_and_unset_with_dotted_paths() {
    let srv = TestServer::start().await;
    upsert_ok(
        &srv,
        &[
            json!({"id": "alice", "name": "Alice", "color": "red", "a": {"b": 1, "c": 2},
                 "keep": true}),
        ],
    )
    .await;
    let (status, _, body) = partial(
        &srv,
        json!([{"id": "alice",
                "set": {"name": "A", "a.d.e": 3, "x.y": "new", "role": "admin"},
                "unset": ["color", "a.b"]}]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let alice = &body["users"]["alice"];
    assert_eq!(alice["name"], "A");
    assert_eq!(alice["role"], "admin", "the server may change the role");
    assert_eq!(alice.get("color"), None);
    assert_eq!(alice["a"], json!({"c": 2, "d": {"e": 3}}));
    assert_eq!(alice["x"], json!({"y": "new"}));
    assert_eq!(alice["keep"], true, "keys not named are left alone");
    assert_eq!(fetch(&srv, "alice").await.unwrap()["a"], alice["a"]);

    // Unsetting the last nested key leaves an empty object behind.
    let (status, _, body) = partial(&srv, json!([{"id": "alice", "unset": ["a.c", "a.d"]}])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["users"]["alice"]["a"], json!({}));
    // Setting a path through a scalar replaces the scalar with an object.
    let (status, _, body) = partial(&srv, json!([{"id": "alice", "set": {"keep.deep": 1}}])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["users"]["alice"]["keep"], json!({"deep": 1}));
    // Unsetting a built-in returns it to its default.
    let (status, _, body) =
        partial(&srv, json!([{"id": "alice", "unset": ["role", "name"]}])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["users"]["alice"]["role"], "user");
    assert_eq!(body["users"]["alice"].get("name"), None);
    srv.stop().await;
}

#[tokio::test]
async fn partial_update_bumps_updated_at_and_keeps_created_at() {
    let srv = TestServer::start().await;
    let before = upsert_ok(&srv, &[json!({"id": "u"})]).await["u"].clone();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (_, _, body) = partial(&srv, json!([{"id": "u", "set": {"k": 1}}])).await;
    let after = &body["users"]["u"];
    assert_eq!(after["created_at"], before["created_at"]);
    assert_ne!(after["updated_at"], before["updated_at"]);
    srv.stop().await;
}

#[tokio::test]
async fn invalid_keys_are_code_4_and_change_nothing() {
    let srv = TestServer::start().await;
    upsert_ok(&srv, &[json!({"id": "k", "a": {"b": 1}})]).await;
    for key in ["a..b", "a b", ".a", "a.", "a\tb", " a", "a\nb", ""] {
        for entry in [
            json!({"id": "k", "set": {key: 1}}),
            json!({"id": "k", "unset": [key]}),
        ] {
            let reply = partial(&srv, json!([entry])).await;
            assert_error(&reply, 400, 4, None);
            let message = reply.2["message"].as_str().unwrap();
            assert!(
                message.starts_with("UpdateUsersPartial failed with error: "),
                "{message}"
            );
        }
    }
    assert_eq!(fetch(&srv, "k").await.unwrap()["a"], json!({"b": 1}));
    srv.stop().await;
}

#[tokio::test]
async fn the_same_path_in_set_and_unset_is_code_4() {
    let srv = TestServer::start().await;
    upsert_ok(&srv, &[json!({"id": "k"})]).await;
    for (set, unset) in [
        (json!({"a": 1}), json!(["a"])),
        (json!({"a.b": 1}), json!(["a"])),
        (json!({"a": 1}), json!(["a.b"])),
    ] {
        let reply = partial(&srv, json!([{"id": "k", "set": set, "unset": unset}])).await;
        assert_error(&reply, 400, 4, None);
    }
    // A mere shared prefix of characters is not a path prefix.
    let (status, _, body) =
        partial(&srv, json!([{"id": "k", "set": {"ab": 1}, "unset": ["a"]}])).await;
    assert_eq!(status, 200, "{body}");
    srv.stop().await;
}

#[tokio::test]
async fn id_created_at_and_server_fields_cannot_be_set() {
    let srv = TestServer::start().await;
    upsert_ok(&srv, &[json!({"id": "k"})]).await;
    let entries = [
        json!({"id": "k", "set": {"id": "other"}}),
        json!({"id": "k", "unset": ["id"]}),
        json!({"id": "k", "set": {"created_at": "2020-01-01T00:00:00Z"}}),
        json!({"id": "k", "unset": ["created_at"]}),
        json!({"id": "k", "set": {"banned": true}}),
        json!({"id": "k", "set": {"deactivated_at": "2020-01-01T00:00:00Z"}}),
        json!({"id": "k", "set": {"online": true}}),
        json!({"id": "k"}),
        json!({"id": "k", "set": {}, "unset": []}),
        json!({"id": "k", "set": []}),
        json!({"id": "k", "unset": "color"}),
    ];
    for entry in entries {
        let reply = partial(&srv, json!([entry.clone()])).await;
        assert_error(&reply, 400, 4, None);
    }
    let k = fetch(&srv, "k").await.unwrap();
    assert_eq!(k["banned"], false);
    assert_eq!(k.get("deactivated_at"), None);
    srv.stop().await;
}

#[tokio::test]
async fn batches_are_limited_and_all_or_nothing() {
    let srv = TestServer::start().await;
    let users: Vec<Value> = (0..100).map(|i| json!({"id": format!("p{i}")})).collect();
    upsert_ok(&srv, &users).await;
    let hundred: Vec<Value> = (0..100)
        .map(|i| json!({"id": format!("p{i}"), "set": {"n": i}}))
        .collect();
    let (status, _, body) = partial(&srv, json!(hundred)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["users"].as_object().unwrap().len(), 100);
    let too_many: Vec<Value> = (0..101)
        .map(|i| json!({"id": format!("p{}", i % 100), "set": {"n": -1}}))
        .collect();
    assert_error(&partial(&srv, json!(too_many)).await, 400, 4, None);
    assert_error(&partial(&srv, json!([])).await, 400, 4, None);
    assert_eq!(fetch(&srv, "p0").await.unwrap()["n"], 0);

    // A missing user later in the batch: 404, code 16, and p1 is unchanged.
    let reply = partial(
        &srv,
        json!([{"id": "p1", "set": {"n": "changed"}}, {"id": "nobody", "set": {"n": 1}}]),
    )
    .await;
    assert_error(&reply, 404, 16, None);
    assert_eq!(fetch(&srv, "p1").await.unwrap()["n"], 1);
    // An invalid key later in the batch: nothing written either.
    let reply = partial(
        &srv,
        json!([{"id": "p1", "set": {"n": "changed"}}, {"id": "p2", "set": {"a..b": 1}}]),
    )
    .await;
    assert_error(&reply, 400, 4, None);
    assert_eq!(fetch(&srv, "p1").await.unwrap()["n"], 1);
    srv.stop().await;
}

#[tokio::test]
async fn deleted_users_cannot_be_updated() {
    let srv = TestServer::start().await;
    upsert_ok(&srv, &[json!({"id": "d"})]).await;
    srv.admin_ok(reqwest::Method::DELETE, "/users/d", None)
        .await;
    let reply = partial(&srv, json!([{"id": "d", "set": {"a": 1}}])).await;
    assert_error(
        &reply,
        404,
        16,
        Some("UpdateUsersPartial failed with error: \"the user d was deleted\""),
    );
    srv.stop().await;
}

/// Stream merges a partial `set` of `privacy_settings` into the stored settings (its Go SDK
/// checks `typing_indicators` surviving a set of `read_receipts`), and checks their shape.
#[tokio::test]
async fn privacy_settings_merge_on_set_and_keep_their_shape() {
    let srv = TestServer::start().await;
    upsert_ok(
        &srv,
        &[json!({"id": "priv", "privacy_settings": {"typing_indicators": {"enabled": false}}})],
    )
    .await;
    let body = json!({"users": [{"id": "priv",
        "set": {"privacy_settings": {"read_receipts": {"enabled": false}}}}]});
    let (status, _, reply) = srv.admin(Method::PATCH, "/users", Some(body)).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["users"]["priv"]["privacy_settings"],
        json!({"typing_indicators": {"enabled": false}, "read_receipts": {"enabled": false}})
    );
    for bad in [
        json!({"typing_indicators": true}),
        json!({"read_receipts": {"enabled": "no"}}),
        json!({"mood": {"enabled": true}}),
        json!("on"),
    ] {
        let body = json!({"users": [{"id": "priv", "set": {"privacy_settings": bad}}]});
        let reply = srv.admin(Method::PATCH, "/users", Some(body)).await;
        assert_error(&reply, 400, 4, None);
        let reply = upsert(&srv, &[json!({"id": "priv", "privacy_settings": bad})]).await;
        assert_error(&reply, 400, 4, None);
    }
    srv.stop().await;
}

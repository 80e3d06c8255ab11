//! §5.1 and §5.3 through `POST /users`, and `POST /guest` with server auth.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{assert_error, TestServer};
use crate::{fetch, is_wire_time, upsert, upsert_ok};

#[tokio::test]
async fn upsert_replaces_the_whole_user_but_keeps_server_fields() {
    let srv = TestServer::start().await;
    let first = upsert_ok(
        &srv,
        &[
            json!({"id": "bob", "name": "Bob", "role": "admin", "teams": ["red"],
                 "color": "green", "nested": {"a": 1}}),
        ],
    )
    .await;
    let bob = &first["bob"];
    assert_eq!(bob["role"], "admin");
    assert_eq!(bob["teams"], json!(["red"]));
    assert_eq!(bob["color"], "green");
    assert_eq!(bob["nested"], json!({"a": 1}));
    assert_eq!(bob["online"], false);
    assert_eq!(bob["banned"], false);
    let created = bob["created_at"].clone();

    let second = upsert_ok(
        &srv,
        &[
            json!({"id": "bob", "name": "Robert", "created_at": "2001-01-01T00:00:00Z",
                 "deactivated_at": "2001-01-01T00:00:00Z", "banned": true}),
        ],
    )
    .await;
    let bob = &second["bob"];
    assert_eq!(bob["name"], "Robert");
    assert_eq!(bob["role"], "user", "role not sent becomes user");
    assert_eq!(bob["teams"], json!([]), "teams not sent become empty");
    assert_eq!(bob.get("color"), None, "custom fields not sent are removed");
    assert_eq!(bob.get("nested"), None);
    assert_eq!(bob["created_at"], created, "created_at survives");
    assert_eq!(
        bob.get("deactivated_at"),
        None,
        "server-owned input is ignored"
    );
    assert_eq!(bob["banned"], false);
    assert_ne!(bob["updated_at"], first["bob"]["updated_at"]);
    assert!(is_wire_time(&bob["updated_at"]));
    // And that is what is stored.
    let stored = fetch(&srv, "bob").await.unwrap();
    assert_eq!(stored["name"], "Robert");
    assert_eq!(stored.get("color"), None);
    assert_eq!(stored["created_at"], created);
    srv.stop().await;
}

#[tokio::test]
async fn custom_roles_and_builtins_roundtrip() {
    let srv = TestServer::start().await;
    let users = upsert_ok(
        &srv,
        &[
            json!({"id": "c1", "role": "moderator-plus", "language": "fr", "invisible": true,
                 "image": "http://x/y.png", "teams_role": {"red": "admin"}, "teams": ["red"],
                 "privacy_settings": {"typing_indicators": {"enabled": false}}}),
        ],
    )
    .await;
    let c1 = fetch(&srv, "c1").await.unwrap();
    for key in [
        "role",
        "language",
        "invisible",
        "image",
        "teams_role",
        "teams",
        "privacy_settings",
    ] {
        assert_eq!(c1[key], users["c1"][key], "{key}");
    }
    assert_eq!(c1["role"], "moderator-plus");
    assert_eq!(c1["teams_role"], json!({"red": "admin"}));
    srv.stop().await;
}

#[tokio::test]
async fn a_batch_of_100_passes_and_101_is_code_4() {
    let srv = TestServer::start().await;
    let hundred: Vec<Value> = (0..100).map(|i| json!({"id": format!("u{i}")})).collect();
    let users = upsert_ok(&srv, &hundred).await;
    assert_eq!(users.as_object().unwrap().len(), 100);
    let too_many: Vec<Value> = (0..101).map(|i| json!({"id": format!("v{i}")})).collect();
    let reply = upsert(&srv, &too_many).await;
    assert_error(&reply, 400, 4, None);
    assert!(reply.2["message"]
        .as_str()
        .unwrap()
        .starts_with("UpdateUsers failed with error: "));
    assert_eq!(
        fetch(&srv, "v0").await,
        None,
        "nothing of the 101 was written"
    );
    srv.stop().await;
}

#[tokio::test]
async fn an_empty_or_missing_users_map_is_code_4() {
    let srv = TestServer::start().await;
    for body in [json!({}), json!({"users": {}}), json!({"users": []})] {
        let reply = srv.admin(Method::POST, "/users", Some(body)).await;
        assert_error(&reply, 400, 4, None);
    }
    srv.stop().await;
}

#[tokio::test]
async fn invalid_ids_are_code_4() {
    let srv = TestServer::start().await;
    let long = "a".repeat(256);
    for bad in ["has space", "a/b", "dots.here", "é", "a#b", long.as_str()] {
        let reply = upsert(&srv, &[json!({"id": bad})]).await;
        let message = format!(
            "UpdateUsers failed with error: \"\"{bad}\" is not a valid user id. a-z, 0-9, @, _ and - are allowed.\""
        );
        assert_error(&reply, 400, 4, Some(&message));
    }
    // An id that is not a string, or empty.
    for bad in [json!(42), json!(""), json!(null)] {
        let body = json!({"users": {"k": {"id": bad}}});
        let reply = srv.admin(Method::POST, "/users", Some(body)).await;
        assert_error(&reply, 400, 4, None);
    }
    // 255 bytes and every allowed character pass.
    let ok = "a".repeat(255);
    upsert_ok(&srv, &[json!({"id": ok}), json!({"id": "Az09@_-"})]).await;
    srv.stop().await;
}

#[tokio::test]
async fn one_invalid_user_writes_nothing_and_the_first_error_is_returned() {
    let srv = TestServer::start().await;
    upsert_ok(&srv, &[json!({"id": "keep", "name": "Before"})]).await;
    let body = json!({"users": {
        "keep": {"id": "keep", "name": "After"},
        "fresh": {"id": "fresh"},
        "bad one": {"id": "bad one"},
        "bad two": {"id": "bad two"},
    }});
    let reply = srv.admin(Method::POST, "/users", Some(body)).await;
    assert_error(&reply, 400, 4, None);
    let message = reply.2["message"].as_str().unwrap();
    assert!(message.contains("\"bad one\" is not a valid"), "{message}");
    assert_eq!(fetch(&srv, "keep").await.unwrap()["name"], "Before");
    assert_eq!(fetch(&srv, "fresh").await, None);

    // A rule failure later in the batch (a deleted user) also rolls back the earlier users.
    upsert_ok(&srv, &[json!({"id": "gone"})]).await;
    srv.admin_ok(Method::DELETE, "/users/gone", None).await;
    let reply = upsert(
        &srv,
        &[
            json!({"id": "keep", "name": "After"}),
            json!({"id": "fresh"}),
            json!({"id": "gone"}),
        ],
    )
    .await;
    assert_error(
        &reply,
        404,
        16,
        Some("UpdateUsers failed with error: \"the user gone was deleted\""),
    );
    assert_eq!(fetch(&srv, "keep").await.unwrap()["name"], "Before");
    assert_eq!(fetch(&srv, "fresh").await, None);
    srv.stop().await;
}

#[tokio::test]
async fn deleted_and_deactivated_users_cannot_be_upserted() {
    let srv = TestServer::start().await;
    upsert_ok(&srv, &[json!({"id": "soft"}), json!({"id": "sleepy"})]).await;
    srv.admin_ok(Method::DELETE, "/users/soft", None).await;
    srv.admin_ok(Method::POST, "/users/sleepy/deactivate", Some(json!({})))
        .await;
    assert_error(
        &upsert(&srv, &[json!({"id": "soft"})]).await,
        404,
        16,
        Some("UpdateUsers failed with error: \"the user soft was deleted\""),
    );
    assert_error(
        &upsert(&srv, &[json!({"id": "sleepy"})]).await,
        404,
        16,
        Some("UpdateUsers failed with error: \"the user sleepy was deactivated\""),
    );
    srv.stop().await;
}

#[tokio::test]
async fn a_hard_deleted_id_can_never_be_created_again() {
    let srv = TestServer::start().await;
    upsert_ok(
        &srv,
        &[
            json!({"id": "erased", "name": "E"}),
            json!({"id": "pruned"}),
        ],
    )
    .await;
    let (status, _, body) = srv
        .admin(Method::DELETE, "/users/erased?hard_delete=true", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(is_wire_time(&body["user"]["deleted_at"]));
    assert_eq!(fetch(&srv, "erased").await, None);
    let (status, _, _) = srv.admin(Method::GET, "/users/erased/export", None).await;
    assert_eq!(status, 404, "hard delete erases the data");

    assert_error(
        &upsert(&srv, &[json!({"id": "erased"})]).await,
        404,
        16,
        Some("UpdateUsers failed with error: \"the user erased was deleted\""),
    );
    let reply = srv
        .admin(
            Method::POST,
            "/guest",
            Some(json!({"user": {"id": "erased"}})),
        )
        .await;
    assert_error(&reply, 404, 16, None);
    let reply = crate::partial(&srv, json!([{"id": "erased", "set": {"a": 1}}])).await;
    assert_error(&reply, 404, 16, None);
    let reply = srv
        .admin(
            Method::POST,
            "/users/restore",
            Some(json!({"user_ids": ["erased"]})),
        )
        .await;
    assert_error(&reply, 404, 16, None);

    // Pruning (batch form) keeps a tombstone too.
    let (status, _, body) = srv
        .admin(
            Method::POST,
            "/users/delete",
            Some(json!({"user_ids": ["pruned"], "user": "pruning"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_error(
        &upsert(&srv, &[json!({"id": "pruned"})]).await,
        404,
        16,
        None,
    );
    let reply = srv
        .admin(
            Method::POST,
            "/users/restore",
            Some(json!({"user_ids": ["pruned"]})),
        )
        .await;
    assert_error(&reply, 404, 16, None);
    srv.stop().await;
}

#[tokio::test]
async fn guests_with_server_auth() {
    let srv = TestServer::start().await;
    let body = srv
        .admin_ok(
            Method::POST,
            "/guest",
            Some(json!({"user": {"id": "guest-1", "name": "Guesty", "role": "admin"}})),
        )
        .await;
    assert_eq!(body["user"]["id"], "guest-1");
    assert_eq!(body["user"]["role"], "guest", "a guest is always a guest");
    assert_eq!(body["user"]["name"], "Guesty");
    let token = body["access_token"].as_str().unwrap();
    let claims = chat_gateway::auth::verify(token, &srv.secret, false).unwrap();
    match claims {
        chat_gateway::auth::Identity::User(c) => {
            assert_eq!(c.user_id, "guest-1");
            assert!(c.guest, "a guest token says so");
            assert!(c.iat.is_some(), "a guest token carries its issue time");
        }
        other => panic!("a guest token is a user token, got {other:?}"),
    }
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["access_token", "user", "duration"]);
    assert_eq!(fetch(&srv, "guest-1").await.unwrap()["role"], "guest");

    // Never for an id that belongs to a non-guest.
    upsert_ok(&srv, &[json!({"id": "owner"})]).await;
    let reply = srv
        .admin(
            Method::POST,
            "/guest",
            Some(json!({"user": {"id": "owner"}})),
        )
        .await;
    assert_error(&reply, 400, 4, None);
    // Invalid id.
    let reply = srv
        .admin(Method::POST, "/guest", Some(json!({"user": {"id": "a b"}})))
        .await;
    assert_error(&reply, 400, 4, None);
    // Disabled.
    srv.admin_ok(
        Method::PATCH,
        "/app",
        Some(json!({"guest_user_creation_disabled": true})),
    )
    .await;
    let reply = srv
        .admin(
            Method::POST,
            "/guest",
            Some(json!({"user": {"id": "guest-2"}})),
        )
        .await;
    assert_error(&reply, 403, 17, None);
    assert_eq!(fetch(&srv, "guest-2").await, None);
    srv.stop().await;
}

#[tokio::test]
async fn team_limits_are_code_4() {
    let srv = TestServer::start().await;
    let many: Vec<String> = (0..251).map(|i| format!("t{i}")).collect();
    let reply = upsert(&srv, &[json!({"id": "t", "teams": many})]).await;
    assert_error(&reply, 400, 4, None);
    let long = "x".repeat(101);
    let reply = upsert(&srv, &[json!({"id": "t", "teams": [long]})]).await;
    assert_error(&reply, 400, 4, None);
    assert_eq!(fetch(&srv, "t").await, None);
    let most: Vec<String> = (0..250).map(|i| format!("t{i}")).collect();
    let longest = "x".repeat(100);
    upsert_ok(
        &srv,
        &[
            json!({"id": "t", "teams": most}),
            json!({"id": "u", "teams": [longest]}),
        ],
    )
    .await;
    srv.stop().await;
}

#[tokio::test]
async fn the_same_id_twice_in_one_batch_is_code_4() {
    let srv = TestServer::start().await;
    let body = json!({"users": {"a": {"id": "dup"}, "b": {"id": "dup", "name": "Second"}}});
    let reply = srv.admin(Method::POST, "/users", Some(body)).await;
    assert_error(&reply, 400, 4, None);
    assert_eq!(fetch(&srv, "dup").await, None);
    upsert_ok(&srv, &[json!({"id": "dup"})]).await;
    let reply = crate::partial(
        &srv,
        json!([{"id": "dup", "set": {"a": 1}}, {"id": "dup", "set": {"b": 2}}]),
    )
    .await;
    assert_error(&reply, 400, 4, None);
    assert_eq!(fetch(&srv, "dup").await.unwrap().get("a"), None);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_of_one_user_all_succeed() {
    let srv = std::sync::Arc::new(TestServer::start().await);
    upsert_ok(&srv, &[json!({"id": "busy"})]).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let srv = srv.clone();
        tasks.push(tokio::spawn(async move {
            crate::partial(&srv, json!([{"id": "busy", "set": {format!("k{i}"): i}}])).await
        }));
    }
    for t in tasks {
        let (status, _, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let busy = fetch(&srv, "busy").await.unwrap();
    for i in 0..40 {
        assert_eq!(busy[format!("k{i}")], i, "no update is lost");
    }
    std::sync::Arc::into_inner(srv).unwrap().stop().await;
}

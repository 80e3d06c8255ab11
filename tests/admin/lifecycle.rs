//! §5.6: delete (soft and hard), deactivate, reactivate, restore and the single-user export.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{assert_error, TestServer};
use crate::{fetch, is_wire_time, query_ids, upsert_ok};

#[tokio::test]
async fn soft_delete_hides_and_restore_brings_back() {
    let srv = TestServer::start().await;
    upsert_ok(
        &srv,
        &[
            json!({"id": "s", "name": "S", "color": "red"}),
            json!({"id": "t"}),
        ],
    )
    .await;
    let body = srv.admin_ok(Method::DELETE, "/users/s", None).await;
    assert_eq!(body["user"]["id"], "s");
    assert_eq!(body["user"]["color"], "red");
    assert!(is_wire_time(&body["user"]["deleted_at"]), "{body}");
    let all = json!({"filter_conditions": {}, "include_deactivated_users": true});
    assert_eq!(query_ids(&srv, all.clone()).await, ["t"]);
    assert_eq!(
        query_ids(&srv, json!({"filter_conditions": {"id": "s"}})).await,
        Vec::<String>::new()
    );
    // Data is kept: the GDPR export still has it.
    let export = srv.admin_ok(Method::GET, "/users/s/export", None).await;
    assert_eq!(export["user"]["color"], "red");
    // A second soft delete: it is already deleted.
    assert_error(
        &srv.admin(Method::DELETE, "/users/s", None).await,
        404,
        16,
        None,
    );

    let body = srv
        .admin_ok(
            Method::POST,
            "/users/restore",
            Some(json!({"user_ids": ["s"]})),
        )
        .await;
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["duration"], "restore answers {{}}");
    let s = fetch(&srv, "s").await.unwrap();
    assert_eq!(s["color"], "red");
    assert_eq!(s["name"], "S");
    assert_eq!(s.get("deleted_at"), None);
    // Restoring a user that is not deleted, or unknown, fails.
    let reply = srv
        .admin(
            Method::POST,
            "/users/restore",
            Some(json!({"user_ids": ["s"]})),
        )
        .await;
    assert_error(&reply, 400, 4, None);
    let reply = srv
        .admin(
            Method::POST,
            "/users/restore",
            Some(json!({"user_ids": ["nobody"]})),
        )
        .await;
    assert_error(&reply, 404, 16, None);
    srv.stop().await;
}

#[tokio::test]
async fn deleting_an_unknown_user_is_code_16() {
    let srv = TestServer::start().await;
    let reply = srv.admin(Method::DELETE, "/users/nobody", None).await;
    assert_error(&reply, 404, 16, None);
    assert!(reply.2["message"]
        .as_str()
        .unwrap()
        .starts_with("DeleteUser failed with error: "));
    let reply = srv.admin(Method::DELETE, "/users/not%20valid", None).await;
    assert_error(&reply, 400, 4, None);
    srv.stop().await;
}

#[tokio::test]
async fn delete_options_that_are_not_booleans_are_refused() {
    let srv = TestServer::start().await;
    upsert_ok(&srv, &[json!({"id": "maybe"})]).await;
    for query in [
        "hard_delete=maybe",
        "mark_messages_deleted=yes",
        "hard_delete=TRUE",
    ] {
        let reply = srv
            .admin(Method::DELETE, &format!("/users/maybe?{query}"), None)
            .await;
        assert_error(&reply, 400, 4, None);
        let message = reply.2["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("DeleteUser failed with error: "),
            "{message}"
        );
    }
    // Nothing was deleted, softly or otherwise.
    assert!(fetch(&srv, "maybe").await.is_some(), "still there");
    srv.admin_ok(Method::DELETE, "/users/maybe?hard_delete=false", None)
        .await;
    srv.stop().await;
}

#[tokio::test]
async fn deactivate_and_reactivate() {
    let srv = TestServer::start().await;
    upsert_ok(
        &srv,
        &[json!({"id": "d", "color": "red"}), json!({"id": "admin"})],
    )
    .await;
    let body = srv
        .admin_ok(
            Method::POST,
            "/users/d/deactivate",
            Some(json!({"mark_messages_deleted": true, "created_by_id": "admin"})),
        )
        .await;
    assert!(is_wire_time(&body["user"]["deactivated_at"]), "{body}");
    assert_eq!(body["user"]["color"], "red");
    // Hidden from queries unless asked for.
    assert_eq!(
        query_ids(&srv, json!({"filter_conditions": {}})).await,
        ["admin"]
    );
    let mut with = query_ids(
        &srv,
        json!({"filter_conditions": {}, "include_deactivated_users": true}),
    )
    .await;
    with.sort();
    assert_eq!(with, ["admin", "d"]);

    let back = srv
        .admin_ok(
            Method::POST,
            "/users/d/reactivate",
            Some(json!({"restore_messages": true, "created_by_id": "admin"})),
        )
        .await;
    assert_eq!(back["user"].get("deactivated_at"), None);
    assert_eq!(back["user"]["color"], "red");
    assert_eq!(
        query_ids(&srv, json!({"filter_conditions": {"id": "d"}})).await,
        ["d"]
    );
    let reply = srv
        .admin(Method::POST, "/users/d/reactivate", Some(json!({})))
        .await;
    assert_error(
        &reply,
        400,
        4,
        Some("ReactivateUser failed with error: \"user d is not deactivated\""),
    );
    // Unknown or deleted users.
    assert_error(
        &srv.admin(Method::POST, "/users/nobody/deactivate", None)
            .await,
        404,
        16,
        None,
    );
    assert_error(
        &srv.admin(Method::POST, "/users/nobody/reactivate", None)
            .await,
        404,
        16,
        None,
    );
    srv.admin_ok(Method::DELETE, "/users/admin", None).await;
    assert_error(
        &srv.admin(Method::POST, "/users/admin/deactivate", None)
            .await,
        404,
        16,
        None,
    );
    srv.stop().await;
}

#[tokio::test]
async fn batch_delete_validates_its_options() {
    let srv = TestServer::start().await;
    upsert_ok(&srv, &[json!({"id": "v"})]).await;
    let bad = [
        json!({"user_ids": ["v"], "user": "hard", "messages": "soft"}),
        json!({"user_ids": ["v"], "user": "hard", "conversations": "soft"}),
        json!({"user_ids": ["v"], "user": "bogus"}),
        json!({"user_ids": ["v"], "messages": "bogus"}),
        json!({"user_ids": ["v"], "conversations": "pruning"}),
        json!({"user_ids": []}),
        json!({}),
        json!({"user_ids": ["bad id"]}),
        json!({"user_ids": (0..101).map(|i| format!("x{i}")).collect::<Vec<_>>()}),
    ];
    for body in bad {
        let reply = srv
            .admin(Method::POST, "/users/delete", Some(body.clone()))
            .await;
        assert_error(&reply, 400, 4, None);
    }
    assert_eq!(
        query_ids(&srv, json!({})).await,
        ["v"],
        "nothing was deleted"
    );
    // The accepted combinations.
    let ok = srv
        .admin_ok(
            Method::POST,
            "/users/delete",
            Some(
                json!({"user_ids": ["v"], "user": "hard", "messages": "hard",
                        "conversations": "hard", "new_channel_owner_id": "someone"}),
            ),
        )
        .await;
    assert!(ok["task_id"].is_string());
    srv.stop().await;
}

#[tokio::test]
async fn batch_forms_mark_users_before_answering() {
    let srv = TestServer::start().await;
    let users: Vec<Value> = (0..6).map(|i| json!({"id": format!("b{i}")})).collect();
    upsert_ok(&srv, &users).await;
    srv.admin_ok(
        Method::POST,
        "/users/delete",
        Some(json!({"user_ids": ["b0", "b1"], "user": "soft"})),
    )
    .await;
    srv.admin_ok(
        Method::POST,
        "/users/delete",
        Some(json!({"user_ids": ["b2"], "user": "hard"})),
    )
    .await;
    srv.admin_ok(
        Method::POST,
        "/users/deactivate",
        Some(json!({"user_ids": ["b3", "b4"], "created_by_id": "b5"})),
    )
    .await;
    // No waiting for the tasks: the users are already marked.
    let all = json!({"filter_conditions": {}, "include_deactivated_users": true,
                     "sort": [{"field": "id", "direction": 1}]});
    assert_eq!(query_ids(&srv, all.clone()).await, ["b3", "b4", "b5"]);
    assert_eq!(
        query_ids(&srv, json!({"filter_conditions": {}})).await,
        ["b5"]
    );
    assert_error(
        &crate::upsert(&srv, &[json!({"id": "b2"})]).await,
        404,
        16,
        None,
    );
    // Soft-deleted ones can be restored; the hard-deleted one can't.
    srv.admin_ok(
        Method::POST,
        "/users/restore",
        Some(json!({"user_ids": ["b0", "b1"]})),
    )
    .await;
    srv.admin_ok(
        Method::POST,
        "/users/reactivate",
        Some(json!({"user_ids": ["b3", "b4"]})),
    )
    .await;
    assert_eq!(
        query_ids(
            &srv,
            json!({"filter_conditions": {}, "sort": [{"field": "id", "direction": 1}]})
        )
        .await,
        ["b0", "b1", "b3", "b4", "b5"]
    );
    srv.stop().await;
}

#[tokio::test]
async fn restore_is_all_or_nothing() {
    let srv = TestServer::start().await;
    upsert_ok(&srv, &[json!({"id": "r1"}), json!({"id": "r2"})]).await;
    srv.admin_ok(Method::DELETE, "/users/r1", None).await;
    // r2 is not deleted: the whole restore fails and r1 stays deleted.
    let reply = srv
        .admin(
            Method::POST,
            "/users/restore",
            Some(json!({"user_ids": ["r1", "r2"]})),
        )
        .await;
    assert_error(&reply, 400, 4, None);
    assert_eq!(fetch(&srv, "r1").await, None);
    srv.stop().await;
}

#[tokio::test]
async fn export_one_user() {
    let srv = TestServer::start().await;
    upsert_ok(&srv, &[json!({"id": "e", "name": "E", "color": "red"})]).await;
    let body = srv.admin_ok(Method::GET, "/users/e/export", None).await;
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "user",
            "mutes",
            "blocks",
            "messages",
            "reactions",
            "duration"
        ]
    );
    assert_eq!(body["user"]["id"], "e");
    assert_eq!(body["mutes"], json!([]));
    assert_eq!(body["blocks"], json!([]));
    assert_eq!(body["user"]["color"], "red");
    assert_eq!(body["messages"], json!([]));
    assert_eq!(body["reactions"], json!([]));
    assert_error(
        &srv.admin(Method::GET, "/users/nobody/export", None).await,
        404,
        16,
        None,
    );
    srv.stop().await;
}

#[tokio::test]
async fn pruning_nulls_personal_fields_and_keeps_a_tombstone() {
    let srv = TestServer::start().await;
    upsert_ok(
        &srv,
        &[json!({"id": "p", "name": "Private Name", "image": "http://x/p.png", "color": "red"})],
    )
    .await;
    srv.admin_ok(
        Method::POST,
        "/users/delete",
        Some(json!({"user_ids": ["p"], "user": "pruning"})),
    )
    .await;
    assert_eq!(fetch(&srv, "p").await, None, "hidden from queries");
    let export = srv.admin_ok(Method::GET, "/users/p/export", None).await;
    let user = &export["user"];
    assert!(is_wire_time(&user["deleted_at"]), "{user}");
    for key in ["name", "image", "color"] {
        assert_eq!(user.get(key), None, "{key} is nulled: {user}");
    }
    // Its name is free, and the id is gone for good.
    crate::set_mode(&srv, "app").await;
    upsert_ok(&srv, &[json!({"id": "q", "name": "private name"})]).await;
    assert_error(
        &crate::upsert(&srv, &[json!({"id": "p"})]).await,
        404,
        16,
        None,
    );
    srv.stop().await;
}

#[tokio::test]
async fn a_refused_deactivate_or_reactivate_changes_nothing() {
    let srv = TestServer::start().await;
    upsert_ok(&srv, &[json!({"id": "x"}), json!({"id": "y"})]).await;
    let bad = json!({"created_by_id": 5});
    let reply = srv
        .admin(Method::POST, "/users/x/deactivate", Some(bad.clone()))
        .await;
    assert_error(&reply, 400, 4, None);
    assert_eq!(fetch(&srv, "x").await.unwrap().get("deactivated_at"), None);
    let reply = srv
        .admin(
            Method::POST,
            "/users/deactivate",
            Some(json!({"user_ids": ["x", "y"], "created_by_id": ["admin"]})),
        )
        .await;
    assert_error(&reply, 400, 4, None);
    assert_eq!(
        query_ids(&srv, json!({"filter_conditions": {}}))
            .await
            .len(),
        2
    );

    srv.admin_ok(Method::POST, "/users/x/deactivate", None)
        .await;
    let reply = srv
        .admin(Method::POST, "/users/x/reactivate", Some(bad))
        .await;
    assert_error(&reply, 400, 4, None);
    assert!(fetch(&srv, "x").await.unwrap()["deactivated_at"].is_string());
    srv.stop().await;
}

#[tokio::test]
async fn batch_forms_take_at_most_100_ids() {
    let srv = TestServer::start().await;
    let users: Vec<Value> = (0..100).map(|i| json!({"id": format!("m{i}")})).collect();
    upsert_ok(&srv, &users).await;
    let hundred: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    let mut too_many = hundred.clone();
    too_many.push("m0x".into());
    for path in [
        "/users/deactivate",
        "/users/reactivate",
        "/users/restore",
        "/users/delete",
    ] {
        let reply = srv
            .admin(Method::POST, path, Some(json!({"user_ids": too_many})))
            .await;
        assert_error(&reply, 400, 4, None);
    }
    assert_eq!(
        query_ids(&srv, json!({"filter_conditions": {}, "limit": 100}))
            .await
            .len(),
        100
    );
    srv.admin_ok(
        Method::POST,
        "/users/deactivate",
        Some(json!({"user_ids": hundred})),
    )
    .await;
    srv.admin_ok(
        Method::POST,
        "/users/reactivate",
        Some(json!({"user_ids": hundred})),
    )
    .await;
    srv.admin_ok(
        Method::POST,
        "/users/delete",
        Some(json!({"user_ids": hundred})),
    )
    .await;
    srv.admin_ok(
        Method::POST,
        "/users/restore",
        Some(json!({"user_ids": hundred})),
    )
    .await;
    assert_eq!(
        query_ids(&srv, json!({"filter_conditions": {}, "limit": 100}))
            .await
            .len(),
        100
    );
    srv.stop().await;
}

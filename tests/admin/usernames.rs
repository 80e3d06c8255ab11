//! §5.5: unique usernames in `app` and `team` mode on every admin write path.

use std::sync::Arc;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{assert_error, TestServer};
use crate::{fetch, partial, query_ids, set_mode, upsert, upsert_ok};

fn dup(op: &str, name: &str) -> String {
    format!("{op} failed with error: \"username '{name}' already exists\"")
}

fn dup_in_team(op: &str, name: &str, team: &str) -> String {
    format!("{op} failed with error: \"username '{name}' already exists in team '{team}'\"")
}

#[tokio::test]
async fn without_enforcement_names_may_repeat() {
    let srv = TestServer::start().await;
    upsert_ok(&srv, &[json!({"id": "a", "name": "John Doe"})]).await;
    upsert_ok(&srv, &[json!({"id": "b", "name": "John Doe"})]).await;
    upsert_ok(
        &srv,
        &[
            json!({"id": "c", "name": "john.doe"}),
            json!({"id": "d", "name": "JOHN-DOE"}),
        ],
    )
    .await;
    srv.stop().await;
}

#[tokio::test]
async fn app_mode_normalises_and_refuses_collisions() {
    let srv = TestServer::start().await;
    set_mode(&srv, "app").await;
    upsert_ok(&srv, &[json!({"id": "john", "name": "John Doe"})]).await;
    for name in ["john.doe", "JOHN-DOE", "john doe", "  John   Doe!! "] {
        let reply = upsert(&srv, &[json!({"id": "other", "name": name})]).await;
        assert_error(&reply, 400, 6, Some(&dup("UpdateUsers", name)));
    }
    assert_eq!(fetch(&srv, "other").await, None);
    // Through a partial update and guest creation too.
    upsert_ok(&srv, &[json!({"id": "jane", "name": "Jane"})]).await;
    let reply = partial(&srv, json!([{"id": "jane", "set": {"name": "john.doe"}}])).await;
    assert_error(&reply, 400, 6, Some(&dup("UpdateUsersPartial", "john.doe")));
    assert_eq!(fetch(&srv, "jane").await.unwrap()["name"], "Jane");
    let reply = srv
        .admin(
            Method::POST,
            "/guest",
            Some(json!({"user": {"id": "g", "name": "JOHN DOE"}})),
        )
        .await;
    assert_error(&reply, 400, 6, Some(&dup("CreateGuest", "JOHN DOE")));
    assert_eq!(fetch(&srv, "g").await, None);
    // The holder itself may keep (and re-spell) its own name.
    upsert_ok(&srv, &[json!({"id": "john", "name": "john-doe", "x": 1})]).await;
    // Unicode letters and digits count; a name with neither is never a duplicate.
    upsert_ok(&srv, &[json!({"id": "u1", "name": "Ünïcode 42"})]).await;
    let reply = upsert(&srv, &[json!({"id": "u2", "name": "ünïcode-42"})]).await;
    assert_error(&reply, 400, 6, None);
    upsert_ok(
        &srv,
        &[
            json!({"id": "e1", "name": "..."}),
            json!({"id": "e2", "name": "!!"}),
        ],
    )
    .await;
    upsert_ok(&srv, &[json!({"id": "e3", "name": ""})]).await;
    // Text that is the same to a reader collides: a precomposed and a decomposed accent,
    // full-width letters.
    upsert_ok(&srv, &[json!({"id": "jose1", "name": "Jos\u{e9}"})]).await;
    let reply = upsert(&srv, &[json!({"id": "jose2", "name": "JOSE\u{301}"})]).await;
    assert_error(&reply, 400, 6, None);
    let reply = upsert(
        &srv,
        &[json!({"id": "jd3", "name": "\u{ff2a}ohn \u{ff24}oe"})],
    )
    .await;
    assert_error(&reply, 400, 6, None);
    upsert_ok(&srv, &[json!({"id": "jose3", "name": "Jose"})]).await;
    // Names differing in a letter do not collide.
    upsert_ok(&srv, &[json!({"id": "jd2", "name": "John Doe 2"})]).await;
    srv.stop().await;
}

#[tokio::test]
async fn duplicates_inside_one_batch_are_refused_whole() {
    let srv = TestServer::start().await;
    set_mode(&srv, "app").await;
    let reply = upsert(
        &srv,
        &[
            json!({"id": "first", "name": "Same Name"}),
            json!({"id": "second", "name": "same.name"}),
        ],
    )
    .await;
    assert_error(&reply, 400, 6, Some(&dup("UpdateUsers", "same.name")));
    assert_eq!(
        fetch(&srv, "first").await,
        None,
        "nothing of the batch is written"
    );
    assert_eq!(fetch(&srv, "second").await, None);
    // The name is still free afterwards: the refused batch left no index entry.
    upsert_ok(&srv, &[json!({"id": "third", "name": "SAME NAME"})]).await;

    // The same in team mode, for users sharing a team.
    set_mode(&srv, "team").await;
    let reply = upsert(
        &srv,
        &[
            json!({"id": "t1", "name": "Team Mate", "teams": ["red"]}),
            json!({"id": "t2", "name": "team-mate", "teams": ["blue", "red"]}),
        ],
    )
    .await;
    assert_error(
        &reply,
        400,
        6,
        Some(&dup_in_team("UpdateUsers", "team-mate", "red")),
    );
    assert_eq!(fetch(&srv, "t1").await, None);
    // Partial updates in one batch.
    set_mode(&srv, "app").await;
    upsert_ok(
        &srv,
        &[
            json!({"id": "p1", "name": "P1"}),
            json!({"id": "p2", "name": "P2"}),
        ],
    )
    .await;
    let reply = partial(
        &srv,
        json!([{"id": "p1", "set": {"name": "Twin"}}, {"id": "p2", "set": {"name": "twin"}}]),
    )
    .await;
    assert_error(&reply, 400, 6, None);
    assert_eq!(fetch(&srv, "p1").await.unwrap()["name"], "P1");
    srv.stop().await;
}

#[tokio::test]
async fn a_rename_frees_the_old_name() {
    let srv = TestServer::start().await;
    set_mode(&srv, "app").await;
    upsert_ok(&srv, &[json!({"id": "a", "name": "Old Name"})]).await;
    partial(&srv, json!([{"id": "a", "set": {"name": "New Name"}}])).await;
    upsert_ok(&srv, &[json!({"id": "b", "name": "old name"})]).await;
    assert_error(
        &upsert(&srv, &[json!({"id": "c", "name": "new.name"})]).await,
        400,
        6,
        None,
    );
    // Unsetting the name frees it too.
    partial(&srv, json!([{"id": "a", "unset": ["name"]}])).await;
    upsert_ok(&srv, &[json!({"id": "c", "name": "new.name"})]).await;
    srv.stop().await;
}

#[tokio::test]
async fn team_mode_checks_only_shared_teams() {
    let srv = TestServer::start().await;
    set_mode(&srv, "team").await;
    upsert_ok(&srv, &[json!({"id": "a", "name": "Ann", "teams": ["red"]})]).await;
    upsert_ok(
        &srv,
        &[json!({"id": "b", "name": "ann", "teams": ["blue"]})],
    )
    .await;
    // Users without teams are not checked.
    upsert_ok(&srv, &[json!({"id": "loner", "name": "ANN"})]).await;
    // The first conflicting team is named, in the order the teams were given.
    let reply = upsert(
        &srv,
        &[json!({"id": "c", "name": "A.N.N", "teams": ["green", "blue", "red"]})],
    )
    .await;
    assert_error(
        &reply,
        400,
        6,
        Some(&dup_in_team("UpdateUsers", "A.N.N", "blue")),
    );
    upsert_ok(
        &srv,
        &[json!({"id": "c", "name": "A.N.N", "teams": ["green"]})],
    )
    .await;
    // A team change that brings a user into a team holding its name.
    let reply = partial(
        &srv,
        json!([{"id": "b", "set": {"teams": ["blue", "red"]}}]),
    )
    .await;
    assert_error(
        &reply,
        400,
        6,
        Some(&dup_in_team("UpdateUsersPartial", "ann", "red")),
    );
    assert_eq!(fetch(&srv, "b").await.unwrap()["teams"], json!(["blue"]));
    let reply = upsert(
        &srv,
        &[json!({"id": "loner", "name": "ANN", "teams": ["green"]})],
    )
    .await;
    assert_error(
        &reply,
        400,
        6,
        Some(&dup_in_team("UpdateUsers", "ANN", "green")),
    );
    // Leaving a team frees the name there.
    partial(&srv, json!([{"id": "a", "set": {"teams": ["yellow"]}}])).await;
    let (status, _, body) = partial(
        &srv,
        json!([{"id": "b", "set": {"teams": ["blue", "red"]}}]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    srv.stop().await;
}

#[tokio::test]
async fn enabling_enforcement_leaves_existing_duplicates_alone() {
    let srv = TestServer::start().await;
    upsert_ok(
        &srv,
        &[
            json!({"id": "x", "name": "Dup"}),
            json!({"id": "y", "name": "dup"}),
        ],
    )
    .await;
    set_mode(&srv, "app").await;
    assert_eq!(fetch(&srv, "x").await.unwrap()["name"], "Dup");
    assert_eq!(fetch(&srv, "y").await.unwrap()["name"], "dup");
    // Unrelated updates of either still succeed, by upsert and by partial update.
    upsert_ok(&srv, &[json!({"id": "x", "name": "Dup", "color": "red"})]).await;
    let (status, _, body) = partial(&srv, json!([{"id": "y", "set": {"color": "blue"}}])).await;
    assert_eq!(status, 200, "{body}");
    // A new collision is refused.
    assert_error(
        &upsert(&srv, &[json!({"id": "z", "name": "DUP"})]).await,
        400,
        6,
        None,
    );
    // Leaving the name and coming back to it is a new collision.
    partial(&srv, json!([{"id": "x", "set": {"name": "Else"}}])).await;
    let reply = partial(&srv, json!([{"id": "x", "set": {"name": "Dup"}}])).await;
    assert_error(&reply, 400, 6, None);
    srv.stop().await;
}

#[tokio::test]
async fn enabling_team_mode_leaves_existing_duplicates_alone() {
    let srv = TestServer::start().await;
    upsert_ok(
        &srv,
        &[
            json!({"id": "x", "name": "Dup", "teams": ["red"]}),
            json!({"id": "y", "name": "dup", "teams": ["red"]}),
        ],
    )
    .await;
    set_mode(&srv, "team").await;
    let (status, _, body) = partial(&srv, json!([{"id": "y", "set": {"color": "blue"}}])).await;
    assert_eq!(status, 200, "{body}");
    upsert_ok(
        &srv,
        &[json!({"id": "x", "name": "Dup", "teams": ["red"], "n": 1})],
    )
    .await;
    let reply = upsert(&srv, &[json!({"id": "z", "name": "DUP", "teams": ["red"]})]).await;
    assert_error(&reply, 400, 6, None);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_racing_for_one_name_exactly_one_wins() {
    let srv = Arc::new(TestServer::start().await);
    set_mode(&srv, "app").await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let srv = srv.clone();
        tasks.push(tokio::spawn(async move {
            upsert(
                &srv,
                &[json!({"id": format!("racer{i}"), "name": "The Prize"})],
            )
            .await
        }));
    }
    let mut winners = 0;
    for t in tasks {
        let reply = t.await.unwrap();
        match reply.0 {
            200 => winners += 1,
            _ => assert_error(&reply, 400, 6, Some(&dup("UpdateUsers", "The Prize"))),
        }
    }
    assert_eq!(winners, 1);
    let holders = query_ids(&srv, json!({"filter_conditions": {"name": "The Prize"}})).await;
    assert_eq!(holders.len(), 1, "{holders:?}");

    // Racing renames of existing users, by partial update.
    let users: Vec<Value> = (0..20).map(|i| json!({"id": format!("r{i}")})).collect();
    upsert_ok(&srv, &users).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let srv = srv.clone();
        tasks.push(tokio::spawn(async move {
            partial(
                &srv,
                json!([{"id": format!("r{i}"), "set": {"name": "second prize"}}]),
            )
            .await
        }));
    }
    let mut winners = 0;
    for t in tasks {
        let reply = t.await.unwrap();
        match reply.0 {
            200 => winners += 1,
            _ => assert_error(&reply, 400, 6, None),
        }
    }
    assert_eq!(winners, 1);
    Arc::into_inner(srv).expect("tasks done").stop().await;
}

#[tokio::test]
async fn deactivated_and_deleted_users_do_not_hold_names() {
    let srv = TestServer::start().await;
    set_mode(&srv, "app").await;
    upsert_ok(
        &srv,
        &[
            json!({"id": "ann1", "name": "Ann"}),
            json!({"id": "cat1", "name": "Cat"}),
        ],
    )
    .await;
    srv.admin_ok(Method::POST, "/users/ann1/deactivate", Some(json!({})))
        .await;
    srv.admin_ok(Method::DELETE, "/users/cat1", None).await;
    upsert_ok(
        &srv,
        &[
            json!({"id": "ann2", "name": "ann"}),
            json!({"id": "cat2", "name": "CAT"}),
        ],
    )
    .await;

    // Reactivating into a taken name fails, unless a new name is given.
    let reply = srv
        .admin(Method::POST, "/users/ann1/reactivate", Some(json!({})))
        .await;
    assert_error(&reply, 400, 6, Some(&dup("ReactivateUser", "Ann")));
    assert!(fetch(&srv, "ann1").await.unwrap()["deactivated_at"].is_string());
    let (status, _, body) = srv
        .admin(
            Method::POST,
            "/users/ann1/reactivate",
            Some(json!({"name": "Ann Two"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["name"], "Ann Two");
    assert_eq!(body["user"].get("deactivated_at"), None);
    // A new name that is itself taken fails too.
    srv.admin_ok(Method::POST, "/users/ann2/deactivate", Some(json!({})))
        .await;
    upsert_ok(&srv, &[json!({"id": "ann3", "name": "Taken"})]).await;
    let reply = srv
        .admin(
            Method::POST,
            "/users/ann2/reactivate",
            Some(json!({"name": "taken"})),
        )
        .await;
    assert_error(&reply, 400, 6, None);
    // The batch form refuses as well (ann2's own name "ann" is taken meanwhile).
    upsert_ok(&srv, &[json!({"id": "ann4", "name": "A-N-N"})]).await;
    let reply = srv
        .admin(
            Method::POST,
            "/users/reactivate",
            Some(json!({"user_ids": ["ann2"]})),
        )
        .await;
    assert_error(&reply, 400, 6, None);

    // Restoring into a taken name fails and leaves the user deleted.
    let reply = srv
        .admin(
            Method::POST,
            "/users/restore",
            Some(json!({"user_ids": ["cat1"]})),
        )
        .await;
    assert_error(&reply, 400, 6, None);
    assert_eq!(fetch(&srv, "cat1").await, None);
    // Once the name is free again, restore works.
    srv.admin_ok(Method::DELETE, "/users/cat2?hard_delete=true", None)
        .await;
    srv.admin_ok(
        Method::POST,
        "/users/restore",
        Some(json!({"user_ids": ["cat1"]})),
    )
    .await;
    assert_eq!(fetch(&srv, "cat1").await.unwrap()["name"], "Cat");
    srv.stop().await;
}

//! Users reaching for what is not theirs: their own role, teams and server-owned fields (over
//! `/connect` and client REST), other users, writes while anonymous, and accounts claimed
//! through `POST /guest`.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{assert_error, TestServer};
use crate::ws::{self, connect_url, expect_refusal, uid};
use crate::{anonymous, jwt, stored_user};

#[tokio::test]
async fn role_teams_and_server_fields_cannot_be_taken_at_connect() {
    let s = TestServer::start().await;
    let id = uid("conn");
    s.admin_ok(
        Method::POST,
        "/users",
        Some(json!({"users": {id.clone(): {"id": id, "teams": ["red"]}}})),
    )
    .await;
    let token = s.user_token(&id);
    let refuse = |details: Value, code: i64| {
        let url = connect_url(&s, &id, details, &token, "jwt");
        async move { expect_refusal(&url, code).await }
    };
    let err = refuse(json!({"id": id, "role": "admin"}), 17).await;
    assert!(err["message"].as_str().unwrap().contains("UpdateUserRole"));
    refuse(json!({"id": id, "teams": ["red", "blue"]}), 17).await;
    refuse(json!({"id": id, "teams_role": {"red": "admin"}}), 17).await;
    for (field, value) in [
        ("banned", json!(true)),
        ("deactivated_at", json!("2020-01-01T00:00:00Z")),
        ("revoke_tokens_issued_before", json!("2030-01-01T00:00:00Z")),
        ("devices", json!([{"id": "d"}])),
        ("unread_count", json!(7)),
    ] {
        refuse(json!({"id": id, field: value}), 4).await;
    }
    // A new user may not arrive with a role, teams or team roles either.
    let fresh = uid("fresh");
    let ft = s.user_token(&fresh);
    for extra in [
        json!({"role": "admin"}),
        json!({"teams": ["red"]}),
        json!({"teams_role": {"red": "admin"}}),
    ] {
        let mut details = json!({"id": fresh});
        details
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        expect_refusal(&connect_url(&s, &fresh, details, &ft, "jwt"), 17).await;
    }
    // After all that, the stored user is as the server left it.
    let stored = stored_user(&s, &id).await;
    assert_eq!(stored["role"], "user");
    assert_eq!(stored["teams"], json!(["red"]));
    assert_eq!(stored["banned"], false);
    assert!(
        stored.get("teams_role").is_none_or(Value::is_null),
        "{stored}"
    );
    s.stop().await;
}

#[tokio::test]
async fn role_teams_and_server_fields_cannot_be_taken_over_client_rest() {
    let s = TestServer::start().await;
    let id = uid("rest");
    ws::connect_user(&s, &id, json!({"id": id, "name": "R"})).await;
    let me = jwt(&s, &s.user_token(&id));
    let patch = |set: Value| json!({"users": [{"id": id, "set": set}]});
    let upsert = |user: Value| {
        let mut u = json!({"id": id, "name": "R"});
        u.as_object_mut()
            .unwrap()
            .extend(user.as_object().unwrap().clone());
        json!({"users": {id.clone(): u}})
    };
    // Role, teams and team roles: 403, code 17, on partial update and on upsert.
    for set in [
        json!({"role": "admin"}),
        json!({"teams": ["red"]}),
        json!({"teams_role": {"red": "admin"}}),
    ] {
        let reply = s
            .public_with(Method::PATCH, "/users", Some(patch(set.clone())), &me)
            .await;
        assert_error(&reply, 403, 17, None);
        let reply = s
            .public_with(Method::POST, "/users", Some(upsert(set.clone())), &me)
            .await;
        assert_error(&reply, 403, 17, None);
    }
    let reply = s
        .public_with(
            Method::PATCH,
            "/users",
            Some(patch(json!({"role": "admin"}))),
            &me,
        )
        .await;
    assert!(reply.2["message"]
        .as_str()
        .unwrap()
        .contains("is not allowed to perform action UpdateUserRole"));
    // Server-owned fields: refused by partial update (code 4), ignored by upsert.
    for (field, value) in [
        ("banned", json!(true)),
        ("revoke_tokens_issued_before", json!(null)),
        ("created_at", json!("2000-01-01T00:00:00Z")),
        ("deactivated_at", json!("2020-01-01T00:00:00Z")),
    ] {
        let reply = s
            .public_with(
                Method::PATCH,
                "/users",
                Some(patch(json!({ field: value.clone() }))),
                &me,
            )
            .await;
        assert_error(&reply, 400, 4, None);
        let (status, _, body) = s
            .public_with(
                Method::POST,
                "/users",
                Some(upsert(json!({ field: value }))),
                &me,
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let reply = s
        .public_with(
            Method::PATCH,
            "/users",
            Some(json!({"users": [{"id": id, "unset": ["banned"]}]})),
            &me,
        )
        .await;
    assert_error(&reply, 400, 4, None);
    // Another user's record: 403, code 17, either way.
    let other = uid("other");
    s.admin_ok(
        Method::POST,
        "/users",
        Some(json!({"users": {other.clone(): {"id": other, "name": "O"}}})),
    )
    .await;
    let reply = s
        .public_with(
            Method::PATCH,
            "/users",
            Some(json!({"users": [{"id": other, "set": {"name": "pwned"}}]})),
            &me,
        )
        .await;
    assert_error(&reply, 403, 17, None);
    let reply = s
        .public_with(
            Method::POST,
            "/users",
            Some(json!({"users": {other.clone(): {"id": other, "name": "pwned"}}})),
            &me,
        )
        .await;
    assert_error(&reply, 403, 17, None);
    // Nothing stuck.
    let stored = stored_user(&s, &id).await;
    assert_eq!(stored["role"], "user");
    assert_eq!(stored["teams"], json!([]));
    assert_eq!(stored["banned"], false);
    assert!(stored.get("deactivated_at").is_none_or(Value::is_null));
    assert_ne!(stored["created_at"], "2000-01-01T00:00:00Z");
    assert!(
        stored.get("teams_role").is_none_or(Value::is_null),
        "{stored}"
    );
    assert_eq!(stored_user(&s, &other).await["name"], "O");
    s.stop().await;
}

#[tokio::test]
async fn anonymous_callers_cannot_write() {
    let s = TestServer::start().await;
    let id = uid("anon-target");
    s.admin_ok(
        Method::POST,
        "/users",
        Some(json!({"users": {id.clone(): {"id": id, "name": "A"}}})),
    )
    .await;
    let anon = anonymous(&s);
    let reply = s
        .public_with(
            Method::PATCH,
            "/users",
            Some(json!({"users": [{"id": id, "set": {"name": "x"}}]})),
            &anon,
        )
        .await;
    assert_error(&reply, 403, 17, None);
    let reply = s
        .public_with(
            Method::POST,
            "/users",
            Some(json!({"users": {id.clone(): {"id": id, "name": "x"}}})),
            &anon,
        )
        .await;
    assert_error(&reply, 403, 17, None);
    // Reading is allowed.
    let (status, _, _) = crate::client_query(&s, &anon, &id).await;
    assert_eq!(status, 200);
    // An anonymous connection gets a fresh "!anon" id and role, whatever it asked for.
    let url = connect_url(
        &s,
        &id,
        json!({"id": id, "role": "admin", "anon": true}),
        "",
        "anonymous",
    );
    let mut sock = ws::open(&url).await;
    match ws::next(&mut sock, std::time::Duration::from_secs(5)).await {
        ws::Next::Frame(f) => {
            assert!(f["me"]["id"].as_str().unwrap().starts_with("!anon"), "{f}");
            assert_eq!(f["me"]["role"], "anonymous");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(stored_user(&s, &id).await["name"], "A");
    s.stop().await;
}

#[tokio::test]
async fn a_guest_cannot_claim_an_existing_account_or_a_role() {
    let s = TestServer::start().await;
    let guest = |body: Value| {
        let creds = anonymous(&s);
        let s = &s;
        async move {
            s.public_with(Method::POST, "/guest", Some(body), &creds)
                .await
        }
    };
    // An existing user's id: code 4, and no token.
    let owner = uid("owner");
    s.admin_ok(
        Method::POST,
        "/users",
        Some(json!({"users": {owner.clone(): {"id": owner, "role": "admin", "name": "O"}}})),
    )
    .await;
    let reply = guest(json!({"user": {"id": owner, "name": "Mallory"}})).await;
    assert_error(&reply, 400, 4, None);
    assert!(reply.2.get("access_token").is_none());
    let stored = stored_user(&s, &owner).await;
    assert_eq!(
        (stored["role"].clone(), stored["name"].clone()),
        (json!("admin"), json!("O"))
    );
    // A deleted id cannot be claimed either (spec §5.6: code 16 forever).
    s.admin_ok(
        Method::DELETE,
        &format!("/users/{owner}?hard_delete=true"),
        None,
    )
    .await;
    let reply = guest(json!({"user": {"id": owner}})).await;
    assert_error(&reply, 404, 16, None);
    // A new guest asking for a role, teams or team roles gets none of them.
    let id = uid("guest");
    let (status, _, body) = guest(json!({"user": {"id": id, "role": "admin",
        "teams": ["red"], "teams_role": {"red": "admin"}}}))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["role"], "guest");
    let stored = stored_user(&s, &id).await;
    assert_eq!(stored["role"], "guest");
    assert_eq!(stored["teams"], json!([]));
    assert!(
        stored.get("teams_role").is_none_or(Value::is_null),
        "{stored}"
    );
    s.stop().await;
}

//! A guest's token against the back end taking its id over (issue: ids pre-claimed through
//! `POST /guest`), and tokens of deleted users on the public REST routes.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{assert_error, Api, TestServer};
use crate::ws::{self, expect_event, next, uid, Next};
use crate::{anonymous, client_query, jwt};

/// Creates a guest through the public listener and returns its token.
async fn new_guest(api: &Api, id: &str) -> String {
    let (status, _, body) = api
        .public_with(
            Method::POST,
            "/guest",
            Some(json!({"user": {"id": id, "name": "Squatter"}})),
            &anonymous(api),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().expect("a token").to_owned()
}

/// Connects with `token` and expects the first frame to be the `health.check`.
async fn connect_with(api: &Api, id: &str, token: &str) -> ws::Socket {
    let url = ws::connect_url(api, id, json!({"id": id}), token, "jwt");
    let mut socket = ws::open(&url).await;
    match next(&mut socket, Duration::from_secs(5)).await {
        Next::Frame(f) if f["type"] == "health.check" => socket,
        other => panic!("expected health.check, got {other:?}"),
    }
}

/// Expects the socket to end with a code-40 error frame and close 1000.
async fn expect_ended_40(socket: &mut ws::Socket) {
    let err = expect_event(socket, "connection.error", Duration::from_secs(5)).await;
    assert_eq!(err["error"]["code"], 40, "{err}");
    match next(socket, Duration::from_secs(5)).await {
        Next::Closed(1000, reason) => {
            let r: Value = serde_json::from_str(&reason).expect("JSON close reason");
            assert_eq!(r["code"], 40);
        }
        other => panic!("expected close 1000, got {other:?}"),
    }
}

/// Every way a guest token is used is refused with code 40.
async fn guest_token_refused(api: &Api, id: &str, token: &str) {
    let url = ws::connect_url(api, id, json!({"id": id}), token, "jwt");
    ws::expect_refusal(&url, 40).await;
    let reply = client_query(api, &jwt(api, token), id).await;
    assert_error(&reply, 401, 40, None);
}

#[tokio::test]
async fn a_guest_token_ends_when_the_back_end_upserts_the_id() {
    let s = TestServer::start().await;
    let id = uid("claimed");
    let guest_token = new_guest(&s, &id).await;
    assert_ne!(
        guest_token,
        s.user_token(&id),
        "a guest token differs from a back-end token for the same id"
    );
    let mut squatter = connect_with(&s, &id, &guest_token).await;
    // The back end creates its user with that id: the guest's session and token are over.
    s.admin_ok(
        Method::POST,
        "/users",
        Some(json!({"users": {&id: {"id": &id, "name": "Real"}}})),
    )
    .await;
    expect_ended_40(&mut squatter).await;
    guest_token_refused(&s, &id, &guest_token).await;
    // The back end's own token for the id works.
    let (_, first) = ws::connect_user(&s, &id, json!({"id": &id})).await;
    assert_eq!(first["me"]["role"], "user");
    assert_eq!(first["me"]["name"], "Real");
    s.stop().await;
}

#[tokio::test]
async fn a_guest_token_ends_when_a_partial_update_changes_the_role() {
    let s = TestServer::start().await;
    let id = uid("promoted");
    let guest_token = new_guest(&s, &id).await;
    let mut squatter = connect_with(&s, &id, &guest_token).await;
    s.admin_ok(
        Method::PATCH,
        "/users",
        Some(json!({"users": [{"id": &id, "set": {"role": "user"}}]})),
    )
    .await;
    expect_ended_40(&mut squatter).await;
    guest_token_refused(&s, &id, &guest_token).await;
    s.stop().await;
}

#[tokio::test]
async fn a_guest_token_keeps_working_while_the_user_is_a_guest() {
    let s = TestServer::start().await;
    let id = uid("stays");
    let guest_token = new_guest(&s, &id).await;
    let mut a = connect_with(&s, &id, &guest_token).await;
    // An update that keeps the guest a guest changes nothing for its token.
    s.admin_ok(
        Method::PATCH,
        "/users",
        Some(json!({"users": [{"id": &id, "set": {"mood": "fine"}}]})),
    )
    .await;
    let ev = expect_event(&mut a, "user.updated", Duration::from_secs(5)).await;
    assert_eq!(ev["user"]["mood"], "fine");
    connect_with(&s, &id, &guest_token).await;
    s.stop().await;
}

#[tokio::test]
async fn a_deleted_users_token_is_refused_on_public_rest() {
    let s = TestServer::start().await;
    for hard in [false, true] {
        let id = uid("gone");
        s.admin_ok(
            Method::POST,
            "/users",
            Some(json!({"users": {&id: {"id": &id}}})),
        )
        .await;
        let creds = jwt(&s, &s.user_token(&id));
        let (status, _, _) = client_query(&s, &creds, &id).await;
        assert_eq!(status, 200);
        s.admin_ok(
            Method::DELETE,
            &format!("/users/{id}?hard_delete={hard}&mark_messages_deleted={hard}"),
            None,
        )
        .await;
        let reply = client_query(&s, &creds, &id).await;
        assert_error(&reply, 404, 16, None);
        let patch = json!({"users": [{"id": &id, "set": {"name": "back"}}]});
        let reply = s
            .public_with(Method::PATCH, "/users", Some(patch), &creds)
            .await;
        assert_error(&reply, 404, 16, None);
    }
    s.stop().await;
}

/// Under unique usernames, guests cannot squat names: a guest's name reserves nothing, so the
/// back end can still give it to a user; a name a user holds is refused to guests.
#[tokio::test]
async fn guests_cannot_reserve_unique_names() {
    let s = TestServer::start().await;
    s.admin_ok(
        Method::PATCH,
        "/app",
        Some(json!({"enforce_unique_usernames": "app"})),
    )
    .await;
    let name = format!("Support {}", uid("n"));
    for _ in 0..3 {
        let (status, _, body) = s
            .public_with(
                Method::POST,
                "/guest",
                Some(json!({"user": {"id": uid("squat"), "name": &name}})),
                &anonymous(&s),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let real = uid("real");
    s.admin_ok(
        Method::POST,
        "/users",
        Some(json!({"users": {&real: {"id": &real, "name": &name}}})),
    )
    .await;
    let reply = s
        .public_with(
            Method::POST,
            "/guest",
            Some(json!({"user": {"id": uid("late"), "name": &name}})),
            &anonymous(&s),
        )
        .await;
    assert_error(&reply, 400, 6, None);
    s.stop().await;
}

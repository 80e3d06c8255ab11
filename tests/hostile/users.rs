//! Oversized users (issue 11, item 3): every built-in field has a length bound and the whole
//! user a size bound, on every write path — upsert, partial update (server and client),
//! connect, guest creation, reactivate — while the largest legal team list stays legal.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{encode, Api, TestServer};
use crate::ws::{self, connect_url, expect_refusal, uid};
use crate::{assert_envelope, assert_serving, send_bytes, Side};

/// Sends `body` as JSON with the side's credentials.
async fn send(api: &Api, side: Side, method: &str, path: &str, body: Value) -> crate::Reply {
    let bytes = serde_json::to_vec(&body).expect("encodes");
    send_bytes(api, side, method, path, bytes, "").await
}

/// The stored user, or `Null` when there is none.
async fn stored(api: &Api, id: &str) -> Value {
    let q = json!({"filter_conditions": {"id": id}, "include_deactivated_users": true});
    let path = format!("/users?payload={}", encode(&q.to_string()));
    api.admin_ok(Method::GET, &path, None).await["users"][0].clone()
}

/// Each built-in field one byte (or one entry) over its bound, as a user object's fields.
fn over_bound_fields() -> Vec<(&'static str, Value)> {
    vec![
        ("name", json!("n".repeat(1025))),
        ("image", json!(format!("https://x/{}", "i".repeat(2048)))),
        ("language", json!("l".repeat(65))),
        ("privacy_settings", json!({"x": "p".repeat(1024)})),
        ("push_preferences", json!({"x": "p".repeat(1024)})),
    ]
}

/// The finding: a guest stored 940 KB, a client `PATCH` set a 900 KB `language`. Now each
/// built-in field over its bound is refused with 400, code 4, on the public listener.
#[tokio::test]
async fn oversized_built_in_fields_are_refused_on_the_public_listener() {
    let _shared = crate::memory::SHARED.read().await;
    let server = TestServer::start().await;
    let giant = "x".repeat(900 * 1024);
    // The reported cases first, at their reported sizes.
    let guest = uid("giant-guest");
    let reply = send(
        &server,
        Side::Anonymous,
        "POST",
        "/guest",
        json!({"user": {"id": guest, "name": giant}}),
    )
    .await;
    assert_envelope("guest with a 900 KB name", &reply, 400, &[4]);
    assert!(reply.2.get("access_token").is_none());
    assert_eq!(stored(&server, &guest).await, Value::Null);
    server
        .admin_ok(
            Method::POST,
            "/users",
            Some(json!({"users": {crate::USER: {"id": crate::USER, "language": "en"}}})),
        )
        .await;
    let reply = send(
        &server,
        Side::User,
        "PATCH",
        "/users",
        json!({"users": [{"id": crate::USER, "set": {"language": giant}}]}),
    )
    .await;
    assert_envelope("client PATCH of a 900 KB language", &reply, 400, &[4]);
    assert_eq!(stored(&server, crate::USER).await["language"], "en");
    // Then every field just over its bound, on each public write path.
    for (field, value) in over_bound_fields() {
        let what = format!("{field} over its bound");
        let guest = uid("guest");
        let body = json!({"user": {"id": guest, field: value.clone()}});
        let reply = send(&server, Side::Anonymous, "POST", "/guest", body).await;
        assert_envelope(&format!("guest: {what}"), &reply, 400, &[4]);
        assert!(
            reply.2["exception_fields"][format!("user.{field}")].is_string(),
            "{what}: names the field: {}",
            reply.2
        );
        let body = json!({"users": [{"id": crate::USER, "set": {field: value.clone()}}]});
        let reply = send(&server, Side::User, "PATCH", "/users", body).await;
        assert_envelope(&format!("client PATCH: {what}"), &reply, 400, &[4]);
        let body = json!({"users": {crate::USER: {"id": crate::USER, field: value}}});
        let reply = send(&server, Side::User, "POST", "/users", body).await;
        assert_envelope(&format!("client POST: {what}"), &reply, 400, &[4]);
    }
    assert_eq!(stored(&server, crate::USER).await["language"], "en");
    assert_serving(&server).await;
}

/// Server-side writes obey the same bounds: upsert, partial update, reactivate with a name.
#[tokio::test]
async fn oversized_built_in_fields_are_refused_on_the_admin_listener() {
    let _shared = crate::memory::SHARED.read().await;
    let server = TestServer::start().await;
    let id = uid("bounded");
    server
        .admin_ok(
            Method::POST,
            "/users",
            Some(json!({"users": {&id: {"id": &id, "name": "Fine"}}})),
        )
        .await;
    let mut over = over_bound_fields();
    over.push(("role", json!("r".repeat(65))));
    over.push(("teams_role", json!({"t".repeat(101): "admin"})));
    over.push(("teams_role", json!({"red": "r".repeat(65)})));
    for (field, value) in over {
        let what = format!("{field} over its bound");
        let body = json!({"users": {&id: {"id": &id, field: value.clone()}}});
        let reply = send(&server, Side::Admin, "POST", "/users", body).await;
        assert_envelope(&format!("upsert: {what}"), &reply, 400, &[4]);
        let body = json!({"users": [{"id": &id, "set": {field: value}}]});
        let reply = send(&server, Side::Admin, "PATCH", "/users", body).await;
        assert_envelope(&format!("partial update: {what}"), &reply, 400, &[4]);
    }
    let path = format!("/users/{id}/deactivate");
    server.admin_ok(Method::POST, &path, Some(json!({}))).await;
    let path = format!("/users/{id}/reactivate");
    let body = json!({"name": "n".repeat(1025)});
    let reply = send(&server, Side::Admin, "POST", &path, body).await;
    assert_envelope("reactivate with a long name", &reply, 400, &[4]);
    let user = stored(&server, &id).await;
    assert_eq!(user["name"], "Fine");
    assert!(
        user["deactivated_at"].is_string(),
        "still deactivated: {user}"
    );
    // At the bounds, everything is accepted.
    let body = json!({"users": {&id: {"id": &id, "name": "n".repeat(1024),
        "image": "i".repeat(2048), "language": "l".repeat(64), "role": "r".repeat(64)}}});
    server
        .admin_ok(
            Method::POST,
            &format!("/users/{id}/reactivate"),
            Some(json!({})),
        )
        .await;
    server.admin_ok(Method::POST, "/users", Some(body)).await;
    assert_serving(&server).await;
}

/// A field within its bound, over `/connect`: the connect is refused with code 4 and the
/// stored user is unchanged.
#[tokio::test]
async fn oversized_fields_are_refused_at_connect() {
    let _shared = crate::memory::SHARED.read().await;
    let server = TestServer::start().await;
    let id = uid("connector");
    let token = server.user_token(&id);
    // Fits the 16 KiB query string, but not the 1 KiB name.
    let details = json!({"id": &id, "name": "n".repeat(4000)});
    expect_refusal(&connect_url(&server, &id, details, &token, "jwt"), 4).await;
    assert_eq!(
        stored(&server, &id).await,
        Value::Null,
        "no user was created"
    );
    let (_socket, hello) = ws::connect_user(&server, &id, json!({"id": &id, "name": "Ok"})).await;
    assert_eq!(hello["me"]["name"], "Ok");
    let details = json!({"id": &id, "image": "i".repeat(4000)});
    expect_refusal(&connect_url(&server, &id, details, &token, "jwt"), 4).await;
    assert!(stored(&server, &id).await.get("image").is_none());
    assert_serving(&server).await;
}

/// The whole user (teams aside) is bounded too: 413, code 22, even when each field fits.
/// The largest legal team list, with team roles and full custom data, stays legal.
#[tokio::test]
async fn the_whole_user_is_bounded_but_a_full_team_list_stays_legal() {
    let _shared = crate::memory::SHARED.read().await;
    let server = TestServer::start().await;
    let id = uid("whole");
    let fields = json!({"id": &id, "name": "n".repeat(1024), "image": "i".repeat(2048),
        "language": "l".repeat(64), "note": "x".repeat(5000)});
    let body = json!({"users": {&id: fields}});
    let reply = send(&server, Side::Admin, "POST", "/users", body).await;
    assert_envelope("whole user over 8 KiB", &reply, 413, &[22]);
    assert_eq!(stored(&server, &id).await, Value::Null);
    // Grown there one partial update at a time: the update that crosses is refused.
    let body = json!({"users": {&id: {"id": &id, "name": "n".repeat(1024),
        "image": "i".repeat(2048), "note": "x".repeat(4950)}}});
    server.admin_ok(Method::POST, "/users", Some(body)).await;
    let body = json!({"users": [{"id": &id, "set": {"language": "l".repeat(64)}}]});
    let reply = send(&server, Side::Admin, "PATCH", "/users", body).await;
    assert_envelope("partial update crossing 8 KiB", &reply, 413, &[22]);
    // 250 teams of 100 bytes with a role each, beside 5 KiB of custom data.
    let teams: Vec<String> = (0..250).map(|i| format!("{i:0>100}")).collect();
    let roles: serde_json::Map<String, Value> = teams
        .iter()
        .map(|t| (t.clone(), json!("r".repeat(64))))
        .collect();
    let full = uid("full-teams");
    let body = json!({"users": {&full: {"id": &full, "teams": teams, "teams_role": roles,
        "name": "Full", "note": "x".repeat(5000)}}});
    server.admin_ok(Method::POST, "/users", Some(body)).await;
    let user = stored(&server, &full).await;
    assert_eq!(user["teams"].as_array().map(Vec::len), Some(250));
    assert_serving(&server).await;
}

/// A user stored before the bounds (written straight to the store) still connects as long as
/// the connect changes nothing, and can be brought back within bounds by an update.
#[tokio::test]
async fn a_user_stored_before_the_bounds_still_connects_and_can_be_repaired() {
    use chat_gateway::model::user::User;
    use chat_gateway::protocol::Timestamp;
    use chat_gateway::store::{Expect, SledStore, Store, UserChange};

    let _shared = crate::memory::SHARED.read().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let id = uid("legacy");
    {
        let store = SledStore::open(&data.join("db")).expect("store opens");
        let mut user = User::new(&id, Timestamp::now());
        user.name = Some("n".repeat(100 * 1024));
        let change = UserChange::Put {
            user,
            expect: Expect::Absent,
            check_names: Vec::new(),
            tombstone: false,
        };
        store.apply_user_batch(vec![change]).await.expect("written");
        store.flush().await.expect("flushed");
    }
    let server = TestServer::start_with(|c| c.data_dir = data.clone()).await;
    let (_socket, hello) = ws::connect_user(&server, &id, json!({"id": &id})).await;
    assert_eq!(hello["me"]["id"], id.as_str());
    // An update that leaves it oversized is refused; one that shrinks it is accepted.
    let body = json!({"users": [{"id": &id, "set": {"city": "Oslo"}}]});
    let reply = send(&server, Side::Admin, "PATCH", "/users", body).await;
    assert_envelope("update of an oversized user", &reply, 400, &[4]);
    let body = json!({"users": [{"id": &id, "set": {"city": "Oslo", "name": "Short"}}]});
    server.admin_ok(Method::PATCH, "/users", Some(body)).await;
    assert_eq!(stored(&server, &id).await["name"], "Short");
    assert_serving(&server).await;
}

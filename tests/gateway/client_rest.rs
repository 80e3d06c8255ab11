//! Client-side REST on the public listener: the caller's own user only, no role or teams
//! changes, anonymous read-only, and CORS for browsers.

use reqwest::Method;
use serde_json::json;

use crate::common::{assert_error, encode, Creds, TestServer};
use crate::ws::uid;

fn user_creds(s: &TestServer, id: &str) -> Creds {
    Creds {
        api_key: Some(s.api_key.clone()),
        token: Some(s.user_token(id)),
        auth_type: Some("jwt".into()),
    }
}

#[tokio::test]
async fn own_user_updates_and_their_limits() {
    let s = TestServer::start().await;
    let id = uid("self");
    let other = uid("other");
    s.admin_ok(
        Method::POST,
        "/users",
        Some(json!({"users": {
            id.clone(): {"id": id, "name": "Self", "teams": ["red"]},
            other.clone(): {"id": other}
        }})),
    )
    .await;
    let me = user_creds(&s, &id);
    let (status, _, body) = s
        .public_with(
            Method::PATCH,
            &format!("/users?user_id={id}"),
            Some(json!({"users": [{"id": id, "set": {"color": "blue"}}]})),
            &me,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["users"][id.as_str()]["color"], "blue");
    assert!(body["duration"].is_string());

    let reply = s
        .public_with(
            Method::PATCH,
            "/users",
            Some(json!({"users": [{"id": id, "set": {"role": "admin"}}]})),
            &me,
        )
        .await;
    let msg = format!("UpdateUsersPartial failed with error: \"User '{id}' with role 'user' is not allowed to perform action UpdateUserRole\"");
    assert_error(&reply, 403, 17, Some(&msg));
    let reply = s
        .public_with(
            Method::PATCH,
            "/users",
            Some(json!({"users": [{"id": id, "set": {"teams": ["blue"]}}]})),
            &me,
        )
        .await;
    assert_error(&reply, 403, 17, None);
    let reply = s
        .public_with(
            Method::PATCH,
            "/users",
            Some(json!({"users": [{"id": other, "set": {"x": 1}}]})),
            &me,
        )
        .await;
    assert_error(&reply, 403, 17, None);
    let reply = s
        .public_with(
            Method::PATCH,
            "/users",
            Some(json!({"users": [{"id": id, "set": {"revoke_tokens_issued_before": null}}]})),
            &me,
        )
        .await;
    assert_error(&reply, 400, 4, None);
    // Upsert of the own user keeps role and teams when they are sent unchanged.
    let (status, _, body) = s
        .public_with(
            Method::POST,
            "/users",
            Some(json!({"users": {id.clone(): {"id": id, "name": "New", "teams": ["red"]}}})),
            &me,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["users"][id.as_str()]["name"], "New");
    // A user_id parameter naming someone else: code 5.
    let reply = s
        .public_with(
            Method::GET,
            &format!("/users?user_id={other}&payload={}", encode("{}")),
            None,
            &me,
        )
        .await;
    assert_error(&reply, 401, 5, None);
    // Server tokens are not accepted on the public listener.
    let reply = s
        .public_with(Method::GET, "/users", None, &s.server_creds())
        .await;
    assert_error(&reply, 401, 5, None);
    s.stop().await;
}

#[tokio::test]
async fn anonymous_callers_may_only_query() {
    let s = TestServer::start().await;
    let id = uid("seen");
    s.admin_ok(
        Method::POST,
        "/users",
        Some(json!({"users": {id.clone(): {"id": id, "invisible": true}}})),
    )
    .await;
    let s_anon = Creds {
        api_key: Some(s.api_key.clone()),
        token: None,
        auth_type: Some("anonymous".into()),
    };
    let q = encode(&json!({"filter_conditions": {"id": id}}).to_string());
    let (status, _, body) = s
        .public_with(Method::GET, &format!("/users?payload={q}"), None, &s_anon)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["users"][0]["id"], id.as_str());
    assert!(
        body["users"][0].get("invisible").is_none(),
        "others' invisibility is hidden"
    );
    let reply = s
        .public_with(
            Method::PATCH,
            "/users",
            Some(json!({"users": [{"id": id, "set": {"x": 1}}]})),
            &s_anon,
        )
        .await;
    assert_error(&reply, 403, 17, None);
    let reply = s
        .public_with(
            Method::POST,
            "/users",
            Some(json!({"users": {id.clone(): {"id": id}}})),
            &s_anon,
        )
        .await;
    assert_error(&reply, 403, 17, None);
    s.stop().await;
}

#[tokio::test]
async fn cors_preflight_and_headers() {
    let s = TestServer::start().await;
    let resp = s
        .http
        .request(Method::OPTIONS, format!("{}/users", s.public_url))
        .header("Origin", "http://app.example")
        .header("Access-Control-Request-Method", "PATCH")
        .header(
            "Access-Control-Request-Headers",
            "authorization,stream-auth-type,x-stream-client",
        )
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let allowed = resp.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(
        allowed.contains("authorization") || allowed == "*",
        "{allowed}"
    );
    let resp = s
        .http
        .get(format!("{}/users?api_key={}", s.public_url, s.api_key))
        .header("Origin", "http://app.example")
        .header("stream-auth-type", "anonymous")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    s.stop().await;
}

#[tokio::test]
async fn cors_origins_are_configurable() {
    let s = TestServer::start_with(|c| c.cors.allowed_origins = vec!["http://good.example".into()])
        .await;
    let preflight = |origin: &'static str| {
        s.http
            .request(Method::OPTIONS, format!("{}/users", s.public_url))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "GET")
            .send()
    };
    let good = preflight("http://good.example").await.unwrap();
    assert_eq!(
        good.headers()["access-control-allow-origin"],
        "http://good.example"
    );
    let bad = preflight("http://evil.example").await.unwrap();
    assert!(bad.headers().get("access-control-allow-origin").is_none());
    s.stop().await;
}

#[tokio::test]
async fn rate_limits_follow_the_verified_caller_not_the_header() {
    let s = TestServer::start_with(|c| c.limits.requests_per_minute = 3).await;
    let id = uid("rl");
    let secret = chat_gateway::auth::Secret::new(s.config.api_secret.clone());
    let tokens = [
        s.user_token(&id),
        chat_gateway::auth::user_token(&id, Some(3600), &secret),
    ];
    let q = format!("/users?payload={}", encode("{}"));
    let mut statuses = Vec::new();
    for i in 0..4 {
        let creds = Creds {
            api_key: Some(s.api_key.clone()),
            token: Some(tokens[i % 2].clone()),
            auth_type: Some("jwt".into()),
        };
        statuses.push(s.public_with(Method::GET, &q, None, &creds).await.0);
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 429],
        "two tokens of one user share a budget"
    );
    // Garbage tokens do not buy fresh budgets: they count against the address.
    let mut statuses = Vec::new();
    for i in 0..4 {
        let creds = Creds {
            api_key: Some(s.api_key.clone()),
            token: Some(format!("garbage-{i}")),
            auth_type: Some("jwt".into()),
        };
        statuses.push(s.public_with(Method::GET, &q, None, &creds).await.0);
    }
    assert_eq!(statuses[3], 429, "{statuses:?}");
    s.stop().await;
}

/// With `multi_tenant_enabled`, a client's query sees only users sharing a team with it (a
/// caller without teams: only users without teams), its own filters still apply, the server
/// sees everyone, and guests cannot be created.
#[tokio::test]
async fn multi_tenancy_limits_client_queries_to_shared_teams() {
    let s = TestServer::start().await;
    let tag = uid("mt");
    let users = json!({
        format!("{tag}-red1"): {"id": format!("{tag}-red1"), "teams": ["red"], "kind": tag},
        format!("{tag}-red2"): {"id": format!("{tag}-red2"), "teams": ["red", "blue"], "kind": tag},
        format!("{tag}-blue"): {"id": format!("{tag}-blue"), "teams": ["blue"], "kind": tag},
        format!("{tag}-none"): {"id": format!("{tag}-none"), "kind": tag},
    });
    s.admin_ok(Method::POST, "/users", Some(json!({ "users": users })))
        .await;
    s.admin_ok(
        Method::PATCH,
        "/app",
        Some(json!({"multi_tenant_enabled": true})),
    )
    .await;
    let ids = |who: &str, filter: serde_json::Value| {
        let creds = user_creds(&s, &format!("{tag}-{who}"));
        let payload =
            json!({"filter_conditions": filter, "sort": [{"field": "id", "direction": 1}]});
        let path = format!("/users?payload={}", encode(&payload.to_string()));
        let prefix = format!("{tag}-");
        let s = &s;
        async move {
            let (status, _, body) = s.public_with(Method::GET, &path, None, &creds).await;
            assert_eq!(status, 200, "{body}");
            body["users"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| {
                    u["id"]
                        .as_str()
                        .unwrap()
                        .trim_start_matches(&prefix)
                        .to_owned()
                })
                .collect::<Vec<_>>()
        }
    };
    let all = json!({"kind": &tag});
    assert_eq!(ids("red1", all.clone()).await, ["red1", "red2"]);
    assert_eq!(ids("blue", all.clone()).await, ["blue", "red2"]);
    assert_eq!(ids("none", all.clone()).await, ["none"]);
    // A teams filter narrows within what the caller may see, never beyond it.
    assert_eq!(
        ids("red1", json!({"kind": &tag, "teams": {"$in": ["blue"]}})).await,
        ["red2"]
    );
    // The server is not restricted.
    let payload = json!({"filter_conditions": {"kind": &tag}});
    let body = s
        .admin_ok(
            Method::GET,
            &format!("/users?payload={}", encode(&payload.to_string())),
            None,
        )
        .await;
    assert_eq!(body["users"].as_array().unwrap().len(), 4);
    // No guests in a multi-tenant app.
    let anon = Creds {
        api_key: Some(s.api_key.clone()),
        token: None,
        auth_type: Some("anonymous".into()),
    };
    let reply = s
        .public_with(
            Method::POST,
            "/guest",
            Some(json!({"user": {"id": uid("g")}})),
            &anon,
        )
        .await;
    assert_error(&reply, 403, 17, None);
    s.stop().await;
}

/// The `online` filter and sort read live presence; an invisible user is offline to clients
/// (not to the back end).
#[tokio::test]
async fn online_filters_and_sorts_read_presence() {
    let s = TestServer::start().await;
    let tag = uid("on");
    let (on, off, shy) = (
        format!("{tag}-on"),
        format!("{tag}-off"),
        format!("{tag}-shy"),
    );
    s.admin_ok(
        Method::POST,
        "/users",
        Some(json!({"users": {
            &on: {"id": &on, "kind": &tag},
            &off: {"id": &off, "kind": &tag},
            &shy: {"id": &shy, "kind": &tag, "invisible": true},
        }})),
    )
    .await;
    let (_a, _) = crate::ws::connect_user(&s, &on, json!({"id": &on})).await;
    let (_b, _) = crate::ws::connect_user(&s, &shy, json!({"id": &shy})).await;
    let ids = |body: serde_json::Value| -> Vec<String> {
        body["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let online = json!({"filter_conditions": {"kind": &tag, "online": true}});
    let path = format!("/users?payload={}", encode(&online.to_string()));
    let server = s.admin_ok(Method::GET, &path, None).await;
    let mut got = ids(server);
    got.sort();
    assert_eq!(got, [on.clone(), shy.clone()]);
    let (status, _, client) = s
        .public_with(Method::GET, &path, None, &user_creds(&s, &off))
        .await;
    assert_eq!(status, 200, "{client}");
    assert_eq!(
        ids(client),
        vec![on.clone()],
        "an invisible user is offline to clients"
    );
    let sorted = json!({"filter_conditions": {"kind": &tag},
        "sort": [{"field": "online", "direction": -1}, {"field": "id", "direction": 1}]});
    let path = format!("/users?payload={}", encode(&sorted.to_string()));
    let (_, _, client) = s
        .public_with(Method::GET, &path, None, &user_creds(&s, &off))
        .await;
    assert_eq!(ids(client), [on, off, shy]);
    s.stop().await;
}

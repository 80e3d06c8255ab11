//! Rate limits as Stream counts them: a budget per endpoint and platform for the app, one per
//! endpoint and platform for each user, the `x-ratelimit-*` headers of the budget closest to
//! running out, 429 with code 9 past one, and `GET /rate_limits` reporting them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{assert_error, encode, Creds, Reply, TestServer};
use crate::ws::{self, next, uid, Next, Socket};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Budgets are counted in one-minute windows of the wall clock: a test that needs its
/// requests in one window starts early in one (each takes a few seconds at most).
async fn room_in_window() {
    let into = now() % 60;
    if into > 40 {
        tokio::time::sleep(Duration::from_millis((60 - into) * 1000 + 200)).await;
    }
}

fn header(reply: &Reply, name: &str) -> u64 {
    reply
        .1
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing or not a number: {:?}", reply.1))
}

/// (limit, remaining) of an answer's headers.
fn budget(reply: &Reply) -> (u64, u64) {
    (
        header(reply, "x-ratelimit-limit"),
        header(reply, "x-ratelimit-remaining"),
    )
}

fn with_limits(endpoints: &[(&str, u32)]) -> impl FnOnce(&mut chat_gateway::config::Config) {
    let endpoints: Vec<(String, u32)> = endpoints
        .iter()
        .map(|(n, l)| ((*n).to_owned(), *l))
        .collect();
    move |c| {
        for (name, limit) in endpoints {
            c.rate_limits.endpoints.insert(name, limit);
        }
    }
}

async fn upsert(s: &TestServer, id: &str) -> Reply {
    s.admin(
        Method::POST,
        "/users",
        Some(json!({"users": {id: {"id": id}}})),
    )
    .await
}

fn query_path(id: &str) -> String {
    format!(
        "/users?payload={}",
        encode(&json!({"filter_conditions": {"id": id}}).to_string())
    )
}

/// A client-side `GET /users` as `user` with the given `X-Stream-Client`.
async fn client_query(s: &TestServer, user: &str, client: Option<&str>) -> Reply {
    let url = format!(
        "{}{}&api_key={}",
        s.public_url,
        query_path(user),
        encode(&s.api_key)
    );
    let mut req = s
        .http
        .get(&url)
        .header("Authorization", s.user_token(user))
        .header("stream-auth-type", "jwt");
    if let Some(c) = client {
        req = req.header("X-Stream-Client", c);
    }
    let resp = req.send().await.expect("query answered");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

async fn rate_limits(s: &TestServer, query: &str) -> Value {
    s.admin_ok(Method::GET, &format!("/rate_limits?{query}"), None)
        .await
}

async fn admin_socket(s: &TestServer) -> Socket {
    let url = format!(
        "{}/ws?api_key={}&authorization={}&stream-auth-type=jwt",
        s.admin_url.replacen("http", "ws", 1),
        s.api_key,
        encode(&s.server_token)
    );
    ws::open(&url).await
}

async fn ws_call(sock: &mut Socket, frame: Value) -> Value {
    let id = frame["id"].clone();
    ws::send(sock, frame).await;
    loop {
        match next(sock, Duration::from_secs(5)).await {
            Next::Frame(f) if f["id"] == id => return f,
            Next::Frame(_) => continue,
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn each_endpoint_has_its_own_budget() {
    let s = TestServer::start_with(with_limits(&[("update_users", 3)])).await;
    room_in_window().await;
    let ids: Vec<String> = (0..4).map(|_| uid("rl")).collect();
    for (n, id) in ids[..3].iter().enumerate() {
        let reply = upsert(&s, id).await;
        assert_eq!(reply.0, 200, "{}", reply.2);
        assert_eq!(budget(&reply), (3, 2 - n as u64), "upsert {n}");
    }
    let refused = upsert(&s, &ids[3]).await;
    assert_error(
        &refused,
        429,
        9,
        Some("Too many requests, check response headers"),
    );
    assert_eq!(budget(&refused), (3, 0));
    let reset = header(&refused, "x-ratelimit-reset");
    assert!(reset > now() && reset <= now() + 60, "reset {reset}");
    let found = s.admin_ok(Method::GET, &query_path(&ids[3]), None).await;
    assert_eq!(
        found["users"],
        json!([]),
        "the refused upsert wrote nothing"
    );

    // Every other endpoint goes on, each counting its own budget (Stream's defaults).
    let partial = s
        .admin(
            Method::PATCH,
            "/users",
            Some(json!({"users": [{"id": ids[0], "set": {"k": 1}}]})),
        )
        .await;
    assert_eq!(partial.0, 200, "{}", partial.2);
    assert_eq!(budget(&partial), (300, 299));
    let query = s.admin(Method::GET, &query_path(&ids[0]), None).await;
    assert_eq!(budget(&query), (1000, 998), "two queries so far");
    let app = s.admin(Method::GET, "/app", None).await;
    assert_eq!(budget(&app), (10000, 9999));

    // The admin WebSocket's operations count against the same budgets.
    let mut sock = admin_socket(&s).await;
    let reply = ws_call(
        &mut sock,
        json!({"id": "1", "op": "upsertUsers", "body": {"users": {ids[3].clone(): {"id": ids[3]}}}}),
    )
    .await;
    assert_eq!(reply["error"]["code"], 9, "{reply}");
    assert_eq!(reply["error"]["StatusCode"], 429, "{reply}");
    let reply = ws_call(
        &mut sock,
        json!({"id": "2", "op": "queryUsers", "params": {"payload": json!({"filter_conditions": {"id": ids[0]}}).to_string()}}),
    )
    .await;
    assert_eq!(reply["result"]["users"][0]["k"], 1, "{reply}");
    let report = rate_limits(&s, "server_side=true&endpoints=QueryUsers,UpdateUsers").await;
    assert_eq!(report["server_side"]["QueryUsers"]["remaining"], 997);
    assert_eq!(report["server_side"]["UpdateUsers"]["remaining"], 0);
    s.stop().await;
}

#[tokio::test]
async fn every_answer_carries_the_headers() {
    let s = TestServer::start().await;
    room_in_window().await;
    // Routes Stream has no name for show the per-caller guard.
    for (n, path) in ["/healthz", "/no/such/route"].into_iter().enumerate() {
        let reply = s.admin(Method::GET, path, None).await;
        assert_eq!(budget(&reply), (60000, 59999 - n as u64), "{path}");
    }
    // Refused credentials are answered with the headers too, and spend only the guard of
    // their address: the app's GetApp budget is untouched.
    let anonymous = Creds {
        api_key: Some(s.api_key.clone()),
        token: Some("garbage".into()),
        auth_type: Some("jwt".into()),
    };
    let refused = s.admin_with(Method::GET, "/app", None, &anonymous).await;
    assert_eq!(refused.0, 401);
    let (limit, remaining) = budget(&refused);
    // The address's own guard (the start-up health checks came from it too).
    assert!(
        limit == 60000 && remaining < 60000 && remaining > 59990,
        "{remaining}"
    );
    let app = s.admin(Method::GET, "/app", None).await;
    assert_eq!(budget(&app), (10000, 9999));
    let reset = header(&app, "x-ratelimit-reset");
    assert!(
        reset > now() && reset <= now() + 60 && reset % 60 == 0,
        "{reset}"
    );
    // The public listener too, on an error answer.
    let reply = s
        .public_with(
            Method::GET,
            &query_path("x"),
            None,
            &Creds {
                api_key: Some(s.api_key.clone()),
                token: None,
                auth_type: Some("jwt".into()),
            },
        )
        .await;
    assert!(reply.0 >= 400, "{}", reply.2);
    assert!(reply.1.contains_key("x-ratelimit-limit"), "{:?}", reply.1);
    s.stop().await;
}

#[tokio::test]
async fn clients_count_per_user_and_per_platform() {
    let s = TestServer::start_with(|c| {
        c.rate_limits.user_per_minute = 2;
        with_limits(&[("query_users", 3)])(c);
    })
    .await;
    let (alice, bob, carol) = (uid("alice"), uid("bob"), uid("carol"));
    for id in [&alice, &bob, &carol] {
        assert_eq!(upsert(&s, id).await.0, 200);
    }
    room_in_window().await;
    // A user's own budget: two queries a minute.
    let first = client_query(&s, &alice, None).await;
    assert_eq!((first.0, budget(&first)), (200, (2, 1)), "{}", first.2);
    assert_eq!(client_query(&s, &alice, None).await.0, 200);
    let over = client_query(&s, &alice, None).await;
    assert_error(&over, 429, 9, None);
    assert_eq!(budget(&over), (2, 0));
    // Another endpoint is a budget of its own.
    let own = Creds {
        api_key: Some(s.api_key.clone()),
        token: Some(s.user_token(&alice)),
        auth_type: Some("jwt".into()),
    };
    let partial = s
        .public_with(
            Method::PATCH,
            "/users",
            Some(json!({"users": [{"id": alice, "set": {"k": 1}}]})),
            &own,
        )
        .await;
    assert_eq!(partial.0, 200, "{}", partial.2);
    // The app's web budget of three: alice spent two (her refused third never reached it).
    let third = client_query(&s, &bob, None).await;
    assert_eq!((third.0, budget(&third)), (200, (3, 0)), "{}", third.2);
    let over = client_query(&s, &bob, None).await;
    assert_error(&over, 429, 9, None);
    assert_eq!(budget(&over), (3, 0));
    // Android and server-side calls have budgets of their own.
    let android = Some("stream-chat-android-6.5.0|os=Android 14|api_version=34");
    let reply = client_query(&s, &carol, android).await;
    assert_eq!((reply.0, budget(&reply)), (200, (2, 1)), "{}", reply.2);
    let ios = Some("stream-chat-swift-v4.70.0|os=iOS 17.4");
    assert_eq!(client_query(&s, &carol, ios).await.0, 200);
    let server = s.admin(Method::GET, &query_path(&carol), None).await;
    assert_eq!((server.0, budget(&server)), (200, (3, 2)));

    let report = rate_limits(&s, "endpoints=QueryUsers").await;
    let left = |p: &str| report[p]["QueryUsers"]["remaining"].clone();
    assert_eq!(
        [
            left("web"),
            left("android"),
            left("ios"),
            left("server_side")
        ],
        [json!(0), json!(2), json!(2), json!(2)],
        "{report}"
    );
    s.stop().await;
}

#[tokio::test]
async fn connects_count_against_the_connect_budget() {
    let s = TestServer::start_with(with_limits(&[("connect", 2)])).await;
    room_in_window().await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let (socket, _) = ws::connect_user(&s, &uid("c"), json!({})).await;
        open.push(socket);
    }
    let id = uid("c");
    let url = ws::connect_url(&s, &id, json!({"id": id}), &s.user_token(&id), "jwt");
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 429);
            assert_eq!(resp.headers()["x-ratelimit-remaining"], "0");
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap_or_default())
                .expect("a JSON body");
            assert_eq!(body["code"], 9, "{body}");
        }
        Ok(_) => panic!("a third connect in the minute was upgraded"),
        Err(e) => panic!("{e}"),
    }
    let report = rate_limits(&s, "web=true&endpoints=Connect").await;
    assert_eq!(report["web"]["Connect"]["limit"], 2, "{report}");
    assert_eq!(report["web"]["Connect"]["remaining"], 0, "{report}");
    s.stop().await;
}

#[tokio::test]
async fn get_rate_limits_answers_what_the_sdks_read() {
    let s = TestServer::start().await;
    room_in_window().await;
    let all = rate_limits(&s, "").await;
    let platforms = ["server_side", "android", "ios", "web"];
    for p in platforms {
        let map = all[p].as_object().unwrap_or_else(|| panic!("{p} in {all}"));
        for name in [
            "Connect",
            "CreateGuest",
            "QueryUsers",
            "UpdateUsers",
            "UpdateUsersPartial",
            "DeleteUser",
            "DeactivateUser",
            "ReactivateUser",
            "ExportUser",
            "GetApp",
            "UpdateApp",
            "GetRateLimits",
        ] {
            let info = &map[name];
            let (limit, remaining, reset) = (
                info["limit"].as_u64().unwrap(),
                info["remaining"].as_u64().unwrap(),
                info["reset"].as_u64().unwrap(),
            );
            assert!(limit > 0 && remaining <= limit, "{p} {name}: {info}");
            assert!(reset > now() && reset <= now() + 60, "{p} {name}: {info}");
        }
    }
    assert!(all["duration"].is_string());
    assert_eq!(all["server_side"]["QueryUsers"]["limit"], 1000);
    assert_eq!(all["web"]["UpdateUsers"]["limit"], 300);
    // The call counts itself, on the server side only.
    assert_eq!(all["server_side"]["GetRateLimits"]["remaining"], 999);
    assert_eq!(all["android"]["GetRateLimits"]["remaining"], 1000);

    // Chosen platforms and endpoints only; names the gateway does not serve are left out.
    let some = rate_limits(
        &s,
        "server_side=true&android=true&endpoints=GetRateLimits,SendMessage,QueryUsers",
    )
    .await;
    let keys: Vec<&String> = some.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 3, "{some}");
    assert!(some["ios"].is_null() && some["web"].is_null(), "{some}");
    for p in ["server_side", "android"] {
        let names: Vec<&String> = some[p].as_object().unwrap().keys().collect();
        assert_eq!(names.len(), 2, "{some}");
    }
    assert_eq!(some["server_side"]["GetRateLimits"]["remaining"], 998);
    let reply = s.admin(Method::GET, "/rate_limits?web=maybe", None).await;
    assert_error(&reply, 400, 4, None);
    // A server-side call: not on the public listener.
    let (status, _, _) = s
        .public_with(Method::GET, "/rate_limits", None, &s.server_creds())
        .await;
    assert_eq!(status, 404);
    s.stop().await;
}

#[tokio::test]
async fn a_second_holds_a_thirtieth_of_the_minute_when_configured() {
    let s = TestServer::start_with(|c| {
        c.rate_limits.per_second_divisor = 30;
        with_limits(&[("update_users", 60)])(c);
    })
    .await;
    room_in_window().await;
    let ids: Vec<String> = (0..6).map(|_| uid("burst")).collect();
    let replies = futures_util::future::join_all(ids.iter().map(|id| upsert(&s, id))).await;
    let passed = replies.iter().filter(|r| r.0 == 200).count();
    // Two a second: six at once fit at most two seconds' share.
    assert!((2..=4).contains(&passed), "{passed} passed");
    for r in replies.iter().filter(|r| r.0 != 200) {
        assert_error(r, 429, 9, None);
        assert_eq!(budget(r), (2, 0));
        assert!(header(r, "x-ratelimit-reset") <= now() + 1);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(upsert(&s, &uid("later")).await.0, 200);
    s.stop().await;
}

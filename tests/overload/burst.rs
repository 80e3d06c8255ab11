//! A burst of connects at once: new users (each a store write and flush) and returning ones,
//! mixed with admin writes, are all served — the store's writes and flushes under contention
//! used to deadlock the gateway.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::common::TestServer;
use crate::ws::{connect_url, next, uid, Next};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_new_and_returning_users_is_served() {
    let s = TestServer::start().await;
    let prefix = uid("burst");
    for round in ["new", "returning"] {
        let connects = (0..300).map(|i| {
            let id = format!("{prefix}-{i}");
            let url = connect_url(&s, &id, json!({"id": id}), &s.user_token(&id), "jwt");
            async move {
                let (mut sock, _) = tokio_tungstenite::connect_async(url.as_str())
                    .await
                    .expect("upgrade");
                match next(&mut sock, Duration::from_secs(30)).await {
                    Next::Frame(f) if f["type"] == "health.check" => sock,
                    other => panic!("{id}: {other:?}"),
                }
            }
        });
        let writes = (0..30).map(|i| {
            let id = format!("{prefix}-{i}");
            let body = json!({"users": [{"id": id, "set": {"round": round}}]});
            let api = s.api().clone();
            async move {
                // The user may not exist yet in the first round.
                let (status, _, _) = api.admin(Method::PATCH, "/users", Some(body)).await;
                assert!(status == 200 || status == 404, "{status}");
            }
        });
        let (socks, _) = tokio::time::timeout(
            Duration::from_secs(60),
            futures_util::future::join(
                futures_util::future::join_all(connects),
                futures_util::future::join_all(writes),
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("{round} users: the burst was not served within 60 s"));
        assert_eq!(socks.len(), 300);
    }
    s.stop().await;
}

//! Rate limits with small configured values: connects per second per IP (429, code 9, before
//! the upgrade) and REST requests per minute per caller (429, code 9, `x-ratelimit-*`).

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::common::{encode, Creds, TestServer};
use crate::raw_upgrade;
use crate::ws::uid;

#[tokio::test]
async fn connects_per_second_per_ip_are_limited_before_the_upgrade() {
    let s = TestServer::start_with(|c| c.limits.connects_per_second_per_ip = 3).await;
    let addr = crate::addr_of(&s.public_url);
    let path = "/connect?api_key=test-key";
    // Eight attempts in well under a second span at most two one-second windows: at most six
    // pass, at least two are refused.
    let started = std::time::Instant::now();
    let mut upgraded = 0;
    let mut refused = Vec::new();
    for _ in 0..8 {
        let (status, body) = raw_upgrade(addr, path, None).await;
        match status {
            101 => upgraded += 1,
            429 => refused.push(body),
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert!(started.elapsed() < Duration::from_millis(900), "too slow");
    assert!((3..=6).contains(&upgraded), "{upgraded} upgrades");
    assert!(refused.len() >= 2, "{refused:?}");
    for body in &refused {
        assert_eq!(body["code"], 9, "{body}");
        assert_eq!(body["StatusCode"], 429, "{body}");
    }
    // The limit is per address: another source address is not affected.
    let (status, body) = raw_upgrade(addr, path, Some([127, 0, 0, 2])).await;
    assert_eq!(status, 101, "{body}");
    // And it recovers in the next second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = raw_upgrade(addr, path, None).await;
    assert_eq!(status, 101, "{body}");
    s.stop().await;
}

fn header(h: &reqwest::header::HeaderMap, name: &str) -> u64 {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing or not a number: {h:?}"))
}

#[tokio::test]
async fn rest_requests_per_minute_are_limited_per_user() {
    let s = TestServer::start_with(|c| c.limits.requests_per_minute = 5).await;
    let query = format!(
        "/users?payload={}",
        encode(&json!({"filter_conditions": {"id": "nobody"}}).to_string())
    );
    let user = |id: &str| Creds {
        api_key: Some(s.api_key.clone()),
        token: Some(s.user_token(id)),
        auth_type: Some("jwt".into()),
    };
    // A fixed one-minute window: if the sequence straddles a window boundary, run it again.
    for attempt in 0..3 {
        let alice = user(&uid("alice"));
        let mut resets = Vec::new();
        for n in 1..=5u64 {
            let (status, headers, body) = s.public_with(Method::GET, &query, None, &alice).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(header(&headers, "x-ratelimit-limit"), 5);
            assert_eq!(header(&headers, "x-ratelimit-remaining"), 5 - n);
            resets.push(header(&headers, "x-ratelimit-reset"));
        }
        let reply = s.public_with(Method::GET, &query, None, &alice).await;
        resets.push(header(&reply.1, "x-ratelimit-reset"));
        if resets.iter().any(|r| *r != resets[0]) {
            assert!(attempt < 2, "three window boundaries in a row");
            continue;
        }
        crate::common::assert_error(&reply, 429, 9, None);
        assert_eq!(header(&reply.1, "x-ratelimit-remaining"), 0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            resets[0] > now && resets[0] <= now + 61,
            "reset {}",
            resets[0]
        );
        // Writes count against the same budget.
        let reply = s
            .public_with(Method::PATCH, "/users", Some(json!({"users": []})), &alice)
            .await;
        crate::common::assert_error(&reply, 429, 9, None);
        // Another user has a budget of their own.
        let (status, headers, body) = s
            .public_with(Method::GET, &query, None, &user(&uid("bob")))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(header(&headers, "x-ratelimit-remaining"), 4);
        // The admin listener counts the server token apart from users.
        let (status, headers, _) = s.admin(Method::GET, "/app", None).await;
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "x-ratelimit-limit"), 5);
        s.stop().await;
        return;
    }
}

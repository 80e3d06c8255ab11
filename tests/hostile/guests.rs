//! The guest-creation quota (issue 11, item 3): without credentials, 100 guests put 331 MB
//! on disk in 5.5 s. `POST /guest` on the public listener now allows
//! `limits.guests_per_minute_per_ip` (60) guests a minute per address and
//! `limits.guests_per_minute` (1000) in all; past either, 429 with code 9.

use std::time::Instant;

use reqwest::Method;
use serde_json::json;

use crate::common::TestServer;
use crate::ws::uid;
use crate::{assert_envelope, assert_serving, send_bytes, Side};

/// Creates one guest anonymously on the public listener.
async fn create_guest(api: &crate::Api) -> crate::Reply {
    let body = json!({"user": {"id": uid("quota"), "name": "Q"}});
    let bytes = serde_json::to_vec(&body).expect("encodes");
    send_bytes(api, Side::Anonymous, "POST", "/guest", bytes, "").await
}

#[tokio::test]
async fn one_address_gets_60_guests_a_minute_then_429_code_9() {
    let _shared = crate::memory::SHARED.read().await;
    let server = TestServer::start().await;
    let started = Instant::now();
    let mut created = 0u32;
    let refused = loop {
        let reply = create_guest(&server).await;
        if reply.0 != 200 {
            break reply;
        }
        created += 1;
        assert!(created <= 200, "no quota: {created} guests created");
    };
    assert_envelope("the guest after the quota", &refused, 429, &[9]);
    let message = refused.2["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("CreateGuest failed with error: \"too many guest users"),
        "{message}"
    );
    // The bucket holds a minute's worth and refills at one a second.
    let refilled = started.elapsed().as_secs() as u32 + 1;
    assert!(
        (60..=60 + refilled).contains(&created),
        "{created} guests before the refusal"
    );
    assert!(refused.2.get("access_token").is_none());
    // Back ends are not counted: server-side guests and other users still work.
    let id = uid("server-guest");
    let body = json!({"user": {"id": &id}});
    let reply = server.admin(Method::POST, "/guest", Some(body)).await;
    assert_eq!(reply.0, 200, "{}", reply.2);
    assert_serving(&server).await;
}

#[tokio::test]
async fn the_listener_as_a_whole_has_a_guest_quota_too() {
    let _shared = crate::memory::SHARED.read().await;
    let server = TestServer::start_with(|c| {
        c.limits.guests_per_minute = 3;
        c.limits.guests_per_minute_per_ip = 100;
    })
    .await;
    for i in 0..3 {
        let reply = create_guest(&server).await;
        assert_eq!(reply.0, 200, "guest {i}: {}", reply.2);
    }
    let reply = create_guest(&server).await;
    assert_envelope("the 4th guest of the minute", &reply, 429, &[9]);
    assert!(
        reply.2["message"]
            .as_str()
            .is_some_and(|m| m.contains("at most 3 a minute")),
        "{}",
        reply.2
    );
}

//! Races between a connect and the admin call that ends a user: once a revoke (user or app
//! level), a deactivate or a hard delete is answered, no socket of that user may stay open —
//! not even one whose connect was mid-way (authenticated, writing its changed details) when
//! the admin call ran. Hundreds of trials per kind; each socket is given a short grace to
//! receive its close, and one that is still open after it is a survivor.

use std::time::Duration;

use rand::Rng;
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{Api, TestServer};
use crate::ws::{self, next, uid, Next};

/// Trials per kind of admin call.
const TRIALS: usize = 200;
/// Trials run at once.
const PARALLEL: usize = 8;
/// How long an ended user's socket may take to see its close once the admin call answered.
const GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    UserRevoke,
    Deactivate,
    HardDelete,
}

/// The trials end users faster than Stream's budgets allow (60 deactivations, 60 app
/// updates a minute): what they test is the race, so those budgets are lifted.
fn unlimited(c: &mut chat_gateway::config::Config) {
    c.rate_limits.enabled = false;
}

/// The admin call that ends `id`.
async fn end_user(api: &Api, kind: Kind, id: &str) {
    let reply = match kind {
        Kind::UserRevoke => {
            let cutoff = chat_gateway::protocol::Timestamp::now().to_wire();
            let body =
                json!({"users": [{"id": id, "set": {"revoke_tokens_issued_before": cutoff}}]});
            api.admin(Method::PATCH, "/users", Some(body)).await
        }
        Kind::Deactivate => {
            api.admin(
                Method::POST,
                &format!("/users/{id}/deactivate"),
                Some(json!({})),
            )
            .await
        }
        Kind::HardDelete => {
            api.admin(
                Method::DELETE,
                &format!("/users/{id}?hard_delete=true&mark_messages_deleted=true"),
                None,
            )
            .await
        }
    };
    assert!((200..300).contains(&reply.0), "{kind:?}: {:?}", reply.2);
}

/// Opens a connect whose details change the stored user (so it writes and flushes) and
/// returns the socket once upgraded.
fn spawn_connect(api: &Api, id: &str) -> tokio::task::JoinHandle<ws::Socket> {
    let token = api.user_token(id);
    let details = json!({"id": id, "nonce": uuid::Uuid::new_v4().to_string()});
    let url = ws::connect_url(api, id, details, &token, "jwt");
    tokio::spawn(async move { ws::open(&url).await })
}

/// Whether the socket is still open `GRACE` after the admin call answered: it must have been
/// refused or closed by then.
async fn survives(mut socket: ws::Socket) -> bool {
    let deadline = tokio::time::Instant::now() + GRACE;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next(&mut socket, left).await {
            Next::Frame(_) => continue,
            Next::Closed(..) | Next::Ended => return false,
            Next::Timeout => return true,
        }
    }
}

/// One trial: a stored user, a connect changing it, and the admin call after a random delay
/// of up to a few milliseconds so that it lands anywhere in the connect's write.
async fn trial(api: Api, kind: Kind) -> bool {
    let id = uid("race");
    api.admin_ok(
        Method::POST,
        "/users",
        Some(json!({"users": {&id: {"id": &id, "name": "Racer"}}})),
    )
    .await;
    let connecting = spawn_connect(&api, &id);
    let delay = rand::rng().random_range(0..4000u64);
    tokio::time::sleep(Duration::from_micros(delay)).await;
    end_user(&api, kind, &id).await;
    let socket = connecting.await.expect("connect task");
    survives(socket).await
}

async fn run_trials(kind: Kind) {
    let s = TestServer::start_with(unlimited).await;
    let mut survivors = 0;
    let mut done = 0;
    while done < TRIALS {
        let batch: Vec<_> = (0..PARALLEL.min(TRIALS - done))
            .map(|_| tokio::spawn(trial(s.api().clone(), kind)))
            .collect();
        for t in batch {
            if t.await.expect("trial") {
                survivors += 1;
            }
            done += 1;
        }
    }
    assert_eq!(
        survivors, 0,
        "{kind:?}: {survivors} of {TRIALS} sockets outlived the acknowledged admin call"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_socket_outlives_a_user_revocation() {
    run_trials(Kind::UserRevoke).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_socket_outlives_a_deactivation() {
    run_trials(Kind::Deactivate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_socket_outlives_a_hard_delete() {
    run_trials(Kind::HardDelete).await;
}

/// App-level revocation: each trial clears the cutoff, starts connects of several users and
/// sets the cutoff again while they are under way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_socket_outlives_an_app_revocation() {
    const USERS: usize = 4;
    let s = TestServer::start_with(unlimited).await;
    let api = s.api().clone();
    let mut survivors = 0;
    for _ in 0..TRIALS / USERS {
        api.admin_ok(
            Method::PATCH,
            "/app",
            Some(json!({"revoke_tokens_issued_before": Value::Null})),
        )
        .await;
        let connecting: Vec<_> = (0..USERS)
            .map(|_| spawn_connect(&api, &uid("apprace")))
            .collect();
        let delay = rand::rng().random_range(0..4000u64);
        tokio::time::sleep(Duration::from_micros(delay)).await;
        let cutoff = chat_gateway::protocol::Timestamp::now().to_wire();
        api.admin_ok(
            Method::PATCH,
            "/app",
            Some(json!({"revoke_tokens_issued_before": cutoff})),
        )
        .await;
        for c in connecting {
            if survives(c.await.expect("connect task")).await {
                survivors += 1;
            }
        }
    }
    assert_eq!(
        survivors, 0,
        "{survivors} of {TRIALS} sockets outlived an acknowledged app revocation"
    );
    s.stop().await;
}

/// A leaked token reconnecting in a storm while the admin revokes once: after the revoke is
/// answered, every socket of the storm ends and no later connect gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_storm_does_not_outlive_one_revocation() {
    const STORMS: usize = 10;
    const WAVE: usize = 16;
    let s = TestServer::start_with(unlimited).await;
    let api = s.api().clone();
    let mut survivors = 0;
    for _ in 0..STORMS {
        let id = uid("storm");
        api.admin_ok(
            Method::POST,
            "/users",
            Some(json!({"users": {&id: {"id": &id}}})),
        )
        .await;
        let mut connecting = Vec::new();
        for i in 0..WAVE {
            connecting.push(spawn_connect(&api, &id));
            if i == WAVE / 2 {
                end_user(&api, Kind::UserRevoke, &id).await;
            } else {
                tokio::time::sleep(Duration::from_micros(300)).await;
            }
        }
        for c in connecting {
            if survives(c.await.expect("connect task")).await {
                survivors += 1;
            }
        }
        // Whatever reconnects now is refused.
        let token = api.user_token(&id);
        let url = ws::connect_url(&api, &id, json!({"id": &id}), &token, "jwt");
        ws::expect_refusal(&url, 40).await;
    }
    assert_eq!(
        survivors, 0,
        "{survivors} sockets of {STORMS} storms outlived the revocation"
    );
    s.stop().await;
}

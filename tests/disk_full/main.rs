//! A full data volume (issue 11, item 4): the real binary on a data dir that lives on a small
//! tmpfs, filled with guest posts and filler files, then given space back. Writes must be
//! refused with a 5xx Stream envelope that says the volume is full, reads and connects of
//! existing users must keep working, `/healthz` and the log must say what is wrong, writes
//! must resume without a restart once space returns, and nothing acknowledged may be lost.
//!
//! Needs root (tmpfs mounts); fails rather than skips without it.

#[path = "../common/mod.rs"]
mod common;
mod volume;
use common::ws;

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use common::{assert_error, encode, random_secret, Api, Creds, ProcessServer, Reply, API_KEY};
use volume::Tmpfs;
use ws::{connect_url, next, Next};

const MIB: u64 = 1 << 20;
/// The volume every test runs on.
const VOLUME: u64 = 8 * MIB;
/// The reserve the guarded tests configure.
const RESERVE: &str = "1048576";
/// The ballast they keep: room for sled to open (a 512 KiB segment and a snapshot).
const BALLAST: &str = "1048576";

/// A gateway process with its data dir on a [`Tmpfs`] and its log beside the test, off the
/// volume.
struct Gateway {
    log_dir: tempfile::TempDir,
    secret: String,
}

impl Gateway {
    fn new() -> Self {
        Self {
            log_dir: tempfile::tempdir().expect("tempdir"),
            secret: random_secret(),
        }
    }

    fn spawn(&self, vol: &Tmpfs, reserve: &str, ballast: &str) -> ProcessServer {
        let env = [
            ("CHAT_GATEWAY_STORE__MIN_FREE_BYTES", reserve),
            ("CHAT_GATEWAY_STORE__SPACE_CHECK_INTERVAL_MS", "50"),
            ("CHAT_GATEWAY_STORE__BALLAST_BYTES", ballast),
            // Guest posts fill the volume here; the guest quota is not what is under test.
            ("CHAT_GATEWAY_LIMITS__GUESTS_PER_MINUTE_PER_IP", "100000"),
            ("CHAT_GATEWAY_LIMITS__GUESTS_PER_MINUTE", "100000"),
        ];
        ProcessServer::spawn(
            &vol.path().join("data"),
            &self.log_dir.path().join("gateway.log"),
            API_KEY,
            &self.secret,
            &env,
        )
    }

    async fn start(&self, vol: &Tmpfs, reserve: &str) -> ProcessServer {
        self.start_with(vol, reserve, BALLAST).await
    }

    async fn start_with(&self, vol: &Tmpfs, reserve: &str, ballast: &str) -> ProcessServer {
        let mut srv = self.spawn(vol, reserve, ballast);
        if let Err(status) = srv.wait_serving().await {
            panic!(
                "the gateway exited ({status}) instead of serving:\n{}",
                srv.log()
            );
        }
        srv
    }
}

fn anonymous(api: &Api) -> Creds {
    Creds {
        api_key: Some(api.api_key.clone()),
        token: None,
        auth_type: Some("anonymous".into()),
    }
}

/// One guest post: a new guest with a 2 KB field, so the volume fills in a few hundred.
async fn post_guest(api: &Api, id: &str) -> Reply {
    let body = json!({"user": {"id": id, "name": id, "bio": "x".repeat(2000)}});
    api.public_with(Method::POST, "/guest", Some(body), &anonymous(api))
        .await
}

/// Posts guests until one is refused; returns the acknowledged ids and the refusal.
async fn post_guests_until_refused(api: &Api, prefix: &str) -> (Vec<String>, Reply) {
    let mut acked = Vec::new();
    for i in 0..5000 {
        let id = format!("{prefix}-{i}");
        let reply = post_guest(api, &id).await;
        if reply.0 != 200 {
            return (acked, reply);
        }
        acked.push(id);
    }
    panic!("5000 guest posts fitted on an {VOLUME}-byte volume");
}

/// Asserts that a write was refused because the volume is full: 5xx, code -1, and a message
/// that says so.
#[track_caller]
fn assert_volume_full(reply: &Reply) {
    let status = reply.0;
    assert!(
        (500..600).contains(&status) && status != 500,
        "a full volume is not an internal error: {status} {}",
        reply.2
    );
    assert_error(reply, status, -1, None);
    let message = reply.2["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("data volume is full"),
        "the message says why: {message}"
    );
}

/// `GET /healthz` on one listener: status and body (JSON when degraded).
async fn healthz(api: &Api, base: &str) -> (u16, Value) {
    api.get_url(&format!("{base}/healthz")).await
}

/// Both listeners report the degraded state with a reason containing `why`.
async fn assert_degraded(api: &Api, why: &str) {
    for base in [&api.public_url, &api.admin_url] {
        let (status, body) = healthz(api, base).await;
        assert_eq!(status, 503, "{base}/healthz while degraded: {body}");
        assert_eq!(body["status"], "degraded", "{body}");
        let reason = body["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(why), "{base}/healthz reason: {reason}");
    }
}

async fn assert_healthy(api: &Api) {
    for base in [&api.public_url, &api.admin_url] {
        let (status, body) = healthz(api, base).await;
        assert_eq!(status, 200, "{base}/healthz once recovered: {body}");
    }
}

/// Retries a guest post until it is accepted (space came back) or 15 s pass.
async fn wait_writes_resume(api: &Api, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = post_guest(api, id).await;
        if reply.0 == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "writes did not resume once space returned: {} {}",
            reply.0,
            reply.2
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The ids among `ids` that a server-side query returns.
async fn found(api: &Api, ids: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for chunk in ids.chunks(100) {
        let payload = json!({"filter_conditions": {"id": {"$in": chunk}}, "limit": 100});
        let path = format!("/users?payload={}", encode(&payload.to_string()));
        let (status, _, body) = api.admin(Method::GET, &path, None).await;
        assert_eq!(status, 200, "queries keep working: {body}");
        for u in body["users"].as_array().expect("users") {
            out.push(u["id"].as_str().expect("id").to_owned());
        }
    }
    out.sort();
    out
}

async fn assert_all_present(api: &Api, acked: &[String]) {
    let mut want = acked.to_vec();
    want.sort();
    assert_eq!(
        found(api, acked).await,
        want,
        "every acknowledged write is there"
    );
}

/// Creates `alice` while there is room.
async fn create_alice(api: &Api) {
    api.admin_ok(
        Method::POST,
        "/users",
        Some(json!({"users": {"alice": {"id": "alice", "name": "Alice"}}})),
    )
    .await;
}

/// Reads and connects that write nothing keep working.
async fn assert_reads_and_connects_work(api: &Api) {
    assert_eq!(found(api, &["alice".to_owned()]).await, ["alice"]);
    // A client-side query with a user token (authentication reads the user).
    let me = Creds {
        api_key: Some(api.api_key.clone()),
        token: Some(api.user_token("alice")),
        auth_type: Some("jwt".into()),
    };
    let payload = json!({"filter_conditions": {"id": "alice"}});
    let path = format!("/users?payload={}", encode(&payload.to_string()));
    let (status, _, body) = api.public_with(Method::GET, &path, None, &me).await;
    assert_eq!(status, 200, "client query: {body}");
    // An existing user whose details do not change connects.
    let token = api.user_token("alice");
    let details = json!({"id": "alice", "name": "Alice"});
    let mut sock = ws::open(&connect_url(api, "alice", details, &token, "jwt")).await;
    match next(&mut sock, Duration::from_secs(5)).await {
        Next::Frame(f) if f["type"] == "health.check" => assert_eq!(f["me"]["name"], "Alice"),
        other => panic!("alice could not connect on a full volume: {other:?}"),
    }
    drop(sock);
}

/// A connect that must write (a new user) is transient trouble: close 1013, no error frame,
/// so the SDK retries.
async fn assert_new_user_connect_retries(api: &Api) {
    let token = api.user_token("newcomer");
    let details = json!({"id": "newcomer", "name": "New"});
    let mut sock = ws::open(&connect_url(api, "newcomer", details, &token, "jwt")).await;
    match next(&mut sock, Duration::from_secs(5)).await {
        Next::Closed(1013, _) => {}
        other => panic!("a connect that needs a write gets close 1013: {other:?}"),
    }
}

/// Stops the gateway with SIGTERM and asserts a clean exit.
async fn stop(srv: ProcessServer) {
    let log = srv.log();
    let status = srv.terminate().await;
    assert!(status.success(), "clean exit, not {status}:\n{log}");
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[tokio::test]
async fn writes_are_refused_before_the_volume_fills_and_resume_when_space_returns() {
    let vol = Tmpfs::mount(VOLUME);
    let gw = Gateway::new();
    let srv = gw.start(&vol, RESERVE).await;
    create_alice(&srv).await;
    let filler = vol.fill(3 * MIB);

    let (acked, refusal) = post_guests_until_refused(&srv, "g").await;
    assert!(!acked.is_empty(), "some guests fitted first");
    assert_volume_full(&refusal);
    assert!(
        vol.free() >= MIB / 2,
        "refused before the volume ran out: {} bytes free",
        vol.free()
    );
    // Every kind of write is refused the same way.
    let upsert = json!({"users": {"bob": {"id": "bob"}}});
    assert_volume_full(&srv.admin(Method::POST, "/users", Some(upsert)).await);
    let app = json!({"enforce_unique_usernames": "app"});
    assert_volume_full(&srv.admin(Method::PATCH, "/app", Some(app)).await);
    assert_degraded(&srv, "data volume full").await;
    assert_reads_and_connects_work(&srv).await;
    assert_new_user_connect_retries(&srv).await;
    assert_all_present(&srv, &acked).await;

    filler.release();
    wait_writes_resume(&srv, "after").await;
    assert_healthy(&srv).await;
    assert_all_present(&srv, &acked).await;

    let log = srv.log();
    assert_eq!(
        count(&log, "data volume low"),
        1,
        "entering is logged once:\n{log}"
    );
    assert_eq!(
        count(&log, "data volume has room again"),
        1,
        "leaving once:\n{log}"
    );
    assert!(
        !log.contains("could not record last_active"),
        "no spam:\n{log}"
    );
    stop(srv).await;
}

#[tokio::test]
async fn a_store_that_met_enospc_is_reopened_once_space_returns() {
    let vol = Tmpfs::mount(VOLUME);
    let gw = Gateway::new();
    // No reserve: sled itself runs into ENOSPC.
    let srv = gw.start(&vol, "0").await;
    create_alice(&srv).await;
    let filler = vol.fill(MIB);

    let (acked, refusal) = post_guests_until_refused(&srv, "g").await;
    assert_volume_full(&refusal);
    assert_volume_full(&post_guest(&srv, "still-full").await);
    assert_degraded(&srv, "data volume full").await;
    assert_reads_and_connects_work(&srv).await;
    assert_all_present(&srv, &acked).await;

    filler.release();
    wait_writes_resume(&srv, "after").await;
    assert_healthy(&srv).await;
    assert_all_present(&srv, &acked).await;
    assert_reads_and_connects_work(&srv).await;

    let log = srv.log();
    assert_eq!(
        count(&log, "store failed a write"),
        1,
        "logged once:\n{log}"
    );
    assert_eq!(count(&log, "store reopened"), 1, "{log}");
    stop(srv).await;
}

#[tokio::test]
async fn a_restart_on_a_full_volume_serves_reads_and_loses_nothing_acknowledged() {
    let vol = Tmpfs::mount(VOLUME);
    let gw = Gateway::new();
    let srv = gw.start(&vol, RESERVE).await;
    create_alice(&srv).await;
    let filler = vol.fill(3 * MIB);
    let (acked, refusal) = post_guests_until_refused(&srv, "g").await;
    assert_volume_full(&refusal);
    stop(srv).await;

    // Below the reserve: the gateway starts, read-only.
    let srv = gw.start(&vol, RESERVE).await;
    assert_degraded(&srv, "data volume full").await;
    assert_all_present(&srv, &acked).await;
    assert_reads_and_connects_work(&srv).await;
    assert_volume_full(&post_guest(&srv, "while-low").await);
    srv.kill().await;

    // Not a byte free: the gateway still starts (releasing its ballast if sled needs room to
    // open) and serves reads.
    let last = vol.fill(0);
    assert_eq!(vol.free(), 0);
    let srv = gw.start(&vol, RESERVE).await;
    assert_degraded(&srv, "data volume full").await;
    assert_all_present(&srv, &acked).await;
    assert_reads_and_connects_work(&srv).await;
    assert_volume_full(&post_guest(&srv, "while-full").await);

    // Space back: writes resume without a restart.
    last.release();
    filler.release();
    wait_writes_resume(&srv, "after").await;
    assert_healthy(&srv).await;
    assert_all_present(&srv, &acked).await;
    stop(srv).await;
}

#[tokio::test]
async fn the_ballast_lets_the_database_open_on_a_volume_filled_to_the_last_byte() {
    let vol = Tmpfs::mount(VOLUME);
    let gw = Gateway::new();
    // A first start: the ballast is made, and the log's last segment is not zeroed to its
    // end yet, which the next open must do.
    let srv = gw.start(&vol, RESERVE).await;
    create_alice(&srv).await;
    assert_eq!(count(&srv.log(), "ballast file made"), 1, "{}", srv.log());
    stop(srv).await;

    let filler = vol.fill(0);
    let srv = gw.start(&vol, RESERVE).await;
    let log = srv.log();
    assert_eq!(count(&log, "ballast file released"), 1, "{log}");
    assert_degraded(&srv, "data volume full").await;
    assert_reads_and_connects_work(&srv).await;
    assert_volume_full(&post_guest(&srv, "while-full").await);

    filler.release();
    wait_writes_resume(&srv, "after").await;
    assert_healthy(&srv).await;
    // Made again for the next time.
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&srv.log(), "ballast file made") < 2 {
        assert!(
            Instant::now() < deadline,
            "ballast not made again:\n{}",
            srv.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop(srv).await;
}

#[tokio::test]
async fn without_a_ballast_a_start_sled_cannot_open_says_the_volume_is_full() {
    let vol = Tmpfs::mount(VOLUME);
    let gw = Gateway::new();
    // As above, with no ballast to release.
    let srv = gw.start_with(&vol, RESERVE, "0").await;
    create_alice(&srv).await;
    stop(srv).await;

    let filler = vol.fill(0);
    let mut srv = gw.spawn(&vol, RESERVE, "0");
    let exited = srv.wait_serving().await;
    let log = srv.log();
    assert!(
        exited.is_err(),
        "sled cannot open with no space to write:\n{log}"
    );
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.contains("data volume full") && last.contains("free space and start again"),
        "the exit message says the volume is full:\n{log}"
    );

    // Once space is back it opens, with everything in it.
    filler.release();
    let srv = gw.start_with(&vol, RESERVE, "0").await;
    assert_healthy(&srv).await;
    assert_eq!(found(&srv, &["alice".to_owned()]).await, ["alice"]);
    stop(srv).await;
}

//! Large profiles on idle sockets: a user stored before the bounds of a user whose first frame
//! is over `max_connect_frame_bytes` is refused with an error frame and close 1000 (the SDK
//! stops retrying), and what idle connections hold is measured (run the `#[ignore]`d
//! measurement with `cargo test --test hostile profiles -- --ignored --nocapture`).

use std::path::Path;
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::common::TestServer;
use crate::ws::{self, connect_url, expect_refusal, uid};

/// Writes users with a `name` of `name_bytes` straight to the store, as a gateway from before
/// the bounds of a user could have.
async fn store_legacy_users(data: &Path, ids: &[String], name_bytes: usize) {
    use chat_gateway::model::user::User;
    use chat_gateway::protocol::Timestamp;
    use chat_gateway::store::{Expect, SledStore, Store, UserChange};

    std::fs::create_dir_all(data).expect("data dir");
    let store = SledStore::open(&data.join("db")).expect("store opens");
    let changes = ids
        .iter()
        .map(|id| {
            let mut user = User::new(id, Timestamp::now());
            user.name = Some("n".repeat(name_bytes));
            UserChange::Put {
                user,
                expect: Expect::Absent,
                check_names: Vec::new(),
                tombstone: false,
            }
        })
        .collect();
    store.apply_user_batch(changes).await.expect("written");
    store.flush().await.expect("flushed");
}

#[tokio::test]
async fn a_profile_over_the_connect_frame_bound_is_refused_with_an_error_frame() {
    let _shared = crate::memory::SHARED.read().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // Over the bound; and over the socket's write buffer (256 KiB), which could never be sent.
    let (big, huge, small) = (uid("big"), uid("huge"), uid("small"));
    store_legacy_users(&data, std::slice::from_ref(&big), 200 * 1024).await;
    store_legacy_users(&data, std::slice::from_ref(&huge), 300 * 1024).await;
    // Within the bound (the connect frame's limit is 128 KiB).
    store_legacy_users(&data, std::slice::from_ref(&small), 100 * 1024).await;
    let server = TestServer::start_with(|c| c.data_dir = data.clone()).await;
    for id in [&big, &huge] {
        let url = connect_url(
            &server,
            id,
            json!({"id": id}),
            &server.user_token(id),
            "jwt",
        );
        let error = expect_refusal(&url, 22).await;
        assert_eq!(error["StatusCode"], 413, "{error}");
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|m| m.contains("must make the user smaller")),
            "{error}"
        );
    }
    // Within the bound, a user connects.
    let (_socket, hello) = ws::connect_user(&server, &small, json!({"id": &small})).await;
    assert_eq!(hello["me"]["id"], small.as_str());
}

/// Resident set size of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

/// Sends one text message of `bytes` in frames of at most 16 KiB (the frame bound).
async fn send_junk(socket: &mut ws::Socket, bytes: usize) {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
    let text = vec![b'x'; bytes];
    let chunks: Vec<&[u8]> = text.chunks(16 * 1024).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let header = FrameHeader {
            is_final: i + 1 == chunks.len(),
            opcode: if i == 0 {
                OpCode::Data(Data::Text)
            } else {
                OpCode::Data(Data::Continue)
            },
            ..FrameHeader::default()
        };
        let frame = Frame::from_payload(header, chunk.to_vec().into());
        socket.send(Message::Frame(frame)).await.expect("frame");
    }
}

/// Connects these users and holds the sockets that got their first frame; returns them and
/// how many were refused.
async fn hold(api: &crate::common::Api, ids: &[String]) -> (Vec<ws::Socket>, usize) {
    let mut held = Vec::new();
    let mut refused = 0;
    for id in ids {
        let url = connect_url(api, id, json!({"id": id}), &api.user_token(id), "jwt");
        let mut socket = ws::open(&url).await;
        match ws::next(&mut socket, Duration::from_secs(5)).await {
            ws::Next::Frame(f) if f["type"] == "health.check" => held.push(socket),
            _ => refused += 1,
        }
    }
    (held, refused)
}

/// The gateway's resident set, in KiB, once it has settled.
async fn settled_rss(pid: u32) -> u64 {
    tokio::time::sleep(Duration::from_millis(500)).await;
    rss_kib(pid)
}

#[tokio::test]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn measure_what_idle_connections_of_large_profiles_hold() {
    use crate::common::{random_secret, ProcessServer, API_KEY};
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let count = 200;
    let ids = |p: &str| (0..count).map(|i| format!("{p}-{i}")).collect::<Vec<_>>();
    let (small, mid, big) = (ids("small"), ids("mid"), ids("big"));
    store_legacy_users(&data, &small, 10).await;
    store_legacy_users(&data, &mid, 100 * 1000).await;
    store_legacy_users(&data, &big, 250 * 1000).await;
    let server = ProcessServer::start(&data, API_KEY, &random_secret()).await;
    let pid = server.pid();
    let (warm, _) = hold(&server, &ids("warm")[..20]).await;
    drop(warm);
    for (what, users) in [
        ("10-byte names", &small),
        ("100 KB names", &mid),
        ("250 KB names", &big),
    ] {
        // Once to read the users into the store's cache, then the measured round.
        drop(hold(&server, users).await);
        let before = settled_rss(pid).await;
        let (held, refused) = hold(&server, users).await;
        let after = settled_rss(pid).await;
        let per = after.saturating_sub(before) as f64 / held.len().max(1) as f64;
        eprintln!(
            "{what}: {} held, {refused} refused; RSS {before} -> {after} KiB, {per:.1} KiB per held connection",
            held.len()
        );
        if what == "10-byte names" {
            // One 60 KB message on each idle connection.
            let mut held = held;
            let before = settled_rss(pid).await;
            for s in &mut held {
                send_junk(s, 60 * 1000).await;
            }
            let after = settled_rss(pid).await;
            let per = after.saturating_sub(before) as f64 / held.len() as f64;
            eprintln!(
                "one 60 KB message on each: RSS {before} -> {after} KiB, {per:.1} KiB per connection kept"
            );
        }
    }
}

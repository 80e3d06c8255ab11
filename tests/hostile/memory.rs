//! Memory stays bounded under a burst of hostile input. The in-process server shares the
//! test's process, so its resident set is read from `/proc/self/status`; the other tests of
//! this binary hold [`SHARED`] for reading, this one takes it for writing to run alone.

use std::time::Duration;

use futures_util::SinkExt;
use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::common::TestServer;
use crate::{assert_envelope, assert_serving, nested_arrays, send_bytes, Side};

/// Taken for writing by the memory test, for reading by every test that opens sockets.
pub static SHARED: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Resident set size of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_hostile_input_leaves_memory_bounded() {
    let _alone = SHARED.write().await;
    // Every body reaches the parser: 152 upserts as one user would meet that user's budget
    // of 60 a minute long before.
    let server = TestServer::start_with(|c| c.rate_limits.enabled = false).await;
    // Warm up allocator pools and lazily built state with one of each.
    let body = nested_arrays(500_000).into_bytes();
    let reply = send_bytes(&server, Side::Admin, "POST", "/users", body.clone(), "").await;
    assert_envelope("warm-up", &reply, 400, &[4]);
    assert_serving(&server).await;
    let before = rss_kib();

    // ~300 MB of 1 MB bodies nested 500k levels deep, 8 at a time, on both listeners.
    let mut sent = 0usize;
    for round in 0..38 {
        let mut batch = Vec::new();
        for i in 0..8 {
            let server = server.api().clone();
            let body = body.clone();
            let side = if (round + i) % 2 == 0 {
                Side::Admin
            } else {
                Side::User
            };
            batch.push(tokio::spawn(async move {
                send_bytes(&server, side, "POST", "/users", body, "").await
            }));
        }
        for t in batch {
            let reply = t.await.expect("request task");
            assert_envelope("burst", &reply, 400, &[4]);
            sent += 1;
        }
    }
    // 200 sockets, each closed for a frame over the limit.
    let max_frame = server.config.limits.max_frame_bytes;
    for _ in 0..200 {
        let (mut s, _) = crate::ws::connect_user(&server, &crate::ws::uid("mem"), json!({})).await;
        let _ = s
            .send(Message::Text("x".repeat(max_frame * 2).into()))
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(5), s.next()).await;
    }
    assert_serving(&server).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss_kib();
    let grown_mib = after.saturating_sub(before) / 1024;
    eprintln!("RSS {before} KiB -> {after} KiB after {sent} MB of hostile bodies and 200 sockets");
    assert!(
        grown_mib < 128,
        "RSS grew by {grown_mib} MiB ({before} -> {after} KiB) over a burst of {sent} MB"
    );
}

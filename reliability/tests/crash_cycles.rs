//! The CI-sized crash run: three SIGKILL-and-restart cycles against the debug build of the
//! gateway (`cargo test --workspace` builds it before any test runs), then a graceful stop.

use std::path::PathBuf;
use std::time::Duration;

use chat_gateway_reliability::{run, RunConfig};

/// `CHAT_GATEWAY_BIN`, or `chat-gateway` in the profile directory this test was built into.
fn gateway_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("CHAT_GATEWAY_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("chat-gateway");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --bin chat-gateway` (or `cargo test --workspace`, which builds it) or set CHAT_GATEWAY_BIN",
        bin.display()
    );
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_kill_cycles_keep_every_acknowledged_write() {
    let mut config = RunConfig::new(gateway_binary());
    config.cycles = 3;
    config.workers = 3;
    config.min_run = Duration::from_millis(300);
    config.max_run = Duration::from_millis(900);
    // Batches stay at 100 users; a smaller population keeps the checks to seconds.
    config.max_live_per_worker = 200;
    let report = run(config).await.expect("the harness runs");
    assert!(
        report.violations.is_empty(),
        "violations: {:#?}",
        report.violations
    );
    assert_eq!(report.kills, 3);
    assert_eq!(report.graceful_stops, 1);
    let s = &report.stats;
    assert!(s.batches_acked > 0, "{:?}", report.to_json());
    assert!(s.patches_acked > 0, "{:?}", report.to_json());
    assert!(
        s.deletes_acked + s.batch_deletes_acked > 0,
        "{:?}",
        report.to_json()
    );
    assert!(report.checked.tomb_probes > 0 && report.checked.name_blocks > 0);
}

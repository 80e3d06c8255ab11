//! The CI-sized crash run: three SIGKILL-and-restart cycles against the debug build of the
//! gateway (`cargo test --workspace` builds it before any test runs), then a graceful stop.

mod common;

use std::time::Duration;

use chat_gateway_reliability::{run, RunConfig};
use common::gateway_binary;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_kill_cycles_keep_every_acknowledged_write() {
    let mut config = RunConfig::new(gateway_binary());
    config.cycles = 3;
    config.workers = 3;
    config.min_run = Duration::from_millis(300);
    config.max_run = Duration::from_millis(900);
    // A busy machine may not finish one batch in 900 ms: each kill also waits for 12
    // acknowledged writes of its cycle, so every kind of write gets acknowledged in a run.
    config.min_acked_per_cycle = 12;
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

//! The CI-sized crash run on the PostgreSQL store: four SIGKILL-and-restart cycles, every
//! other one while the gateway's transactions are held open in PostgreSQL, then a graceful
//! stop. The run creates a database of its own on the test server and drops it at the end;
//! the server is `CHAT_GATEWAY_TEST_PG_URL`, else a throwaway one started from the installed
//! binaries (the main crate's helper, shared here), never a skip.

mod common;
#[path = "../../tests/common/pg.rs"]
mod pg;

use std::time::Duration;

use chat_gateway_reliability::{run, Backend, RunConfig};
use common::gateway_binary;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_cycles_on_postgres_lose_nothing_acknowledged_and_apply_nothing_by_half() {
    let mut config = RunConfig::new(gateway_binary());
    config.backend = Backend::Postgres {
        server_url: pg::server_url(),
        keep_database: false,
    };
    config.cycles = 4;
    config.hold_every = 2;
    config.workers = 3;
    // On PostgreSQL a batch is one transaction of a few statements per user, each a round
    // trip: batches of 25 users keep a debug build on a busy machine to a few per second,
    // and each kill waits for 12 acknowledged writes of its cycle, so every kind of write
    // gets acknowledged in a run.
    config.batch_size = 25;
    config.min_acked_per_cycle = 12;
    config.min_run = Duration::from_millis(500);
    config.max_run = Duration::from_millis(1500);
    config.max_live_per_worker = 200;
    let report = run(config).await.expect("the harness runs");
    let figures = report.to_json();
    eprintln!("{figures}");
    assert!(
        report.violations.is_empty(),
        "violations: {:#?}",
        report.violations
    );
    assert_eq!(report.backend, "postgres");
    assert_eq!(
        (report.kills, report.held_kills, report.graceful_stops),
        (4, 2, 1)
    );
    // The held kills caught writes inside their transactions, and each of them, lost with
    // the gateway, was found not applied at all.
    assert!(report.held_transactions > 0, "{figures}");
    assert!(
        report.stats.lost_not_applied >= report.held_transactions,
        "{figures}"
    );
    assert!(report.orphan_sessions > 0, "{figures}");
    let s = &report.stats;
    assert!(s.batches_acked > 0 && s.patches_acked > 0, "{figures}");
    assert!(s.deletes_acked + s.batch_deletes_acked > 0, "{figures}");
    assert!(report.checked.tomb_probes > 0 && report.checked.name_blocks > 0);
    // The tables were read and compared, not only the API.
    assert!(report.tables.users > 0 && report.tables.names > 0 && report.tables.tombstones > 0);
    assert!(report.database.is_none());
}

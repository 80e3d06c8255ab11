//! Crash-consistency harness for chat-gateway: runs the real binary as a child process on a
//! data dir, drives concurrent admin writes (batch upserts of 100 users, partial updates,
//! hard deletes one by one and as batch tasks) with unique usernames enforced app-wide,
//! SIGKILLs the gateway at random moments, restarts it on the same data dir and checks that
//! every acknowledged write survived, no batch was partially applied, the username index
//! agrees with the users and tombstones hold.
//!
//! Layout:
//! - `process`: the gateway child process — start on fresh ports, health wait, kill, stop.
//! - `client`: the admin REST API with the server token; outcomes acked / refused / lost.
//! - `model`: the ledger of what each acknowledged write left, and the lost writes.
//! - `workload`: the writers, each owning its user ids.
//! - `verify`: the checks run against a restarted gateway.

pub mod client;
pub mod model;
pub mod process;
pub mod verify;
pub mod workload;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};

use client::{Admin, Outcome};
use process::{GatewayProcess, Launch};
use verify::Checked;
use workload::{Stats, Worker};

/// How to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The `chat-gateway` binary.
    pub gateway: PathBuf,
    /// Kill-and-restart cycles.
    pub cycles: usize,
    /// Concurrent writers.
    pub workers: usize,
    /// Shortest time writes run before a kill.
    pub min_run: Duration,
    /// Longest time writes run before a kill.
    pub max_run: Duration,
    /// Live users a worker keeps at most (then batches only rewrite existing users).
    pub max_live_per_worker: usize,
    /// The data dir (a temporary one when `None`).
    pub data_dir: Option<PathBuf>,
    /// Random seed (writes race, so a seed does not replay a run exactly).
    pub seed: u64,
}

impl RunConfig {
    /// Defaults for `gateway`: 50 cycles, 4 writers, kills after 0.2–3 s.
    pub fn new(gateway: PathBuf) -> Self {
        Self {
            gateway,
            cycles: 50,
            workers: 4,
            min_run: Duration::from_millis(200),
            max_run: Duration::from_millis(3000),
            max_live_per_worker: 1500,
            data_dir: None,
            seed: rand::random(),
        }
    }
}

/// What a run did and found.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Seed used.
    pub seed: u64,
    /// SIGKILLs delivered (one per cycle).
    pub kills: usize,
    /// Graceful stops (SIGTERM) at the end.
    pub graceful_stops: usize,
    /// Writer counters, summed.
    pub stats: Stats,
    /// Verification counters, summed.
    pub checked: Checked,
    /// Live users at the end.
    pub live_at_end: u64,
    /// Hard-deleted ids at the end.
    pub tombs_at_end: u64,
    /// Every rule violation found (empty: the run passed).
    pub violations: Vec<String>,
    /// Wall time.
    pub elapsed: Duration,
}

impl Report {
    /// Writes acknowledged, of every kind.
    pub fn acked_writes(&self) -> u64 {
        let s = &self.stats;
        s.batches_acked + s.patches_acked + s.deletes_acked + s.batch_deletes_acked
    }

    /// The figures as one JSON object.
    pub fn to_json(&self) -> Value {
        let s = &self.stats;
        let c = &self.checked;
        json!({
            "seed": self.seed,
            "kills": self.kills,
            "graceful_stops": self.graceful_stops,
            "elapsed_secs": self.elapsed.as_secs_f64(),
            "acked": {
                "batch_upserts": s.batches_acked,
                "batch_upsert_users": s.batch_users_acked,
                "partial_updates": s.patches_acked,
                "partial_update_users": s.patch_users_acked,
                "hard_deletes": s.deletes_acked,
                "batch_hard_deletes": s.batch_deletes_acked,
                "batch_hard_delete_users": s.batch_delete_users_acked,
            },
            "refused": {
                "duplicate_name_code_6": s.refused_duplicate_name,
                "deleted_id_code_16": s.refused_tombstoned,
            },
            "lost_at_kill": {"applied": s.lost_applied, "not_applied": s.lost_not_applied},
            "checked": {
                "id_comparisons": c.ids,
                "tombstone_probes": c.tomb_probes,
                "duplicate_name_probes": c.name_blocks,
                "free_name_probes": c.names_free,
            },
            "live_users_at_end": self.live_at_end,
            "tombstones_at_end": self.tombs_at_end,
            "violations": self.violations,
        })
    }
}

fn add_stats(into: &mut Stats, s: &Stats) {
    into.batches_acked += s.batches_acked;
    into.batch_users_acked += s.batch_users_acked;
    into.patches_acked += s.patches_acked;
    into.patch_users_acked += s.patch_users_acked;
    into.deletes_acked += s.deletes_acked;
    into.batch_deletes_acked += s.batch_deletes_acked;
    into.batch_delete_users_acked += s.batch_delete_users_acked;
    into.refused_duplicate_name += s.refused_duplicate_name;
    into.refused_tombstoned += s.refused_tombstoned;
    into.lost_applied += s.lost_applied;
    into.lost_not_applied += s.lost_not_applied;
}

fn add_checked(into: &mut Checked, c: &Checked) {
    into.ids += c.ids;
    into.tomb_probes += c.tomb_probes;
    into.name_blocks += c.name_blocks;
    into.names_free += c.names_free;
}

/// Runs the cycles. `Err` means the harness could not do its job (the gateway would not
/// start, a check could not be made); rule violations are in the report.
pub async fn run(config: RunConfig) -> Result<Report, String> {
    let started = Instant::now();
    if !config.gateway.is_file() {
        return Err(format!(
            "gateway binary {} not found (cargo build --release --bin chat-gateway)",
            config.gateway.display()
        ));
    }
    let temp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let data_dir = config
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().join("data"));
    let launch = Launch {
        binary: config.gateway.clone(),
        log: data_dir.with_extension("log"),
        data_dir,
        api_key: "crash-key".into(),
        secret: format!("crash-secret-{}", config.seed),
    };
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut workers: Vec<Worker> = (0..config.workers)
        .map(|i| Worker::new(i, config.seed, config.max_live_per_worker))
        .collect();
    let mut probes = Vec::new();
    let mut report = Report {
        seed: config.seed,
        ..Report::default()
    };
    let fail = |e: String| {
        format!(
            "{e}\n--- gateway log ---\n{}",
            process::log_tail(&launch.log, 30)
        )
    };

    let mut gateway = GatewayProcess::start(&launch).await.map_err(fail)?;
    let admin = Admin::new(gateway.admin, &launch.api_key, &launch.secret);
    let mode = json!({"enforce_unique_usernames": "app"});
    if let other @ (Outcome::Refused { .. } | Outcome::Lost(_)) =
        admin.call(Method::PATCH, "/app", Some(&mode)).await
    {
        return Err(fail(format!("PATCH /app failed: {other:?}")));
    }

    for cycle in 1..=config.cycles {
        let admin = Admin::new(gateway.admin, &launch.api_key, &launch.secret);
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = workers
            .drain(..)
            .map(|w| tokio::spawn(w.run(admin.clone(), stop.clone())))
            .collect();
        let span = config.max_run.saturating_sub(config.min_run).as_millis() as u64;
        let run_for = config.min_run + Duration::from_millis(rng.random_range(0..=span));
        tokio::time::sleep(run_for).await;
        gateway.kill();
        report.kills += 1;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            workers.push(t.await.map_err(|e| format!("worker panicked: {e}"))?);
        }
        gateway = GatewayProcess::start(&launch).await.map_err(fail)?;
        let admin = Admin::new(gateway.admin, &launch.api_key, &launch.secret);
        let checked = verify::verify(
            &admin,
            &mut workers,
            &mut probes,
            cycle,
            &mut rng,
            &mut report.violations,
        )
        .await
        .map_err(fail)?;
        add_checked(&mut report.checked, &checked);
        report.live_at_end = checked.live;
        report.tombs_at_end = checked.tombs;
        eprintln!(
            "cycle {cycle}/{}: killed after {} ms; {} ids checked, {} live, {} tombstones; {} violations so far",
            config.cycles,
            run_for.as_millis(),
            checked.ids,
            checked.live,
            checked.tombs,
            report.violations.len(),
        );
    }

    // One graceful stop too: SIGTERM must flush and exit 0, and the data must be the same.
    let status = gateway.terminate().await.map_err(fail)?;
    if !status.success() {
        report
            .violations
            .push(format!("SIGTERM stop exited with {status}"));
    }
    report.graceful_stops += 1;
    let gateway = GatewayProcess::start(&launch).await.map_err(fail)?;
    let admin = Admin::new(gateway.admin, &launch.api_key, &launch.secret);
    let checked = verify::verify(
        &admin,
        &mut workers,
        &mut probes,
        config.cycles + 1,
        &mut rng,
        &mut report.violations,
    )
    .await
    .map_err(fail)?;
    add_checked(&mut report.checked, &checked);
    report.live_at_end = checked.live;
    report.tombs_at_end = checked.tombs;
    gateway.kill();

    for w in &workers {
        add_stats(&mut report.stats, &w.stats);
        report.violations.extend(w.violations.iter().cloned());
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

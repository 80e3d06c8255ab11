//! Crash-consistency harness for chat-gateway: runs the real binary as a child process on a
//! data dir (sled) or a fresh PostgreSQL database, drives concurrent admin writes (batch
//! upserts of 100 users by default, partial updates, hard deletes one by one and as batch
//! tasks) with unique usernames enforced app-wide, SIGKILLs the gateway at random moments,
//! restarts it on the same data and checks that every acknowledged write survived, no batch
//! was partially applied, the username index agrees with the users and tombstones hold. On
//! PostgreSQL the same checks run through the API, the tables are checked directly too, and
//! every other kill comes while the harness keeps the gateway's transactions open (see `pg`).
//!
//! Layout:
//! - `process`: the gateway child process — start on fresh ports, health wait, kill, stop.
//! - `client`: the admin REST API with the server token; outcomes acked / refused / lost.
//! - `model`: the ledger of what each acknowledged write left, and the lost writes.
//! - `workload`: the writers, each owning its user ids.
//! - `verify`: the checks run against a restarted gateway.
//! - `pg`: the run's database, its tables' checks, the held kill.

pub mod client;
pub mod model;
pub mod pg;
pub mod process;
pub mod verify;
pub mod workload;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};

use client::{Admin, Outcome};
use pg::{Database, Hold, Tables};
use process::{GatewayProcess, Launch};
use verify::Checked;
use workload::{Stats, Worker};

/// The longest a kill waits past its drawn time for [`RunConfig::min_acked_per_cycle`].
pub const PROGRESS_PATIENCE: Duration = Duration::from_secs(30);

/// Where the gateway keeps its users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// sled, in the data dir.
    Sled,
    /// PostgreSQL: a database created for the run on the server at `server_url` (whose user
    /// may create databases), dropped at the end unless `keep_database`.
    Postgres {
        /// The server (any database of it: the run's replaces it in the URL).
        server_url: String,
        /// Keep the database afterwards (its name is in the report).
        keep_database: bool,
    },
}

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
    /// Users in each batch upsert.
    pub batch_size: usize,
    /// Writes each cycle gets acknowledged before its kill: the kill waits for them past
    /// the drawn run time (at most [`PROGRESS_PATIENCE`] longer), so that a slow machine
    /// still kills amid acknowledged writes rather than before the first.
    pub min_acked_per_cycle: u64,
    /// The data dir (a temporary one when `None`).
    pub data_dir: Option<PathBuf>,
    /// The store.
    pub backend: Backend,
    /// On PostgreSQL, every `hold_every`-th kill comes while the gateway's transactions are
    /// held open (0: never).
    pub hold_every: usize,
    /// Random seed (writes race, so a seed does not replay a run exactly).
    pub seed: u64,
}

impl RunConfig {
    /// Defaults for `gateway`: sled, 50 cycles, 4 writers, kills after 0.2–3 s.
    pub fn new(gateway: PathBuf) -> Self {
        Self {
            gateway,
            cycles: 50,
            workers: 4,
            min_run: Duration::from_millis(200),
            max_run: Duration::from_millis(3000),
            max_live_per_worker: 1500,
            batch_size: 100,
            min_acked_per_cycle: 0,
            data_dir: None,
            backend: Backend::Sled,
            hold_every: 2,
            seed: rand::random(),
        }
    }
}

/// What a run did and found.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Seed used.
    pub seed: u64,
    /// `sled` or `postgres`.
    pub backend: &'static str,
    /// The database, when it was kept.
    pub database: Option<String>,
    /// SIGKILLs delivered (one per cycle).
    pub kills: usize,
    /// Of them, kills while the harness held the gateway's transactions open.
    pub held_kills: usize,
    /// Gateway transactions open (written, not committed) at the held kills, summed.
    pub held_transactions: u64,
    /// Sessions the killed gateways left in PostgreSQL, summed.
    pub orphan_sessions: u64,
    /// Longest time they took to end after the restart (and the end of the hold).
    pub orphans_gone_max: Duration,
    /// Rows compared in the tables, summed.
    pub tables: Tables,
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
        self.stats.acked_writes()
    }

    /// The figures as one JSON object.
    pub fn to_json(&self) -> Value {
        let s = &self.stats;
        let c = &self.checked;
        let t = &self.tables;
        json!({
            "seed": self.seed,
            "backend": self.backend,
            "database_kept": self.database,
            "kills": self.kills,
            "held_kills": self.held_kills,
            "held_transactions": self.held_transactions,
            "orphan_sessions": self.orphan_sessions,
            "orphans_gone_max_ms": self.orphans_gone_max.as_millis() as u64,
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
                "table_users": t.users,
                "table_user_names": t.names,
                "table_tombstones": t.tombstones,
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

fn add_tables(into: &mut Tables, t: &Tables) {
    into.users += t.users;
    into.names += t.names;
    into.tombstones += t.tombstones;
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
    if !config.gateway.is_file() {
        return Err(format!(
            "gateway binary {} not found (cargo build --release --bin chat-gateway)",
            config.gateway.display()
        ));
    }
    let Backend::Postgres {
        server_url,
        keep_database,
    } = &config.backend
    else {
        return run_on(&config, None).await;
    };
    let db = Database::create(server_url).await?;
    let result = run_on(&config, Some(&db.url)).await;
    if *keep_database {
        return result.map(|report| Report {
            database: Some(db.name.clone()),
            ..report
        });
    }
    let dropped = db.drop_now().await;
    let report = result?;
    dropped?;
    Ok(report)
}

/// The run's view of its database: a connection for the checks and its own session id.
struct PgSide {
    url: String,
    client: tokio_postgres::Client,
    pid: i32,
}

/// Runs the cycles on sled, or on the database at `postgres_url`.
async fn run_on(config: &RunConfig, postgres_url: Option<&str>) -> Result<Report, String> {
    let started = Instant::now();
    let temp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let data_dir = config
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().join("data"));
    let launch = Launch {
        binary: config.gateway.clone(),
        log: data_dir.with_extension("log"),
        data_dir,
        postgres_url: postgres_url.map(str::to_owned),
        api_key: "crash-key".into(),
        secret: format!("crash-secret-{}", config.seed),
    };
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut workers: Vec<Worker> = (0..config.workers)
        .map(|i| {
            Worker::new(
                i,
                config.seed,
                config.max_live_per_worker,
                config.batch_size,
            )
        })
        .collect();
    let mut probes = Vec::new();
    let mut report = Report {
        seed: config.seed,
        backend: if postgres_url.is_some() {
            "postgres"
        } else {
            "sled"
        },
        ..Report::default()
    };
    let fail = |e: String| {
        format!(
            "{e}\n--- gateway log ---\n{}",
            process::log_tail(&launch.log, 30)
        )
    };
    let pg = match postgres_url {
        Some(url) => {
            let client = pg::connect(url).await?;
            let pid = pg::backend_pid(&client).await?;
            Some(PgSide {
                url: url.to_owned(),
                client,
                pid,
            })
        }
        None => None,
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
        let acked = Arc::new(AtomicU64::new(0));
        let cycle_start = Instant::now();
        let tasks: Vec<_> = workers
            .drain(..)
            .map(|w| tokio::spawn(w.run(admin.clone(), stop.clone(), acked.clone())))
            .collect();
        let span = config.max_run.saturating_sub(config.min_run).as_millis() as u64;
        let drawn = config.min_run + Duration::from_millis(rng.random_range(0..=span));
        tokio::time::sleep(drawn).await;
        let patience = Instant::now() + PROGRESS_PATIENCE;
        while acked.load(Ordering::Relaxed) < config.min_acked_per_cycle
            && Instant::now() < patience
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let run_for = cycle_start.elapsed();

        // On PostgreSQL: hold the transactions open (every `hold_every`-th cycle), and note
        // the sessions the gateway has, to see them end after the kill.
        let held = config.hold_every > 0 && cycle % config.hold_every == 0;
        let mut hold = None;
        let mut orphans = Default::default();
        let mut kill_note = String::new();
        if let Some(pg) = &pg {
            let mut own = vec![pg.pid];
            if held {
                let h = Hold::take(&pg.url).await?;
                own.push(h.pid);
                // Each writer has at most one write in flight; a batch of 100 users may take
                // seconds to reach its last statement on a busy machine.
                let open =
                    pg::wait_for_writes(&pg.client, config.workers as u64, Duration::from_secs(5))
                        .await?;
                report.held_kills += 1;
                report.held_transactions += open;
                kill_note = format!(" with {open} transactions held open");
                hold = Some(h);
            }
            orphans = pg::sessions(&pg.client, &own).await?;
        }
        gateway.kill();
        report.kills += 1;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            workers.push(t.await.map_err(|e| format!("worker panicked: {e}"))?);
        }
        // The new gateway starts while the old one's transactions may still be open.
        gateway = GatewayProcess::start(&launch).await.map_err(fail)?;
        if let Some(h) = hold {
            h.release().await?;
        }
        if let Some(pg) = &pg {
            let gone = pg::wait_gone(&pg.client, &orphans).await.map_err(fail)?;
            report.orphan_sessions += orphans.len() as u64;
            report.orphans_gone_max = report.orphans_gone_max.max(gone);
        }
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
        if let Some(pg) = &pg {
            let tables =
                pg::check_tables(&pg.client, &workers, &probes, &mut report.violations).await?;
            add_tables(&mut report.tables, &tables);
        }
        report.live_at_end = checked.live;
        report.tombs_at_end = checked.tombs;
        eprintln!(
            "cycle {cycle}/{}: killed after {} ms{kill_note}; {} ids checked, {} live, {} tombstones; {} violations so far",
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
    if let Some(pg) = &pg {
        let tables =
            pg::check_tables(&pg.client, &workers, &probes, &mut report.violations).await?;
        add_tables(&mut report.tables, &tables);
    }
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

//! `crashcheck`: the crash-consistency run against a gateway binary. Prints progress on
//! stderr and the figures as JSON on stdout; exits 1 when a rule was violated.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chat_gateway_reliability::{run, Backend, RunConfig};
use clap::{Parser, ValueEnum};

/// The store the gateway runs on.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StoreKind {
    /// sled in the data dir.
    Sled,
    /// PostgreSQL: a fresh database on the server of `--pg-url`.
    Postgres,
}

#[derive(Parser)]
#[command(
    about = "SIGKILL the gateway under concurrent writes, restart it, check every acknowledged write"
)]
struct Cli {
    /// The gateway binary (default: `chat-gateway` next to this binary, else
    /// target/release/chat-gateway).
    #[arg(long)]
    gateway: Option<PathBuf>,
    /// Kill-and-restart cycles.
    #[arg(long, default_value_t = 50)]
    cycles: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Shortest run before a kill, in milliseconds.
    #[arg(long, default_value_t = 200)]
    min_run_ms: u64,
    /// Longest run before a kill, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    max_run_ms: u64,
    /// Live users per writer before batches only rewrite existing users.
    #[arg(long, default_value_t = 1500)]
    max_live_per_worker: usize,
    /// Users in each batch upsert.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Writes each cycle gets acknowledged before its kill (the kill waits for them, up to
    /// 30 s past the drawn time).
    #[arg(long, default_value_t = 0)]
    min_acked_per_cycle: u64,
    /// Data dir to use (kept afterwards); a temporary one by default.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The store the gateway runs on.
    #[arg(long, value_enum, default_value_t = StoreKind::Sled)]
    store: StoreKind,
    /// With `--store postgres`: a PostgreSQL server whose user may create databases (e.g.
    /// postgres://postgres@127.0.0.1:5432/postgres). The run creates a database of its own
    /// there and drops it at the end.
    #[arg(long)]
    pg_url: Option<String>,
    /// Keep the run's database afterwards (its name is in the figures).
    #[arg(long)]
    keep_db: bool,
    /// With `--store postgres`: every Nth kill comes while the gateway's transactions are
    /// held open in PostgreSQL (0: never).
    #[arg(long, default_value_t = 2)]
    hold_every: usize,
    /// Random seed.
    #[arg(long)]
    seed: Option<u64>,
}

fn default_gateway() -> PathBuf {
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("chat-gateway")));
    match sibling {
        Some(p) if p.is_file() => p,
        _ => PathBuf::from("target/release/chat-gateway"),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = RunConfig::new(cli.gateway.unwrap_or_else(default_gateway));
    config.cycles = cli.cycles;
    config.workers = cli.workers.max(1);
    config.min_run = Duration::from_millis(cli.min_run_ms);
    config.max_run = Duration::from_millis(cli.max_run_ms.max(cli.min_run_ms));
    config.max_live_per_worker = cli.max_live_per_worker;
    config.batch_size = cli.batch_size.max(2);
    config.min_acked_per_cycle = cli.min_acked_per_cycle;
    config.data_dir = cli.data_dir;
    config.hold_every = cli.hold_every;
    if cli.store == StoreKind::Postgres {
        let Some(server_url) = cli.pg_url else {
            eprintln!("crashcheck: --store postgres needs --pg-url");
            return ExitCode::from(2);
        };
        config.backend = Backend::Postgres {
            server_url,
            keep_database: cli.keep_db,
        };
    }
    if let Some(seed) = cli.seed {
        config.seed = seed;
    }
    eprintln!(
        "crashcheck: {}, {} cycles, {} writers, gateway {}, seed {}",
        if config.backend == Backend::Sled {
            "sled"
        } else {
            "postgres"
        },
        config.cycles,
        config.workers,
        config.gateway.display(),
        config.seed
    );
    match run(config).await {
        Ok(report) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report.to_json()).expect("report encodes")
            );
            if report.violations.is_empty() {
                eprintln!("crashcheck: PASS");
                ExitCode::SUCCESS
            } else {
                for v in &report.violations {
                    eprintln!("VIOLATION: {v}");
                }
                eprintln!("crashcheck: FAIL ({} violations)", report.violations.len());
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("crashcheck: harness error: {e}");
            ExitCode::from(2)
        }
    }
}

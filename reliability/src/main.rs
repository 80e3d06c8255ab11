//! `crashcheck`: the crash-consistency run against a gateway binary. Prints progress on
//! stderr and the figures as JSON on stdout; exits 1 when a rule was violated.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chat_gateway_reliability::{run, RunConfig};
use clap::Parser;

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
    /// Data dir to use (kept afterwards); a temporary one by default.
    #[arg(long)]
    data_dir: Option<PathBuf>,
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
    config.data_dir = cli.data_dir;
    if let Some(seed) = cli.seed {
        config.seed = seed;
    }
    eprintln!(
        "crashcheck: {} cycles, {} writers, gateway {}, seed {}",
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

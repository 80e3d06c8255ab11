//! The scenario runner behind `benchrun`: starts each server fresh, drives it with `loadgen`,
//! reads its RSS and CPU from `/proc`, and writes `bench/results/*.json` and `BENCHMARKS.md`.
//!
//! - `server`    — starting, probing and stopping the gateway and the baseline.
//! - `procs`     — `loadgen` / `sledbase` / `pgbase` child processes and their reports.
//! - `scenarios` — scenarios 1–5 and 7 (`pgadmin`), and the sizes of every scenario.
//! - `query`     — scenario 6, user queries, before and after a change.
//! - `results`   — the result records (the JSON schema).
//! - `report`    — markdown and SVG from the result files.

pub mod procs;
pub mod query;
pub mod report;
pub mod results;
pub mod scenarios;
pub mod server;

use clap::Parser;
use results::Meta;
use scenarios::{Ctx, Sizes};
use server::{Kind, ServerEnv};
use std::path::PathBuf;

/// Scenarios in the order they run.
pub const SCENARIOS: [&str; 7] = [
    "memory", "connect", "admin", "events", "cpu", "query", "pgadmin",
];

/// Scenarios that `--store postgres` runs with the gateway on both stores (and `pgadmin`,
/// which is on PostgreSQL whatever the store).
pub const PG_SCENARIOS: [&str; 3] = ["memory", "connect", "pgadmin"];

/// Options of `benchrun` (what `scripts/bench.sh` passes through).
#[derive(Parser, Debug, Clone)]
#[command(about = "Runs the gateway benchmarks and writes bench/results/*.json and BENCHMARKS.md")]
pub struct RunArgs {
    /// Tiny sizes, one run, output under target/bench-tiny: checks the harness, measures nothing.
    #[arg(long)]
    pub tiny: bool,
    /// Runs per configuration (default 3; 1 with --tiny).
    #[arg(long)]
    pub runs: Option<usize>,
    /// Comma-separated subset of: memory, connect, admin, events, cpu, query, pgadmin (default:
    /// all; with --store postgres: memory, connect, pgadmin).
    #[arg(long, value_delimiter = ',')]
    pub scenarios: Vec<String>,
    /// Comma-separated servers to measure: gateway, baseline (ignored with --store postgres).
    #[arg(long, value_delimiter = ',', default_value = "gateway,baseline")]
    pub servers: Vec<String>,
    /// The gateway's store in scenarios 1 and 2: `sled`, or `postgres` to measure the gateway
    /// on PostgreSQL beside the gateway on sled, results under <out-dir>/postgres/.
    #[arg(long, default_value = "sled", value_parser = ["sled", "postgres"])]
    pub store: String,
    /// PostgreSQL server on which every run gets a fresh database (default:
    /// CHAT_GATEWAY_TEST_PG_URL, else postgres://postgres@127.0.0.1:5432/postgres).
    #[arg(long)]
    pub pg_url: Option<String>,
    /// Directory holding loadgen, baseline, sledbase and pgbase (default: this binary's
    /// directory).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// The gateway binary (default: chat-gateway in --bin-dir).
    #[arg(long)]
    pub gateway_bin: Option<PathBuf>,
    /// A second gateway binary the query scenario measures as *before* (e.g. one built from
    /// the main branch), alternating with the gateway under test (*after*).
    #[arg(long)]
    pub before_bin: Option<PathBuf>,
    /// What *before* is, for the report (e.g. `main 92676fa`).
    #[arg(long, default_value = "before")]
    pub before_label: String,
    /// Comma-separated store sizes of the query scenario (default 10000,100000; 300 with --tiny).
    #[arg(long, value_delimiter = ',')]
    pub query_users: Vec<usize>,
    /// Where the JSON results (and the SVG) go (default bench/results, or target/bench-tiny).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// The markdown report (default BENCHMARKS.md; <out-dir>/BENCHMARKS.md with --tiny or --out-dir).
    #[arg(long)]
    pub doc: Option<PathBuf>,
    /// Scratch space for data directories and server logs.
    #[arg(long, default_value = "target/bench-work")]
    pub work_dir: PathBuf,
    /// Hand-written observations appended to the report.
    #[arg(long, default_value = "bench/NOTES.md")]
    pub notes: PathBuf,
    /// loadgen processes per connection run (each holds < 20,000 descriptors).
    #[arg(long, default_value_t = 2)]
    pub procs: usize,
    /// Handshakes in flight per loadgen process.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// App API key given to the gateway.
    #[arg(long, default_value = "bench-key")]
    pub api_key: String,
    /// App API secret given to the servers.
    #[arg(long, default_value = "bench-secret")]
    pub secret: String,
    /// The baseline's initial WebSocket read buffer per connection, bytes.
    #[arg(long, default_value_t = crate::baseline::DEFAULT_READ_BUFFER)]
    pub baseline_read_buffer: usize,
    /// How sledbase makes writes durable: async (concurrent flush_async), serial, blocking.
    #[arg(long, default_value = "async")]
    pub sled_flush: String,
    /// Only regenerate the report from the existing JSON.
    #[arg(long)]
    pub report_only: bool,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Describes this machine and the tree being measured.
pub fn meta(runs: usize, tiny: bool) -> Meta {
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_owned();
    let mem_kib: f64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    let commit = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    Meta {
        date: crate::timefmt::rfc3339_now(),
        commit,
        cpu_model,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        mem_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        runs,
        tiny,
        loadavg_at_start: read("/proc/loadavg").trim().to_owned(),
        baseline_read_buffer: 0,
    }
}

fn memory_problems(r: &results::MemoryResults, found: &mut Vec<String>) {
    for run in r
        .runs
        .iter()
        .filter(|x| x.failed > 0 || x.connected != x.conns)
    {
        found.push(format!(
            "memory {} n={}: {} of {} connected",
            run.server, run.conns, run.connected, run.conns
        ));
    }
}

fn connect_problems(r: &results::ConnectResults, found: &mut Vec<String>) {
    for run in r.runs.iter().filter(|x| x.failed > 0) {
        found.push(format!(
            "connect {} {}: {} failed ({:?})",
            run.server, run.pass, run.failed, run.first_error
        ));
    }
}

fn admin_problems(r: &results::AdminResults, found: &mut Vec<String>) {
    for run in r.runs.iter().filter(|x| x.failed > 0) {
        found.push(format!(
            "admin {}: {} failed ({:?})",
            run.target, run.failed, run.first_error
        ));
    }
}

/// Problems that make a run's figures suspect (failed connects, missed events, drops), in
/// what this invocation measured: `ran` holds (scenario, on the PostgreSQL pass).
fn problems(out_dir: &std::path::Path, ran: &[(&str, bool)]) -> Vec<String> {
    // Only what this invocation measured: older files may be from another tree.
    let all = report::AllResults::load(out_dir);
    let plain = |s: &str| ran.contains(&(s, false));
    let pg = |s: &str| ran.contains(&(s, true));
    let mut found = Vec::new();
    if let Some(r) = all.memory.as_ref().filter(|_| plain("memory")) {
        memory_problems(r, &mut found);
    }
    if let Some(r) = all.postgres.memory.as_ref().filter(|_| pg("memory")) {
        memory_problems(r, &mut found);
    }
    if let Some(r) = all.connect.as_ref().filter(|_| plain("connect")) {
        connect_problems(r, &mut found);
    }
    if let Some(r) = all.postgres.connect.as_ref().filter(|_| pg("connect")) {
        connect_problems(r, &mut found);
    }
    if let Some(r) = all.admin.as_ref().filter(|_| plain("admin")) {
        admin_problems(r, &mut found);
    }
    if let Some(r) = all.postgres.admin.as_ref().filter(|_| pg("pgadmin")) {
        admin_problems(r, &mut found);
    }
    if let Some(r) = all.events.as_ref().filter(|_| plain("events")) {
        for run in r
            .runs
            .iter()
            .filter(|x| x.update_missed + x.deactivate_missed > 0)
        {
            found.push(format!(
                "events run {}: {} updates and {} deactivations missed ({:?})",
                run.run, run.update_missed, run.deactivate_missed, run.first_error
            ));
        }
    }
    if let Some(r) = all.cpu.as_ref().filter(|_| plain("cpu")) {
        for run in r
            .runs
            .iter()
            .filter(|x| x.dropped > 0 || x.connected != r.conns)
        {
            found.push(format!(
                "cpu {}: {} connected, {} dropped",
                run.server, run.connected, run.dropped
            ));
        }
    }
    if let Some(r) = all.query.as_ref().filter(|_| plain("query")) {
        for run in r.runs.iter().filter(|x| x.failed > 0) {
            found.push(format!(
                "query {} {} users: {} failed ({:?})",
                run.target, run.users, run.failed, run.first_error
            ));
        }
    }
    found
}

/// What to run: each scenario, and whether it is the PostgreSQL pass (the gateway on both
/// stores, results under `<out-dir>/postgres/`). `pgadmin` is always on that pass.
fn plan(args: &RunArgs) -> Vec<(&'static str, bool)> {
    let postgres = args.store == "postgres";
    let asked = |s: &str| args.scenarios.iter().any(|a| a.trim() == s);
    let mut plan: Vec<(&'static str, bool)> = SCENARIOS
        .iter()
        .filter(|s| {
            if !args.scenarios.is_empty() {
                asked(s)
            } else if postgres {
                PG_SCENARIOS.contains(s)
            } else {
                // Without the gateway (`--servers baseline`) there is nothing to run on PostgreSQL.
                **s != "pgadmin" || args.servers.iter().any(|x| x.trim() == "gateway")
            }
        })
        .map(|s| (*s, postgres || *s == "pgadmin"))
        .collect();
    // The harness check also drives the gateway on PostgreSQL through scenarios 1 and 2, so
    // that path cannot rot either.
    if args.tiny && !postgres && args.scenarios.is_empty() {
        plan.push(("memory", true));
        plan.push(("connect", true));
    }
    plan
}

/// Runs the selected scenarios; returns the process exit code.
pub async fn run(args: RunArgs) -> i32 {
    let tiny = args.tiny;
    let runs = args.runs.unwrap_or(if tiny { 1 } else { 3 }).max(1);
    let out_dir = args.out_dir.clone().unwrap_or_else(|| {
        PathBuf::from(if tiny {
            "target/bench-tiny"
        } else {
            "bench/results"
        })
    });
    let pg_dir = out_dir.join(report::PG_DIR);
    // The root BENCHMARKS.md only describes the default results directory.
    let doc = args.doc.clone().unwrap_or_else(|| {
        if tiny || args.out_dir.is_some() {
            out_dir.join("BENCHMARKS.md")
        } else {
            PathBuf::from("BENCHMARKS.md")
        }
    });
    let notes = std::fs::read_to_string(&args.notes).ok().filter(|_| !tiny);

    if !args.report_only {
        let bin_dir = args.bin_dir.clone().unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("target/release"))
        });
        let servers: Vec<Kind> = args
            .servers
            .iter()
            .filter_map(|s| match s.trim() {
                "gateway" => Some(Kind::Gateway),
                "baseline" => Some(Kind::Baseline),
                other => {
                    eprintln!("[benchrun] unknown server {other:?} ignored");
                    None
                }
            })
            .collect();
        let plan = plan(&args);
        if let Some(unknown) = args
            .scenarios
            .iter()
            .find(|a| !SCENARIOS.contains(&a.trim()))
        {
            eprintln!("[benchrun] unknown scenario {unknown:?}");
            return 1;
        }
        // Measure one binary throughout, even if the tree is rebuilt while the runs go on.
        let gateway_src = args
            .gateway_bin
            .clone()
            .unwrap_or_else(|| bin_dir.join("chat-gateway"));
        let gateway_bin = args.work_dir.join("chat-gateway-under-test");
        if servers.contains(&Kind::Gateway) || plan.iter().any(|(_, pg)| *pg) {
            let copied = std::fs::create_dir_all(&args.work_dir)
                .and_then(|_| std::fs::copy(&gateway_src, &gateway_bin));
            if let Err(e) = copied {
                eprintln!("[benchrun] cannot copy {}: {e}", gateway_src.display());
                return 1;
            }
        }
        let env = ServerEnv {
            gateway_bin,
            baseline_read_buffer: args.baseline_read_buffer,
            baseline_bin: bin_dir.join("baseline"),
            work_dir: args.work_dir.clone(),
            api_key: args.api_key.clone(),
            secret: args.secret.clone(),
            max_connections: 19_500,
            pg_url: args.pg_url.clone().unwrap_or_else(crate::pgdb::default_url),
        };
        let mut sizes = if tiny { Sizes::tiny() } else { Sizes::full() };
        sizes.sled_flush = args.sled_flush.clone();
        if !args.query_users.is_empty() {
            sizes.query_users = args.query_users.clone();
        }
        // Copied too, like the gateway under test.
        let before = match &args.before_bin {
            None => None,
            Some(src) => {
                let bin = args.work_dir.join("chat-gateway-before");
                let copied =
                    std::fs::create_dir_all(&args.work_dir).and_then(|_| std::fs::copy(src, &bin));
                if let Err(e) = copied {
                    eprintln!("[benchrun] cannot copy {}: {e}", src.display());
                    return 1;
                }
                Some((bin, args.before_label.clone()))
            }
        };
        let mut ctx = Ctx::new(
            env,
            bin_dir.join("loadgen"),
            bin_dir.join("sledbase"),
            bin_dir.join("pgbase"),
            sizes,
            runs,
            args.procs,
            args.concurrency,
            servers.clone(),
        );
        if tiny {
            // A harness check starts clean so that nothing stale is reported or checked.
            for name in report::FILES {
                let _ = std::fs::remove_file(out_dir.join(name));
                let _ = std::fs::remove_file(pg_dir.join(name));
            }
            let _ = std::fs::remove_file(pg_dir.join(report::PG_ADMIN_FILE));
        }
        let measured_commit = meta(runs, tiny).commit;
        let mut failed = false;
        let mut ran = Vec::new();
        for &(scenario, pg) in &plan {
            ctx.meta = meta(runs, tiny);
            ctx.meta.baseline_read_buffer = args.baseline_read_buffer;
            // The tree as it was when the gateway binary was copied, not as it is now.
            ctx.meta.commit = measured_commit.clone();
            // The PostgreSQL pass compares the gateway on both stores, nothing else.
            ctx.servers = if pg {
                vec![Kind::Gateway, Kind::GatewayPg]
            } else {
                servers.clone()
            };
            let dir = if pg { &pg_dir } else { &out_dir };
            eprintln!(
                "[benchrun] scenario {scenario}{}",
                if pg { " (PostgreSQL)" } else { "" }
            );
            ran.push((scenario, pg));
            let saved = match scenario {
                "memory" => scenarios::idle_memory(&ctx)
                    .await
                    .map(|r| report::save(dir, report::FILES[0], &r)),
                "connect" => scenarios::connect_rate(&ctx)
                    .await
                    .map(|r| report::save(dir, report::FILES[1], &r)),
                "pgadmin" => scenarios::pg_admin_writes(&ctx)
                    .await
                    .map(|r| report::save(dir, report::PG_ADMIN_FILE, &r)),
                _ if pg => {
                    eprintln!("[benchrun] {scenario} does not run with --store postgres; skipped");
                    continue;
                }
                "admin" => scenarios::admin_writes(&ctx)
                    .await
                    .map(|r| report::save(dir, report::FILES[2], &r)),
                "events" if ctx.servers.contains(&Kind::Gateway) => scenarios::event_latency(&ctx)
                    .await
                    .map(|r| report::save(dir, report::FILES[3], &r)),
                "events" => {
                    eprintln!("[benchrun] events needs the gateway; skipped");
                    continue;
                }
                "query" if ctx.servers.contains(&Kind::Gateway) => {
                    query::user_queries(&ctx, before.clone())
                        .await
                        .map(|r| report::save(dir, report::FILES[5], &r))
                }
                "query" => {
                    eprintln!("[benchrun] query needs the gateway; skipped");
                    continue;
                }
                _ => scenarios::idle_cpu(&ctx)
                    .await
                    .map(|r| report::save(dir, report::FILES[4], &r)),
            };
            match saved {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    eprintln!("[benchrun] cannot write results: {e}");
                    failed = true;
                }
                Err(e) => {
                    eprintln!("[benchrun] scenario {scenario} failed: {e}");
                    failed = true;
                }
            }
            if let Err(e) = report::write_report(&out_dir, &doc, notes.as_deref()) {
                eprintln!("[benchrun] cannot write report: {e}");
                failed = true;
            }
        }
        let found = problems(&out_dir, &ran);
        for p in &found {
            eprintln!("[benchrun] problem: {p}");
        }
        if failed || (tiny && !found.is_empty()) {
            return 1;
        }
    } else if let Err(e) = report::write_report(&out_dir, &doc, notes.as_deref()) {
        eprintln!("[benchrun] cannot write report: {e}");
        return 1;
    }
    eprintln!(
        "[benchrun] results in {}, report {}",
        out_dir.display(),
        doc.display()
    );
    0
}

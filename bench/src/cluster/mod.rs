//! Cross-node latency on a PostgreSQL cluster (`clusterbench`): several nodes on one fresh
//! database, thousands of idle clients on each, then admin writes on node A timed to what a
//! socket on node B sees, beside the same writes within one node and the database's own commit
//! time, all in one run.
//!
//! - `nodes`  — the fresh database and the gateway nodes sharing it.
//! - `commit` — commit latency straight through the PostgreSQL client.

pub mod commit;
pub mod nodes;

use crate::events::EventReport;
use crate::loadgen::ConnectArgs;
use crate::run::procs::{connect_and_hold, run_json, Held};
use crate::run::server::{Kind, Server, ServerEnv};
use clap::Parser;
use commit::{measure_commits, CommitReport};
use nodes::{ClusterEnv, FreshDb, Node};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Options of `clusterbench`.
#[derive(Parser, Debug, Clone)]
#[command(about = "Cross-node event latency on a PostgreSQL cluster, with commit time beside it")]
pub struct ClusterArgs {
    /// The `chat-gateway` binary the nodes run.
    #[arg(long, default_value = "target/release/chat-gateway")]
    pub gateway_bin: PathBuf,
    /// The `loadgen` binary (default: next to this one).
    #[arg(long)]
    pub loadgen_bin: Option<PathBuf>,
    /// PostgreSQL server to create the run's database on (any database of it; the run creates
    /// its own and drops it at the end).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub postgres_url: String,
    /// Nodes in the cluster (at least 2: writes go to the first, sockets sit on the second).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Idle client connections held on each node.
    #[arg(long, default_value_t = 5000)]
    pub idle_per_node: usize,
    /// loadgen processes per node for the idle connections.
    #[arg(long, default_value_t = 2)]
    pub procs_per_node: usize,
    /// Handshakes in flight per loadgen process.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Watched users the partial updates go to, round robin.
    #[arg(long, default_value_t = 50)]
    pub users: usize,
    /// Partial updates timed, cross-node and again within one node.
    #[arg(long, default_value_t = 200)]
    pub updates: usize,
    /// Deactivations timed, cross-node and again within one node.
    #[arg(long, default_value_t = 200)]
    pub deactivations: usize,
    /// Commits of each kind timed straight through the PostgreSQL client.
    #[arg(long, default_value_t = 200)]
    pub commits: usize,
    /// `store.postgres_pool_size` of each node.
    #[arg(long, default_value_t = 8)]
    pub pool_size: usize,
    /// Also hold the same idle load on one sled node, for its memory per connection.
    #[arg(long)]
    pub sled: bool,
    /// Seconds to let a node settle before reading its memory.
    #[arg(long, default_value_t = 3.0)]
    pub settle_secs: f64,
    /// Scratch folder for node logs and data (default: a new folder under the temp dir).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Memory of one node before and after its idle clients connected.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeMemory {
    /// `"postgres"` or `"sled"`.
    pub store: String,
    /// Idle connections open when `after_kib` was read.
    pub connected: usize,
    /// Failed connects.
    pub failed: usize,
    /// Seconds the connect phase took.
    pub connect_secs: f64,
    /// RSS before the idle clients, KiB.
    pub before_kib: u64,
    /// RSS with them open, KiB.
    pub after_kib: u64,
    /// `(after - before) / connected`, bytes.
    pub bytes_per_conn: f64,
}

/// The JSON report of one `clusterbench` run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterReport {
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Idle connections asked for on each node.
    pub idle_per_node: usize,
    /// 1-minute load average at the start and the end of the run.
    pub loadavg: (f64, f64),
    /// Each PostgreSQL node's memory, node A first.
    pub memory: Vec<NodeMemory>,
    /// The sled node's memory under the same idle load, with `--sled`.
    pub sled_memory: Option<NodeMemory>,
    /// Writes on node A, sockets on node B.
    pub cross_node: EventReport,
    /// Writes on node A, sockets on node A: the same path without the hop between nodes.
    pub same_node: EventReport,
    /// The database's own commit time, measured between the two event runs.
    pub commits: CommitReport,
    /// Idle connections dropped while held (all nodes).
    pub idle_dropped: u64,
    /// Wall time of the whole run, seconds.
    pub total_secs: f64,
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("[clusterbench] {}", msg.as_ref());
}

fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn memory(store: &str, held: &Held, connect_secs: f64, before: u64, after: u64) -> NodeMemory {
    NodeMemory {
        store: store.into(),
        connected: held.connected,
        failed: held.failed,
        connect_secs,
        before_kib: before,
        after_kib: after,
        bytes_per_conn: (after.saturating_sub(before) * 1024) as f64 / held.connected.max(1) as f64,
    }
}

/// Idle connections `<prefix><i>` to `addr`, from their own block of loopback addresses.
fn idle_args(
    args: &ClusterArgs,
    addr: std::net::SocketAddr,
    block: u8,
    prefix: &str,
) -> ConnectArgs {
    ConnectArgs {
        addr,
        api_key: API_KEY.into(),
        secret: SECRET.into(),
        conns: args.idle_per_node,
        user_prefix: prefix.into(),
        first_index: 0,
        concurrency: args.concurrency,
        sources_first: Ipv4Addr::new(127, 0, block, 2),
        sources_count: 8,
        timeout_secs: 60,
        hold_secs: 0,
        wait_stdin: true,
        ping_secs: 0,
        procs: args.procs_per_node.max(1),
        reconnect: false,
        raw: false,
    }
}

const API_KEY: &str = "bench-key";
const SECRET: &str = "bench-secret-of-the-cluster-run";

/// `loadgen events` with writes sent to `admin` and the watched sockets on `public`.
async fn events(
    loadgen: &Path,
    args: &ClusterArgs,
    public: std::net::SocketAddr,
    admin: &str,
    prefix: &str,
) -> Result<EventReport, String> {
    let argv = vec![
        "events".to_owned(),
        format!("--addr={public}"),
        format!("--admin={admin}"),
        format!("--api-key={API_KEY}"),
        format!("--secret={SECRET}"),
        format!("--users={}", args.users),
        format!("--updates={}", args.updates),
        format!("--deactivations={}", args.deactivations),
        format!("--user-prefix={prefix}"),
    ];
    run_json(loadgen, &argv).await
}

/// Runs the whole benchmark: database, nodes, idle load, the timed writes, clean-up.
pub async fn run_cluster(args: &ClusterArgs) -> Result<ClusterReport, String> {
    if args.nodes < 2 {
        return Err("--nodes must be at least 2".into());
    }
    let loadgen = match &args.loadgen_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("loadgen"),
    };
    let work_dir = args.work_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("chat-bench-cluster-{}", std::process::id()))
    });
    let started = Instant::now();
    let db = FreshDb::create(&args.postgres_url).await?;
    progress(format!(
        "fresh database created; scratch in {}",
        work_dir.display()
    ));
    let env = ClusterEnv {
        gateway_bin: args.gateway_bin.clone(),
        work_dir: work_dir.clone(),
        db_url: db.url.clone(),
        api_key: API_KEY.into(),
        secret: SECRET.into(),
        pool_size: args.pool_size,
        max_connections: (args.idle_per_node + 2 * (args.users + args.deactivations) + 1000)
            .min(19_500),
    };
    let result = measure(args, &env, &loadgen).await;
    if let Err(e) = db.drop_now().await {
        progress(format!("could not drop the run's database: {e}"));
    }
    let mut report = result?;
    if args.sled {
        report.sled_memory = Some(sled_memory(args, &env, &loadgen).await?);
    }
    let _ = std::fs::remove_dir_all(&work_dir);
    report.loadavg.1 = loadavg();
    report.total_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

async fn measure(
    args: &ClusterArgs,
    env: &ClusterEnv,
    loadgen: &Path,
) -> Result<ClusterReport, String> {
    let mut report = ClusterReport {
        nodes: args.nodes,
        idle_per_node: args.idle_per_node,
        loadavg: (loadavg(), 0.0),
        ..Default::default()
    };
    let mut nodes = Vec::new();
    for i in 0..args.nodes {
        match Node::start(env, i).await {
            Ok(node) => nodes.push(node),
            Err(e) => {
                for node in nodes {
                    node.stop().await;
                }
                return Err(e);
            }
        }
    }
    progress(format!("{} nodes serving", nodes.len()));
    let outcome = measure_on(args, &nodes, loadgen, &env.db_url, &mut report).await;
    for node in nodes {
        node.stop().await;
    }
    outcome.map(|()| report)
}

async fn measure_on(
    args: &ClusterArgs,
    nodes: &[Node],
    loadgen: &Path,
    db_url: &str,
    report: &mut ClusterReport,
) -> Result<(), String> {
    let settle = || tokio::time::sleep(Duration::from_secs_f64(args.settle_secs));
    settle().await;
    let mut held = Vec::new();
    for node in nodes {
        let before = node.rss_kib();
        let t0 = Instant::now();
        let block = 20 + node.index as u8;
        let prefix = format!("n{}i", node.index);
        let h = connect_and_hold(loadgen, &idle_args(args, node.public, block, &prefix)).await?;
        let connect_secs = t0.elapsed().as_secs_f64();
        settle().await;
        let m = memory("postgres", &h, connect_secs, before, node.rss_kib());
        progress(format!(
            "node {}: {} idle ({} failed) in {:.1} s; RSS {} → {} KiB, {:.0} B/conn",
            node.index,
            m.connected,
            m.failed,
            connect_secs,
            m.before_kib,
            m.after_kib,
            m.bytes_per_conn
        ));
        report.memory.push(m);
        held.push(h);
    }

    let (a, b) = (&nodes[0], &nodes[1]);
    let cross = events(loadgen, args, b.public, &a.admin, "x").await;
    if let Ok(r) = &cross {
        progress(format!(
            "A→B: update→event p50 {:.2} p99 {:.2} ms; deactivate→close p50 {:.2} p99 {:.2} ms",
            r.update_event.p50_ms,
            r.update_event.p99_ms,
            r.deactivate_close.p50_ms,
            r.deactivate_close.p99_ms
        ));
    }
    let commits = measure_commits(db_url, args.commits).await;
    let same = events(loadgen, args, a.public, &a.admin, "s").await;
    if let Ok(r) = &same {
        progress(format!(
            "A→A: update→event p50 {:.2} p99 {:.2} ms; deactivate→close p50 {:.2} p99 {:.2} ms",
            r.update_event.p50_ms,
            r.update_event.p99_ms,
            r.deactivate_close.p50_ms,
            r.deactivate_close.p99_ms
        ));
    }
    for h in held {
        report.idle_dropped += h.finish().await?.dropped_during_hold;
    }
    report.cross_node = cross?;
    report.same_node = same?;
    report.commits = commits?;
    Ok(())
}

/// One sled node under the same idle load: its RSS per connection.
async fn sled_memory(
    args: &ClusterArgs,
    env: &ClusterEnv,
    loadgen: &Path,
) -> Result<NodeMemory, String> {
    let server_env = ServerEnv {
        gateway_bin: env.gateway_bin.clone(),
        baseline_bin: PathBuf::new(),
        work_dir: env.work_dir.join("sled"),
        api_key: API_KEY.into(),
        secret: SECRET.into(),
        max_connections: env.max_connections,
        baseline_read_buffer: 128,
        // The sled node needs no database.
        pg_url: String::new(),
    };
    let server = Server::start(&server_env, Kind::Gateway, 30).await?;
    tokio::time::sleep(Duration::from_secs_f64(args.settle_secs)).await;
    let before = server.rss_kib();
    let t0 = Instant::now();
    let held = connect_and_hold(loadgen, &idle_args(args, server.public, 40, "si")).await;
    let held = match held {
        Ok(h) => h,
        Err(e) => {
            server.stop().await;
            return Err(e);
        }
    };
    let connect_secs = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(args.settle_secs)).await;
    let m = memory("sled", &held, connect_secs, before, server.rss_kib());
    let _ = held.finish().await;
    server.stop().await;
    progress(format!(
        "sled node: {} idle in {:.1} s; RSS {} → {} KiB, {:.0} B/conn",
        m.connected, connect_secs, m.before_kib, m.after_kib, m.bytes_per_conn
    ));
    Ok(m)
}

/// The report as markdown tables, for BENCHMARKS.md.
pub fn markdown(r: &ClusterReport) -> String {
    let mut s = String::new();
    let row = |s: &mut String, what: &str, l: &crate::stats::LatencySummary| {
        let _ = writeln!(
            s,
            "| {what} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            l.count, l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms
        );
    };
    let _ = writeln!(s, "| ms | samples | p50 | p95 | p99 | max |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    row(
        &mut s,
        "A→B: `PATCH` on A → `user.updated` on B",
        &r.cross_node.update_event,
    );
    row(
        &mut s,
        "A→B: its HTTP answer (after COMMIT)",
        &r.cross_node.update_http,
    );
    row(
        &mut s,
        "A→B: deactivate on A → socket closed on B",
        &r.cross_node.deactivate_close,
    );
    row(
        &mut s,
        "A→B: its HTTP answer",
        &r.cross_node.deactivate_http,
    );
    row(
        &mut s,
        "A→A: `PATCH` on A → `user.updated` on A",
        &r.same_node.update_event,
    );
    row(&mut s, "A→A: its HTTP answer", &r.same_node.update_http);
    row(
        &mut s,
        "A→A: deactivate on A → socket closed on A",
        &r.same_node.deactivate_close,
    );
    row(&mut s, "A→A: its HTTP answer", &r.same_node.deactivate_http);
    row(
        &mut s,
        "PostgreSQL: one-row INSERT, committed",
        &r.commits.insert,
    );
    row(
        &mut s,
        "PostgreSQL: INSERT + NOTIFY, committed",
        &r.commits.insert_notify,
    );
    let _ = writeln!(
        s,
        "\nMissed: A→B {} updates, {} deactivations; A→A {} + {}. Idle connections dropped: {}.",
        r.cross_node.update_missed,
        r.cross_node.deactivate_missed,
        r.same_node.update_missed,
        r.same_node.deactivate_missed,
        r.idle_dropped
    );
    let _ = writeln!(
        s,
        "\n| node | store | idle conns | connect s | RSS before KiB | RSS after KiB | B/conn |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|");
    let all = r
        .memory
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("{}", (b'A' + i as u8) as char), m));
    for (name, m) in all.chain(r.sled_memory.iter().map(|m| ("single".to_owned(), m))) {
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {:.1} | {} | {} | {:.0} |",
            m.store, m.connected, m.connect_secs, m.before_kib, m.after_kib, m.bytes_per_conn
        );
    }
    let _ = writeln!(
        s,
        "\nLoad average {:.1} at the start, {:.1} at the end; {:.0} s in all.",
        r.loadavg.0, r.loadavg.1, r.total_secs
    );
    s
}

//! Many idle client connections: the connect phase, the hold, child-process fan-out and the report.
//!
//! A process can hold fewer than 20,000 descriptors, so `--procs P` re-runs this binary as P
//! children, each with a share of the users and of the source addresses, and merges their reports.
//! Children and parents talk over stdout lines: `READY {...}` once the connect phase is over, then
//! the JSON report when the hold ends (after `--hold-secs`, or when stdin closes with `--wait-stdin`).

use crate::auth::TokenMinter;
use crate::client::{self, ConnectRequest, Target};
use crate::stats::LatencySummary;
use crate::timefmt::epoch_micros;
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;

/// Longest hold when only stdin EOF would end it: every run stops by itself.
const MAX_HOLD: Duration = Duration::from_secs(3600);

/// Options of `loadgen connect`.
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Public listener address (host:port).
    #[arg(long, default_value = "127.0.0.1:4600")]
    pub addr: SocketAddr,
    /// App API key.
    #[arg(long, default_value = "bench-key")]
    pub api_key: String,
    /// App API secret (signs the user tokens).
    #[arg(long, default_value = "bench-secret")]
    pub secret: String,
    /// Number of connections (one user each).
    #[arg(long, default_value_t = 1000)]
    pub conns: usize,
    /// User ids are `<prefix><index>`.
    #[arg(long, default_value = "u")]
    pub user_prefix: String,
    /// Index of the first user.
    #[arg(long, default_value_t = 0)]
    pub first_index: usize,
    /// Handshakes in flight at once, per process.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// First loopback source address the client sockets bind to.
    #[arg(long, default_value = "127.0.0.2")]
    pub sources_first: Ipv4Addr,
    /// How many consecutive source addresses to spread the sockets over (0: let the kernel pick).
    #[arg(long, default_value_t = 8)]
    pub sources_count: u32,
    /// Deadline for one connection's TCP connect + upgrade + first frame.
    #[arg(long, default_value_t = 30)]
    pub timeout_secs: u64,
    /// How long to keep the connections open after the connect phase.
    #[arg(long, default_value_t = 0)]
    pub hold_secs: u64,
    /// Hold until stdin closes (bounded by --hold-secs when non-zero, else by one hour).
    #[arg(long)]
    pub wait_stdin: bool,
    /// Send `[{"type":"health.check","client_id":...}]` on each connection every this many seconds (0: never).
    #[arg(long, default_value_t = 0)]
    pub ping_secs: u64,
    /// Spread the connections over this many child processes.
    #[arg(long, default_value_t = 1)]
    pub procs: usize,
    /// When a held connection drops, reconnect as an SDK does (backoff from 250 ms with jitter,
    /// doubling up to 5 s) until it is back or the hold ends.
    #[arg(long)]
    pub reconnect: bool,
    /// Include every latency sample in the report (used between parent and children).
    #[arg(long)]
    pub raw: bool,
}

impl ConnectArgs {
    /// The command line that reproduces these options (after the `connect` subcommand).
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--addr={}", self.addr),
            format!("--api-key={}", self.api_key),
            format!("--secret={}", self.secret),
            format!("--conns={}", self.conns),
            format!("--user-prefix={}", self.user_prefix),
            format!("--first-index={}", self.first_index),
            format!("--concurrency={}", self.concurrency),
            format!("--sources-first={}", self.sources_first),
            format!("--sources-count={}", self.sources_count),
            format!("--timeout-secs={}", self.timeout_secs),
            format!("--hold-secs={}", self.hold_secs),
            format!("--ping-secs={}", self.ping_secs),
            format!("--procs={}", self.procs),
        ];
        if self.wait_stdin {
            args.push("--wait-stdin".into());
        }
        if self.reconnect {
            args.push("--reconnect".into());
        }
        if self.raw {
            args.push("--raw".into());
        }
        args
    }

    fn sources(&self) -> Vec<IpAddr> {
        let first = u32::from(self.sources_first);
        (0..self.sources_count)
            .map(|i| IpAddr::V4(Ipv4Addr::from(first + i)))
            .collect()
    }
}

/// The JSON report of `loadgen connect`, per process or merged.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectReport {
    /// Always `"connect"`.
    pub mode: String,
    /// Connections asked for.
    pub requested: usize,
    /// Connections whose first frame was a `health.check`.
    pub connected: usize,
    /// Attempts that failed.
    pub failed: usize,
    /// Failures grouped by kind.
    pub failures: BTreeMap<String, usize>,
    /// The first failure in full, if any.
    pub first_error: Option<String>,
    /// Processes the connections were spread over.
    pub procs: usize,
    /// Handshakes in flight at once, per process.
    pub concurrency: usize,
    /// Wall time from the first attempt to the last outcome, in seconds.
    pub connect_secs: f64,
    /// Connected per second over `connect_secs`.
    pub connect_rate_per_s: f64,
    /// Upgrade request sent → first text frame received.
    pub upgrade_latency: LatencySummary,
    /// TCP connect time.
    pub tcp_latency: LatencySummary,
    /// How long the connections were held.
    pub hold_secs: f64,
    /// Connections the server closed during the hold.
    pub dropped_during_hold: u64,
    /// Text frames received during the hold (server health checks, replies).
    pub frames_during_hold: u64,
    /// With `--reconnect`: dropped connections that connected again during the hold.
    #[serde(default)]
    pub reconnects: u64,
    /// With `--reconnect`: reconnect attempts that failed (each is retried).
    #[serde(default)]
    pub reconnect_failures: u64,
    /// Epoch microseconds of the first attempt.
    pub start_epoch_us: u64,
    /// Epoch microseconds of the last outcome.
    pub end_epoch_us: u64,
    /// Raw upgrade latencies in µs (only with `--raw`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_us: Option<Vec<u64>>,
    /// Raw TCP connect latencies in µs (only with `--raw`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_us: Option<Vec<u64>>,
}

/// Counters shared by the held connections.
#[derive(Default)]
struct HoldCounters {
    dropped: AtomicU64,
    frames: AtomicU64,
    reconnects: AtomicU64,
    reconnect_failures: AtomicU64,
}

/// What a held connection needs to dial again after a drop (`--reconnect`).
struct Redial {
    target: Arc<Target>,
    request: ConnectRequest,
    source: Option<IpAddr>,
    timeout: Duration,
}

/// Connections that passed the connect phase and are now held open.
pub struct Holding {
    report: ConnectReport,
    upgrade_us: Vec<u64>,
    tcp_us: Vec<u64>,
    stop_tx: watch::Sender<bool>,
    counters: Arc<HoldCounters>,
    raw: bool,
}

enum Outcome {
    Connected { upgrade_us: u64, tcp_us: u64 },
    Failed(client::ConnectError),
}

/// Runs the connect phase in this process; the connections stay open in the returned value.
pub async fn connect_phase(args: &ConnectArgs) -> Holding {
    let target = Target {
        addr: args.addr,
        api_key: args.api_key.clone(),
        minter: TokenMinter::new(&args.secret),
    };
    // Tokens and URLs are built before the clock starts.
    let requests: Vec<ConnectRequest> = (0..args.conns)
        .map(|i| {
            let index = args.first_index + i;
            target.request(&format!("{}{index}", args.user_prefix), index as u64)
        })
        .collect();
    let sources = args.sources();
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    let ping = (args.ping_secs > 0).then(|| Duration::from_secs(args.ping_secs));
    let semaphore = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let (outcome_tx, mut outcome_rx) = mpsc::channel::<Outcome>(1024);
    let (stop_tx, stop_rx) = watch::channel(false);
    let counters = Arc::new(HoldCounters::default());
    let target = Arc::new(target);
    let args_reconnect = args.reconnect;

    let start = std::time::Instant::now();
    let start_epoch_us = epoch_micros();
    let total = requests.len();
    let driver = {
        let target = target.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            for (i, request) in requests.into_iter().enumerate() {
                let permit = semaphore
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("semaphore never closed");
                let source = (!sources.is_empty()).then(|| sources[i % sources.len()]);
                let target = target.clone();
                let outcome_tx = outcome_tx.clone();
                let stop_rx = stop_rx.clone();
                let counters = counters.clone();
                let reconnect = args_reconnect;
                tokio::spawn(async move {
                    let result = client::connect(&target, &request, source, timeout).await;
                    drop(permit);
                    match result {
                        Ok(connected) => {
                            let _ = outcome_tx
                                .send(Outcome::Connected {
                                    upgrade_us: connected.upgrade_us,
                                    tcp_us: connected.tcp_us,
                                })
                                .await;
                            drop(outcome_tx);
                            let request_user = request.user_id.clone();
                            let redial = reconnect.then(|| Redial {
                                target: target.clone(),
                                request,
                                source,
                                timeout,
                            });
                            hold_connection(
                                connected.socket,
                                &request_user,
                                redial,
                                stop_rx,
                                ping,
                                counters,
                            )
                            .await;
                        }
                        Err(e) => {
                            let _ = outcome_tx.send(Outcome::Failed(e)).await;
                        }
                    }
                });
            }
        })
    };

    let mut report = ConnectReport {
        mode: "connect".into(),
        requested: total,
        procs: 1,
        concurrency: args.concurrency,
        start_epoch_us,
        ..Default::default()
    };
    let mut upgrade_us = Vec::with_capacity(total);
    let mut tcp_us = Vec::with_capacity(total);
    for _ in 0..total {
        match outcome_rx.recv().await {
            Some(Outcome::Connected {
                upgrade_us: up,
                tcp_us: tcp,
            }) => {
                report.connected += 1;
                upgrade_us.push(up);
                tcp_us.push(tcp);
            }
            Some(Outcome::Failed(e)) => {
                report.failed += 1;
                *report.failures.entry(e.kind()).or_default() += 1;
                report.first_error.get_or_insert_with(|| e.to_string());
            }
            None => break,
        }
    }
    let _ = driver.await;
    let elapsed = start.elapsed().as_secs_f64();
    report.end_epoch_us = epoch_micros();
    report.connect_secs = elapsed;
    report.connect_rate_per_s = rate(report.connected, elapsed);
    report.upgrade_latency = LatencySummary::from_micros(&mut upgrade_us);
    report.tcp_latency = LatencySummary::from_micros(&mut tcp_us);
    Holding {
        report,
        upgrade_us,
        tcp_us,
        stop_tx,
        counters,
        raw: args.raw,
    }
}

impl Holding {
    /// The `READY` line: what the connect phase achieved.
    pub fn ready_line(&self) -> String {
        ready_line(self.report.connected, self.report.failed)
    }

    /// Holds the connections as the options say, then closes them and returns the report.
    pub async fn hold_and_finish(mut self, args: &ConnectArgs) -> ConnectReport {
        let held = std::time::Instant::now();
        wait_hold(args).await;
        // Counters are read before the stop so that closes we cause are not counted as drops.
        self.report.dropped_during_hold = self.counters.dropped.load(Ordering::Relaxed);
        self.report.frames_during_hold = self.counters.frames.load(Ordering::Relaxed);
        self.report.reconnects = self.counters.reconnects.load(Ordering::Relaxed);
        self.report.reconnect_failures = self.counters.reconnect_failures.load(Ordering::Relaxed);
        self.report.hold_secs = held.elapsed().as_secs_f64();
        let _ = self.stop_tx.send(true);
        if self.raw {
            self.report.upgrade_us = Some(self.upgrade_us);
            self.report.tcp_us = Some(self.tcp_us);
        }
        self.report
    }
}

fn ready_line(connected: usize, failed: usize) -> String {
    format!(
        "READY {}",
        serde_json::json!({"connected": connected, "failed": failed})
    )
}

/// Waits out the hold: `--hold-secs`, or stdin EOF with `--wait-stdin`.
async fn wait_hold(args: &ConnectArgs) {
    let limit = match (args.hold_secs, args.wait_stdin) {
        (0, false) => return,
        (0, true) => MAX_HOLD,
        (secs, _) => Duration::from_secs(secs),
    };
    if args.wait_stdin {
        let _ = tokio::time::timeout(limit, stdin_eof()).await;
    } else {
        tokio::time::sleep(limit).await;
    }
}

async fn stdin_eof() {
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 256];
    while let Ok(n) = stdin.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// Keeps one connection open: reads (and counts) frames, optionally pings, until told to stop.
/// With `redial`, a dropped connection is dialled again until it is back or the hold ends.
async fn hold_connection(
    mut socket: client::ClientSocket,
    user_id: &str,
    redial: Option<Redial>,
    mut stop_rx: watch::Receiver<bool>,
    ping: Option<Duration>,
    counters: Arc<HoldCounters>,
) {
    let ping_frame = format!(r#"[{{"type":"health.check","client_id":"{user_id}--bench"}}]"#);
    loop {
        if !hold_until_drop(&mut socket, &ping_frame, &mut stop_rx, ping, &counters).await {
            return;
        }
        counters.dropped.fetch_add(1, Ordering::Relaxed);
        let Some(redial) = &redial else { return };
        match dial_again(redial, &mut stop_rx, &counters).await {
            Some(again) => socket = again,
            None => return,
        }
    }
}

/// Reads, pings; returns true when the connection dropped, false when told to stop.
async fn hold_until_drop(
    socket: &mut client::ClientSocket,
    ping_frame: &str,
    stop_rx: &mut watch::Receiver<bool>,
    ping: Option<Duration>,
    counters: &HoldCounters,
) -> bool {
    let period = ping.unwrap_or(MAX_HOLD);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            _ = stop_rx.changed() => return false,
            frame = socket.next() => match frame {
                Some(Ok(Message::Text(_))) => {
                    counters.frames.fetch_add(1, Ordering::Relaxed);
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return true,
                Some(Ok(_)) => {}
            },
            _ = ticker.tick(), if ping.is_some() => {
                if socket.send(Message::text(ping_frame)).await.is_err() {
                    return true;
                }
            }
        }
    }
}

/// Dials until connected (backoff from 250 ms, jittered per user, doubling up to 5 s); `None`
/// when told to stop first.
async fn dial_again(
    redial: &Redial,
    stop_rx: &mut watch::Receiver<bool>,
    counters: &HoldCounters,
) -> Option<client::ClientSocket> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    redial.request.user_id.hash(&mut hasher);
    let jitter = hasher.finish();
    let mut backoff_ms = 250u64;
    for attempt in 0u64.. {
        let wait = backoff_ms + (jitter.wrapping_add(attempt) % backoff_ms);
        tokio::select! {
            _ = stop_rx.changed() => return None,
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
        }
        let dialled = tokio::select! {
            _ = stop_rx.changed() => return None,
            r = client::connect(&redial.target, &redial.request, redial.source, redial.timeout) => r,
        };
        match dialled {
            Ok(connected) => {
                counters.reconnects.fetch_add(1, Ordering::Relaxed);
                return Some(connected.socket);
            }
            Err(_) => {
                counters.reconnect_failures.fetch_add(1, Ordering::Relaxed);
                backoff_ms = (backoff_ms * 2).min(5000);
            }
        }
    }
    None
}

fn rate(count: usize, secs: f64) -> f64 {
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

/// `loadgen connect`: runs in this process, or fans out to `--procs` children and merges.
/// `on_ready` receives the `READY` line when the connect phase is over.
pub async fn run_connect(args: &ConnectArgs, on_ready: impl FnOnce(&str)) -> ConnectReport {
    if args.procs <= 1 {
        let holding = connect_phase(args).await;
        on_ready(&holding.ready_line());
        return holding.hold_and_finish(args).await;
    }
    run_children(args, on_ready).await
}

async fn run_children(args: &ConnectArgs, on_ready: impl FnOnce(&str)) -> ConnectReport {
    let procs = args.procs.min(args.conns.max(1));
    let exe = std::env::current_exe().expect("own executable path");
    let per_proc_sources = (args.sources_count / procs as u32).max(1);
    let mut children = Vec::new();
    let mut first = args.first_index;
    for i in 0..procs {
        let share = args.conns / procs + usize::from(i < args.conns % procs);
        let mut child_args = args.clone();
        child_args.procs = 1;
        child_args.conns = share;
        child_args.first_index = first;
        child_args.raw = true;
        child_args.wait_stdin = true;
        if args.sources_count > 0 {
            let offset = (i as u32 * per_proc_sources) % args.sources_count;
            child_args.sources_first = Ipv4Addr::from(u32::from(args.sources_first) + offset);
            child_args.sources_count = per_proc_sources;
        }
        first += share;
        let mut child = tokio::process::Command::new(&exe)
            .arg("connect")
            .args(child_args.to_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn loadgen child");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        children.push((child, stdout));
    }

    // Connect phase: wait for every child's READY line.
    let (mut connected, mut failed) = (0usize, 0usize);
    for (_, lines) in children.iter_mut() {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.strip_prefix("READY ") {
                let ready: serde_json::Value = serde_json::from_str(rest).unwrap_or_default();
                connected += ready["connected"].as_u64().unwrap_or(0) as usize;
                failed += ready["failed"].as_u64().unwrap_or(0) as usize;
                break;
            }
        }
    }
    on_ready(&ready_line(connected, failed));

    let held = std::time::Instant::now();
    wait_hold(args).await;
    let hold_secs = held.elapsed().as_secs_f64();
    let mut reports = Vec::new();
    for (mut child, mut lines) in children {
        drop(child.stdin.take());
        let mut report = None;
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(parsed) = serde_json::from_str::<ConnectReport>(&line) {
                report = Some(parsed);
            }
        }
        let _ = child.wait().await;
        reports.push(report.unwrap_or_else(|| ConnectReport {
            mode: "connect".into(),
            first_error: Some("child process produced no report".into()),
            ..Default::default()
        }));
    }
    let mut merged = merge_reports(reports, args.raw);
    merged.requested = args.conns;
    merged.concurrency = args.concurrency;
    merged.hold_secs = hold_secs;
    merged
}

/// Merges per-process reports: counts add up, latencies are recomputed from the raw samples,
/// and the rate is taken over the span from the earliest start to the latest end.
pub fn merge_reports(reports: Vec<ConnectReport>, keep_raw: bool) -> ConnectReport {
    let mut merged = ConnectReport {
        mode: "connect".into(),
        procs: reports.len(),
        start_epoch_us: u64::MAX,
        ..Default::default()
    };
    let mut upgrade_us = Vec::new();
    let mut tcp_us = Vec::new();
    for report in reports {
        merged.requested += report.requested;
        merged.connected += report.connected;
        merged.failed += report.failed;
        for (kind, n) in report.failures {
            *merged.failures.entry(kind).or_default() += n;
        }
        if merged.first_error.is_none() {
            merged.first_error = report.first_error;
        }
        merged.dropped_during_hold += report.dropped_during_hold;
        merged.frames_during_hold += report.frames_during_hold;
        merged.reconnects += report.reconnects;
        merged.reconnect_failures += report.reconnect_failures;
        if report.start_epoch_us > 0 {
            merged.start_epoch_us = merged.start_epoch_us.min(report.start_epoch_us);
        }
        merged.end_epoch_us = merged.end_epoch_us.max(report.end_epoch_us);
        upgrade_us.extend(report.upgrade_us.unwrap_or_default());
        tcp_us.extend(report.tcp_us.unwrap_or_default());
    }
    if merged.start_epoch_us == u64::MAX {
        merged.start_epoch_us = 0;
    }
    merged.connect_secs =
        merged.end_epoch_us.saturating_sub(merged.start_epoch_us) as f64 / 1_000_000.0;
    merged.connect_rate_per_s = rate(merged.connected, merged.connect_secs);
    merged.upgrade_latency = LatencySummary::from_micros(&mut upgrade_us);
    merged.tcp_latency = LatencySummary::from_micros(&mut tcp_us);
    if keep_raw {
        merged.upgrade_us = Some(upgrade_us);
        merged.tcp_us = Some(tcp_us);
    }
    merged
}

//! The connection and write scenarios (1–5, and 7 on PostgreSQL; user queries, 6, are in
//! `query`). Each starts every server fresh per run, interleaves the servers run by run (so
//! slow drift of the machine hits both alike), and returns its results with medians.

use super::procs::{connect_and_hold, run_json};
use super::results::*;
use super::server::{Kind, Server, ServerEnv};
use crate::admin::AdminReport;
use crate::events::EventReport;
use crate::loadgen::{ConnectArgs, ConnectReport};
use crate::pgbase::PgReport;
use crate::pgdb::FreshDb;
use crate::procfs::clock_ticks_per_sec;
use crate::sledbase::SledReport;
use crate::stats::median;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

/// How big each scenario is.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Scenario 1: connection counts.
    pub memory: Vec<usize>,
    /// Seconds to let the server settle before reading RSS or CPU.
    pub settle_secs: f64,
    /// Health-check interval outside scenario 5 (the protocol's 30 s).
    pub health_check_secs: u64,
    /// Scenario 2: connects per pass.
    pub connect: usize,
    /// Scenario 3: users upserted.
    pub admin_users: usize,
    /// Scenario 3: partial updates.
    pub admin_partial: usize,
    /// Scenario 3: requests in flight.
    pub admin_concurrency: usize,
    /// Scenario 3: how sledbase makes writes durable (`async`, `serial`, `blocking`).
    pub sled_flush: String,
    /// Scenario 4: connections open in total.
    pub events_conns: usize,
    /// Scenario 4: watched users.
    pub events_users: usize,
    /// Scenario 4: updates timed.
    pub events_updates: usize,
    /// Scenario 4: deactivations timed.
    pub events_deactivations: usize,
    /// Scenario 4: custom user events timed.
    pub events_custom: usize,
    /// Scenario 5: connections.
    pub cpu_conns: usize,
    /// Scenario 5: measurement window, s.
    pub cpu_window_secs: f64,
    /// Scenario 5: the short health-check interval, s.
    pub cpu_health_check_secs: u64,
    /// Scenario 6: users per store.
    pub query_users: Vec<usize>,
    /// Scenario 6: timed queries of each kind (halved from 100,000 users).
    pub query_samples: usize,
    /// Scenario 6: users per team.
    pub query_team_size: usize,
}

impl Sizes {
    /// The full measurement.
    pub fn full() -> Self {
        Self {
            memory: vec![1_000, 5_000, 10_000, 19_000],
            settle_secs: 3.0,
            health_check_secs: 30,
            connect: 15_000,
            admin_users: 50_000,
            admin_partial: 10_000,
            admin_concurrency: 4,
            sled_flush: "async".into(),
            events_conns: 10_000,
            events_users: 50,
            events_updates: 500,
            events_deactivations: 100,
            events_custom: 500,
            cpu_conns: 19_000,
            cpu_window_secs: 30.0,
            cpu_health_check_secs: 5,
            query_users: vec![10_000, 100_000],
            query_samples: 30,
            query_team_size: 100,
        }
    }

    /// Just enough to prove the harness works end to end.
    pub fn tiny() -> Self {
        Self {
            memory: vec![20, 50],
            settle_secs: 0.5,
            health_check_secs: 30,
            connect: 100,
            admin_users: 300,
            admin_partial: 50,
            admin_concurrency: 2,
            sled_flush: "async".into(),
            events_conns: 30,
            events_users: 5,
            events_updates: 10,
            events_deactivations: 3,
            events_custom: 10,
            cpu_conns: 50,
            cpu_window_secs: 2.0,
            cpu_health_check_secs: 1,
            query_users: vec![300],
            query_samples: 3,
            query_team_size: 10,
        }
    }
}

/// Everything the scenarios share.
pub struct Ctx {
    /// Binaries and credentials for the servers.
    pub env: ServerEnv,
    /// `loadgen` binary.
    pub loadgen: PathBuf,
    /// `sledbase` binary.
    pub sledbase: PathBuf,
    /// `pgbase` binary.
    pub pgbase: PathBuf,
    /// Scenario sizes.
    pub sizes: Sizes,
    /// Runs per configuration.
    pub runs: usize,
    /// loadgen child processes per connect run.
    pub procs: usize,
    /// Handshakes in flight per loadgen process.
    pub concurrency: usize,
    /// Servers to measure.
    pub servers: Vec<Kind>,
    /// Filled in by the caller before each scenario.
    pub meta: Meta,
    source_block: AtomicU8,
}

impl Ctx {
    /// A context; `servers` decides which servers the connection scenarios measure.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        env: ServerEnv,
        loadgen: PathBuf,
        sledbase: PathBuf,
        pgbase: PathBuf,
        sizes: Sizes,
        runs: usize,
        procs: usize,
        concurrency: usize,
        servers: Vec<Kind>,
    ) -> Self {
        Self {
            env,
            loadgen,
            sledbase,
            pgbase,
            sizes,
            runs,
            procs,
            concurrency,
            servers,
            meta: Meta::default(),
            source_block: AtomicU8::new(0),
        }
    }

    /// loadgen options for `conns` users `<prefix><i>` against `server`. Each call gets its own
    /// block of source addresses (127.0.B.2–9), so sockets left in TIME_WAIT by an earlier run
    /// never collide with a new one.
    fn connect_args(&self, server: &Server, conns: usize, prefix: &str) -> ConnectArgs {
        let block = self.source_block.fetch_add(1, Ordering::Relaxed) % 250 + 1;
        ConnectArgs {
            addr: server.public,
            api_key: self.env.api_key.clone(),
            secret: self.env.secret.clone(),
            conns,
            user_prefix: prefix.into(),
            first_index: 0,
            concurrency: self.concurrency,
            sources_first: Ipv4Addr::new(127, 0, block, 2),
            sources_count: 8,
            timeout_secs: 30,
            hold_secs: 0,
            wait_stdin: false,
            ping_secs: 0,
            procs: self.procs.min(conns.max(1)),
            reconnect: false,
            raw: false,
        }
    }

    fn settle(&self) -> tokio::time::Sleep {
        tokio::time::sleep(Duration::from_secs_f64(self.sizes.settle_secs))
    }
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("[benchrun] {}", msg.as_ref());
}

/// Scenario 1: RSS per authenticated idle connection at each size.
pub async fn idle_memory(ctx: &Ctx) -> Result<MemoryResults, String> {
    let mut runs = Vec::new();
    for run in 1..=ctx.runs {
        for &conns in &ctx.sizes.memory {
            for &kind in &ctx.servers {
                let server = Server::start(&ctx.env, kind, ctx.sizes.health_check_secs).await?;
                ctx.settle().await;
                let rss_before_kib = server.rss_kib();
                let held =
                    connect_and_hold(&ctx.loadgen, &ctx.connect_args(&server, conns, "m")).await?;
                ctx.settle().await;
                let rss_after_kib = server.rss_kib();
                let server_fds = server.open_fds();
                let (connected, failed) = (held.connected, held.failed);
                let _ = held.finish().await;
                server.stop().await;
                let bytes_per_conn = if connected > 0 {
                    (rss_after_kib as f64 - rss_before_kib as f64) * 1024.0 / connected as f64
                } else {
                    f64::NAN
                };
                progress(format!(
                    "memory {} n={conns} run {run}: {connected} open, {failed} failed, {:.0} B/conn (RSS {} → {} KiB)",
                    kind.name(), bytes_per_conn, rss_before_kib, rss_after_kib
                ));
                runs.push(MemoryRun {
                    server: kind.name().into(),
                    conns,
                    run,
                    connected,
                    failed,
                    rss_before_kib,
                    rss_after_kib,
                    bytes_per_conn,
                    server_fds,
                });
            }
        }
    }
    let mut summary = Vec::new();
    for &kind in &ctx.servers {
        for &conns in &ctx.sizes.memory {
            let these: Vec<&MemoryRun> = runs
                .iter()
                .filter(|r| r.server == kind.name() && r.conns == conns)
                .collect();
            let med =
                |f: fn(&MemoryRun) -> f64| median(&these.iter().map(|r| f(r)).collect::<Vec<_>>());
            summary.push(MemorySummary {
                server: kind.name().into(),
                conns,
                runs: these.len(),
                bytes_per_conn: med(|r| r.bytes_per_conn),
                rss_before_kib: med(|r| r.rss_before_kib as f64),
                rss_after_kib: med(|r| r.rss_after_kib as f64),
            });
        }
    }
    Ok(MemoryResults {
        meta: ctx.meta.clone(),
        sizes: ctx.sizes.memory.clone(),
        settle_secs: ctx.sizes.settle_secs,
        health_check_secs: ctx.sizes.health_check_secs,
        runs,
        summary,
    })
}

async fn one_connect_pass(
    ctx: &Ctx,
    server: &Server,
    pass: &str,
    run: usize,
) -> Result<ConnectRun, String> {
    let args = ctx.connect_args(server, ctx.sizes.connect, "c");
    let mut cmd = vec!["connect".to_owned()];
    cmd.extend(args.to_args());
    let ticks_before = server.cpu_ticks();
    let report: ConnectReport = run_json(&ctx.loadgen, &cmd).await?;
    // Server CPU per connect: its own utime + stime, so other load on the machine barely moves it.
    let cpu_us = (server.cpu_ticks() - ticks_before) as f64 * 1e6 / clock_ticks_per_sec() as f64;
    progress(format!(
        "connect {} {pass} run {run}: {} open, {} failed, {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, server CPU {:.0} µs/conn",
        server.kind.name(),
        report.connected,
        report.failed,
        report.connect_rate_per_s,
        report.upgrade_latency.p50_ms,
        report.upgrade_latency.p99_ms,
        cpu_us / report.connected.max(1) as f64
    ));
    Ok(ConnectRun {
        server: server.kind.name().into(),
        pass: pass.into(),
        run,
        connected: report.connected,
        failed: report.failed,
        first_error: report.first_error,
        secs: report.connect_secs,
        rate_per_s: report.connect_rate_per_s,
        p50_ms: report.upgrade_latency.p50_ms,
        p99_ms: report.upgrade_latency.p99_ms,
        server_cpu_us_per_conn: cpu_us / report.connected.max(1) as f64,
    })
}

/// Scenario 2: connect rate, new users then the same users returning.
pub async fn connect_rate(ctx: &Ctx) -> Result<ConnectResults, String> {
    let mut runs = Vec::new();
    for run in 1..=ctx.runs {
        for &kind in &ctx.servers {
            let server = Server::start(&ctx.env, kind, ctx.sizes.health_check_secs).await?;
            let idle_fds = server.open_fds();
            runs.push(one_connect_pass(ctx, &server, "new", run).await?);
            // Let the server reap the closed sockets (and finish disconnect bookkeeping).
            server
                .wait_fds_at_most(idle_fds + 16, Duration::from_secs(60))
                .await;
            ctx.settle().await;
            runs.push(one_connect_pass(ctx, &server, "returning", run).await?);
            server.stop().await;
        }
    }
    let mut summary = Vec::new();
    for &kind in &ctx.servers {
        for pass in ["new", "returning"] {
            let these: Vec<&ConnectRun> = runs
                .iter()
                .filter(|r| r.server == kind.name() && r.pass == pass)
                .collect();
            let med =
                |f: fn(&ConnectRun) -> f64| median(&these.iter().map(|r| f(r)).collect::<Vec<_>>());
            summary.push(ConnectSummary {
                server: kind.name().into(),
                pass: pass.into(),
                runs: these.len(),
                rate_per_s: med(|r| r.rate_per_s),
                p50_ms: med(|r| r.p50_ms),
                p99_ms: med(|r| r.p99_ms),
                server_cpu_us_per_conn: med(|r| r.server_cpu_us_per_conn),
                failed: these.iter().map(|r| r.failed).sum(),
            });
        }
    }
    Ok(ConnectResults {
        meta: ctx.meta.clone(),
        conns: ctx.sizes.connect,
        procs: ctx.procs,
        concurrency: ctx.concurrency,
        runs,
        summary,
    })
}

/// One admin-write run through the gateway's REST API on a fresh server of `kind`.
async fn gateway_admin_run(ctx: &Ctx, kind: Kind, run: usize) -> Result<AdminRun, String> {
    let s = &ctx.sizes;
    let server = Server::start(&ctx.env, kind, s.health_check_secs).await?;
    let args = vec![
        "admin".to_owned(),
        format!("--admin={}", server.admin.clone().unwrap_or_default()),
        format!("--api-key={}", ctx.env.api_key),
        format!("--secret={}", ctx.env.secret),
        format!("--users={}", s.admin_users),
        "--batch=100".to_owned(),
        format!("--concurrency={}", s.admin_concurrency),
        format!("--partial={}", s.admin_partial),
    ];
    let ticks_before = server.cpu_ticks();
    let report: Result<AdminReport, String> = run_json(&ctx.loadgen, &args).await;
    let server_cpu_secs = (server.cpu_ticks() - ticks_before) as f64 / clock_ticks_per_sec() as f64;
    server.stop().await;
    let report = report?;
    Ok(AdminRun {
        target: kind.name().into(),
        run,
        upsert_users_per_s: report.upsert.items_per_s,
        upsert_p50_ms: report.upsert.latency.p50_ms,
        upsert_p99_ms: report.upsert.latency.p99_ms,
        partial_per_s: report.partial.items_per_s,
        partial_p50_ms: report.partial.latency.p50_ms,
        partial_p99_ms: report.partial.latency.p99_ms,
        failed: report.upsert.failed + report.partial.failed,
        first_error: report.first_error,
        cpu_secs: server_cpu_secs,
    })
}

/// Medians per target, in the order given (targets without runs left out).
fn admin_summary(runs: &[AdminRun], targets: &[&str]) -> Vec<AdminSummary> {
    let mut summary = Vec::new();
    for &target in targets {
        let these: Vec<&AdminRun> = runs.iter().filter(|r| r.target == target).collect();
        if these.is_empty() {
            continue;
        }
        let med = |f: fn(&AdminRun) -> f64| median(&these.iter().map(|r| f(r)).collect::<Vec<_>>());
        summary.push(AdminSummary {
            target: target.into(),
            runs: these.len(),
            upsert_users_per_s: med(|r| r.upsert_users_per_s),
            upsert_p50_ms: med(|r| r.upsert_p50_ms),
            upsert_p99_ms: med(|r| r.upsert_p99_ms),
            partial_per_s: med(|r| r.partial_per_s),
            partial_p50_ms: med(|r| r.partial_p50_ms),
            partial_p99_ms: med(|r| r.partial_p99_ms),
            cpu_secs: med(|r| r.cpu_secs),
            failed: these.iter().map(|r| r.failed).sum(),
        });
    }
    summary
}

fn admin_progress(runs: &[AdminRun], run: usize) {
    for r in runs.iter().filter(|r| r.run == run) {
        progress(format!(
            "admin {} run {run}: {:.0} users/s (batch p50 {:.1} ms), {:.0} partial/s, {} failed",
            r.target, r.upsert_users_per_s, r.upsert_p50_ms, r.partial_per_s, r.failed
        ));
    }
}

/// Scenario 3: admin write throughput, gateway vs raw sled.
pub async fn admin_writes(ctx: &Ctx) -> Result<AdminResults, String> {
    let s = &ctx.sizes;
    let mut runs = Vec::new();
    for run in 1..=ctx.runs {
        if ctx.servers.contains(&Kind::Gateway) {
            runs.push(gateway_admin_run(ctx, Kind::Gateway, run).await?);
        }
        let dir = ctx.env.work_dir.join(format!("sledbase-{run}"));
        let _ = std::fs::remove_dir_all(&dir);
        let args = vec![
            format!("--dir={}", dir.display()),
            format!("--users={}", s.admin_users),
            "--batch=100".to_owned(),
            format!("--concurrency={}", s.admin_concurrency),
            format!("--partial={}", s.admin_partial),
            format!("--flush={}", s.sled_flush),
        ];
        let report: SledReport = run_json(&ctx.sledbase, &args).await?;
        let sled_cpu_secs = report.cpu_secs;
        let _ = std::fs::remove_dir_all(&dir);
        runs.push(AdminRun {
            target: "sledbase".into(),
            run,
            upsert_users_per_s: report.upsert.items_per_s,
            upsert_p50_ms: report.upsert.latency.p50_ms,
            upsert_p99_ms: report.upsert.latency.p99_ms,
            partial_per_s: report.partial.items_per_s,
            partial_p50_ms: report.partial.latency.p50_ms,
            partial_p99_ms: report.partial.latency.p99_ms,
            failed: report.upsert.failed + report.partial.failed,
            first_error: report.first_error,
            cpu_secs: sled_cpu_secs,
        });
        admin_progress(&runs, run);
    }
    let summary = admin_summary(&runs, &["gateway", "sledbase"]);
    Ok(AdminResults {
        meta: ctx.meta.clone(),
        users: s.admin_users,
        batch: 100,
        partial: s.admin_partial,
        concurrency: s.admin_concurrency,
        sled_flush: s.sled_flush.clone(),
        pgbase: String::new(),
        runs,
        summary,
    })
}

/// Scenario 7 (`pgadmin`): the admin writes of scenario 3 through a gateway on PostgreSQL
/// (a fresh database per run) against pgbase, the store's own statements sent straight to
/// the same server (another fresh database), run by run.
pub async fn pg_admin_writes(ctx: &Ctx) -> Result<AdminResults, String> {
    let s = &ctx.sizes;
    let mut runs = Vec::new();
    for run in 1..=ctx.runs {
        runs.push(gateway_admin_run(ctx, Kind::GatewayPg, run).await?);
        let db = FreshDb::create(&ctx.env.pg_url, "base").await?;
        let args = vec![
            format!("--url={}", db.url),
            format!("--users={}", s.admin_users),
            "--batch=100".to_owned(),
            format!("--concurrency={}", s.admin_concurrency),
            format!("--partial={}", s.admin_partial),
            "--pipeline".to_owned(),
        ];
        let report: Result<PgReport, String> = run_json(&ctx.pgbase, &args).await;
        let dropped = db.drop_now().await;
        let report = report?;
        dropped?;
        runs.push(AdminRun {
            target: "pgbase".into(),
            run,
            upsert_users_per_s: report.upsert.items_per_s,
            upsert_p50_ms: report.upsert.latency.p50_ms,
            upsert_p99_ms: report.upsert.latency.p99_ms,
            partial_per_s: report.partial.items_per_s,
            partial_p50_ms: report.partial.latency.p50_ms,
            partial_p99_ms: report.partial.latency.p99_ms,
            failed: report.upsert.failed + report.partial.failed,
            first_error: report.first_error,
            cpu_secs: report.cpu_secs,
        });
        admin_progress(&runs, run);
    }
    let summary = admin_summary(&runs, &["gateway-pg", "pgbase"]);
    Ok(AdminResults {
        meta: ctx.meta.clone(),
        users: s.admin_users,
        batch: 100,
        partial: s.admin_partial,
        concurrency: s.admin_concurrency,
        sled_flush: String::new(),
        pgbase: PGBASE_MODE.into(),
        runs,
        summary,
    })
}

/// How pgbase sends its statements in scenario 7: as the store does.
pub const PGBASE_MODE: &str =
    "reads one at a time, each transaction's statements pipelined (`pgbase --pipeline`)";

/// Scenario 4: admin write → event on the socket, with many idle connections open.
pub async fn event_latency(ctx: &Ctx) -> Result<EventsResults, String> {
    let s = &ctx.sizes;
    let watched = s.events_users + s.events_deactivations;
    let idle = s.events_conns.saturating_sub(watched);
    let mut runs = Vec::new();
    for run in 1..=ctx.runs {
        let server = Server::start(&ctx.env, Kind::Gateway, s.health_check_secs).await?;
        let held = connect_and_hold(&ctx.loadgen, &ctx.connect_args(&server, idle, "i")).await?;
        ctx.settle().await;
        let args = vec![
            "events".to_owned(),
            format!("--addr={}", server.public),
            format!("--admin={}", server.admin.clone().unwrap_or_default()),
            format!("--api-key={}", ctx.env.api_key),
            format!("--secret={}", ctx.env.secret),
            format!("--users={}", s.events_users),
            format!("--updates={}", s.events_updates),
            format!("--deactivations={}", s.events_deactivations),
            format!("--custom-events={}", s.events_custom),
        ];
        let report: Result<EventReport, String> = run_json(&ctx.loadgen, &args).await;
        let idle_connected = held.connected;
        let idle_report = held.finish().await?;
        server.stop().await;
        let report = report?;
        let r = EventsRun {
            run,
            idle_connected,
            update_event_p50_ms: report.update_event.p50_ms,
            update_event_p99_ms: report.update_event.p99_ms,
            update_http_p50_ms: report.update_http.p50_ms,
            update_http_p99_ms: report.update_http.p99_ms,
            custom_event_p50_ms: report.custom_event.p50_ms,
            custom_event_p99_ms: report.custom_event.p99_ms,
            custom_http_p50_ms: report.custom_http.p50_ms,
            custom_http_p99_ms: report.custom_http.p99_ms,
            custom_missed: report.custom_missed,
            deactivate_close_p50_ms: report.deactivate_close.p50_ms,
            deactivate_close_p99_ms: report.deactivate_close.p99_ms,
            deactivate_http_p50_ms: report.deactivate_http.p50_ms,
            deactivate_http_p99_ms: report.deactivate_http.p99_ms,
            update_missed: report.update_missed,
            deactivate_missed: report.deactivate_missed,
            deactivated_event_seen: report.deactivated_event_seen,
            idle_dropped: idle_report.dropped_during_hold,
            first_error: report.first_error,
        };
        progress(format!(
            "events run {run}: {idle_connected} idle; update→event p50 {:.2} ms p99 {:.2} ms; custom event p50 {:.2} ms p99 {:.2} ms; deactivate→close p50 {:.2} ms p99 {:.2} ms; missed {}+{}+{}",
            r.update_event_p50_ms, r.update_event_p99_ms, r.custom_event_p50_ms,
            r.custom_event_p99_ms, r.deactivate_close_p50_ms, r.deactivate_close_p99_ms,
            r.update_missed, r.custom_missed, r.deactivate_missed
        ));
        runs.push(r);
    }
    let med = |f: fn(&EventsRun) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    let summary = EventsRun {
        run: 0,
        idle_connected: med(|r| r.idle_connected as f64) as usize,
        update_event_p50_ms: med(|r| r.update_event_p50_ms),
        update_event_p99_ms: med(|r| r.update_event_p99_ms),
        update_http_p50_ms: med(|r| r.update_http_p50_ms),
        update_http_p99_ms: med(|r| r.update_http_p99_ms),
        custom_event_p50_ms: med(|r| r.custom_event_p50_ms),
        custom_event_p99_ms: med(|r| r.custom_event_p99_ms),
        custom_http_p50_ms: med(|r| r.custom_http_p50_ms),
        custom_http_p99_ms: med(|r| r.custom_http_p99_ms),
        custom_missed: runs.iter().map(|r| r.custom_missed).sum(),
        deactivate_close_p50_ms: med(|r| r.deactivate_close_p50_ms),
        deactivate_close_p99_ms: med(|r| r.deactivate_close_p99_ms),
        deactivate_http_p50_ms: med(|r| r.deactivate_http_p50_ms),
        deactivate_http_p99_ms: med(|r| r.deactivate_http_p99_ms),
        update_missed: runs.iter().map(|r| r.update_missed).sum(),
        deactivate_missed: runs.iter().map(|r| r.deactivate_missed).sum(),
        deactivated_event_seen: runs.iter().map(|r| r.deactivated_event_seen).sum(),
        idle_dropped: runs.iter().map(|r| r.idle_dropped).sum(),
        first_error: runs.iter().find_map(|r| r.first_error.clone()),
    };
    Ok(EventsResults {
        meta: ctx.meta.clone(),
        conns: s.events_conns,
        users: s.events_users,
        updates: s.events_updates,
        deactivations: s.events_deactivations,
        custom_events: s.events_custom,
        runs,
        summary,
    })
}

/// Scenario 5: CPU of many idle connections under a short health-check interval.
pub async fn idle_cpu(ctx: &Ctx) -> Result<CpuResults, String> {
    let s = &ctx.sizes;
    let ticks = clock_ticks_per_sec() as f64;
    let mut runs = Vec::new();
    for run in 1..=ctx.runs {
        for &kind in &ctx.servers {
            let server = Server::start(&ctx.env, kind, s.cpu_health_check_secs).await?;
            let held = connect_and_hold(&ctx.loadgen, &ctx.connect_args(&server, s.cpu_conns, "p"))
                .await?;
            // Past the connect burst and at least one full health-check round.
            tokio::time::sleep(Duration::from_secs_f64(
                s.settle_secs.max(s.cpu_health_check_secs as f64),
            ))
            .await;
            let t0 = server.cpu_ticks();
            let start = std::time::Instant::now();
            tokio::time::sleep(Duration::from_secs_f64(s.cpu_window_secs)).await;
            let t1 = server.cpu_ticks();
            let window = start.elapsed().as_secs_f64();
            let rss_kib = server.rss_kib();
            let connected = held.connected;
            let report = held.finish().await?;
            server.stop().await;
            let cpu_secs = (t1 - t0) as f64 / ticks;
            let r = CpuRun {
                server: kind.name().into(),
                run,
                connected,
                cpu_secs,
                cpu_pct_one_core: cpu_secs / window * 100.0,
                rss_kib,
                frames_per_s: if report.hold_secs > 0.0 {
                    report.frames_during_hold as f64 / report.hold_secs
                } else {
                    0.0
                },
                dropped: report.dropped_during_hold,
            };
            progress(format!(
                "cpu {} run {run}: {} open, {:.2}% of one core, {:.0} frames/s to clients, {} dropped",
                r.server, r.connected, r.cpu_pct_one_core, r.frames_per_s, r.dropped
            ));
            runs.push(r);
        }
    }
    let mut summary = Vec::new();
    for &kind in &ctx.servers {
        let these: Vec<&CpuRun> = runs.iter().filter(|r| r.server == kind.name()).collect();
        let med = |f: fn(&CpuRun) -> f64| median(&these.iter().map(|r| f(r)).collect::<Vec<_>>());
        summary.push(CpuSummary {
            server: kind.name().into(),
            runs: these.len(),
            cpu_pct_one_core: med(|r| r.cpu_pct_one_core),
            frames_per_s: med(|r| r.frames_per_s),
            rss_kib: med(|r| r.rss_kib as f64),
        });
    }
    Ok(CpuResults {
        meta: ctx.meta.clone(),
        conns: s.cpu_conns,
        window_secs: s.cpu_window_secs,
        health_check_secs: s.cpu_health_check_secs,
        runs,
        summary,
    })
}

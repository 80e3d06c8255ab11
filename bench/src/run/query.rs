//! Scenario 6: user queries. For each store size, each binary (*before*, when given, and
//! *after*, the gateway under test) starts fresh, builds the store through the admin API and
//! times each kind of query; the binaries alternate, so drift of a shared machine hits both.

use super::procs::run_json;
use super::results::*;
use super::scenarios::{Ctx, Sizes};
use super::server::{Kind, Server};
use crate::query::{QueryReport, KINDS};
use crate::stats::median;
use std::path::PathBuf;

/// Timed queries of each kind on a store of `users` (fewer on large stores, where a scan takes
/// seconds).
pub fn samples(sizes: &Sizes, users: usize) -> usize {
    if users >= 100_000 {
        sizes.query_samples.div_ceil(2)
    } else {
        sizes.query_samples
    }
}

/// Runs the scenario; `before` is the binary to compare with, and its label.
pub async fn user_queries(
    ctx: &Ctx,
    before: Option<(PathBuf, String)>,
) -> Result<QueryResults, String> {
    let s = &ctx.sizes;
    let mut targets = Vec::new();
    if let Some((bin, _)) = &before {
        targets.push(("before", bin.clone()));
    }
    targets.push(("after", ctx.env.gateway_bin.clone()));
    let mut runs = Vec::new();
    for &users in &s.query_users {
        for run in 1..=ctx.runs {
            for (target, bin) in &targets {
                let mut env = ctx.env.clone();
                env.gateway_bin = bin.clone();
                let server = Server::start(&env, Kind::Gateway, s.health_check_secs).await?;
                let args = vec![
                    "query".to_owned(),
                    format!("--admin={}", server.admin.clone().unwrap_or_default()),
                    format!("--api-key={}", ctx.env.api_key),
                    format!("--secret={}", ctx.env.secret),
                    format!("--users={users}"),
                    "--batch=100".to_owned(),
                    format!("--concurrency={}", s.admin_concurrency),
                    format!("--samples={}", samples(s, users)),
                    format!("--team-size={}", s.query_team_size),
                ];
                let report: Result<QueryReport, String> = run_json(&ctx.loadgen, &args).await;
                server.stop().await;
                let report = report?;
                let failed =
                    report.populate_failed + report.kinds.iter().map(|k| k.failed).sum::<usize>();
                eprintln!(
                    "[benchrun] query {target} {users} users run {run}: built in {:.1} s, {}, {failed} failed",
                    report.populate_secs,
                    report
                        .kinds
                        .iter()
                        .map(|k| format!("{} p50 {:.2} ms", k.kind, k.latency.p50_ms))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                runs.push(QueryRun {
                    target: (*target).into(),
                    users,
                    run,
                    populate_secs: report.populate_secs,
                    failed,
                    first_error: report.first_error,
                    kinds: report
                        .kinds
                        .iter()
                        .map(|k| QueryKindRun {
                            kind: k.kind.clone(),
                            samples: k.ok,
                            users_returned: k.users_returned,
                            p50_ms: k.latency.p50_ms,
                            p99_ms: k.latency.p99_ms,
                        })
                        .collect(),
                });
            }
        }
    }
    let mut summary = Vec::new();
    for (target, _) in &targets {
        for &users in &s.query_users {
            let these: Vec<&QueryRun> = runs
                .iter()
                .filter(|r| r.target == *target && r.users == users)
                .collect();
            let populate: Vec<f64> = these.iter().map(|r| r.populate_secs).collect();
            summary.push(QuerySummary {
                target: (*target).into(),
                users,
                kind: "populate".into(),
                runs: these.len(),
                p50_ms: median(&populate),
                p99_ms: 0.0,
            });
            for (kind, _) in KINDS {
                let figures: Vec<&QueryKindRun> = these
                    .iter()
                    .flat_map(|r| r.kinds.iter().filter(|k| k.kind == kind))
                    .collect();
                summary.push(QuerySummary {
                    target: (*target).into(),
                    users,
                    kind: kind.into(),
                    runs: figures.len(),
                    p50_ms: median(&figures.iter().map(|k| k.p50_ms).collect::<Vec<_>>()),
                    p99_ms: median(&figures.iter().map(|k| k.p99_ms).collect::<Vec<_>>()),
                });
            }
        }
    }
    Ok(QueryResults {
        meta: ctx.meta.clone(),
        before_label: before.map(|(_, label)| label).unwrap_or_default(),
        sizes: s.query_users.clone(),
        batch: 100,
        team_size: s.query_team_size,
        runs,
        summary,
    })
}

//! Benchmark harness for chat-gateway: load generation, baselines and the scenario runner.
//!
//! Layout:
//! - `auth`     — HS256 user and server tokens, minted and verified the way the gateway expects.
//! - `stats`    — latency samples, percentiles and medians.
//! - `procfs`   — RSS and CPU time of a process, read from `/proc`.
//! - `client`   — one client connection: the `/connect` handshake from a chosen source address.
//! - `loadgen`  — many idle connections, child-process fan-out and the aggregated report.
//! - `admin`    — admin REST writes (upserts, partial updates) and their throughput.
//! - `query`    — a population of users, then the latency of each kind of user query.
//! - `cluster`  — cross-node event latency on several PostgreSQL nodes, and commit time.
//! - `events`   — time from an admin write to the event (or close) on the user's socket.
//! - `baseline` — the minimal WebSocket server doing the same `/connect` job.
//! - `sledbase` — the raw sled write path the gateway's admin writes are compared with.
//! - `pgbase`   — the same for the PostgreSQL store: its statements, straight to the server.
//! - `pgdb`     — throwaway PostgreSQL databases, one per run.
//! - `timefmt`  — RFC 3339 timestamps and the epoch clock children report on.
//! - `run`      — the scenario runner behind `benchrun`: servers, scenarios, results, report.

pub mod admin;
pub mod auth;
pub mod baseline;
pub mod client;
pub mod cluster;
pub mod events;
pub mod loadgen;
pub mod pgbase;
pub mod pgdb;
pub mod procfs;
pub mod query;
pub mod run;
pub mod sledbase;
pub mod stats;
pub mod timefmt;

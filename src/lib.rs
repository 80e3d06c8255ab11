//! chat-gateway: a self-hosted realtime gateway that owns the users of a chat product and
//! speaks Stream Chat's wire protocol for them.
//!
//! Layers, each importing only those before it:
//! protocol → model → store / events / presence / hub → cluster → users → gateway / admin →
//! app.
//!
//! - `protocol`: wire types only — error envelope and codes, close codes, timestamps, frames.
//! - `model`: the shared domain — the user object and its bounds, queries, name normalisation.
//! - `store`: the `Store` trait, its sled and PostgreSQL implementations, and the data volume
//!   guard sled runs behind.
//! - `events`: typed user events and the bus they travel on (in-process on one node).
//! - `presence`: who is online, behind a trait a cluster can implement.
//! - `hub`: this node's connection registry and the delivery of events to its sockets.
//! - `cluster`: several nodes on PostgreSQL — the bus between them (outbox, `LISTEN/NOTIFY`),
//!   cluster-wide presence, node leases, reaping and fencing.
//! - `users`: the rules — every user operation, written once for both listeners; publishes
//!   events, asks presence.
//! - `gateway`: the public listener — `/connect`, guests and client REST.
//! - `admin`: the admin listener — REST and admin WebSocket over one dispatch table.
//! - `app`: builds the shared state, binds both listeners, owns shutdown.
//!
//! Beside them: `config` (the configuration tree, defaults, validation, the refusal of
//! unknown keys, the settings part of `--help`, generated credentials), `startup` (binding
//! the listeners and the first-start hint, with errors naming the address), `auth` (token
//! verification and minting), `http` (envelopes and body limits shared by both listeners),
//! `ratelimit` (Stream's per-endpoint and per-platform rate limits for both listeners, and
//! `GET /rate_limits`), `serve` (the public listener's accept loop), `telemetry` (tracing on
//! stderr as text or JSON, the connection summary, Prometheus metrics).

pub mod admin;
pub mod app;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod events;
pub mod gateway;
pub mod http;
pub mod hub;
pub mod model;
pub mod presence;
pub mod protocol;
pub mod ratelimit;
pub mod serve;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod users;

//! chat-gateway: a self-hosted realtime gateway that owns the users of a chat product and
//! speaks Stream Chat's wire protocol for them.
//!
//! Layout:
//! - `app`: builds the shared state, binds both listeners, owns shutdown.
//! - `config`: the configuration tree, its defaults, validation and generated credentials.
//! - `auth`: token verification and minting.
//! - `protocol`: wire types only — error envelope and codes, timestamps, event frames.
//! - `users`: the rules — user model, validation, usernames, every user operation.
//! - `store`: the `Store` trait, its sled implementation, and the data volume guard it runs
//!   behind.
//! - `events`: typed user events and the bus they travel on (in-process on one node).
//! - `presence`: who is online, behind a trait a cluster can implement.
//! - `hub`: this node's connection registry and the delivery of events to its sockets.
//! - `gateway`: the public listener — `/connect`, guests and client REST.
//! - `admin`: the admin listener — REST and admin WebSocket over one dispatch table.
//! - `http`: envelopes, body limits and rate limiting shared by both listeners.
//! - `serve`: the public listener's accept loop: header read timeout, descriptor budget.
//! - `telemetry`: tracing and Prometheus metrics set-up.

pub mod admin;
pub mod app;
pub mod auth;
pub mod config;
pub mod events;
pub mod gateway;
pub mod http;
pub mod hub;
pub mod presence;
pub mod protocol;
pub mod serve;
pub mod store;
pub mod telemetry;
pub mod users;

//! Integration tests of the public listener and the admin WebSocket: a real gateway on
//! `127.0.0.1:0` and real WebSocket clients.

#[path = "../common/mod.rs"]
mod common;
use common::ws;

mod admin_ws;
mod bans;
mod client_rest;
mod connect;
mod custom_events;
mod events;
mod liveness;
mod moderation;
mod rate_limits;

//! The users service: every rule about users lives here, written once and called by both
//! listeners (REST and WebSocket).
//!
//! Layout: `service` (the service: its state, the write cycle and its retries, queries, app
//! settings, the mapping of store errors), `connect` (tokens checked against the stored
//! user, connectUser, connection open and close), `writes` (upsert, partial update, guests),
//! `lifecycle` (delete, deactivate, reactivate, restore, export and their batch tasks),
//! `patch` (set/unset paths), `answer` (the size bound of a query's answer), `settings` (app
//! settings), `access` (the one authorization check: who may do what for whom),
//! `custom_events` (a back end's custom events for one user), `mutes` and `blocks` (what a
//! user holds against others, and its `me`), `bans`. The user object, queries and name
//! normalisation they work on live in `crate::model`.

pub mod access;
pub mod answer;
pub mod bans;
pub mod blocks;
pub mod connect;
pub mod custom_events;
pub mod lifecycle;
pub mod mutes;
pub mod patch;
pub mod requests;
pub mod service;
pub mod settings;
pub mod writes;

pub use service::{Caller, SettingsWatch, UsersService};

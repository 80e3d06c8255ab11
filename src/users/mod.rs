//! The users service: every rule about users lives here, written once and called by both
//! listeners (REST and WebSocket).
//!
//! Layout: `patch` (set/unset paths), `answer` (the size bound of a query's answer),
//! `settings` (app settings), `service` (the service itself: upsert, partial update, connect,
//! guests, settings, auth checks), `lifecycle` (delete, deactivate, reactivate, restore,
//! export and their batch tasks). The user object, queries and name normalisation they work
//! on live in `crate::model`.

pub mod answer;
pub mod lifecycle;
pub mod patch;
pub mod service;
pub mod settings;

pub use service::{Caller, UsersService};

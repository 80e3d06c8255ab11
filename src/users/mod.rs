//! The users service: every rule about users lives here, written once and called by both
//! listeners (REST and WebSocket).
//!
//! Layout: `model` (the user object and its validation), `bounds` (the size of each field
//! and of the whole user), `username` (normalisation), `patch` (set/unset paths), `query`
//! (filters and their bounds), `answer` (the size bound of a query's answer), `settings`
//! (app settings), `service` (the service itself: upsert, partial update, connect, guests,
//! settings, auth checks), `lifecycle` (delete, deactivate, reactivate, restore, export and
//! their batch tasks).

pub mod answer;
pub mod bounds;
pub mod lifecycle;
pub mod model;
pub mod patch;
pub mod query;
pub mod service;
pub mod settings;
pub mod username;

pub use service::{Caller, UsersService};

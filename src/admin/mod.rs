//! The admin listener: every server-side operation over REST and over an admin WebSocket,
//! both served by one dispatch table (`ops`) and authenticated with the server token.

pub mod feed;
pub mod ops;
pub mod rest;
pub mod ws;

pub use rest::router;

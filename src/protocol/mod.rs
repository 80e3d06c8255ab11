//! Wire types only: the error envelope and its codes, timestamps, and the frames and events
//! the gateway sends. No I/O and no rules live here.

pub mod close;
pub mod error;
pub mod events;
pub mod time;

pub use error::{ApiError, ErrorCode};
pub use time::Timestamp;

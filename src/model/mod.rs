//! The domain the layers share, below the store, the bus and the service: the user object
//! and its validation (`user`, `bounds`), user queries and their filters (`query`), and
//! username normalisation (`username`). Depends on nothing but the wire types in `protocol`.

pub mod bounds;
pub mod query;
pub mod user;
pub mod username;

pub use user::User;

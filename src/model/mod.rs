//! The domain the layers share, below the store, the bus and the service: the user object
//! and its validation (`user`, `bounds`), what a user holds against others and a ban held
//! against it (`moderation`), the query over bans (`ban_query`), user queries and their filters (`query`), and username normalisation
//! (`username`). Depends on nothing but the wire types in `protocol`.

pub mod ban_query;
pub mod bounds;
pub mod moderation;
pub mod query;
pub mod user;
pub mod username;

pub use user::User;

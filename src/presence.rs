//! Presence: whether a user is online, and when a connection makes a user come online or go
//! offline. The node-local registry (the hub) knows this node's sockets; a [`Presence`]
//! knows the user's connections everywhere. On one node the two agree, and
//! [`LocalPresence`] reads the hub; a cluster implementation keeps the counts in the shared
//! store.

use std::sync::Arc;

use async_trait::async_trait;

use crate::hub::Hub;
use crate::model::query::OnlineCheck;

/// Why presence refuses to count a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenRefused {
    /// The user holds as many connections as it may (across the cluster).
    TooMany,
    /// The shared presence cannot be reached now.
    Unavailable(String),
}

/// Who is online.
#[async_trait]
pub trait Presence: Send + Sync {
    /// A connection of `user_id` was admitted on this node; `first_here`: the node had none
    /// before. Returns whether the user came online, or why the connection may not count
    /// (then it must be refused, and [`Self::closed`] is not called for it).
    async fn opened(&self, user_id: &str, first_here: bool) -> Result<bool, OpenRefused>;
    /// A connection of `user_id` on this node closed; `last_here`: the node has none left.
    /// Returns whether the user went offline.
    async fn closed(&self, user_id: &str, last_here: bool) -> bool;
    /// Whether each of `ids` is online, in order.
    async fn online(&self, ids: &[&str]) -> Vec<bool>;
    /// A check a query can ask about any user while it runs (filters and sorts on `online`).
    async fn online_check(&self) -> OnlineCheck;
}

/// Presence of a single node: a user is online while this node holds a connection of theirs.
pub struct LocalPresence {
    hub: Arc<Hub>,
}

impl LocalPresence {
    /// Presence read off `hub`.
    pub fn new(hub: Arc<Hub>) -> Self {
        Self { hub }
    }
}

#[async_trait]
impl Presence for LocalPresence {
    async fn opened(&self, _user_id: &str, first_here: bool) -> Result<bool, OpenRefused> {
        // The hub enforced the per-user limit when it registered the connection.
        Ok(first_here)
    }

    async fn closed(&self, _user_id: &str, last_here: bool) -> bool {
        last_here
    }

    async fn online(&self, ids: &[&str]) -> Vec<bool> {
        ids.iter().map(|id| self.hub.is_online(id)).collect()
    }

    async fn online_check(&self) -> OnlineCheck {
        let hub = self.hub.clone();
        OnlineCheck::new(move |id| hub.is_online(id))
    }
}

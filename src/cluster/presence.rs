//! Cluster-wide presence: how many connections each node holds for each user, in the
//! `presence` table. A connect and a disconnect are one call each to a database function
//! that counts under a per-user transaction lock, so the per-user limit holds across nodes and
//! exactly one of two racing connects (or disconnects) sees the user come online (go
//! offline).

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;

use super::Node;
use crate::model::query::OnlineCheck;
use crate::presence::{OpenRefused, Presence};
use crate::store::postgres::pg_error;
use crate::store::StoreError;

/// Presence kept in the shared database.
pub struct ClusterPresence {
    node: Arc<Node>,
}

impl ClusterPresence {
    pub(super) fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// The users among `ids` with a connection on any live node.
    async fn online_among(&self, ids: &[String]) -> Result<HashSet<String>, StoreError> {
        let store = &self.node.store;
        store
            .bounded("presence online", async {
                let client = store.client().await?;
                let rows = client
                    .query(
                        "SELECT DISTINCT user_id FROM presence WHERE user_id = ANY($1)",
                        &[&ids],
                    )
                    .await
                    .map_err(pg_error)?;
                Ok(rows.iter().map(|r| r.get(0)).collect())
            })
            .await
    }
}

#[async_trait]
impl Presence for ClusterPresence {
    async fn opened(&self, user_id: &str, _first_here: bool) -> Result<bool, OpenRefused> {
        let store = &self.node.store;
        let node = self.node.id();
        let held: Result<i32, StoreError> = store
            .bounded("presence open", async {
                let client = store.client().await?;
                let stmt = client
                    .prepare_cached("SELECT presence_open($1, $2, $3)")
                    .await
                    .map_err(pg_error)?;
                let row = client
                    .query_one(&stmt, &[&&*node, &user_id, &self.node.max_per_user])
                    .await
                    .map_err(pg_error)?;
                Ok(row.get(0))
            })
            .await;
        match held {
            Ok(-1) => Err(OpenRefused::TooMany),
            Ok(held) => Ok(held == 0),
            Err(e) => Err(OpenRefused::Unavailable(e.to_string())),
        }
    }

    async fn closed(&self, user_id: &str, _last_here: bool) -> bool {
        let store = &self.node.store;
        let node = self.node.id();
        let held: Result<i32, StoreError> = store
            .bounded("presence close", async {
                let client = store.client().await?;
                let stmt = client
                    .prepare_cached("SELECT presence_close($1, $2)")
                    .await
                    .map_err(pg_error)?;
                let row = client
                    .query_one(&stmt, &[&&*node, &user_id])
                    .await
                    .map_err(pg_error)?;
                Ok(row.get(0))
            })
            .await;
        match held {
            Ok(held) => held == 0,
            Err(e) => {
                // The count is put right when the node rebuilds its presence after the outage.
                tracing::warn!(user_id, error = %e, "disconnect not counted in presence");
                false
            }
        }
    }

    async fn online(&self, ids: &[&str]) -> Vec<bool> {
        let owned: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
        match self.online_among(&owned).await {
            Ok(online) => ids.iter().map(|id| online.contains(*id)).collect(),
            // Without the shared view, what this node knows is still true.
            Err(_) => ids.iter().map(|id| self.node.hub.is_online(id)).collect(),
        }
    }

    async fn online_check(&self) -> OnlineCheck {
        let store = &self.node.store;
        let all: Result<HashSet<String>, StoreError> = store
            .bounded("presence all online", async {
                let client = store.client().await?;
                let rows = client
                    .query("SELECT DISTINCT user_id FROM presence", &[])
                    .await
                    .map_err(pg_error)?;
                Ok(rows.iter().map(|r| r.get(0)).collect())
            })
            .await;
        match all {
            Ok(online) => OnlineCheck::new(move |id| online.contains(id)),
            Err(_) => {
                let hub = self.node.hub.clone();
                OnlineCheck::new(move |id| hub.is_online(id))
            }
        }
    }
}

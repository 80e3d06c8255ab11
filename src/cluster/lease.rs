//! A node's place in the cluster: its row in `nodes` with a lease it renews every second, and
//! a session advisory lock held on a dedicated connection for as long as the process lives
//! (a killed node's connection closes, its lock goes with it, and the others reap it at
//! once instead of waiting for the lease to run out).
//!
//! Reaping, by any node whose own renewals have worked for a whole lease (so that nodes
//! coming back from a database outage do not take each other for dead): one transaction
//! takes the dead nodes' rows (`FOR UPDATE SKIP LOCKED`: each dead node is reaped by exactly
//! one node), deletes their presence, sets `last_active` of the users who went offline with
//! them and records their offline events in the outbox.
//!
//! A node that finds its row gone while the database kept running was taken for dead (it
//! was paused past its lease): it fences itself — closes its sockets with 1013 so clients
//! reconnect, and registers anew under a new id. After a database restart (the server's start
//! time changed) its row may be gone too (unlogged tables are emptied by crash recovery):
//! then it registers again and rebuilds its presence from its live connections, keeping
//! its sockets. After any outage it rebuilds its presence rows, which disconnects during the
//! outage could not update.

use std::sync::Arc;
use std::time::Instant;

use tokio_postgres::{Client, NoTls};

use super::{new_node_id, Node, LEASE, RENEW_EVERY};
use crate::events::UserEvent;
use crate::hub::{CloseOrder, CLOSE_TRY_AGAIN};
use crate::model::user::User;
use crate::protocol::Timestamp;
use crate::store::postgres::{connect_config, outbox, pg_error};
use crate::store::StoreError;

/// The dedicated connection holding the node's lock.
struct LeaseConn {
    client: Client,
    driver: tokio::task::JoinHandle<()>,
    /// The database server's start time, as text: a change means it restarted.
    server_started: String,
}

impl Drop for LeaseConn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// The lease of this node and its upkeep.
pub(super) struct Lease {
    node: Arc<Node>,
    lock_key: i64,
    conn: Option<LeaseConn>,
    /// The database server start time when this node last registered.
    server_started: String,
    /// Since when renewals have worked without a break; `None` after a failure.
    healthy_since: Option<Instant>,
    /// A renewal failed since the last one that worked.
    outage: bool,
}

impl Lease {
    /// Registers the node: connects, takes its lock, inserts its row.
    pub(super) async fn register(node: Arc<Node>) -> Result<Self, StoreError> {
        let mut lease = Self {
            node,
            lock_key: rand::random(),
            conn: None,
            server_started: String::new(),
            healthy_since: None,
            outage: false,
        };
        let conn = lease.connect().await?;
        lease.insert_row(&conn).await?;
        lease.server_started = conn.server_started.clone();
        lease.conn = Some(conn);
        lease.healthy_since = Some(Instant::now());
        Ok(lease)
    }

    /// Opens the dedicated connection and takes the node's lock on it.
    async fn connect(&self) -> Result<LeaseConn, StoreError> {
        let mut config = connect_config(&self.node.options)?;
        config.application_name(format!("chat-gateway lease {}", self.node.id()));
        let deadline = self.node.options.connect_timeout + self.node.options.call_timeout;
        let connecting = async {
            let (client, connection) = config.connect(NoTls).await.map_err(pg_error)?;
            let driver = tokio::spawn(async move {
                let _ = connection.await;
            });
            client
                .execute("SELECT pg_advisory_lock($1)", &[&self.lock_key])
                .await
                .map_err(pg_error)?;
            let row = client
                .query_one("SELECT pg_postmaster_start_time()::text", &[])
                .await
                .map_err(pg_error)?;
            Ok(LeaseConn {
                client,
                driver,
                server_started: row.get(0),
            })
        };
        tokio::time::timeout(deadline, connecting)
            .await
            .map_err(|_| StoreError::Unavailable("postgres: lease connection timed out".into()))?
    }

    async fn insert_row(&self, conn: &LeaseConn) -> Result<(), StoreError> {
        let id = self.node.id();
        conn.client
            .execute(
                "INSERT INTO nodes (id, lock_key, lease_until)
                 VALUES ($1, $2, now() + make_interval(secs => $3))
                 ON CONFLICT (id) DO UPDATE
                 SET lock_key = EXCLUDED.lock_key, lease_until = EXCLUDED.lease_until",
                &[&&*id, &self.lock_key, &LEASE.as_secs_f64()],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    /// Renews the lease every [`RENEW_EVERY`], reaps dead nodes, fences when reaped.
    pub(super) async fn run(mut self) {
        let mut tick = tokio::time::interval(RENEW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if Arc::strong_count(&self.node) == 1 {
                return;
            }
            if let Err(e) = self.renew().await {
                if !self.outage {
                    tracing::warn!(error = %e, "cluster lease not renewed");
                }
                self.outage = true;
                self.healthy_since = None;
                self.conn = None;
                continue;
            }
            let settled = self
                .healthy_since
                .is_some_and(|since| since.elapsed() >= LEASE);
            if settled {
                if let Err(e) = self.reap_dead().await {
                    tracing::debug!(error = %e, "reaping dead nodes failed");
                }
            }
        }
    }

    /// One renewal, and what it finds: the row is there (after an outage, presence is rebuilt),
    /// or gone (registered again after a database restart, fenced otherwise).
    async fn renew(&mut self) -> Result<(), StoreError> {
        if self.conn.is_none() {
            self.conn = Some(self.connect().await?);
        }
        let conn = self.conn.as_ref().expect("connected above");
        let id = self.node.id();
        let id_param: &str = &id;
        let lease_secs = LEASE.as_secs_f64();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
            [&id_param, &self.lock_key, &lease_secs];
        let renewing = conn.client.execute(
            "UPDATE nodes SET lease_until = now() + make_interval(secs => $3)
             WHERE id = $1 AND lock_key = $2",
            &params,
        );
        let renewed = tokio::time::timeout(self.node.options.call_timeout, renewing)
            .await
            .map_err(|_| StoreError::Unavailable("postgres: lease renewal timed out".into()))?
            .map_err(pg_error)?;
        if renewed == 1 {
            if self.outage {
                self.rebuild_presence().await?;
                tracing::info!(node = %id, "cluster lease renewed after an outage; presence rebuilt");
            }
        } else {
            let restarted = conn.server_started != self.server_started;
            if self.outage && restarted {
                tracing::warn!(node = %id, "the database restarted and lost this node's row: registering again");
                self.insert_row(conn).await?;
                self.server_started = conn.server_started.clone();
                self.rebuild_presence().await?;
            } else {
                self.fence().await?;
            }
        }
        if self.outage {
            self.outage = false;
            self.healthy_since = Some(Instant::now());
        }
        self.healthy_since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Taken for dead while alive: close every socket with 1013 and register anew.
    async fn fence(&mut self) -> Result<(), StoreError> {
        let old = self.node.id();
        metrics::counter!("cluster_fenced").increment(1);
        tracing::warn!(
            node = %old,
            "this node's lease ran out and other nodes reaped it: closing its connections (1013) and registering anew"
        );
        self.node
            .store
            .set_fenced(Some(format!("node {old} fenced: its lease was lost")));
        self.node.hub.close_every(&CloseOrder::raw(
            CLOSE_TRY_AGAIN,
            "gateway node restarting, reconnect",
        ));
        // Its users were taken offline by the reaper; the closing sockets find no row of the
        // new id to decrement.
        self.node.set_id(&new_node_id());
        let conn = self.conn.as_ref().expect("renew holds a connection");
        conn.client
            .execute("SELECT pg_advisory_unlock_all()", &[])
            .await
            .map_err(pg_error)?;
        self.lock_key = rand::random();
        conn.client
            .execute("SELECT pg_advisory_lock($1)", &[&self.lock_key])
            .await
            .map_err(pg_error)?;
        self.insert_row(conn).await?;
        self.server_started = conn.server_started.clone();
        self.node.store.set_fenced(None);
        tracing::info!(node = %self.node.id(), "registered anew after fencing");
        Ok(())
    }

    /// Replaces this node's presence rows by the counts of its live connections.
    async fn rebuild_presence(&self) -> Result<(), StoreError> {
        let id = self.node.id();
        let counts = self.node.hub.user_counts();
        let users: Vec<&str> = counts.iter().map(|(u, _)| &**u).collect();
        let conns: Vec<i32> = counts.iter().map(|(_, n)| *n as i32).collect();
        let store = &self.node.store;
        store
            .bounded("rebuild presence", async {
                let mut client = store.client().await?;
                let tx = client.transaction().await.map_err(pg_error)?;
                tx.execute("DELETE FROM presence WHERE node = $1", &[&&*id])
                    .await
                    .map_err(pg_error)?;
                tx.execute(
                    "INSERT INTO presence (node, user_id, conns)
                     SELECT $1, u, c FROM unnest($2::text[], $3::int[]) AS x (u, c)",
                    &[&&*id, &users, &conns],
                )
                .await
                .map_err(pg_error)?;
                tx.commit().await.map_err(pg_error)
            })
            .await
    }

    /// Reaps the nodes whose lease ran out or whose lock is free (their process is gone).
    async fn reap_dead(&self) -> Result<(), StoreError> {
        let me = self.node.id();
        let reaped = reap_where(&self.node, Dead::Others(&me)).await?;
        for (node, offline) in reaped {
            metrics::counter!("cluster_nodes_reaped").increment(1);
            tracing::warn!(node = %node, users_offline = offline, "reaped a dead node");
        }
        Ok(())
    }
}

/// Which nodes a reap takes.
enum Dead<'a> {
    /// Every other node found dead.
    Others(&'a str),
    /// These (a node leaving on shutdown).
    Named(&'a [String]),
}

/// Reaps the named nodes (a node leaving); returns how many users went offline.
pub(super) async fn reap(node: &Node, ids: &[String]) -> Result<usize, StoreError> {
    let reaped = reap_where(node, Dead::Named(ids)).await?;
    Ok(reaped.iter().map(|(_, n)| n).sum())
}

/// One reaping transaction; returns each reaped node with how many users went offline.
async fn reap_where(node: &Node, dead: Dead<'_>) -> Result<Vec<(String, usize)>, StoreError> {
    let me = node.id();
    let store = &node.store;
    let (events, reaped) = store
        .bounded("reap nodes", async {
            let mut client = store.client().await?;
            let tx = client.transaction().await.map_err(pg_error)?;
            let rows = match dead {
                Dead::Others(me) => tx
                    .query(
                        "SELECT id FROM nodes
                         WHERE id <> $1
                           AND (lease_until < now() OR pg_try_advisory_xact_lock(lock_key))
                         FOR UPDATE SKIP LOCKED",
                        &[&me],
                    )
                    .await
                    .map_err(pg_error)?,
                Dead::Named(ids) => tx
                    .query(
                        "SELECT id FROM nodes WHERE id = ANY($1) FOR UPDATE SKIP LOCKED",
                        &[&ids],
                    )
                    .await
                    .map_err(pg_error)?,
            };
            let mut ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            if let Dead::Named(named) = dead {
                // A leaving node's row may already be gone; its presence still goes.
                ids = named.to_vec();
            }
            if ids.is_empty() {
                return Ok((Vec::new(), Vec::new()));
            }
            // The users' presence locks, in one order (as presence_open/close take them).
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext(u)) FROM (
                     SELECT DISTINCT user_id AS u FROM presence WHERE node = ANY($1)
                     ORDER BY 1
                 ) AS held",
                &[&ids],
            )
            .await
            .map_err(pg_error)?;
            tx.execute("DELETE FROM nodes WHERE id = ANY($1)", &[&ids])
                .await
                .map_err(pg_error)?;
            let gone = tx
                .query(
                    "DELETE FROM presence WHERE node = ANY($1) RETURNING node, user_id",
                    &[&ids],
                )
                .await
                .map_err(pg_error)?;
            let mut per_node: Vec<(String, Vec<String>)> =
                ids.iter().map(|id| (id.clone(), Vec::new())).collect();
            for row in &gone {
                let (n, u): (String, String) = (row.get(0), row.get(1));
                if let Some((_, users)) = per_node.iter_mut().find(|(id, _)| *id == n) {
                    users.push(u);
                }
            }
            let mut users: Vec<String> = gone.iter().map(|r| r.get(1)).collect();
            users.sort_unstable();
            users.dedup();
            let now = Timestamp::now();
            // Offline: no connection left on any node.
            let offline = tx
                .query(
                    "UPDATE users SET last_active = $2
                     WHERE id = ANY($1)
                       AND NOT EXISTS (SELECT 1 FROM presence p WHERE p.user_id = users.id)
                     RETURNING id, doc",
                    &[&users, &now.to_wire()],
                )
                .await
                .map_err(pg_error)?;
            let offline_ids: std::collections::HashSet<String> =
                offline.iter().map(|r| r.get(0)).collect();
            let events: Vec<UserEvent> = offline
                .iter()
                .filter(|r| {
                    serde_json::from_str::<User>(r.get(1)).is_ok_and(|u: User| !u.invisible)
                })
                .map(|r| UserEvent::PresenceChanged {
                    user_id: r.get(0),
                    online: false,
                    last_active: Some(now),
                })
                .collect();
            let encoded: Vec<String> = events.iter().map(UserEvent::encode).collect();
            outbox::record(&tx, &me, &encoded).await?;
            tx.commit().await.map_err(pg_error)?;
            let reaped = per_node
                .into_iter()
                .map(|(id, users)| {
                    let n = users.iter().filter(|u| offline_ids.contains(*u)).count();
                    (id, n)
                })
                .collect();
            Ok((events, reaped))
        })
        .await?;
    // Recorded under this node's id, so this node's listener skips them: delivered here.
    for e in &events {
        node.local.deliver(e);
    }
    Ok(reaped)
}

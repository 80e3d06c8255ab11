//! Several gateway nodes on one PostgreSQL database: the event bus between them (an outbox
//! written with each write, `LISTEN/NOTIFY`, replay and a re-check of live sockets after a
//! listener reconnects), cluster-wide presence (connection counts per node and user), and the
//! nodes' leases (renewal, reaping of dead nodes, fencing of a node taken for dead).
//!
//! Modules: `bus` (the [`EventBus`](crate::events::EventBus) of a cluster node), `listener`
//! (notifications in, replay and re-check), `presence` (the cluster's
//! [`Presence`](crate::presence::Presence)), `lease` (registration, renewal, reaping,
//! fencing).
//!
//! Layering: above the store, the events, presence and the hub, whose traits it implements
//! across nodes; below the users service, which sees only those traits.

mod bus;
mod lease;
mod listener;
mod presence;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::events::LocalBus;
use crate::hub::Hub;
use crate::store::{PgOptions, PostgresStore, StoreError};

pub use bus::ClusterBus;
pub use presence::ClusterPresence;

/// How often a node renews its lease (and looks for dead nodes to reap).
pub const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How long a lease lasts without renewal: a node silent for longer is reaped, and a node
/// that finds itself reaped fences itself.
pub const LEASE: Duration = Duration::from_secs(5);
/// How far back a reconnected listener replays the outbox before the moment it last knew
/// its connection worked: transactions stamp their events when they start, and one can run
/// for up to a store call's deadline before it commits.
const REPLAY_MARGIN: Duration = Duration::from_secs(5);
/// How long outbox rows are kept: far longer than a listener's replay window; a node away
/// for longer re-checks its sockets against the store anyway.
const OUTBOX_KEEP: Duration = Duration::from_secs(600);

/// What the parts of a cluster node share.
pub(crate) struct Node {
    /// This node's id; a new one after fencing.
    id: RwLock<Arc<str>>,
    store: PostgresStore,
    options: PgOptions,
    hub: Arc<Hub>,
    local: Arc<LocalBus>,
    max_per_user: i32,
}

impl Node {
    fn id(&self) -> Arc<str> {
        self.id.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_id(&self, id: &str) {
        *self.id.write().unwrap_or_else(|p| p.into_inner()) = Arc::from(id);
        self.store.set_node(id);
    }
}

/// A fresh node id (one per process start, and per registration after fencing).
fn new_node_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A running cluster node: the bus and presence the users service is built on.
pub struct Cluster {
    node: Arc<Node>,
    /// The bus.
    pub bus: Arc<ClusterBus>,
    /// Presence.
    pub presence: Arc<ClusterPresence>,
}

impl Cluster {
    /// Registers this node (lease and lock), starts listening for other nodes' events, and
    /// starts the upkeep tasks; returns once the node is registered and listening.
    pub async fn start(
        store: PostgresStore,
        options: PgOptions,
        hub: Arc<Hub>,
        local: Arc<LocalBus>,
        max_per_user: usize,
    ) -> Result<Self, StoreError> {
        let node = Arc::new(Node {
            id: RwLock::new(Arc::from("")),
            store,
            options,
            hub,
            local,
            max_per_user: i32::try_from(max_per_user).unwrap_or(i32::MAX),
        });
        node.set_id(&new_node_id());
        let lease = lease::Lease::register(node.clone()).await?;
        tokio::spawn(lease.run());
        listener::start(node.clone()).await?;
        let bus = Arc::new(ClusterBus::start(node.clone()));
        tokio::spawn(bus::prune_outbox(Arc::downgrade(&node)));
        tracing::info!(node = %node.id(), "cluster node registered and listening");
        Ok(Self {
            presence: Arc::new(ClusterPresence::new(node.clone())),
            bus,
            node,
        })
    }

    /// Leaves the cluster on shutdown (after the sockets closed): the node's row and
    /// presence go, and its users still counted here go offline at once.
    pub async fn leave(&self) {
        let id = self.node.id();
        match lease::reap(&self.node, &[id.to_string()]).await {
            Ok(_) => tracing::info!(node = %id, "left the cluster"),
            Err(e) => tracing::warn!(node = %id, error = %e, "could not leave the cluster"),
        }
    }
}

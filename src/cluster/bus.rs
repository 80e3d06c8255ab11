//! The event bus of a cluster node: events of writes are encoded for the store to record in
//! the write's transaction and handed to this node's subscribers once committed; events no
//! write carries (presence changes, custom user events) go to this node's subscribers at once
//! and to the outbox through a queue, a transaction per burst (each `NOTIFY` takes a
//! database-wide lock at commit, so fewer is faster).

use std::sync::{Arc, Weak};

use tokio::sync::mpsc;

use super::{Node, OUTBOX_KEEP};
use crate::events::{EventBus, EventSink, LocalBus, UserEvent};
use crate::store::postgres::outbox;

/// Published events waiting for the outbox; past this, they are dropped for
/// other nodes (with a warning) rather than held without bound while the database is away.
const QUEUE: usize = 10_000;
/// Most events in one outbox transaction of the queue.
const BURST: usize = 200;

/// The bus of a cluster node.
pub struct ClusterBus {
    local: Arc<LocalBus>,
    queue: mpsc::Sender<UserEvent>,
}

impl ClusterBus {
    /// The bus, with its outbox writer running.
    pub(super) fn start(node: Arc<Node>) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        let local = node.local.clone();
        tokio::spawn(write_published(Arc::downgrade(&node), rx));
        Self { local, queue }
    }
}

impl EventBus for ClusterBus {
    fn publish(&self, event: UserEvent) {
        self.local.deliver(&event);
        if self.queue.try_send(event).is_err() {
            metrics::counter!("cluster_events_dropped").increment(1);
            tracing::warn!("event queue full: an event is not sent to other nodes");
        }
    }

    fn encode(&self, event: &UserEvent) -> Option<String> {
        Some(event.encode())
    }

    fn committed(&self, event: UserEvent) {
        self.local.deliver(&event);
    }

    fn subscribe(&self, sink: Arc<dyn EventSink>) {
        self.local.subscribe(sink);
    }
}

/// Records published events in the outbox, a burst per transaction, until the node goes.
async fn write_published(node: Weak<Node>, mut rx: mpsc::Receiver<UserEvent>) {
    while let Some(first) = rx.recv().await {
        let mut burst = vec![first.encode()];
        while burst.len() < BURST {
            match rx.try_recv() {
                Ok(e) => burst.push(e.encode()),
                Err(_) => break,
            }
        }
        let Some(node) = node.upgrade() else { return };
        let id = node.id();
        let store = &node.store;
        let recorded = store
            .bounded("publish events", async {
                let client = store.client().await?;
                outbox::record(&client, &id, &burst).await
            })
            .await;
        if let Err(e) = recorded {
            metrics::counter!("cluster_events_dropped").increment(burst.len() as u64);
            tracing::warn!(error = %e, events = burst.len(), "events not sent to other nodes");
        }
    }
}

/// Deletes old outbox rows every minute (any node may; deleting twice is harmless).
pub(super) async fn prune_outbox(node: Weak<Node>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        let store = &node.store;
        let pruned = store
            .bounded("prune outbox", async {
                let client = store.client().await?;
                outbox::prune(&client, OUTBOX_KEEP.as_secs() as i64).await
            })
            .await;
        match pruned {
            Ok(0) => {}
            Ok(n) => tracing::debug!(rows = n, "outbox pruned"),
            Err(e) => tracing::debug!(error = %e, "outbox not pruned"),
        }
    }
}

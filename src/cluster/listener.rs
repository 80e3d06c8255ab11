//! Other nodes' events in: a dedicated connection `LISTEN`s on the outbox channel, and each
//! notification names a range of outbox rows to read and deliver to this node's
//! subscribers, in order.
//!
//! Notifications sent while the connection is down are lost, so delivery never rests on one
//! arriving: after every reconnect the listener (1) replays the outbox rows of other nodes
//! stamped since shortly before it last knew its connection worked, skipping those it
//! already delivered, and (2) re-checks every local connection against the store — users
//! deleted, deactivated, revoked (one by one or app-wide) or no longer guests have their
//! sockets ended as the missed events would have — and has the app settings re-read. A
//! notification whose rows cannot be read ends the session the same way.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{AsyncMessage, Client, NoTls};

use super::{Node, REPLAY_MARGIN};
use crate::events::{EventSink, UserEvent};
use crate::model::user::{User, GUEST_ROLE};
use crate::protocol::Timestamp;
use crate::store::postgres::outbox::{self, Notice, Recorded};
use crate::store::postgres::{connect_config, pg_error};
use crate::store::{Store, StoreError};

/// How long a delivered sequence number is remembered (longer than any replay window).
const REMEMBER: Duration = Duration::from_secs(600);
/// How often the listener checks its connection (and notes the database time it worked).
const PING_EVERY: Duration = Duration::from_secs(1);
/// Users re-checked per store read.
const RECHECK_CHUNK: usize = 1000;

/// Sequence numbers already delivered, for a while.
#[derive(Default)]
struct Seen {
    set: HashSet<i64>,
    order: VecDeque<(Instant, i64)>,
}

impl Seen {
    /// Notes `seq`; false when it was delivered before.
    fn first_time(&mut self, seq: i64) -> bool {
        if !self.set.insert(seq) {
            return false;
        }
        self.order.push_back((Instant::now(), seq));
        true
    }

    fn forget_old(&mut self) {
        while let Some((at, seq)) = self.order.front().copied() {
            if at.elapsed() < REMEMBER {
                break;
            }
            self.order.pop_front();
            self.set.remove(&seq);
        }
    }
}

struct Listener {
    node: Arc<Node>,
    seen: Seen,
    /// The database clock (Unix ms) when the connection was last known to work.
    alive_at_ms: Option<i64>,
    /// The current session got as far as listening (and catching up).
    listened: bool,
}

/// Starts the listener; returns once it listens (or why its first connection failed).
pub(super) async fn start(node: Arc<Node>) -> Result<(), StoreError> {
    let (ready_tx, ready_rx) = oneshot::channel();
    let listener = Listener {
        node,
        seen: Seen::default(),
        alive_at_ms: None,
        listened: false,
    };
    tokio::spawn(listener.run(ready_tx));
    ready_rx
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable("listener stopped".into())))
}

impl Listener {
    async fn run(mut self, ready: oneshot::Sender<Result<(), StoreError>>) {
        let mut ready = Some(ready);
        let mut backoff = Duration::from_millis(100);
        loop {
            if Arc::strong_count(&self.node) == 1 {
                return;
            }
            self.listened = false;
            let ended = self.session(&mut ready).await;
            if let Some(ready) = ready.take() {
                // The first connection failed: the node does not start.
                let _ = ready.send(ended);
                return;
            }
            if self.listened {
                // It worked until now: the next attempt is quick again.
                backoff = Duration::from_millis(100);
            }
            if let Err(e) = ended {
                tracing::warn!(error = %e, "cluster listener disconnected; reconnecting");
                metrics::counter!("cluster_listener_reconnects").increment(1);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// One connection's life: listen, catch up when it is a reconnect, then deliver.
    async fn session(
        &mut self,
        ready: &mut Option<oneshot::Sender<Result<(), StoreError>>>,
    ) -> Result<(), StoreError> {
        let mut config = connect_config(&self.node.options)?;
        config.application_name(format!("chat-gateway listener {}", self.node.id()));
        let timeout = self.node.options.connect_timeout + self.node.options.call_timeout;
        let (client, mut connection) = tokio::time::timeout(timeout, config.connect(NoTls))
            .await
            .map_err(|_| StoreError::Unavailable("postgres: listener connect timed out".into()))?
            .map_err(pg_error)?;
        let (tx, mut notices) = mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        if tx.send(n.payload().to_owned()).is_err() {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return,
                }
            }
        });
        let result = self.listen(&client, &mut notices, ready).await;
        driver.abort();
        result
    }

    async fn listen(
        &mut self,
        client: &Client,
        notices: &mut mpsc::UnboundedReceiver<String>,
        ready: &mut Option<oneshot::Sender<Result<(), StoreError>>>,
    ) -> Result<(), StoreError> {
        let timeout = self.node.options.call_timeout;
        let bounded = |what: &'static str| {
            move |r: Result<Result<i64, StoreError>, tokio::time::error::Elapsed>| {
                r.map_err(|_| {
                    StoreError::Unavailable(format!("postgres: listener {what} timed out"))
                })?
            }
        };
        tokio::time::timeout(
            timeout,
            client.batch_execute(&format!("LISTEN {}", outbox::CHANNEL)),
        )
        .await
        .map_err(|_| StoreError::Unavailable("postgres: LISTEN timed out".into()))?
        .map_err(pg_error)?;
        let now_ms = bounded("clock")(tokio::time::timeout(timeout, db_clock(client)).await)?;
        if let Some(alive) = self.alive_at_ms {
            // A reconnect: what was missed meanwhile.
            let since = alive - REPLAY_MARGIN.as_millis() as i64;
            let replayed = self.replay(since).await?;
            let endings = self.recheck().await?;
            tracing::info!(replayed, endings, "cluster listener caught up");
        }
        self.alive_at_ms = Some(now_ms);
        self.listened = true;
        if let Some(ready) = ready.take() {
            let _ = ready.send(Ok(()));
        }
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                notice = notices.recv() => match notice {
                    Some(payload) => self.on_notice(&payload).await?,
                    None => {
                        return Err(StoreError::Unavailable("listener connection closed".into()))
                    }
                },
                _ = ping.tick() => {
                    let now = bounded("ping")(tokio::time::timeout(timeout, db_clock(client)).await)?;
                    self.alive_at_ms = Some(now);
                    self.seen.forget_old();
                }
            }
        }
    }

    /// Reads and delivers the rows a notification names (none when this node wrote them).
    async fn on_notice(&mut self, payload: &str) -> Result<(), StoreError> {
        let Some(notice) = Notice::parse(payload) else {
            tracing::warn!(payload, "unreadable outbox notification ignored");
            return Ok(());
        };
        if *notice.node == *self.node.id() {
            return Ok(());
        }
        let store = &self.node.store;
        let rows = store
            .bounded("read outbox", async {
                outbox::read_range(&store.client().await?, &notice).await
            })
            .await?;
        self.deliver(rows);
        Ok(())
    }

    /// Delivers the rows not delivered before; returns how many were new.
    fn deliver(&mut self, rows: Vec<Recorded>) -> usize {
        let mut delivered = 0;
        for row in rows {
            if !self.seen.first_time(row.seq) {
                continue;
            }
            match UserEvent::decode(&row.event) {
                Ok(event) => {
                    self.node.local.deliver(&event);
                    delivered += 1;
                }
                Err(e) => {
                    tracing::warn!(seq = row.seq, node = %row.node, error = %e, "undecodable outbox event skipped")
                }
            }
        }
        metrics::counter!("cluster_events_received").increment(delivered as u64);
        delivered
    }

    /// Delivers other nodes' events stamped since `since_ms`; returns how many were new.
    async fn replay(&mut self, since_ms: i64) -> Result<usize, StoreError> {
        let store = &self.node.store;
        let me = self.node.id();
        let rows = store
            .bounded("replay outbox", async {
                outbox::read_since(&store.client().await?, &me, since_ms).await
            })
            .await?;
        Ok(self.deliver(rows))
    }

    /// Ends the local sockets that missed events would have ended; returns how many users
    /// it found deleted, deactivated or revoked. The app settings are re-read by the service on the event delivered last.
    async fn recheck(&self) -> Result<usize, StoreError> {
        let hub = &self.node.hub;
        let store = &self.node.store;
        let ids: Vec<String> = hub
            .user_counts()
            .into_iter()
            .map(|(id, _)| id.to_string())
            .collect();
        let mut hit = 0;
        for chunk in ids.chunks(RECHECK_CHUNK) {
            let stored = store.get_users(chunk).await?;
            for id in chunk {
                let events = match stored.get(id) {
                    Some(s) => missed_for(&s.user),
                    // A connect creates its user before it is admitted; only an erased id
                    // (tombstoned) means the user is gone.
                    None if store.is_tombstoned(id).await? => vec![UserEvent::Deleted {
                        user: User::new(id, Timestamp::now()),
                        hard: true,
                        mark_messages_deleted: false,
                    }],
                    None => Vec::new(),
                };
                if events
                    .iter()
                    .any(|e| !matches!(e, UserEvent::GuestTakenOver { .. }))
                {
                    hit += 1;
                }
                for e in events {
                    // To the sockets only: admin subscribers saw the real events, or will
                    // not be told twice about old ones.
                    hub.deliver(&e, e.frame().as_ref());
                }
            }
        }
        let settings = store.app_settings().await?;
        let app_revoked = settings
            .settings
            .get("revoke_tokens_issued_before")
            .and_then(|v| v.as_str())
            .and_then(Timestamp::parse);
        if let Some(before) = app_revoked {
            hub.deliver(
                &UserEvent::TokensRevoked {
                    user_id: None,
                    before,
                },
                None,
            );
        }
        self.node.local.deliver(&UserEvent::AppSettingsChanged);
        Ok(hit)
    }
}

/// The events that end the sockets a user's stored state no longer allows: deleted,
/// deactivated, tokens revoked, no longer a guest. The hub ends only the sockets each one
/// concerns (a revocation spares tokens issued after it).
fn missed_for(user: &User) -> Vec<UserEvent> {
    if user.deleted_at.is_some() {
        return vec![UserEvent::Deleted {
            user: user.clone(),
            hard: false,
            mark_messages_deleted: false,
        }];
    }
    if user.deactivated_at.is_some() {
        return vec![UserEvent::Deactivated {
            user: user.clone(),
            created_by: None,
        }];
    }
    let mut events = Vec::new();
    if let Some(before) = user.revoke_tokens_issued_before {
        events.push(UserEvent::TokensRevoked {
            user_id: Some(user.id.clone()),
            before,
        });
    }
    if user.role != GUEST_ROLE {
        events.push(UserEvent::GuestTakenOver {
            user_id: user.id.clone(),
        });
    }
    events
}

/// The database clock, Unix milliseconds.
async fn db_clock(client: &Client) -> Result<i64, StoreError> {
    let row = client
        .query_one(
            "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
            &[],
        )
        .await
        .map_err(pg_error)?;
    Ok(row.get(0))
}

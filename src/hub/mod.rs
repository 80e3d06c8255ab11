//! The realtime hub: who is connected (the connection registry), presence, and the fan-out of
//! `user.*` events to users' connections, presence watchers and admin subscribers.

pub mod conn;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use dashmap::DashMap;
use serde_json::Value;
use tokio::sync::broadcast;

pub use conn::{CloseOrder, ConnHandle, PushOutcome};

use crate::protocol::{events, Timestamp};
use crate::users::model::User;

/// Close code a client retries on: the server is going away.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code a client retries on: try again later (overload, slow consumer).
pub const CLOSE_TRY_AGAIN: u16 = 1013;
/// Normal close: a permanent refusal, the SDK does not reconnect.
pub const CLOSE_NORMAL: u16 = 1000;

/// Why a connection could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterError {
    /// The user has too many live connections.
    PerUserLimit,
    /// The gateway holds as many connections as it may.
    TotalLimit,
}

/// Shared realtime state of one gateway node.
pub struct Hub {
    by_user: DashMap<Arc<str>, Vec<Arc<ConnHandle>>>,
    by_conn: DashMap<Arc<str>, Weak<ConnHandle>>,
    watchers: DashMap<String, Vec<Weak<ConnHandle>>>,
    admin_tx: broadcast::Sender<Arc<str>>,
    live: AtomicUsize,
    max_total: usize,
    max_per_user: usize,
    queue_frames: usize,
}

impl Hub {
    /// A hub with the given connection limits and per-connection queue bound.
    pub fn new(max_total: usize, max_per_user: usize, queue_frames: usize) -> Self {
        let (admin_tx, _) = broadcast::channel(1024);
        Self {
            by_user: DashMap::new(),
            by_conn: DashMap::new(),
            watchers: DashMap::new(),
            admin_tx,
            live: AtomicUsize::new(0),
            max_total,
            max_per_user,
            queue_frames,
        }
    }

    /// Live connections on this node.
    pub fn live_connections(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Whether the total limit is reached (checked before upgrading).
    pub fn is_full(&self) -> bool {
        self.live_connections() >= self.max_total
    }

    /// The per-connection outbound queue bound.
    pub fn queue_frames(&self) -> usize {
        self.queue_frames
    }

    /// Registers a connection; returns whether it is the user's first (the user came online).
    pub fn register(&self, conn: &Arc<ConnHandle>) -> Result<bool, RegisterError> {
        if self.live.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.live.fetch_sub(1, Ordering::AcqRel);
            return Err(RegisterError::TotalLimit);
        }
        let mut entry = self.by_user.entry(conn.user_id.clone()).or_default();
        if entry.len() >= self.max_per_user {
            drop(entry);
            self.live.fetch_sub(1, Ordering::AcqRel);
            return Err(RegisterError::PerUserLimit);
        }
        entry.push(conn.clone());
        let first = entry.len() == 1;
        drop(entry);
        self.by_conn
            .insert(conn.conn_id.clone(), Arc::downgrade(conn));
        metrics::gauge!("gateway_live_connections").set(self.live_connections() as f64);
        Ok(first)
    }

    /// Removes a connection; returns whether it was the user's last (the user went offline).
    pub fn unregister(&self, conn: &ConnHandle) -> bool {
        self.by_conn.remove(&conn.conn_id);
        let mut last = false;
        let mut found = false;
        if let Some(mut list) = self.by_user.get_mut(&conn.user_id) {
            let before = list.len();
            list.retain(|c| c.conn_id != conn.conn_id);
            found = list.len() != before;
            last = list.is_empty();
        }
        if last {
            self.by_user.remove_if(&conn.user_id, |_, l| l.is_empty());
        }
        if found {
            self.live.fetch_sub(1, Ordering::AcqRel);
        }
        metrics::gauge!("gateway_live_connections").set(self.live_connections() as f64);
        found && last
    }

    /// Whether the user has at least one live connection here.
    pub fn is_online(&self, user_id: &str) -> bool {
        self.by_user.get(user_id).is_some_and(|l| !l.is_empty())
    }

    /// A live connection by id.
    pub fn connection(&self, conn_id: &str) -> Option<Arc<ConnHandle>> {
        self.by_conn.get(conn_id).and_then(|w| w.upgrade())
    }

    /// Subscribes a connection to presence changes of the given users.
    pub fn watch_presence(&self, conn: &Arc<ConnHandle>, user_ids: impl Iterator<Item = String>) {
        for id in user_ids {
            let mut list = self.watchers.entry(id).or_default();
            list.retain(|w| w.strong_count() > 0);
            if !list
                .iter()
                .any(|w| w.upgrade().is_some_and(|c| c.conn_id == conn.conn_id))
            {
                list.push(Arc::downgrade(conn));
            }
        }
    }

    /// A new receiver of every event, for an admin subscriber.
    pub fn subscribe_admin(&self) -> broadcast::Receiver<Arc<str>> {
        self.admin_tx.subscribe()
    }

    fn user_conns(&self, user_id: &str) -> Vec<Arc<ConnHandle>> {
        self.by_user
            .get(user_id)
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    fn to_admins(&self, frame: &Arc<str>) {
        let _ = self.admin_tx.send(frame.clone());
    }

    fn send(&self, conn: &ConnHandle, frame: &Arc<str>) {
        if !conn.is_ready() {
            return;
        }
        if conn.push(frame.clone(), self.queue_frames) == PushOutcome::Overflowed {
            metrics::counter!("gateway_slow_consumer_disconnects").increment(1);
        } else {
            metrics::counter!("gateway_events_sent").increment(1);
        }
    }

    /// `user.updated`: to every connection of the user and to admin subscribers.
    pub fn user_updated(&self, user: &User) {
        let frame = events::user_event("user.updated", user, self.is_online(&user.id), None);
        for c in self.user_conns(&user.id) {
            self.send(&c, &frame);
        }
        self.to_admins(&frame);
    }

    /// `user.deleted`: the user's connections get the event and are closed for good.
    pub fn user_deleted(&self, user: &User, hard: bool, mark_messages_deleted: bool) {
        let extra = serde_json::json!({"hard_delete": hard, "mark_messages_deleted": mark_messages_deleted});
        let frame = events::user_event("user.deleted", user, false, Some(extra));
        self.end_user(&user.id, Some(&frame), 16, "the user was deleted");
        self.to_admins(&frame);
    }

    /// `user.deactivated`: the user's connections get the event and are closed for good.
    pub fn user_deactivated(&self, user: &User, created_by: Option<&User>) {
        let extra =
            serde_json::json!({"created_by": created_by.map(|u| Value::Object(u.to_wire(false)))});
        let frame = events::user_event("user.deactivated", user, false, Some(extra));
        self.end_user(&user.id, Some(&frame), 17, "the user was deactivated");
        self.to_admins(&frame);
    }

    /// `user.reactivated`: to admin subscribers (the user has no connection yet).
    pub fn user_reactivated(&self, user: &User, created_by: Option<&User>) {
        let extra =
            serde_json::json!({"created_by": created_by.map(|u| Value::Object(u.to_wire(false)))});
        let frame = events::user_event("user.reactivated", user, false, Some(extra));
        self.to_admins(&frame);
    }

    /// Ends the connections of `user_id` (or of every user when `None`) whose token was issued
    /// before `before` or carries no `iat`, with a code-40 error frame.
    pub fn revoke(&self, user_id: Option<&str>, before: Timestamp) {
        let frame = events::connection_error(
            40,
            "This token has been revoked, please generate a new token",
            401,
        );
        let cutoff = before.unix();
        let hit = |c: &ConnHandle| c.token_iat.is_none_or(|iat| iat < cutoff) && !c.anonymous;
        let conns: Vec<Arc<ConnHandle>> = match user_id {
            Some(id) => self.user_conns(id),
            None => self
                .by_user
                .iter()
                .flat_map(|e| e.value().clone())
                .collect(),
        };
        for c in conns.iter().filter(|c| hit(c)) {
            c.close_with(Some(frame.clone()), CloseOrder::normal(40, "token revoked"));
        }
    }

    /// The back end took a guest's id over: the connections made with a guest's token end
    /// with code 40, as a revoked token's do.
    pub fn end_guest_sessions(&self, user_id: &str) {
        let frame = events::connection_error(40, "This guest token is no longer valid", 401);
        for c in self.user_conns(user_id).iter().filter(|c| c.guest_token) {
            c.close_with(
                Some(frame.clone()),
                CloseOrder::normal(40, "guest taken over"),
            );
        }
    }

    fn end_user(&self, user_id: &str, frame: Option<&Arc<str>>, code: i32, message: &str) {
        for c in self.user_conns(user_id) {
            c.close_with(frame.cloned(), CloseOrder::normal(code, message));
        }
    }

    /// Presence changed: to admin subscribers and to connections watching the user.
    /// Invisible users stay offline to others.
    pub fn presence_changed(&self, user: &User, online: bool) {
        if user.invisible {
            return;
        }
        let frame = events::presence_event(user, online);
        self.to_admins(&frame);
        let watchers: Vec<Arc<ConnHandle>> = match self.watchers.get_mut(&user.id) {
            None => Vec::new(),
            Some(mut list) => {
                list.retain(|w| w.strong_count() > 0);
                list.iter().filter_map(Weak::upgrade).collect()
            }
        };
        for c in watchers {
            if c.user_id.as_ref() != user.id {
                self.send(&c, &frame);
            }
        }
    }

    /// Calls `f` on every live connection (for the liveness ticker).
    pub fn for_each_conn(&self, mut f: impl FnMut(&Arc<ConnHandle>)) {
        for entry in self.by_user.iter() {
            for c in entry.value() {
                f(c);
            }
        }
    }

    /// The user's last connection closed: presence goes offline.
    pub fn presence_offline(&self, user_id: &str, at: Timestamp) {
        let mut user = User::new(user_id, at);
        user.last_active = Some(at);
        self.presence_changed(&user, false);
    }

    /// Closes every connection with 1001 (shutdown).
    pub fn close_all(&self, reason: &str) {
        for entry in self.by_user.iter() {
            for c in entry.value() {
                c.close_with(None, CloseOrder::raw(CLOSE_GOING_AWAY, reason));
            }
        }
    }
}

//! The realtime hub of one node: its connection registry (sockets by connection and by user,
//! the node's limits, who watches whose presence) and the delivery of bus events to those
//! sockets — frames to a user's connections and to presence watchers, closes when a user is
//! deleted, deactivated or revoked.

pub mod conn;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

pub use crate::protocol::close::{CloseOrder, CLOSE_GOING_AWAY, CLOSE_NORMAL, CLOSE_TRY_AGAIN};
pub use conn::{ConnHandle, PushOutcome};
use dashmap::DashMap;

use crate::events::{EventSink, UserEvent};
use crate::protocol::{events, ErrorCode, Timestamp};

/// Why a connection could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterError {
    /// The user has too many live connections.
    PerUserLimit,
    /// The gateway holds as many connections as it may.
    TotalLimit,
    /// The gateway holds as many anonymous connections as it may.
    AnonymousLimit,
}

/// Shared realtime state of one gateway node.
pub struct Hub {
    by_user: DashMap<Arc<str>, Vec<Arc<ConnHandle>>>,
    by_conn: DashMap<Arc<str>, Weak<ConnHandle>>,
    watchers: DashMap<String, Vec<Weak<ConnHandle>>>,
    live: AtomicUsize,
    anonymous: AtomicUsize,
    max_total: usize,
    max_anonymous: usize,
    max_per_user: usize,
    queue_frames: usize,
}

impl Hub {
    /// A hub with the given connection limits and per-connection queue bound.
    pub fn new(max_total: usize, max_per_user: usize, queue_frames: usize) -> Self {
        Self {
            by_user: DashMap::new(),
            by_conn: DashMap::new(),
            watchers: DashMap::new(),
            live: AtomicUsize::new(0),
            anonymous: AtomicUsize::new(0),
            max_total,
            max_anonymous: max_total,
            max_per_user,
            queue_frames,
        }
    }

    /// Bounds anonymous connections apart (`limits.max_anonymous_connections`): they need no
    /// credentials, so without a budget of their own they could take every place.
    pub fn with_max_anonymous(mut self, max_anonymous: usize) -> Self {
        self.max_anonymous = max_anonymous;
        self
    }

    /// Live anonymous connections on this node.
    pub fn anonymous_connections(&self) -> usize {
        self.anonymous.load(Ordering::Relaxed)
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
        if conn.anonymous && self.anonymous.fetch_add(1, Ordering::AcqRel) >= self.max_anonymous {
            self.anonymous.fetch_sub(1, Ordering::AcqRel);
            self.live.fetch_sub(1, Ordering::AcqRel);
            return Err(RegisterError::AnonymousLimit);
        }
        let mut entry = self.by_user.entry(conn.user_id.clone()).or_default();
        if entry.len() >= self.max_per_user {
            drop(entry);
            if conn.anonymous {
                self.anonymous.fetch_sub(1, Ordering::AcqRel);
            }
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
            if conn.anonymous {
                self.anonymous.fetch_sub(1, Ordering::AcqRel);
            }
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

    fn user_conns(&self, user_id: &str) -> Vec<Arc<ConnHandle>> {
        self.by_user
            .get(user_id)
            .map(|l| l.clone())
            .unwrap_or_default()
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

    fn send_to_user(&self, user_id: &str, frame: &Arc<str>) {
        for c in self.user_conns(user_id) {
            self.send(&c, frame);
        }
    }

    /// Ends the connections of `user_id` (or of every user when `None`) whose token was issued
    /// before `before` or carries no `iat`, with a code-40 error frame.
    fn revoke(&self, user_id: Option<&str>, before: Timestamp) {
        let code = ErrorCode::TokenExpired;
        let frame = events::connection_error(
            code.code(),
            "This token has been revoked, please generate a new token",
            code.status(),
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
            c.close_with(
                Some(frame.clone()),
                CloseOrder::normal(code.code(), "token revoked"),
            );
        }
    }

    /// The back end took a guest's id over: the connections made with a guest's token end
    /// with code 40, as a revoked token's do.
    fn end_guest_sessions(&self, user_id: &str) {
        let code = ErrorCode::TokenExpired;
        let frame = events::connection_error(
            code.code(),
            "This guest token is no longer valid",
            code.status(),
        );
        for c in self.user_conns(user_id).iter().filter(|c| c.guest_token) {
            c.close_with(
                Some(frame.clone()),
                CloseOrder::normal(code.code(), "guest taken over"),
            );
        }
    }

    fn end_user(&self, user_id: &str, frame: Option<&Arc<str>>, code: ErrorCode, message: &str) {
        for c in self.user_conns(user_id) {
            c.close_with(frame.cloned(), CloseOrder::normal(code.code(), message));
        }
    }

    /// To the connections watching the user (not the user's own).
    fn to_watchers(&self, user_id: &str, frame: &Arc<str>) {
        let watchers: Vec<Arc<ConnHandle>> = match self.watchers.get_mut(user_id) {
            None => Vec::new(),
            Some(mut list) => {
                list.retain(|w| w.strong_count() > 0);
                list.iter().filter_map(Weak::upgrade).collect()
            }
        };
        if watchers.is_empty() {
            self.watchers.remove_if(user_id, |_, list| list.is_empty());
        }
        for c in watchers {
            if c.user_id.as_ref() != user_id {
                self.send(&c, frame);
            }
        }
    }

    /// Drops the presence subscriptions of closed connections, and the users no one watches
    /// any more (run by the liveness ticker, so the map does not keep every user ever
    /// watched).
    pub fn prune_watchers(&self) {
        self.watchers.retain(|_, list| {
            list.retain(|w| w.strong_count() > 0);
            !list.is_empty()
        });
    }

    /// Watched users (for tests and metrics).
    pub fn watched_users(&self) -> usize {
        self.watchers.len()
    }

    /// Calls `f` on every live connection (for the liveness ticker).
    pub fn for_each_conn(&self, mut f: impl FnMut(&Arc<ConnHandle>)) {
        for entry in self.by_user.iter() {
            for c in entry.value() {
                f(c);
            }
        }
    }

    /// The users with connections here (anonymous ones aside), and how many each holds.
    pub fn user_counts(&self) -> Vec<(Arc<str>, usize)> {
        self.by_user
            .iter()
            .filter_map(|e| {
                let n = e.value().iter().filter(|c| !c.anonymous).count();
                (n > 0).then(|| (e.key().clone(), n))
            })
            .collect()
    }

    /// Closes every connection with `order` (a node taking itself out of service).
    pub fn close_every(&self, order: &CloseOrder) {
        for entry in self.by_user.iter() {
            for c in entry.value() {
                c.close_with(None, order.clone());
            }
        }
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

impl EventSink for Hub {
    fn deliver(&self, event: &UserEvent, frame: Option<&Arc<str>>) {
        match (event, frame) {
            // The user's own connections and those subscribed to its presence (Stream sends
            // user.updated to presence subscribers) — unless the user is invisible, whose
            // frame would tell others it is online.
            (UserEvent::Updated { user, .. }, Some(frame)) => {
                self.send_to_user(&user.id, frame);
                if !user.invisible {
                    self.to_watchers(&user.id, frame);
                }
            }
            (UserEvent::Deleted { user, .. }, frame) => self.end_user(
                &user.id,
                frame,
                ErrorCode::DoesNotExist,
                "the user was deleted",
            ),
            (UserEvent::Deactivated { user, .. }, frame) => self.end_user(
                &user.id,
                frame,
                ErrorCode::NotAllowed,
                "the user was deactivated",
            ),
            (UserEvent::PresenceChanged { user_id, .. }, Some(frame)) => {
                self.to_watchers(user_id, frame)
            }
            (UserEvent::TokensRevoked { user_id, before }, _) => {
                self.revoke(user_id.as_deref(), *before)
            }
            (UserEvent::GuestTakenOver { user_id }, _) => self.end_guest_sessions(user_id),
            // A ban or its end, to the user's own connections; a shadow ban to none.
            (UserEvent::Banned { user, ban }, Some(frame)) if !ban.shadow => {
                self.send_to_user(&user.id, frame)
            }
            (UserEvent::Unbanned { user, shadow }, Some(frame)) if !shadow => {
                self.send_to_user(&user.id, frame)
            }
            // A back end's custom event, a change to the user's own lists: the user's own
            // connections, no one else.
            (UserEvent::Custom { user_id, .. }, Some(frame))
            | (UserEvent::OwnUserChanged { user_id, .. }, Some(frame)) => {
                self.send_to_user(user_id, frame)
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchers_of_closed_connections_are_pruned() {
        let hub = Hub::new(10, 10, 8);
        let conn = Arc::new(ConnHandle::new("c".into(), "w".into(), None, false, false));
        hub.register(&conn).unwrap();
        hub.watch_presence(&conn, ["a".to_owned(), "b".to_owned()].into_iter());
        hub.prune_watchers();
        assert_eq!(hub.watched_users(), 2, "a live watcher keeps its entries");
        hub.unregister(&conn);
        drop(conn);
        hub.prune_watchers();
        assert_eq!(hub.watched_users(), 0);
    }
}

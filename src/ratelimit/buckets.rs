//! Request counts in fixed one-minute windows (aligned to the wall clock's minutes, so every
//! budget resets on the minute), keyed by who and what they count. Windows of past minutes
//! are dropped when the minute turns; within a minute the number of buckets is capped.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use dashmap::DashMap;

use super::endpoints::Endpoint;
use super::platform::Platform;

/// Buckets kept before new callers go uncounted for the rest of the minute (the app-wide
/// budgets are always counted). A bound on memory (~100 bytes a bucket), not a limit any
/// ordinary deployment meets: it takes this many distinct users or addresses in one minute.
pub const MAX_BUCKETS: usize = 200_000;

/// Whose requests a bucket counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The whole app (Stream's app limits).
    App,
    /// One user, by id (Stream's user limits).
    User(Box<str>),
    /// One client address: callers without a verified user token.
    Address(IpAddr),
    /// One caller over every route together (the gateway's own guard against abuse):
    /// `server`, `user:<id>` or `ip:<address>`.
    Caller(Box<str>),
}

/// What one bucket counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// Whose requests.
    pub scope: Scope,
    /// Which platform and endpoint; `None` for a caller's bucket over every route.
    pub of: Option<(Platform, Endpoint)>,
}

/// A bucket's state after counting a request (or read without counting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    /// Requests allowed in the window.
    pub limit: u32,
    /// Left in the window (0 once over).
    pub remaining: u32,
    /// When the window ends, unix seconds.
    pub reset: u64,
    /// Whether this request went over the limit.
    pub exceeded: bool,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    minute: u64,
    used: u32,
    second: u64,
    in_second: u32,
}

/// Every bucket of one node.
#[derive(Default)]
pub struct Buckets {
    windows: DashMap<Key, Window>,
    /// The minute whose windows alone are kept.
    pruned_minute: AtomicU64,
    /// The second a full bucket store was last swept (at most one sweep a second).
    swept_second: AtomicU64,
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Buckets {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Buckets held now.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Counts one request against `key`, allowed `limit` a minute and, when `per_second` is
    /// set, that many in any one second. `None` when the store is full and `key` is new: the
    /// request is not counted there (the caller still counts it elsewhere).
    pub fn hit(&self, key: &Key, limit: u32, per_second: Option<u32>, now: u64) -> Option<Count> {
        let minute = now / 60;
        if self.pruned_minute.swap(minute, Ordering::Relaxed) != minute {
            self.windows.retain(|_, w| w.minute == minute);
        }
        if self.windows.len() >= MAX_BUCKETS && !self.windows.contains_key(key) {
            if self.swept_second.swap(now, Ordering::Relaxed) != now {
                self.windows.retain(|_, w| w.minute == minute);
            }
            if self.windows.len() >= MAX_BUCKETS && key.scope != Scope::App {
                return None;
            }
        }
        let fresh = Window {
            minute,
            used: 0,
            second: now,
            in_second: 0,
        };
        let count = |w: &mut Window| {
            if w.minute != minute {
                *w = fresh;
            }
            if w.second != now {
                w.second = now;
                w.in_second = 0;
            }
            w.used = w.used.saturating_add(1);
            w.in_second = w.in_second.saturating_add(1);
            *w
        };
        // The key is cloned only for a bucket's first request of the minute.
        let w = match self.windows.get_mut(key) {
            Some(mut w) => count(&mut w),
            None => count(&mut self.windows.entry(key.clone()).or_insert(fresh)),
        };
        let reset = (minute + 1) * 60;
        if let Some(cap) = per_second {
            if w.in_second > cap && w.used <= limit {
                // Within the minute's budget but past this second's share: retry next second.
                return Some(Count {
                    limit: cap,
                    remaining: 0,
                    reset: now + 1,
                    exceeded: true,
                });
            }
        }
        Some(Count {
            limit,
            remaining: limit.saturating_sub(w.used),
            reset,
            exceeded: w.used > limit,
        })
    }

    /// Requests counted against `key` in the current minute, without counting one.
    pub fn used(&self, key: &Key, now: u64) -> u32 {
        self.windows
            .get(key)
            .filter(|w| w.minute == now / 60)
            .map_or(0, |w| w.used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(endpoint: &str) -> Key {
        Key {
            scope: Scope::App,
            of: Some((Platform::Web, Endpoint::by_name(endpoint).unwrap())),
        }
    }

    #[test]
    fn a_window_counts_down_and_resets_on_the_minute() {
        let b = Buckets::new();
        let t = 6_000_030; // 30 s into a minute
        let k = app("QueryUsers");
        let first = b.hit(&k, 2, None, t).unwrap();
        assert_eq!(
            (first.remaining, first.reset, first.exceeded),
            (1, 6_000_060, false)
        );
        assert!(!b.hit(&k, 2, None, t + 1).unwrap().exceeded);
        let third = b.hit(&k, 2, None, t + 2).unwrap();
        assert_eq!((third.remaining, third.exceeded), (0, true));
        assert_eq!(b.used(&k, t + 2), 3);
        // Another endpoint has its own budget.
        assert!(!b.hit(&app("UpdateUsers"), 2, None, t + 2).unwrap().exceeded);
        // The next minute starts afresh, and past minutes' windows are dropped.
        let next = b.hit(&k, 2, None, t + 30).unwrap();
        assert_eq!(
            (next.remaining, next.reset, next.exceeded),
            (1, 6_000_120, false)
        );
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn the_per_second_share_refuses_bursts_until_the_next_second() {
        let b = Buckets::new();
        let k = app("UpdateUsers");
        let t = 6_000_000;
        assert!(!b.hit(&k, 300, Some(2), t).unwrap().exceeded);
        assert!(!b.hit(&k, 300, Some(2), t).unwrap().exceeded);
        let third = b.hit(&k, 300, Some(2), t).unwrap();
        assert_eq!((third.limit, third.remaining, third.reset), (2, 0, t + 1));
        assert!(third.exceeded);
        assert!(!b.hit(&k, 300, Some(2), t + 1).unwrap().exceeded);
    }

    #[test]
    fn a_full_store_stops_counting_new_callers_but_not_the_app() {
        let b = Buckets::new();
        let t = 6_000_000;
        for i in 0..MAX_BUCKETS {
            let k = Key {
                scope: Scope::User(i.to_string().into()),
                of: None,
            };
            assert!(b.hit(&k, 5, None, t).is_some());
        }
        let newcomer = Key {
            scope: Scope::User("new".into()),
            of: None,
        };
        assert!(b.hit(&newcomer, 5, None, t).is_none());
        assert!(b.hit(&app("GetApp"), 5, None, t).is_some());
        // The next minute drops them all.
        assert!(b.hit(&newcomer, 5, None, t + 60).is_some());
        assert_eq!(b.len(), 1);
    }
}

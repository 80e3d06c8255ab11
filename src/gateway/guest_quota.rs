//! The guest-creation quota of the public listener: `POST /guest` needs no credentials, so
//! each client address, and the listener as a whole, may create only so many guests a minute
//! (`limits.guests_per_minute_per_ip`, `limits.guests_per_minute`). Over either, the request
//! is refused with 429, code 9.
//!
//! Each budget is a token bucket holding a minute's worth of creations and refilling
//! continuously, so a burst at a minute's boundary cannot spend two minutes' worth at once.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::protocol::{ApiError, ErrorCode};

/// Addresses tracked before idle ones are forgotten.
const PRUNE_ABOVE: usize = 10_000;
/// A bucket untouched for this long is full again, the same as a new one.
const REFILL_TIME: Duration = Duration::from_secs(60);

/// One budget: tokens left and when it was last counted.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(per_minute: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(per_minute),
            at: now,
        }
    }

    /// Refills for the time passed, then takes one token if there is one.
    fn take(&mut self, per_minute: u32, now: Instant) -> bool {
        let capacity = f64::from(per_minute);
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * capacity / 60.0).min(capacity);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Guest creations allowed per client address and for the whole listener.
pub struct GuestQuota {
    per_ip_per_minute: u32,
    per_minute: u32,
    by_ip: DashMap<IpAddr, Bucket>,
    all: Mutex<Bucket>,
    started: Instant,
    last_prune_secs: AtomicU64,
}

impl GuestQuota {
    /// A quota of `per_ip_per_minute` guests per address and `per_minute` in all.
    pub fn new(per_ip_per_minute: u32, per_minute: u32) -> Self {
        let now = Instant::now();
        Self {
            per_ip_per_minute,
            per_minute,
            by_ip: DashMap::new(),
            all: Mutex::new(Bucket::full(per_minute, now)),
            started: now,
            last_prune_secs: AtomicU64::new(0),
        }
    }

    /// Counts one guest creation from `ip`; refuses it (429, code 9) when the address or
    /// the listener has used its budget.
    pub fn admit(&self, ip: IpAddr) -> Result<(), ApiError> {
        let now = Instant::now();
        self.prune(now);
        let per_ip = self.per_ip_per_minute;
        let ip_ok = self
            .by_ip
            .entry(ip)
            .or_insert_with(|| Bucket::full(per_ip, now))
            .take(per_ip, now);
        if !ip_ok {
            metrics::counter!("gateway_guests_refused", "scope" => "address").increment(1);
            return Err(refusal(format!(
                "too many guest users created from this address (at most {per_ip} a minute), \
                 try again later"
            )));
        }
        let all_ok = self
            .all
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(self.per_minute, now);
        if !all_ok {
            metrics::counter!("gateway_guests_refused", "scope" => "all").increment(1);
            return Err(refusal(format!(
                "too many guest users created (at most {} a minute), try again later",
                self.per_minute
            )));
        }
        Ok(())
    }

    /// Forgets addresses whose buckets are full again, at most once a second and only
    /// while many addresses are tracked.
    fn prune(&self, now: Instant) {
        if self.by_ip.len() <= PRUNE_ABOVE {
            return;
        }
        let secs = now.saturating_duration_since(self.started).as_secs() + 1;
        if self.last_prune_secs.swap(secs, Ordering::Relaxed) == secs {
            return;
        }
        self.by_ip
            .retain(|_, b| now.saturating_duration_since(b.at) < REFILL_TIME);
    }
}

fn refusal(detail: String) -> ApiError {
    ApiError::new(ErrorCode::RateLimited, detail).in_operation("CreateGuest")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_minute_then_refills_continuously() {
        let start = Instant::now();
        let mut b = Bucket::full(60, start);
        for _ in 0..60 {
            assert!(b.take(60, start));
        }
        assert!(!b.take(60, start));
        // One token a second at 60 a minute.
        assert!(b.take(60, start + Duration::from_millis(1000)));
        assert!(!b.take(60, start + Duration::from_millis(1000)));
        // Never more than a minute's worth, however long it rested.
        let later = start + Duration::from_secs(3600);
        for _ in 0..60 {
            assert!(b.take(60, later));
        }
        assert!(!b.take(60, later));
    }

    #[test]
    fn addresses_have_their_own_budget_and_share_the_global_one() {
        let q = GuestQuota::new(2, 3);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        assert!(q.admit(a).is_ok());
        assert!(q.admit(a).is_ok());
        let err = q.admit(a).unwrap_err();
        assert_eq!(err.code, ErrorCode::RateLimited);
        assert!(err.message().starts_with("CreateGuest failed with error"));
        assert!(q.admit(b).is_ok());
        // The listener's 3 a minute are spent (a, a, b); b's own budget is not.
        assert!(q.admit(b).is_err());
    }
}

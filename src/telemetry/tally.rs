//! The connection summary at `info`: connects accepted, refused (by code) and connections
//! closed, counted as they happen and written as one line per interval.
//!
//! Why a summary rather than a line per connection at `info`: a node holds up to 19,500
//! connections and a reconnect storm brings them all back within seconds; refusals are
//! driven by clients (an attacker's connects are refused as fast as it sends them). A line
//! each would make `info` unreadable and let a client decide how fast the log grows. One line
//! per interval bounds `info` whatever the load and still shows a refusal wave at a glance;
//! each connection, refusal and close keeps its own line at `debug`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

/// Counts since the last summary.
struct Tally {
    accepted: AtomicU64,
    closed: AtomicU64,
    refused: Mutex<BTreeMap<String, u64>>,
}

/// One per process, like the metrics recorder the same call sites feed.
static TALLY: Tally = Tally {
    accepted: AtomicU64::new(0),
    closed: AtomicU64::new(0),
    refused: Mutex::new(BTreeMap::new()),
};

/// A connect went through: the first frame is out.
pub fn accepted() {
    TALLY.accepted.fetch_add(1, Ordering::Relaxed);
}

/// An accepted connection ended.
pub fn closed() {
    TALLY.closed.fetch_add(1, Ordering::Relaxed);
}

/// A connect was refused, for `code` (an error code, or the reason of a retryable close).
pub fn refused(code: &str) {
    let mut refused = TALLY.refused.lock().unwrap_or_else(|e| e.into_inner());
    *refused.entry(code.to_owned()).or_default() += 1;
}

/// What happened since the last call, and the counts reset: accepted, closed, and the
/// refusals as `code:count` pairs.
fn take() -> (u64, u64, u64, String) {
    let accepted = TALLY.accepted.swap(0, Ordering::Relaxed);
    let closed = TALLY.closed.swap(0, Ordering::Relaxed);
    let refused = std::mem::take(&mut *TALLY.refused.lock().unwrap_or_else(|e| e.into_inner()));
    let total = refused.values().sum();
    let by_code = refused
        .iter()
        .map(|(code, n)| format!("{code}:{n}"))
        .collect::<Vec<_>>()
        .join(" ");
    (accepted, closed, total, by_code)
}

/// Writes the summary every `interval` (when anything happened) until `stop` turns true;
/// `live` reads the connections open now.
pub fn spawn_summary(
    interval: Duration,
    live: impl Fn() -> usize + Send + 'static,
    mut stop: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            let (accepted, closed, refused, by_code) = take();
            if accepted + closed + refused == 0 {
                continue;
            }
            tracing::info!(
                accepted,
                refused,
                refused_by_code = %by_code,
                closed,
                live = live(),
                secs = interval.as_secs(),
                "connections"
            );
        }
    });
}

//! The data volume's free space against a reserve: while the volume is below the reserve,
//! writes are refused before they reach the database, so it never runs out of space in the
//! middle of a write, and keeps room to open again after a restart.
//!
//! Entering and leaving the low state is logged once each. Writes resume only once free space
//! is back above the reserve plus a quarter, so a volume hovering at the line does not flap.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::StoreError;

/// Measures the bytes available to the gateway on the volume holding a directory.
pub type Probe = Box<dyn Fn(&Path) -> std::io::Result<u64> + Send + Sync>;

/// Free space of the data volume, measured at most once per interval, against a reserve.
pub struct SpaceGuard {
    dir: PathBuf,
    reserve: u64,
    interval_ms: u64,
    epoch: Instant,
    /// Milliseconds since `epoch` at which the next measurement is due.
    next_due_ms: AtomicU64,
    free: AtomicU64,
    low: AtomicBool,
    probe_failing: AtomicBool,
    probe: Probe,
}

impl SpaceGuard {
    /// A guard over the volume holding `dir` (statvfs: blocks available to unprivileged
    /// users), measured now.
    pub fn new(dir: &Path, reserve: u64, interval: Duration) -> Self {
        Self::with_probe(
            dir,
            reserve,
            interval,
            Box::new(|dir: &Path| fs2::available_space(dir)),
        )
    }

    /// A guard measuring with `probe` (tests), measured now.
    pub fn with_probe(dir: &Path, reserve: u64, interval: Duration, probe: Probe) -> Self {
        let guard = Self {
            dir: dir.to_owned(),
            reserve,
            interval_ms: interval.as_millis().max(1) as u64,
            epoch: Instant::now(),
            next_due_ms: AtomicU64::new(0),
            free: AtomicU64::new(u64::MAX),
            low: AtomicBool::new(false),
            probe_failing: AtomicBool::new(false),
            probe,
        };
        guard.measure();
        guard
    }

    /// `Ok` while the volume has room for writes; measures again first when the last
    /// measurement is older than the interval.
    pub fn admit(&self) -> Result<(), StoreError> {
        if self.reserve == 0 {
            return Ok(());
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        let due = self.next_due_ms.load(Ordering::Relaxed);
        if now >= due
            && self
                .next_due_ms
                .compare_exchange(
                    due,
                    now + self.interval_ms,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            self.measure();
        }
        if self.is_low() {
            metrics::counter!("store_writes_refused").increment(1);
            return Err(StoreError::VolumeFull(self.describe()));
        }
        Ok(())
    }

    /// Measures now and moves in or out of the low state, logging the move.
    pub fn measure(&self) {
        let free = match (self.probe)(&self.dir) {
            Ok(free) => {
                if self.probe_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(dir = %self.dir.display(), "data volume free space measurable again");
                }
                free
            }
            Err(e) => {
                if !self.probe_failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(dir = %self.dir.display(), error = %e,
                        "cannot measure the data volume's free space; keeping the last state");
                }
                return;
            }
        };
        self.free.store(free, Ordering::Relaxed);
        metrics::gauge!("store_volume_free_bytes").set(free as f64);
        let was_low = self.low.load(Ordering::Relaxed);
        let low = if was_low {
            free < self.resume_at()
        } else {
            free < self.reserve
        };
        if low == was_low
            || self
                .low
                .compare_exchange(was_low, low, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        if low {
            tracing::warn!(
                free,
                reserve = self.reserve,
                dir = %self.dir.display(),
                "data volume low: writes refused until space is freed"
            );
        } else {
            tracing::info!(
                free,
                reserve = self.reserve,
                "data volume has room again: writes accepted"
            );
        }
    }

    /// Whether writes are refused.
    pub fn is_low(&self) -> bool {
        self.low.load(Ordering::Relaxed)
    }

    /// Bytes free at the last measurement.
    pub fn free(&self) -> u64 {
        self.free.load(Ordering::Relaxed)
    }

    /// Free bytes at which a low volume takes writes again.
    pub fn resume_at(&self) -> u64 {
        self.reserve.saturating_add(self.reserve / 4)
    }

    /// The state in words, for refusals and `/healthz`.
    pub fn describe(&self) -> String {
        format!(
            "{} bytes free, reserve {}; writes resume above {}",
            self.free(),
            self.reserve,
            self.resume_at()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn guard(reserve: u64, interval_ms: u64) -> (SpaceGuard, Arc<AtomicU64>) {
        let free = Arc::new(AtomicU64::new(10_000));
        let probe_free = free.clone();
        let probe: Probe = Box::new(move |_| Ok(probe_free.load(Ordering::Relaxed)));
        let g = SpaceGuard::with_probe(
            Path::new("."),
            reserve,
            Duration::from_millis(interval_ms),
            probe,
        );
        (g, free)
    }

    #[test]
    fn refuses_below_the_reserve_and_resumes_above_a_quarter_more() {
        let (g, free) = guard(1000, 1);
        assert!(g.admit().is_ok());
        free.store(999, Ordering::Relaxed);
        g.measure();
        let refused = g.admit().unwrap_err();
        assert!(matches!(refused, StoreError::VolumeFull(ref m) if m.contains("999 bytes free")));
        // Back above the reserve but not above 1250: still refused (no flapping).
        free.store(1200, Ordering::Relaxed);
        g.measure();
        assert!(g.is_low());
        free.store(1250, Ordering::Relaxed);
        g.measure();
        assert!(!g.is_low());
        assert!(g.admit().is_ok());
    }

    #[test]
    fn measures_at_most_once_per_interval() {
        let (g, free) = guard(1000, 60_000);
        assert!(g.admit().is_ok());
        free.store(0, Ordering::Relaxed);
        // The first admit measured (it was due); the next is a minute away.
        assert!(g.admit().is_ok());
        g.measure();
        assert!(g.admit().is_err());
    }

    #[test]
    fn a_zero_reserve_never_refuses() {
        let (g, free) = guard(0, 1);
        free.store(0, Ordering::Relaxed);
        g.measure();
        assert!(!g.is_low());
        assert!(g.admit().is_ok());
        assert_eq!(g.free(), 0);
    }

    #[test]
    fn a_failing_probe_keeps_the_last_state() {
        let fail = Arc::new(AtomicBool::new(false));
        let f = fail.clone();
        let probe: Probe = Box::new(move |_| {
            if f.load(Ordering::Relaxed) {
                Err(std::io::Error::other("gone"))
            } else {
                Ok(10)
            }
        });
        let g = SpaceGuard::with_probe(Path::new("."), 1000, Duration::from_millis(1), probe);
        assert!(g.is_low());
        fail.store(true, Ordering::Relaxed);
        g.measure();
        assert!(g.is_low());
        assert_eq!(g.free(), 10);
    }
}

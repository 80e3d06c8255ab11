//! Latency samples and the summaries the reports carry.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Percentiles of a set of latency samples, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LatencySummary {
    /// How many samples.
    pub count: usize,
    /// Smallest sample.
    pub min_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 95th percentile.
    #[serde(default)]
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
    /// Arithmetic mean.
    pub mean_ms: f64,
}

impl LatencySummary {
    /// Summarises samples given in microseconds (sorted in place).
    pub fn from_micros(samples: &mut [u64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let ms = |us: u64| us as f64 / 1000.0;
        let sum: u128 = samples.iter().map(|&s| s as u128).sum();
        Self {
            count: samples.len(),
            min_ms: ms(samples[0]),
            p50_ms: ms(percentile_sorted(samples, 50.0)),
            p90_ms: ms(percentile_sorted(samples, 90.0)),
            p95_ms: ms(percentile_sorted(samples, 95.0)),
            p99_ms: ms(percentile_sorted(samples, 99.0)),
            max_ms: ms(samples[samples.len() - 1]),
            mean_ms: sum as f64 / samples.len() as f64 / 1000.0,
        }
    }
}

/// Nearest-rank percentile of an ascending slice (empty → 0).
pub fn percentile_sorted(sorted: &[u64], pct: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A duration in whole microseconds, saturating.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Median of a list of figures (mean of the middle two for an even count; NaN when empty).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut s: Vec<u64> = (1..=100).map(|x| x * 1000).collect();
        let sum = LatencySummary::from_micros(&mut s);
        assert_eq!(sum.p50_ms, 50.0);
        assert_eq!(sum.p99_ms, 99.0);
        assert_eq!(sum.max_ms, 100.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}

/// Throughput of a write workload: requests (or transactions) carrying `items` each.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Throughput {
    /// Requests (or transactions) that succeeded.
    pub ok: usize,
    /// Requests (or transactions) that failed.
    pub failed: usize,
    /// Items (users) written by the successful ones.
    pub items: usize,
    /// Wall time of the whole workload, in seconds.
    pub secs: f64,
    /// `items / secs`.
    pub items_per_s: f64,
    /// Latency of one request (or transaction + flush).
    pub latency: LatencySummary,
}

impl Throughput {
    /// Builds the summary from per-request latencies (µs) and the wall time.
    pub fn new(
        ok: usize,
        failed: usize,
        items: usize,
        secs: f64,
        latencies_us: &mut [u64],
    ) -> Self {
        Self {
            ok,
            failed,
            items,
            secs,
            items_per_s: if secs > 0.0 { items as f64 / secs } else { 0.0 },
            latency: LatencySummary::from_micros(latencies_us),
        }
    }
}

//! A fixed-bucket histogram of atomics: what the auth layer needs to time
//! verifications without depending on a metrics library.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Durations counted into buckets with fixed upper bounds (seconds); one
/// observation is three relaxed atomic adds.
#[derive(Debug)]
pub struct DurationHistogram {
    bounds: Vec<f64>,
    /// One count per bound, plus one for everything above the last.
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

/// A copy of a histogram's values.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Upper bound (seconds; the last is `+Inf`) and how many observations
    /// fell in that bucket alone (not cumulative).
    pub buckets: Vec<(f64, u64)>,
    /// The sum of all observations, in seconds.
    pub sum: f64,
    /// How many observations there were.
    pub count: u64,
}

impl DurationHistogram {
    /// Buckets `start`, `start × factor`, … (`count` of them), then `+Inf`.
    pub fn exponential(start: f64, factor: f64, count: u16) -> Self {
        let bounds: Vec<f64> = (0..i32::from(count))
            .map(|i| start * factor.powi(i))
            .collect();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self {
            bounds,
            counts,
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Counts one observation.
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let index = self
            .bounds
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(self.bounds.len());
        if let Some(count) = self.counts.get(index) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The values now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        HistogramSnapshot {
            count: buckets.iter().map(|(_, n)| n).sum(),
            buckets,
            sum: Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)).as_secs_f64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket() {
        let h = DurationHistogram::exponential(0.001, 2.0, 3); // 1, 2, 4 ms
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(2));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(1));
        let s = h.snapshot();
        let counts: Vec<u64> = s.buckets.iter().map(|(_, n)| *n).collect();
        assert_eq!(counts, vec![1, 1, 1, 1]);
        assert_eq!(s.count, 4);
        assert!((s.sum - 1.0055).abs() < 1e-9, "{}", s.sum);
        assert!(s.buckets[3].0.is_infinite());
    }
}

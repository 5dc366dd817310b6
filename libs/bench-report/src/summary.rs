//! Latency summaries: every timing is reported as median and p99.

use std::time::Duration;

use serde_json::{Value, json};

/// Median, p99, mean, min and max of a sample of durations. Percentiles
/// are nearest-rank: always a value that was measured, never interpolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    pub count: usize,
    pub median: Duration,
    pub p99: Duration,
    pub mean: Duration,
    pub min: Duration,
    pub max: Duration,
}

impl Summary {
    /// The summary of `samples` (in any order); all zero when empty.
    pub fn of(samples: &[Duration]) -> Summary {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let at = |fraction| percentile(&sorted, fraction).unwrap_or_default();
        Summary {
            count: sorted.len(),
            median: at(0.50),
            p99: at(0.99),
            mean: mean(&sorted),
            min: at(0.0),
            max: at(1.0),
        }
    }

    /// The figures in milliseconds: `{count, median_ms, p99_ms, ...}`.
    pub fn to_json_ms(&self) -> Value {
        let ms = |duration: Duration| duration.as_secs_f64() * 1e3;
        json!({
            "count": self.count,
            "median_ms": ms(self.median),
            "p99_ms": ms(self.p99),
            "mean_ms": ms(self.mean),
            "min_ms": ms(self.min),
            "max_ms": ms(self.max),
        })
    }
}

/// The nearest-rank percentile of `sorted` (ascending): the smallest value
/// with at least `fraction` of the sample at or below it. `None` when empty.
pub fn percentile(sorted: &[Duration], fraction: f64) -> Option<Duration> {
    let rank = (fraction * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

fn mean(samples: &[Duration]) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let total: u128 = samples.iter().map(Duration::as_nanos).sum();
    let nanos = total / samples.len() as u128;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().copied().map(Duration::from_millis).collect()
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples = ms(&(1..=100).rev().collect::<Vec<_>>());
        let summary = Summary::of(&samples);
        assert_eq!(summary.count, 100);
        assert_eq!(summary.median, Duration::from_millis(50));
        assert_eq!(summary.p99, Duration::from_millis(99));
        assert_eq!(summary.min, Duration::from_millis(1));
        assert_eq!(summary.max, Duration::from_millis(100));
        assert_eq!(summary.mean, Duration::from_micros(50_500));
    }

    #[test]
    fn a_small_sample_has_its_largest_value_as_p99() {
        let summary = Summary::of(&ms(&[3, 1, 2]));
        assert_eq!(summary.median, Duration::from_millis(2));
        assert_eq!(summary.p99, Duration::from_millis(3));
    }

    #[test]
    fn an_empty_sample_is_all_zero() {
        assert_eq!(Summary::of(&[]), Summary::default());
        assert_eq!(percentile(&[], 0.5), None);
    }
}

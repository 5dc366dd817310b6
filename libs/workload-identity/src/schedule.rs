//! When to refresh a certificate and how long to wait between failed
//! attempts. Pure arithmetic: randomness comes in as a number, so tests can
//! pin it.

use std::time::Duration;

/// Never refresh sooner than this after a certificate arrives, however short
/// its life: a CA that returns nearly expired certificates must not be asked
/// again in a tight loop.
pub const MIN_REFRESH_DELAY: Duration = Duration::from_secs(1);

/// When in its life a certificate is replaced (Istio's
/// `SECRET_GRACE_PERIOD_RATIO` and `SECRET_GRACE_PERIOD_RATIO_JITTER`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RotationPolicy {
    /// Fraction of the lifetime left when the refresh starts: 0.5 replaces a
    /// 24 h certificate after 12 h.
    pub grace_period_ratio: f64,
    /// Largest random shift of that fraction, either way, so a fleet of
    /// workloads started together does not renew in the same second.
    pub grace_period_ratio_jitter: f64,
}

impl RotationPolicy {
    /// Istio's defaults.
    pub const DEFAULT: RotationPolicy = RotationPolicy {
        grace_period_ratio: 0.5,
        grace_period_ratio_jitter: 0.01,
    };

    /// Both fractions must lie in [0, 1].
    pub fn validate(&self) -> Result<(), String> {
        let in_range = |value: f64| (0.0..=1.0).contains(&value);
        if !in_range(self.grace_period_ratio) {
            return Err(format!(
                "grace period ratio {} is outside [0, 1]",
                self.grace_period_ratio
            ));
        }
        if !in_range(self.grace_period_ratio_jitter) {
            return Err(format!(
                "grace period ratio jitter {} is outside [0, 1]",
                self.grace_period_ratio_jitter
            ));
        }
        Ok(())
    }

    /// How long after now to refresh a certificate with `lifetime` in all
    /// and `remaining` left. `draw` in [-1, 1] picks the jitter.
    pub fn refresh_delay(&self, lifetime: Duration, remaining: Duration, draw: f64) -> Duration {
        let ratio = (self.grace_period_ratio
            + self.grace_period_ratio_jitter * draw.clamp(-1.0, 1.0))
        .clamp(0.0, 1.0);
        let grace = lifetime.mul_f64(ratio);
        remaining.saturating_sub(grace).max(MIN_REFRESH_DELAY)
    }

    /// [`RotationPolicy::refresh_delay`] with a random jitter.
    pub fn jittered_refresh_delay(&self, lifetime: Duration, remaining: Duration) -> Duration {
        self.refresh_delay(lifetime, remaining, fastrand::f64() * 2.0 - 1.0)
    }
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Delays between failed attempts: doubling from `initial` up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl BackoffPolicy {
    /// 200 ms doubling to 30 s: a CA restart is bridged within a second or
    /// two, and a long outage costs the CA one request per workload every
    /// 15-30 s.
    pub const DEFAULT: BackoffPolicy = BackoffPolicy {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(30),
    };

    /// The un-jittered delay before retry number `retry` (0 for the first).
    pub fn nominal(&self, retry: u32) -> Duration {
        // 2^20 times any sane initial delay is past any sane cap; bounding
        // the exponent keeps the multiplication from overflowing.
        let factor = 1u32 << retry.min(20);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The running state of a [`BackoffPolicy`].
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    retry: u32,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Self {
        Self { policy, retry: 0 }
    }

    /// The next delay, between half and all of the nominal one; `draw` in
    /// [0, 1] picks where. Workloads that lost the CA together thus come
    /// back spread out rather than in one wave.
    pub fn next_delay_with(&mut self, draw: f64) -> Duration {
        let nominal = self.policy.nominal(self.retry);
        self.retry = self.retry.saturating_add(1);
        nominal.mul_f64(0.5 + 0.5 * draw.clamp(0.0, 1.0))
    }

    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(fastrand::f64())
    }

    /// Failed attempts since the last success.
    pub fn failures(&self) -> u32 {
        self.retry
    }

    pub fn reset(&mut self) {
        self.retry = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn istio_defaults_replace_a_day_long_certificate_after_twelve_hours() {
        let policy = RotationPolicy::DEFAULT;
        let day = 24 * HOUR;
        assert_eq!(policy.refresh_delay(day, day, 0.0), 12 * HOUR);
    }

    #[test]
    fn jitter_moves_the_refresh_by_at_most_the_jitter_fraction_of_the_lifetime() {
        let policy = RotationPolicy::DEFAULT;
        let day = 24 * HOUR;
        // 1% of 24 h is 864 s, either way.
        assert_eq!(
            policy.refresh_delay(day, day, 1.0),
            12 * HOUR - Duration::from_secs(864)
        );
        assert_eq!(
            policy.refresh_delay(day, day, -1.0),
            12 * HOUR + Duration::from_secs(864)
        );
        for _ in 0..1000 {
            let delay = policy.jittered_refresh_delay(day, day);
            assert!(
                (12 * HOUR - Duration::from_secs(864)..=12 * HOUR + Duration::from_secs(864))
                    .contains(&delay),
                "{delay:?}"
            );
        }
    }

    #[test]
    fn time_already_spent_is_subtracted() {
        // A 24 h certificate looked at 20 h into its life (4 h left) is due
        // at once; at 6 h in (18 h left) it is due in 6 h.
        let policy = RotationPolicy {
            grace_period_ratio_jitter: 0.0,
            ..RotationPolicy::DEFAULT
        };
        assert_eq!(policy.refresh_delay(24 * HOUR, 18 * HOUR, 0.5), 6 * HOUR);
        assert_eq!(
            policy.refresh_delay(24 * HOUR, 4 * HOUR, 0.0),
            MIN_REFRESH_DELAY
        );
    }

    #[test]
    fn other_ratios_and_a_short_lived_certificate() {
        let policy = |ratio| RotationPolicy {
            grace_period_ratio: ratio,
            grace_period_ratio_jitter: 0.0,
        };
        let four_seconds = Duration::from_secs(4);
        assert_eq!(
            policy(0.5).refresh_delay(four_seconds, four_seconds, 0.0),
            Duration::from_secs(2)
        );
        assert_eq!(
            policy(0.25).refresh_delay(four_seconds, four_seconds, 0.0),
            Duration::from_secs(3)
        );
        // Refreshing at once would be a loop: the floor holds it back.
        assert_eq!(
            policy(1.0).refresh_delay(four_seconds, four_seconds, 0.0),
            MIN_REFRESH_DELAY
        );
    }

    #[test]
    fn ratios_outside_zero_to_one_are_refused() {
        for (ratio, jitter) in [(-0.1, 0.01), (1.5, 0.01), (0.5, -0.01), (0.5, 2.0)] {
            let policy = RotationPolicy {
                grace_period_ratio: ratio,
                grace_period_ratio_jitter: jitter,
            };
            assert!(policy.validate().is_err(), "{policy:?}");
        }
        RotationPolicy::DEFAULT.validate().unwrap();
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = BackoffPolicy {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(5),
        };
        let nominal: Vec<u64> = (0..8)
            .map(|retry| policy.nominal(retry).as_millis() as u64)
            .collect();
        assert_eq!(nominal, [200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(policy.nominal(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn backoff_jitter_stays_between_half_and_all_of_the_nominal_delay() {
        let mut backoff = Backoff::new(BackoffPolicy::DEFAULT);
        assert_eq!(backoff.next_delay_with(1.0), Duration::from_millis(200));
        assert_eq!(backoff.next_delay_with(0.0), Duration::from_millis(200));
        assert_eq!(backoff.next_delay_with(0.5), Duration::from_millis(600));
        assert_eq!(backoff.failures(), 3);
        for retry in 3..12 {
            let nominal = BackoffPolicy::DEFAULT.nominal(retry);
            let delay = backoff.next_delay();
            assert!(
                nominal / 2 <= delay && delay <= nominal,
                "{delay:?} vs {nominal:?}"
            );
        }
    }

    #[test]
    fn backoff_starts_over_after_a_success() {
        let mut backoff = Backoff::new(BackoffPolicy::DEFAULT);
        for _ in 0..5 {
            backoff.next_delay();
        }
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
        assert_eq!(backoff.next_delay_with(1.0), BackoffPolicy::DEFAULT.initial);
    }
}

//! Exponential backoff shared by reconnects and watch re-establishment.
//!
//! One policy for both so that, after a NATS outage, the connection and every
//! watcher on it come back on the same rhythm instead of one of them hammering
//! the server while the other waits.

use std::time::Duration;

/// Delays that start at `initial` and double on every failed attempt, never
/// exceeding `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Upper bound; reached after a handful of failures and kept from then on.
    pub max: Duration,
}

impl BackoffPolicy {
    /// 100 ms doubling up to 5 s: quick enough to hide a server restart, slow
    /// enough not to flood the logs or the server during a long outage.
    pub const DEFAULT: BackoffPolicy = BackoffPolicy {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(5),
    };

    /// Delay before retry number `retry` (0 for the first retry).
    pub fn delay(&self, retry: u32) -> Duration {
        // 2^16 * initial is far beyond any sane cap; clamping the exponent
        // keeps the multiplication from overflowing.
        let factor = 1u32 << retry.min(16);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// Delay for async-nats' reconnect callback, which counts attempts from 1.
    ///
    /// The first attempt after a disconnect (or the very first connect) goes
    /// out at once: the server may only have blipped, and a starting service
    /// should not wait for nothing.
    pub(crate) fn reconnect_delay(&self, attempt: usize) -> Duration {
        match attempt {
            0 | 1 => Duration::ZERO,
            n => self.delay(u32::try_from(n - 2).unwrap_or(u32::MAX)),
        }
    }
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The running state of a [`BackoffPolicy`]: how many retries in a row failed.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    policy: BackoffPolicy,
    retry: u32,
}

impl Backoff {
    pub(crate) fn new(policy: BackoffPolicy) -> Self {
        Self { policy, retry: 0 }
    }

    /// The delay to wait before the next retry; each call lengthens the next.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.policy.delay(self.retry);
        self.retry = self.retry.saturating_add(1);
        delay
    }

    /// Starts over after a success.
    pub(crate) fn reset(&mut self) {
        self.retry = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn doubles_from_initial_up_to_the_cap() {
        let mut backoff = Backoff::new(BackoffPolicy::DEFAULT);
        let delays: Vec<_> = (0..10).map(|_| backoff.next_delay()).collect();
        assert_eq!(
            delays,
            [
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(3200),
                ms(5000),
                ms(5000),
                ms(5000),
                ms(5000)
            ]
        );
    }

    #[test]
    fn reset_starts_over() {
        let mut backoff = Backoff::new(BackoffPolicy::DEFAULT);
        backoff.next_delay();
        backoff.next_delay();
        backoff.reset();
        assert_eq!(backoff.next_delay(), ms(100));
    }

    #[test]
    fn huge_retry_counts_do_not_overflow() {
        assert_eq!(BackoffPolicy::DEFAULT.delay(u32::MAX), ms(5000));
        assert_eq!(BackoffPolicy::DEFAULT.reconnect_delay(usize::MAX), ms(5000));
    }

    #[test]
    fn first_reconnect_attempt_is_immediate() {
        let policy = BackoffPolicy::DEFAULT;
        assert_eq!(policy.reconnect_delay(1), Duration::ZERO);
        assert_eq!(policy.reconnect_delay(2), ms(100));
        assert_eq!(policy.reconnect_delay(3), ms(200));
        assert_eq!(policy.reconnect_delay(20), ms(5000));
    }
}

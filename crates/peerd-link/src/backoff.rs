//! Redial delays: exponential backoff with jitter.
//!
//! A provider that refuses us (busy lines, an authentication failure, a
//! network outage) must not be redialled in a tight loop: that costs money
//! on metered lines and can get an account locked. The delay doubles with
//! every failure in a row, from `min` up to `max`. Jitter ("equal jitter":
//! a random point in the upper half of the interval) keeps many hosts
//! that lost the same network from redialling in lockstep.

use std::time::Duration;

/// The redial policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure (before jitter).
    pub min: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Backoff {
    /// The delay before the next attempt after `failures` failures in a row
    /// (at least 1), without jitter: `min * 2^(failures-1)`, at most `max`.
    pub fn ceiling(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.min
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max)
            .min(self.max)
            .max(self.min.min(self.max))
    }

    /// The delay with jitter: uniform in `[ceiling/2, ceiling]`; `unit` is
    /// a random number in `[0, 1)`.
    pub fn delay_with(&self, failures: u32, unit: f64) -> Duration {
        let ceiling = self.ceiling(failures);
        let half = ceiling / 2;
        half + (ceiling - half).mul_f64(unit.clamp(0.0, 1.0))
    }

    /// The delay with jitter from a random source.
    pub fn delay(&self, failures: u32) -> Duration {
        self.delay_with(failures, fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        min: Duration::from_secs(5),
        max: Duration::from_secs(300),
    };

    #[test]
    fn doubles_from_min_up_to_max() {
        let secs: Vec<u64> = (1..=9).map(|n| B.ceiling(n).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(B.ceiling(0), B.min, "0 failures is treated as 1");
        assert_eq!(B.ceiling(u32::MAX), B.max, "no overflow");
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        for n in 1..40 {
            let c = B.ceiling(n);
            assert_eq!(B.delay_with(n, 0.0), c / 2);
            assert_eq!(B.delay_with(n, 1.0), c);
            for _ in 0..100 {
                let d = B.delay(n);
                assert!(
                    d >= c / 2 && d <= c,
                    "{n}: {d:?} outside [{:?}, {c:?}]",
                    c / 2
                );
            }
        }
    }

    #[test]
    fn a_max_below_min_wins() {
        let odd = Backoff {
            min: Duration::from_secs(10),
            max: Duration::from_secs(3),
        };
        assert_eq!(odd.ceiling(1), Duration::from_secs(3));
        assert_eq!(odd.ceiling(5), Duration::from_secs(3));
    }
}

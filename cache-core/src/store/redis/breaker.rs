//! A circuit breaker: after a run of failures, a shared store is not called for a while, then
//! one probe at a time tests whether it is back.
//!
//! What must stay true: while open, `allow` answers without waiting, so a dead backend costs a
//! request nothing; exactly one caller per cool-down gets through as the probe.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::time::now_ms;

/// Consecutive failures, and the instant before which calls are refused.
///
/// ```ignore
/// let breaker = Breaker::new(3, Duration::from_millis(500));
/// for _ in 0..3 { breaker.failure(); }
/// assert!(!breaker.allow());
/// ```
#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    cool_down_ms: u64,
    failures: AtomicU32,
    open_until_ms: AtomicU64,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cool_down: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cool_down_ms: u64::try_from(cool_down.as_millis()).unwrap_or(u64::MAX),
            failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
        }
    }

    /// Whether a call may go out now. When the cool-down has passed, the first caller to ask
    /// becomes the probe and pushes the next opening out by another cool-down.
    pub(crate) fn allow(&self) -> bool {
        let until = self.open_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = now_ms();
        if now < until {
            return false;
        }
        self.open_until_ms
            .compare_exchange(
                until,
                now.saturating_add(self.cool_down_ms),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    pub(crate) fn success(&self) {
        self.failures.store(0, Ordering::Release);
        self.open_until_ms.store(0, Ordering::Release);
    }

    pub(crate) fn failure(&self) {
        let failures = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if failures >= self.threshold {
            self.open_until_ms.store(
                now_ms().saturating_add(self.cool_down_ms),
                Ordering::Release,
            );
        }
    }

    /// Whether calls are being refused right now.
    pub(crate) fn is_open(&self) -> bool {
        now_ms() < self.open_until_ms.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_lets_one_probe_through_after_the_cool_down() {
        let breaker = Breaker::new(3, Duration::from_millis(30));
        breaker.failure();
        breaker.failure();
        assert!(breaker.allow(), "two failures are not a run");
        breaker.failure();
        assert!(!breaker.allow());
        assert!(breaker.is_open());
        std::thread::sleep(Duration::from_millis(40));
        assert!(
            breaker.allow(),
            "the first caller after the cool-down probes"
        );
        assert!(!breaker.allow(), "only one probe per cool-down");
        breaker.success();
        assert!(breaker.allow());
        assert!(!breaker.is_open());
    }
}

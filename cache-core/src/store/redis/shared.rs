//! What every call of one `RedisStore` shares, the store itself and its subscriber alike: the
//! connections, the options, the scripts, the cache it is attached to, what the subscription
//! last learnt of Redis (when it synced, whether Redis may evict the clocks, whether its first
//! attempt has settled) and the counters.
//!
//! What must stay true: this file is the only state the store and the subscriber share, so
//! neither imports the other; a tick this process takes is never below one it has seen
//! ([`Shared::floor`]), and while Redis may evict the counter not below the wall clock either.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::breaker::Breaker;
use super::conn::{Connector, Tls};
use super::keys::Keys;
use super::scripts::Scripts;
use crate::store::ClockLink;
use crate::time::now_ms;

/// Default limit on each Redis call.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// Default most connections deadpool opens at once (each thread keeps one multiplexed
/// connection, which carries many calls at once).
pub(crate) const DEFAULT_POOL_SIZE: usize = 4;
/// Shortest time between two warnings that Redis is full and refuses stores.
const FULL_WARNING_EVERY_MS: u64 = 10_000;

/// What every call of one store shares.
pub(crate) struct Shared {
    pub(crate) conn: Arc<Connector>,
    pub(crate) options: Options,
    /// The tick at which the subscription last (re)started: the mirror of the clocks may lack
    /// invalidations of records born before it, which are therefore checked in Redis.
    pub(crate) synced_at: AtomicU64,
    pub(crate) keys: OnceLock<Keys>,
    pub(crate) breaker: Breaker,
    pub(crate) link: OnceLock<ClockLink>,
    /// Woken when an invalidation failed, so that the subscriber re-ticks as soon as Redis answers.
    pub(crate) resync: Notify,
    pub(crate) scripts: Scripts,
    pub(crate) errors: AtomicU64,
    pub(crate) corrupt: AtomicU64,
    /// What the subscription last learnt of Redis's `maxmemory-policy` (an [`Eviction`]).
    eviction: AtomicU8,
    /// Reads answered as misses because nothing could vouch for the record.
    pub(crate) unverified: AtomicU64,
    /// When the last "Redis is full" warning was logged (Unix ms).
    full_warned_ms: AtomicU64,
    /// Becomes true once the first subscription attempt has settled: subscribed (the mirror is
    /// current and the eviction policy known) or failed. Never false again.
    first_attempt: watch::Sender<bool>,
}

/// Whether Redis may evict the tag clocks, as far as this process knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Eviction {
    /// The policy has not been read yet: treated as at risk.
    Unchecked = 0,
    /// `noeviction` or `volatile-*`: only records (which all expire) can be evicted.
    Safe = 1,
    /// `allkeys-*`, a policy this code does not know, or one Redis would not tell.
    AtRisk = 2,
}

impl Eviction {
    /// What a `maxmemory-policy` means for the clocks.
    pub(crate) fn under(policy: &str) -> Eviction {
        match policy {
            "noeviction" | "volatile-lru" | "volatile-lfu" | "volatile-random" | "volatile-ttl" => {
                Eviction::Safe
            }
            _ => Eviction::AtRisk,
        }
    }
}

/// What the builder methods set.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) pool_size: usize,
    pub(crate) timeout: Duration,
    pub(crate) namespace: String,
    pub(crate) strict_reads: bool,
    pub(crate) assumed_policy: Option<String>,
    /// Certificates for `rediss://` (none: the platform's trust store, no client certificate).
    pub(crate) tls: Tls,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pool_size: DEFAULT_POOL_SIZE,
            timeout: DEFAULT_TIMEOUT,
            namespace: String::new(),
            strict_reads: false,
            assumed_policy: None,
            tls: Tls::default(),
        }
    }
}

impl Shared {
    /// Nothing attached, nothing synced, the eviction policy not read yet.
    pub(crate) fn new(conn: Connector, options: Options, breaker: Breaker) -> Shared {
        Shared {
            conn: Arc::new(conn),
            options,
            synced_at: AtomicU64::new(u64::MAX),
            keys: OnceLock::new(),
            breaker,
            link: OnceLock::new(),
            resync: Notify::new(),
            scripts: Scripts::new(),
            errors: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            eviction: AtomicU8::new(Eviction::Unchecked as u8),
            unverified: AtomicU64::new(0),
            full_warned_ms: AtomicU64::new(0),
            first_attempt: watch::Sender::new(false),
        }
    }

    /// The first subscription attempt has settled, either way.
    pub(crate) fn settle(&self) {
        if !*self.first_attempt.borrow() {
            self.first_attempt.send_replace(true);
        }
    }

    /// Whether the first subscription attempt has settled.
    pub(crate) fn settled(&self) -> bool {
        *self.first_attempt.borrow()
    }

    /// Waits until the first subscription attempt has settled (at once if it has). Bound it
    /// with a time limit: an attempt on a Redis that hangs takes seconds to fail.
    pub(crate) async fn first_attempt_settled(&self) {
        let mut settled = self.first_attempt.subscribe();
        // Err only if the sender is gone, and it lives as long as `self`.
        let _ = settled.wait_for(|settled| *settled).await;
    }

    pub(crate) fn observed(&self, seq: u64) {
        if let Some(link) = self.link.get() {
            link.observed(seq);
        }
    }

    /// The lowest tick a new one may take: the highest this process has seen, and while Redis
    /// may evict the counter, the wall clock in µs too (an evicted counter would otherwise start
    /// again below the ticks records already carry, and a process subscribing then would vouch
    /// for them).
    pub(crate) fn floor(&self) -> u64 {
        let seen = self.link.get().map_or(0, ClockLink::seq);
        if self.clocks_at_risk() {
            seen.max(now_ms().saturating_mul(1000))
        } else {
            seen
        }
    }

    /// What this process knows of whether Redis may evict the clocks.
    pub(crate) fn eviction(&self) -> Eviction {
        match self.eviction.load(Ordering::Acquire) {
            1 => Eviction::Safe,
            2 => Eviction::AtRisk,
            _ => Eviction::Unchecked,
        }
    }

    pub(crate) fn set_eviction(&self, eviction: Eviction) {
        self.eviction.store(eviction as u8, Ordering::Release);
    }

    /// Whether a check in Redis cannot be trusted (a clock may have been evicted).
    pub(crate) fn clocks_at_risk(&self) -> bool {
        self.eviction() != Eviction::Safe
    }

    /// The policy to assume when Redis will not tell.
    pub(crate) fn assumed_policy(&self) -> Option<&str> {
        self.options.assumed_policy.as_deref()
    }

    /// Logs, at most every [`FULL_WARNING_EVERY_MS`], that Redis refuses stores.
    pub(crate) fn warn_full(&self) {
        let now = now_ms();
        let last = self.full_warned_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= FULL_WARNING_EVERY_MS
            && self
                .full_warned_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                "Redis is at its maxmemory and refuses new records: responses are still answered, \
                 not stored in Redis; invalidations still run. maxmemory-policy volatile-lru \
                 makes room by evicting records instead"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_policies_that_evict_nothing_but_expiring_keys_are_safe_for_the_clocks() {
        for policy in [
            "noeviction",
            "volatile-lru",
            "volatile-lfu",
            "volatile-random",
            "volatile-ttl",
        ] {
            assert_eq!(Eviction::under(policy), Eviction::Safe, "{policy}");
        }
        for policy in [
            "allkeys-lru",
            "allkeys-lfu",
            "allkeys-random",
            "",
            "some-future-policy",
        ] {
            assert_eq!(Eviction::under(policy), Eviction::AtRisk, "{policy}");
        }
    }
}

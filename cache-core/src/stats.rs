//! Counters: what [`crate::Cache::stats`] returns, kept as relaxed atomics and mirrored to the
//! `metrics` facade (`cache_actix_*_total`) so that any installed recorder sees them too.
//!
//! What must stay true: recording an event is a handful of atomic adds, never a lock, because
//! it runs on every hit.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one tier (L1 memory or L2 shared store).
///
/// ```
/// let tier = cache_core::TierStats::default();
/// assert_eq!(tier.hits + tier.misses, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierStats {
    /// Lookups that found a record.
    pub hits: u64,
    /// Lookups that found nothing.
    pub misses: u64,
    /// Records written.
    pub stores: u64,
    /// Failed calls (timeouts, connection errors, corrupt values).
    pub errors: u64,
    /// Records dropped to stay within the budget.
    pub evictions: u64,
    /// Records held now.
    pub entries: u64,
    /// Bytes held now.
    pub bytes: u64,
    /// Reads a shared store answered as misses because nothing could vouch for what it holds:
    /// its keys, tag clocks included, may be evicted (see [`TierStats::clocks_at_risk`]), and the
    /// record is older than what this process's own clocks cover (or they are not being kept
    /// current right now).
    pub unverified: u64,
    /// Whether the shared store's tag clocks may be evicted (a Redis `maxmemory-policy` of
    /// `allkeys-*`, or one that could not be read yet). Its records are then trusted only where
    /// this process's own clocks vouch for them (fewer L2 hits, counted in
    /// [`TierStats::unverified`]); the log says why.
    pub clocks_at_risk: bool,
}

/// A snapshot of the cache's counters: totals, then per tier.
///
/// ```
/// let cache = cache_core::Cache::memory();
/// let stats = cache.stats();
/// assert_eq!(stats.hits, 0);
/// assert_eq!(stats.entries, stats.l1.entries);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests answered from a fresh entry.
    pub hits: u64,
    /// Requests that ran the handler because nothing usable was stored.
    pub misses: u64,
    /// Requests answered from a stale entry (revalidating or because the handler failed).
    pub stale_hits: u64,
    /// Responses stored.
    pub stores: u64,
    /// Requests or responses the cache deliberately left alone (each with a named reason).
    pub bypasses: u64,
    /// Entries dropped to stay within the memory budget.
    pub evictions: u64,
    /// Tag, URL and purge-all invalidations.
    pub invalidations: u64,
    /// Store failures (all turned into misses).
    pub errors: u64,
    /// Entries held now (L1 when there is one, else L2).
    pub entries: u64,
    /// Bytes held now (L1 when there is one, else L2).
    pub bytes: u64,
    /// The in-process memory tier.
    pub l1: TierStats,
    /// The shared tier.
    pub l2: TierStats,
}

/// An event worth counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Answered from a fresh entry.
    Hit,
    /// Answered from a stale entry.
    StaleHit,
    /// Ran the handler.
    Miss,
    /// Stored a response.
    Store,
    /// Left a request or response alone.
    Bypass,
    /// Invalidated a tag, a URL or everything.
    Invalidation,
    /// A store failed.
    Error,
}

#[derive(Debug, Default)]
pub(crate) struct Tier {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) stores: AtomicU64,
    pub(crate) errors: AtomicU64,
}

impl Tier {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, store: TierStats) -> TierStats {
        TierStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            stores: self.stores.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed) + store.errors,
            ..store
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Recorder {
    hits: AtomicU64,
    misses: AtomicU64,
    stale_hits: AtomicU64,
    stores: AtomicU64,
    bypasses: AtomicU64,
    invalidations: AtomicU64,
    errors: AtomicU64,
    pub(crate) l1: Tier,
    pub(crate) l2: Tier,
}

impl Recorder {
    pub(crate) fn record(&self, event: Event) {
        let (counter, name) = match event {
            Event::Hit => (&self.hits, "cache_actix_hits_total"),
            Event::StaleHit => (&self.stale_hits, "cache_actix_stale_hits_total"),
            Event::Miss => (&self.misses, "cache_actix_misses_total"),
            Event::Store => (&self.stores, "cache_actix_stores_total"),
            Event::Bypass => (&self.bypasses, "cache_actix_bypasses_total"),
            Event::Invalidation => (&self.invalidations, "cache_actix_invalidations_total"),
            Event::Error => (&self.errors, "cache_actix_errors_total"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(name).increment(1);
    }

    pub(crate) fn snapshot(&self, l1: Option<TierStats>, l2: Option<TierStats>) -> Stats {
        let l1 = l1.map(|s| self.l1.snapshot(s)).unwrap_or_default();
        let l2 = l2.map(|s| self.l2.snapshot(s)).unwrap_or_default();
        let holder = if l1.entries > 0 || l2.entries == 0 {
            l1
        } else {
            l2
        };
        Stats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            stale_hits: self.stale_hits.load(Ordering::Relaxed),
            stores: self.stores.load(Ordering::Relaxed),
            bypasses: self.bypasses.load(Ordering::Relaxed),
            evictions: l1.evictions + l2.evictions,
            invalidations: self.invalidations.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed) + l1.errors + l2.errors,
            entries: holder.entries,
            bytes: holder.bytes,
            l1,
            l2,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use metrics::{
        Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };

    use super::Event;
    use crate::Cache;

    /// A recorder that keeps counter totals by name, standing in for Prometheus & co.
    #[derive(Default)]
    struct Totals(Arc<Mutex<HashMap<String, u64>>>);

    struct Named(String, Arc<Mutex<HashMap<String, u64>>>);

    impl CounterFn for Named {
        fn increment(&self, value: u64) {
            *self.1.lock().unwrap().entry(self.0.clone()).or_default() += value;
        }
        fn absolute(&self, value: u64) {
            self.1.lock().unwrap().insert(self.0.clone(), value);
        }
    }

    impl Recorder for Totals {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(Arc::new(Named(key.name().to_string(), self.0.clone())))
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    #[test]
    fn events_reach_stats_and_the_metrics_facade() {
        let recorder = Totals::default();
        let cache = Cache::memory();
        metrics::with_local_recorder(&recorder, || {
            cache.record(Event::Hit);
            cache.record(Event::Hit);
            cache.record(Event::Miss);
            cache.record(Event::Bypass);
        });
        let totals = recorder.0.lock().unwrap().clone();
        assert_eq!(totals.get("cache_actix_hits_total"), Some(&2));
        assert_eq!(totals.get("cache_actix_misses_total"), Some(&1));
        assert_eq!(totals.get("cache_actix_bypasses_total"), Some(&1));
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.bypasses), (2, 1, 1));
    }
}

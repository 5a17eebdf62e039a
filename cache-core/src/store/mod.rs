//! The [`Store`] trait every backend implements, and the records it holds.
//!
//! A store is a plain key-value map from [`CacheKey`] to [`Record`]. It need not be trusted:
//! the [`crate::Cache`] checks every record's full key and its tag clock after reading it, so a
//! store that returns a wrong or old record causes a miss, never a wrong answer.

#[cfg(feature = "redis")]
mod breaker;
pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "redis")]
mod redis_conn;
#[cfg(feature = "redis")]
mod redis_scripts;
#[cfg(feature = "redis")]
mod subscriber;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use crate::tags::TagClocks;
use crate::{CacheError, CacheKey, Entry, MemoryStore, TierStats};

/// The list of headers a resource varies on, stored under its primary key so that a request can
/// compute its variant key before it knows the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variants {
    /// The primary key's full encoding.
    pub key: Arc<[u8]>,
    /// Lowercase header names, in the order the variant key adds them.
    pub vary: Arc<[String]>,
    /// After this instant (Unix ms) the list is useless: every variant has expired.
    pub expires_at_ms: u64,
}

/// What a store holds under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A response (under a primary key when it has no `Vary`, else under a variant key).
    Response(Arc<Entry>),
    /// The vary list of a resource, under its primary key.
    Variants(Arc<Variants>),
}

impl Record {
    /// The full key encoding the record was stored under.
    pub fn key(&self) -> &[u8] {
        match self {
            Record::Response(entry) => &entry.key,
            Record::Variants(variants) => &variants.key,
        }
    }

    /// After this instant (Unix ms) the record may be dropped.
    pub fn expires_at_ms(&self) -> u64 {
        match self {
            Record::Response(entry) => entry.expires_at_ms(),
            Record::Variants(variants) => variants.expires_at_ms,
        }
    }

    /// Approximate bytes of variable-size data, for budgets.
    pub fn payload_bytes(&self) -> usize {
        match self {
            Record::Response(entry) => entry.payload_bytes(),
            Record::Variants(variants) => {
                variants.key.len() + variants.vary.iter().map(String::len).sum::<usize>()
            }
        }
    }
}

/// A cache backend. Implement it to plug in another store; [`crate::MemoryStore`] is the
/// reference implementation.
///
/// Errors are reported, not hidden: the [`crate::Cache`] turns a failed `get` into a miss and a
/// failed `put` into a response that is simply not stored, and counts both.
///
/// ```
/// use std::{collections::HashMap, sync::{Arc, Mutex}};
/// use cache_core::{async_trait, CacheError, CacheKey, Record, Store, TierStats};
///
/// #[derive(Default)]
/// struct MapStore(Mutex<HashMap<u128, Record>>);
///
/// #[async_trait]
/// impl Store for MapStore {
///     async fn get(&self, key: &CacheKey) -> Result<Option<Record>, CacheError> {
///         Ok(self.0.lock().unwrap().get(&key.hash()).cloned())
///     }
///     async fn put(&self, key: &CacheKey, record: Record) -> Result<(), CacheError> {
///         self.0.lock().unwrap().insert(key.hash(), record);
///         Ok(())
///     }
///     async fn remove(&self, key: &CacheKey) -> Result<(), CacheError> {
///         self.0.lock().unwrap().remove(&key.hash());
///         Ok(())
///     }
///     async fn clear(&self) -> Result<(), CacheError> {
///         self.0.lock().unwrap().clear();
///         Ok(())
///     }
///     fn stats(&self) -> TierStats {
///         TierStats { entries: self.0.lock().unwrap().len() as u64, ..TierStats::default() }
///     }
/// }
/// let cache = cache_core::Cache::builder().store(MapStore::default()).build();
/// ```
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The record stored under `key`, if any.
    async fn get(&self, key: &CacheKey) -> Result<Option<Record>, CacheError>;
    /// Stores `record` under `key`, replacing what was there. It may be kept until
    /// `record.expires_at_ms()`, never longer.
    async fn put(&self, key: &CacheKey, record: Record) -> Result<(), CacheError>;
    /// Drops the record under `key`.
    async fn remove(&self, key: &CacheKey) -> Result<(), CacheError>;
    /// Drops everything this store holds for this cache.
    async fn clear(&self) -> Result<(), CacheError>;
    /// Entries, bytes and evictions as the store counts them.
    fn stats(&self) -> TierStats;

    /// Whether this store keeps the tag clocks for every process that shares it (as
    /// `RedisStore` does). Then it must check `born` and tags in [`Store::put`] and
    /// [`Store::get`] against its own clocks (refusing a stale put with
    /// [`CacheError::Invalidated`]), and implement [`Store::invalidate`],
    /// [`Store::purge_clocks`] and [`Store::attach`]. A plain store keeps the default, `false`:
    /// the [`crate::Cache`]'s own clocks are then the authority.
    fn keeps_clocks(&self) -> bool {
        false
    }

    /// Invalidates `tags` in the shared clocks as one tick, tells every attached process, and
    /// returns the tick. Only called when [`Store::keeps_clocks`].
    async fn invalidate(&self, _tags: &[String]) -> Result<u64, CacheError> {
        Err(CacheError::Config("this store keeps no tag clocks".into()))
    }

    /// Invalidates everything stored so far, as one tick, and returns it. Only called when
    /// [`Store::keeps_clocks`].
    async fn purge_clocks(&self) -> Result<u64, CacheError> {
        Err(CacheError::Config("this store keeps no tag clocks".into()))
    }

    /// Connects the store to a cache's clocks and L1, so that invalidations made by other
    /// processes reach them. Called once, by [`crate::CacheBuilder::build`], when
    /// [`Store::keeps_clocks`].
    fn attach(&self, _link: ClockLink) {}
}

/// What a clock-keeping store reports to: one cache's tag clocks and its L1.
///
/// What must stay true: while the store cannot vouch that every invalidation reaches this
/// process (its subscription is down), the L1 is empty and unused; when it can again, the L1
/// starts empty and fills begun during the gap are refused.
#[derive(Clone, Debug)]
pub struct ClockLink {
    clocks: Arc<TagClocks>,
    l1: Option<MemoryStore>,
    l1_live: Arc<AtomicBool>,
    namespace: String,
}

impl ClockLink {
    pub(crate) fn new(
        clocks: Arc<TagClocks>,
        l1: Option<MemoryStore>,
        l1_live: Arc<AtomicBool>,
        namespace: String,
    ) -> ClockLink {
        ClockLink {
            clocks,
            l1,
            l1_live,
            namespace,
        }
    }

    /// The cache's namespace; a shared store keeps each namespace's keys and clocks apart.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Whether every invalidation reaches this process right now (the subscription is up).
    pub fn in_sync(&self) -> bool {
        self.l1_live.load(Ordering::Acquire)
    }

    /// The highest tick this process has seen.
    pub fn seq(&self) -> u64 {
        self.clocks.now()
    }

    /// A tick read from the shared clocks: fills that start now are born at least there.
    pub fn observed(&self, seq: u64) {
        self.clocks.observe(seq);
    }

    /// `tags` were invalidated at `tick` (by any process).
    pub fn invalidated<I, T>(&self, tick: u64, tags: I)
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.clocks.apply(tick, tags);
    }

    /// Everything was purged at `tick`.
    pub fn purged(&self, tick: u64) {
        self.clocks.apply_purge(tick);
        if let Some(l1) = &self.l1 {
            l1.clear_now();
        }
    }

    /// Invalidations may be missed from now on: drop the L1 and stop using it.
    pub fn lost(&self) {
        self.l1_live.store(false, Ordering::SeqCst);
        self.forget_local();
    }

    /// Every invalidation reaches this process again, and the shared clocks stand at `seq`
    /// (a tick taken after the subscription was made): empty the L1, refuse fills begun before,
    /// and use the L1 again.
    pub fn resumed(&self, seq: u64) {
        self.forget_local();
        self.clocks.observe(seq);
        self.l1_live.store(true, Ordering::SeqCst);
    }

    /// Drops the L1 and makes every entry born up to now invalid on this node.
    pub fn forget_local(&self) {
        self.clocks.purge_local();
        if let Some(l1) = &self.l1 {
            l1.clear_now();
        }
    }
}

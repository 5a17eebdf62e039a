//! The [`Store`] trait every backend implements, and the records it holds.
//!
//! A store is a plain key-value map from [`CacheKey`] to [`Record`]. It need not be trusted:
//! the [`crate::Cache`] checks every record's full key and its tag clock after reading it, so a
//! store that returns a wrong or old record causes a miss, never a wrong answer. A store that is
//! also the authority on the tag clocks of every process sharing it implements
//! [`ClockAuthority`] too (`authority.rs`); `memory.rs` is the in-process store, `redis/` the
//! shared one.
//!
//! What must stay true: storage and clock authority stay separate traits, and the only bridge
//! is [`Store::clock_authority`], asked once when the store is given to the builder.

mod authority;
mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use authority::{ClockAuthority, ClockLink};
pub use memory::MemoryStore;
#[cfg(feature = "redis")]
pub use redis::RedisStore;

use crate::{CacheError, CacheKey, Entry, LeaseReply, TierStats};

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

/// A cache backend. Implement it to plug in another store; [`MemoryStore`] is the reference
/// implementation, and [`crate::codec`] turns a [`Record`] into bytes and back for a store
/// outside the process.
///
/// Errors are reported, not hidden: the [`crate::Cache`] turns a failed `get` into a miss and a
/// failed `put` into a response that is simply not stored, and counts both.
///
/// # Guarantees
///
/// What an implementor must guarantee:
/// - `Send + Sync`, and every method may be called concurrently from many threads;
/// - `put` keeps a record no longer than `record.expires_at_ms()` (it may drop it sooner, or
///   never keep it at all: that is a miss);
/// - `clear` drops everything this store holds for this cache: it is what
///   [`crate::Cache::purge_all`] relies on to empty a plain shared store;
/// - `stats` answers at once (it is read by [`crate::Cache::stats`], maybe on every scrape).
///
/// What the [`crate::Cache`] guarantees on top, whatever the store does:
/// - a record whose full key differs from the key asked for is a miss, so a store may hash
///   keys, collide or even lie (return another key's record) without a wrong answer;
/// - a record is checked against this process's tag clocks before it is served or copied into
///   the L1, so a store never revives what this process invalidated;
/// - a store error is a miss or a response not stored, never a 5xx; only the explicit
///   operations ([`crate::Cache::purge_url`], [`crate::Cache::purge_all`]) return it.
///
/// What a plain store does not give: its clocks are this process's. An invalidation reaches
/// other processes that share the store only through a [`ClockAuthority`]; through a plain
/// store they keep answering what it holds under the tag until it expires (their own
/// invalidations and `purge_all`, which empties the store, still work).
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
/// # use cache_core::{Cache, Entry, Lookup};
/// # fn fill_starts(cache: &Cache) -> u64 { cache.begin_fill() }
/// # async fn fill_ends(cache: &Cache, born: u64, path: &str, tags: &[&str]) -> bool {
/// #     let primary = cache.primary_key(b"shop.example", path.as_bytes(), b"");
/// #     let now = cache_core::time::now_ms();
/// #     let entry = Entry::new(primary.cache_key().bytes(), 200, vec![], "body".into(), now, now + 60_000)
/// #         .with_born(born)
/// #         .with_tags(tags.iter().map(|t| t.to_string()).collect());
/// #     cache.store(&primary, &primary.cache_key(), entry).await.is_ok()
/// # }
/// # async fn fill(cache: &Cache, path: &str, tags: &[&str]) -> bool { fill_ends(cache, fill_starts(cache), path, tags).await }
/// # async fn answered(cache: &Cache, path: &str) -> bool {
/// #     let primary = cache.primary_key(b"shop.example", path.as_bytes(), b"");
/// #     matches!(cache.lookup(&primary, |_| unreachable!()).await, Lookup::Fresh(_))
/// # }
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// // `fill` stands for a request whose response the middleware stores, `answered` for one the
/// // cache answers.
/// let cache = Cache::builder().store(MapStore::default()).build();
/// assert!(fill(&cache, "/products/1", &["products"]).await);
/// assert!(answered(&cache, "/products/1").await);
/// // The store still holds the record; the cache's clocks refuse it.
/// cache.invalidate_tag("products").await?;
/// assert!(!answered(&cache, "/products/1").await);
/// # Ok::<(), CacheError>(())
/// # }).unwrap();
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

    /// This store as the authority on tag clocks, if it is one. A plain store keeps the default,
    /// `None`: the [`crate::Cache`]'s own clocks are then the authority. A store that implements
    /// [`ClockAuthority`] returns `Some(self)`; a wrapper around one (adding metrics, say)
    /// forwards its inner store's answer, or the clocks it keeps go unused.
    ///
    /// Asked once, by [`crate::CacheBuilder::l2`]: a method rather than a second builder call so
    /// that `l2(store)` cannot wire a clock-keeping store as a plain one by mistake.
    fn clock_authority(self: Arc<Self>) -> Option<Arc<dyn ClockAuthority>> {
        None
    }

    /// Takes the lease of the fill `flight` (a key hash) for `time`, if nobody holds it (see
    /// [`crate::lease`]): [`LeaseReply::Granted`] with a fencing token above every token
    /// granted for the key before, or [`LeaseReply::Held`] with the time left. The default
    /// keeps no leases ([`LeaseReply::Unsupported`]): each node then fills on its own, as a
    /// store written before leases did. An `Err` is treated as `Unsupported`, at once.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use cache_core::{MemoryStore, Store, LeaseReply};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let store = MemoryStore::new();
    /// let reply = store.acquire_lease(7, Duration::from_secs(1)).await;
    /// assert_eq!(reply, Ok(LeaseReply::Unsupported));
    /// # });
    /// ```
    async fn acquire_lease(&self, flight: u128, time: Duration) -> Result<LeaseReply, CacheError> {
        let _ = (flight, time);
        Ok(LeaseReply::Unsupported)
    }

    /// Releases the lease of `flight` if it is still held with `token` (a lease that expired
    /// and was taken by another fill is left alone). Called when a fill ends, from `Drop`: it
    /// must not block, so a store that needs a round trip sends it in the background. The
    /// default does nothing.
    fn release_lease(&self, flight: u128, token: u64) {
        let _ = (flight, token);
    }

    /// Stores `record` like [`Store::put`], for the holder of the lease whose token is
    /// `token`; refuses it with [`CacheError::Superseded`] when a newer fill holds the key's
    /// lease or stored its record (a higher token), and keeps `token` with the record. Only
    /// called with tokens this store granted; the default is `put`.
    async fn put_fenced(
        &self,
        key: &CacheKey,
        record: Record,
        token: u64,
    ) -> Result<(), CacheError> {
        let _ = token;
        self.put(key, record).await
    }
}

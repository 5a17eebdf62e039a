//! [`ClockAuthority`], what a store implements when it keeps the tag clocks for every process
//! that shares it, and [`ClockLink`], the handle through which it keeps one cache's local
//! clocks and L1 in line with them.
//!
//! What must stay true: with an authority, every tick a cache applies comes from it (its own
//! clocks only mirror it); while the authority cannot vouch that its invalidations reach a
//! process, that process's L1 is empty and unused; and dropping "everything known locally"
//! ([`ClockLink::forget_local`]) has this one implementation, used by the cache after a failed
//! shared invalidation and by the authority when its subscription is lost or resumed (then
//! never past the tick it resumed at).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use super::{MemoryStore, Store};
use crate::tags::TagClocks;
use crate::CacheError;

/// A [`Store`] that is also the one authority on the tag clocks of every process sharing it
/// (`RedisStore` is one). [`crate::CacheBuilder::l2`] learns that a store is one from
/// [`Store::clock_authority`], which such a store overrides to return `Some(self)`.
///
/// # Guarantees
///
/// What an implementor must guarantee:
/// - its own [`Store::put`] and [`Store::get`] check a response's `born` against its clocks:
///   `put` refuses with [`CacheError::Invalidated`] a record one of whose tags has a clock above
///   its `born`, or whose `born` is below the last purge, and `get` never returns such a record
///   (or leaves it to the cache's mirror only while it can vouch that the mirror is current);
/// - [`ClockAuthority::invalidate`] and [`ClockAuthority::purge_clocks`] return `Ok(tick)` only
///   once the tick is in the shared clocks, above every tick this process has seen
///   ([`ClockLink::seq`]), and every later `put` and `get`, from any process, checks against it;
/// - it tells every attached process of every tick, through the [`ClockLink`] it was given
///   ([`ClockLink::invalidated`], [`ClockLink::purged`]); when it cannot be sure a process hears
///   of them all, it says so at once ([`ClockLink::lost`]), and [`ClockLink::resumed`] with a
///   tick taken after it can again.
///
/// What the [`crate::Cache`] guarantees on top: it takes every tick from the authority and
/// applies it to its own clocks before `invalidate_tag` returns, so this process refuses what
/// was invalidated without waiting for a message; a failed shared invalidation drops this
/// process's L1 and refuses every fill begun so far (then returns the error); it starts with its
/// L1 unused, and uses it only while the link is in sync.
///
/// A toy authority for one process, keeping records and clocks in one map as a shared server
/// would (a real one also publishes each tick to the other processes):
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::{Arc, Mutex};
/// use cache_core::{async_trait, CacheError, CacheKey, ClockAuthority, ClockLink, Record, Store, TierStats};
///
/// #[derive(Default)]
/// struct Clocks { seq: u64, purged: u64, tags: HashMap<String, u64>, records: HashMap<u128, Record> }
///
/// impl Clocks {
///     fn accepts(&self, record: &Record) -> bool {
///         match record {
///             Record::Response(entry) => {
///                 entry.born() >= self.purged
///                     && entry.tags().iter().all(|t| self.tags.get(t).is_none_or(|c| *c <= entry.born()))
///             }
///             Record::Variants(_) => true,
///         }
///     }
/// }
///
/// #[derive(Default)]
/// struct Authority(Mutex<Clocks>);
///
/// #[async_trait]
/// impl Store for Authority {
///     async fn get(&self, key: &CacheKey) -> Result<Option<Record>, CacheError> {
///         let clocks = self.0.lock().unwrap();
///         Ok(clocks.records.get(&key.hash()).filter(|r| clocks.accepts(r)).cloned())
///     }
///     async fn put(&self, key: &CacheKey, record: Record) -> Result<(), CacheError> {
///         let mut clocks = self.0.lock().unwrap();
///         if !clocks.accepts(&record) {
///             return Err(CacheError::Invalidated);
///         }
///         clocks.records.insert(key.hash(), record);
///         Ok(())
///     }
///     async fn remove(&self, key: &CacheKey) -> Result<(), CacheError> {
///         self.0.lock().unwrap().records.remove(&key.hash());
///         Ok(())
///     }
///     async fn clear(&self) -> Result<(), CacheError> {
///         Ok(()) // purge_clocks already made every record invalid
///     }
///     fn stats(&self) -> TierStats {
///         TierStats::default()
///     }
///     fn clock_authority(self: Arc<Self>) -> Option<Arc<dyn ClockAuthority>> {
///         Some(self)
///     }
/// }
///
/// #[async_trait]
/// impl ClockAuthority for Authority {
///     async fn invalidate(&self, tags: &[String]) -> Result<u64, CacheError> {
///         let mut clocks = self.0.lock().unwrap();
///         clocks.seq += 1;
///         let tick = clocks.seq;
///         for tag in tags {
///             clocks.tags.insert(tag.clone(), tick);
///         }
///         Ok(tick)
///     }
///     async fn purge_clocks(&self) -> Result<u64, CacheError> {
///         let mut clocks = self.0.lock().unwrap();
///         clocks.seq += 1;
///         clocks.purged = clocks.seq;
///         Ok(clocks.seq)
///     }
///     fn attach(&self, link: ClockLink) {
///         // In one process every tick reaches the cache already: in sync from the start, at a
///         // tick newer than any fill begun before.
///         let mut clocks = self.0.lock().unwrap();
///         clocks.seq += 1;
///         link.resumed(clocks.seq);
///     }
/// }
/// # use cache_core::{Cache, Entry, Lookup, MemoryStore};
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
/// let cache = Cache::builder().l1(MemoryStore::new()).l2(Authority::default()).build();
/// assert!(cache.in_sync(), "attach resumed the link");
/// assert!(fill(&cache, "/products/1", &["products"]).await);
/// let in_flight = fill_starts(&cache);
/// cache.invalidate_tag("products").await?; // ticks in the authority, then here
/// assert!(!answered(&cache, "/products/1").await);
/// assert!(!fill_ends(&cache, in_flight, "/products/2", &["products"]).await);
/// assert!(fill(&cache, "/products/1", &["products"]).await);
/// assert!(answered(&cache, "/products/1").await);
/// # Ok::<(), CacheError>(())
/// # }).unwrap();
/// ```
#[async_trait]
pub trait ClockAuthority: Store {
    /// Invalidates `tags` in the shared clocks as one tick, tells every attached process, and
    /// returns the tick.
    async fn invalidate(&self, tags: &[String]) -> Result<u64, CacheError>;

    /// Softens `tags` in the shared clocks as one tick (their entries stay valid but stale,
    /// [`crate::Cache::soft_invalidate_tag`]), tells every attached process
    /// ([`ClockLink::softened`]), and returns the tick. A store born before it must be refused
    /// (a fill in flight is not stored as fresh); a read may refuse a softened record too: that
    /// costs a miss, never a stale answer taken for a fresh one. The default is a hard
    /// [`ClockAuthority::invalidate`], the safe reading.
    async fn soft_invalidate(&self, tags: &[String]) -> Result<u64, CacheError> {
        self.invalidate(tags).await
    }

    /// Invalidates everything stored so far, as one tick, tells every attached process, and
    /// returns the tick.
    async fn purge_clocks(&self) -> Result<u64, CacheError>;

    /// Whether the shared clocks accept an entry born at `born` under `tags` as fresh (no
    /// invalidation, soft invalidation or purge after it), asked of the authority itself rather than this process's mirror:
    /// what a process out of touch with the authority asks before it trusts a result made
    /// while it was. `Err` when the authority cannot answer; the default answers nothing.
    async fn accepts(&self, born: u64, tags: &[String]) -> Result<bool, CacheError> {
        let _ = (born, tags);
        Err(CacheError::Backend(
            "this authority cannot check an entry".into(),
        ))
    }

    /// Connects the authority to a cache's clocks and L1, so that invalidations made by other
    /// processes reach them. Called once, by [`crate::CacheBuilder::build`]; the cache's L1
    /// stays unused until the authority calls [`ClockLink::resumed`].
    fn attach(&self, link: ClockLink);
}

/// What a [`ClockAuthority`] reports to: one cache's tag clocks and its L1. The cache holds the
/// same state; the authority gets a clone from [`ClockAuthority::attach`].
///
/// What must stay true: while the authority cannot vouch that every invalidation reaches this
/// process (its subscription is down), the L1 is empty and unused; when it can again, the L1
/// starts empty and fills begun during the gap are refused.
#[derive(Clone, Debug)]
pub struct ClockLink {
    pub(crate) clocks: Arc<TagClocks>,
    pub(crate) l1: Option<MemoryStore>,
    /// Whether the L1 may be read and filled. Always true without an authority; with one, true
    /// only while it vouches that its invalidations reach this process.
    pub(crate) l1_live: Arc<AtomicBool>,
    pub(crate) namespace: String,
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

    /// `tags` were softened at `tick` (by any process): their older entries are stale.
    pub fn softened<I, T>(&self, tick: u64, tags: I)
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.clocks.apply_soft(tick, tags);
    }

    /// Whether this process knows a soft purge of `tag` at `tick` or later: the store may then
    /// hand it a record Redis reports softened at `tick`, since this process dates that purge.
    pub fn knows_softened(&self, tag: &str, tick: u64) -> bool {
        self.clocks
            .soft_tick(tag)
            .is_some_and(|known| known >= tick)
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
        // Up to this node's reading, but never past `seq`: a reply to a request made meanwhile
        // may have carried `seq` here already, and refusing past it would refuse every fill
        // until the next invalidation. A fill born at `seq` began after the tick, so after the
        // subscription was made; one begun before it was born below it.
        self.forget_before(self.clocks.now().saturating_add(1).min(seq));
        self.clocks.observe(seq);
        self.l1_live.store(true, Ordering::SeqCst);
    }

    /// Drops the L1 and makes every entry born up to now invalid on this node.
    pub(crate) fn forget_local(&self) {
        self.forget_before(self.clocks.now().saturating_add(1));
    }

    /// Drops the L1 and makes every entry born before `tick` invalid on this node.
    fn forget_before(&self, tick: u64) {
        self.clocks.purge_before(tick);
        if let Some(l1) = &self.l1 {
            l1.clear_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resync_tick_a_reply_brought_first_still_lets_later_fills_in() {
        let link = ClockLink::new(
            Arc::new(TagClocks::shared()),
            Some(MemoryStore::new()),
            Arc::new(AtomicBool::new(false)),
            "shop".into(),
        );
        link.observed(5);
        link.lost();
        // The subscriber's re-tick made 6 in the shared clocks, and a request's reply carried it
        // here before the subscriber resumed with it.
        link.observed(6);
        link.resumed(6);
        assert!(link.in_sync());
        assert!(
            link.clocks.is_valid(link.seq(), ["products"]),
            "a fill begun now is stored"
        );
        assert!(
            !link.clocks.is_valid(5, ["products"]),
            "a fill begun before the re-tick is not"
        );
        // Without a reply in between, the same.
        link.lost();
        link.resumed(7);
        assert!(link.clocks.is_valid(link.seq(), ["products"]));
        assert!(!link.clocks.is_valid(6, ["products"]));
    }

    #[test]
    fn a_first_subscription_refuses_only_what_this_node_had_seen() {
        let link = ClockLink::new(
            Arc::new(TagClocks::shared()),
            None,
            Arc::new(AtomicBool::new(false)),
            "shop".into(),
        );
        link.resumed(9);
        // A record another node stored at tick 3 (checked against the clocks in Redis when
        // read) is still one this node may serve.
        assert!(link.clocks.is_valid(3, ["products"]));
        assert!(link.clocks.is_valid(link.seq(), ["products"]));
    }
}

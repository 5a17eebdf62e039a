//! The [`Cache`] handle: lookup, store and invalidation over an optional L1 [`MemoryStore`] and
//! an optional L2 [`Store`], with tag clocks, single-flight and counters.
//!
//! What must stay true: `lookup` returns only records whose full key equals the key asked for and
//! whose tags are valid by the clocks; `invalidate_tag` resolves only after the clock ticked, so
//! every later lookup on this node rejects what was stored (or is being filled) under the tag.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use crate::entry::{Entry, Freshness};
use crate::flight::Flights;
use crate::key::{CacheKey, KeySeed, PrimaryKey, QueryOrder};
use crate::lease::{Lease, LeaseGrant, LeaseReply};
use crate::model_tags::CacheTags;
use crate::stats::{Event, Recorder, Stats, Tier};
use crate::store::{ClockAuthority, ClockLink, MemoryStore, Record, Store, Variants};
use crate::tags::TagClocks;
use crate::time::now_ms;
use crate::CacheError;

/// What a lookup found.
// Hidden: only the cache-actix middleware reads it; public because that is another crate.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub enum Lookup {
    /// A fresh, valid entry.
    Fresh(Arc<Entry>),
    /// A valid entry inside its stale-while-revalidate window.
    Stale(Arc<Entry>),
    /// A valid entry past every window in which it may be served unvalidated, kept only so that
    /// it can be revalidated with a conditional request (entries stored under HTTP semantics).
    Retained(Arc<Entry>),
    /// Nothing servable. `stale_if_error` holds an entry usable only if the handler fails;
    /// `vary` is the resource's known vary list, if any.
    Miss {
        /// An entry inside its stale-if-error window.
        stale_if_error: Option<Arc<Entry>>,
        /// The vary header names stored for the resource.
        vary: Option<Arc<[String]>>,
    },
}

struct Inner {
    /// This node's clocks, L1, L1 liveness and namespace: the state a clock authority keeps in
    /// line (it holds a clone).
    local: ClockLink,
    l2: Option<Arc<dyn Store>>,
    /// The L2 again when it is the authority on tag clocks (Redis).
    authority: Option<Arc<dyn ClockAuthority>>,
    seed: KeySeed,
    flights: Flights<Arc<Entry>>,
    stats: Recorder,
    stores_since_prune: AtomicU64,
    /// When the last full sweep of expired clocks and L1 records ran (Unix ms).
    last_sweep_ms: AtomicU64,
    /// The [`Cache::on_invalidate`] hooks. Replaced whole on registration, so a notification
    /// holds the lock only to clone the `Arc` and runs the hooks with no lock held.
    invalidate_hooks: RwLock<Arc<[InvalidateHook]>>,
}

/// A hook registered with [`Cache::on_invalidate`].
type InvalidateHook = Arc<dyn Fn(&str) + Send + Sync>;

/// A response cache. Cheap to clone: clones share everything.
///
/// ```
/// use cache_core::Cache;
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let cache = Cache::memory();
/// cache.invalidate_tag("products").await.unwrap();
/// assert_eq!(cache.stats().invalidations, 1);
/// # });
/// ```
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("namespace", &self.inner.local.namespace)
            .field("l1", &self.inner.local.l1)
            .field("l2", &self.inner.l2.is_some())
            .finish()
    }
}

/// Builds a [`Cache`]. `build` never fails: stores connect lazily.
///
/// ```
/// use cache_core::{Cache, MemoryStore};
/// let cache = Cache::builder().l1(MemoryStore::new().max_bytes(1 << 20)).namespace("shop").build();
/// assert_eq!(cache.namespace(), "shop");
/// ```
#[derive(Default)]
#[must_use]
pub struct CacheBuilder {
    l1: Option<MemoryStore>,
    l2: Option<Arc<dyn Store>>,
    authority: Option<Arc<dyn ClockAuthority>>,
    namespace: String,
    secret: Option<Vec<u8>>,
}

impl CacheBuilder {
    /// The in-process tier.
    pub fn l1(mut self, store: MemoryStore) -> Self {
        self.l1 = Some(store);
        self
    }

    /// The shared tier (a `RedisStore`, or any [`Store`]). If the store is a
    /// [`ClockAuthority`] ([`Store::clock_authority`] says so), the cache takes its tag clocks
    /// from it; otherwise its own clocks are the authority, for this process only.
    pub fn l2<S: Store>(mut self, store: S) -> Self {
        let store = Arc::new(store);
        self.authority = Arc::clone(&store).clock_authority();
        self.l2 = Some(store);
        self
    }

    /// Same as [`CacheBuilder::l2`]: plugs in any backend as the shared tier.
    pub fn store<S: Store>(self, store: S) -> Self {
        self.l2(store)
    }

    /// A prefix that separates this cache's keys from every other namespace's.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.to_string();
        self
    }

    /// The secret that seeds every key hash, so that a client who chooses URLs cannot aim
    /// them at another URL's slot (to evict it, or to purge it with an unsafe request). Every
    /// node sharing an L2 must use the same one. Without it, a memory-only cache draws a random
    /// secret per process, and a cache with an L2 derives it from its namespace: nodes still
    /// share entries, but anyone who knows the namespace can compute the hashes, so set one.
    ///
    /// ```
    /// use cache_core::Cache;
    /// let a = Cache::builder().key_secret("from-the-environment").build();
    /// let b = Cache::builder().key_secret("from-the-environment").build();
    /// assert_eq!(a.primary_key(b"h", b"/", b"").hash(), b.primary_key(b"h", b"/", b"").hash());
    /// assert_ne!(
    ///     Cache::memory().primary_key(b"h", b"/", b"").hash(),
    ///     Cache::memory().primary_key(b"h", b"/", b"").hash(),
    /// );
    /// ```
    pub fn key_secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.secret = Some(secret.as_ref().to_vec());
        self
    }

    /// The cache. With neither tier given, it gets a default [`MemoryStore`].
    pub fn build(self) -> Cache {
        let seed = match (&self.secret, &self.l2) {
            (Some(secret), _) => KeySeed::from_secret(secret),
            (None, Some(_)) => {
                KeySeed::from_secret(format!("namespace:{}", self.namespace).as_bytes())
            }
            (None, None) => KeySeed::random(),
        };
        let l1 = match (&self.l1, &self.l2) {
            (None, None) => Some(MemoryStore::new()),
            _ => self.l1,
        };
        let shared_clocks = self.authority.is_some();
        let clocks = Arc::new(if shared_clocks {
            TagClocks::shared()
        } else {
            TagClocks::default()
        });
        // A shared-clock cache starts out of sync: its subscription is not up yet.
        let l1_live = Arc::new(AtomicBool::new(!shared_clocks));
        let local = ClockLink::new(clocks, l1, l1_live, self.namespace);
        if let Some(authority) = &self.authority {
            authority.attach(local.clone());
        }
        Cache {
            inner: Arc::new(Inner {
                local,
                l2: self.l2,
                authority: self.authority,
                seed,
                flights: Flights::default(),
                stats: Recorder::default(),
                stores_since_prune: AtomicU64::new(0),
                last_sweep_ms: AtomicU64::new(now_ms()),
                invalidate_hooks: RwLock::new(Arc::from(Vec::new())),
            }),
        }
    }
}

/// How often (in stores) a full sweep of expired clocks and L1 records is considered...
const PRUNE_EVERY: u64 = 1024;
/// ...and how long at least between two sweeps: a sweep visits every L1 record, so under a
/// stream of misses a count alone would make it a large share of each store's cost.
const SWEEP_INTERVAL_MS: u64 = 5_000;

impl Cache {
    /// A single-process cache in bounded memory (64 MiB).
    pub fn memory() -> Cache {
        Cache::builder().build()
    }

    /// Starts a builder.
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }

    /// Whether every invalidation made anywhere reaches this node right now. Always true
    /// without a shared L2; with one, true once its subscription is up (and false while it is
    /// down: the L1 is then empty and unused). A readiness probe can wait for it.
    ///
    /// ```
    /// assert!(cache_core::Cache::memory().in_sync());
    /// ```
    pub fn in_sync(&self) -> bool {
        self.inner.local.l1_live.load(Ordering::Acquire)
    }

    /// The namespace every key is built in.
    pub fn namespace(&self) -> &str {
        &self.inner.local.namespace
    }

    /// The primary key of a request in this cache's namespace.
    pub fn primary_key(&self, host: &[u8], path: &[u8], query: &[u8]) -> PrimaryKey {
        self.primary_key_with(host, path, query, QueryOrder::ByDecodedName)
    }

    /// The primary key of a URL with the query taken as `order` says (the HTTP semantics mode
    /// keys the query as sent).
    ///
    /// ```
    /// use cache_core::{key::QueryOrder, Cache};
    /// let cache = Cache::memory();
    /// let key = |q: &[u8]| cache.primary_key_with(b"h", b"/", q, QueryOrder::AsSent);
    /// assert_ne!(key(b"a=1&b=2"), key(b"b=2&a=1"));
    /// ```
    pub fn primary_key_with(
        &self,
        host: &[u8],
        path: &[u8],
        query: &[u8],
        order: QueryOrder,
    ) -> PrimaryKey {
        PrimaryKey::seeded(
            self.inner.seed,
            &self.inner.local.namespace,
            host,
            path,
            query,
            order,
        )
    }

    /// Single-flight registry for fills, keyed by primary or variant key hash.
    // Hidden: only the cache-actix middleware calls it; public because that is another crate.
    #[doc(hidden)]
    pub fn flights(&self) -> &Flights<Arc<Entry>> {
        &self.inner.flights
    }

    /// Asks the L2 for the lease of the fill `flight` for `time` (see [`crate::lease`]).
    /// [`LeaseGrant::Unavailable`] at once without an L2, with an L2 that keeps no leases, and
    /// on any L2 error (counted in the L2's errors): the caller then fills on its own.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use cache_core::{lease::LeaseGrant, Cache};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let grant = Cache::memory().lease(7, Duration::from_secs(1)).await;
    /// assert!(matches!(grant, LeaseGrant::Unavailable));
    /// # });
    /// ```
    // Hidden: only the cache-actix middleware calls it; public because that is another crate.
    #[doc(hidden)]
    pub async fn lease(&self, flight: u128, time: Duration) -> LeaseGrant {
        let Some(l2) = &self.inner.l2 else {
            return LeaseGrant::Unavailable;
        };
        match l2.acquire_lease(flight, time).await {
            Ok(LeaseReply::Granted { token }) => {
                LeaseGrant::Granted(Lease::new(l2.clone(), flight, token))
            }
            Ok(LeaseReply::Held { remaining }) => LeaseGrant::Held(remaining),
            Ok(LeaseReply::Unsupported) => LeaseGrant::Unavailable,
            Err(err) => {
                Tier::add(&self.inner.stats.l2.errors);
                tracing::debug!(error = %err, "no fill lease; filling on this node alone");
                LeaseGrant::Unavailable
            }
        }
    }

    /// The tag-clock reading a fill must carry as its entry's `born`; take it before the handler runs.
    // Hidden: only the cache-actix middleware calls it; public because that is another crate.
    #[doc(hidden)]
    pub fn begin_fill(&self) -> u64 {
        self.inner.local.clocks.now()
    }

    /// Counts an event in [`Cache::stats`] and the `metrics` facade.
    // Hidden: only the cache-actix middleware calls it; public because that is another crate.
    #[doc(hidden)]
    pub fn record(&self, event: Event) {
        self.inner.stats.record(event);
    }

    /// The fresh entry for a request in the L1, if there is one: the synchronous fast path of a
    /// hit, which never touches the L2 (`None` sends the caller to [`Cache::lookup`]). Counts an
    /// L1 hit when it finds one; the caller records the [`Event`].
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use cache_core::{Cache, Entry};
    /// let cache = Cache::memory();
    /// let primary = cache.primary_key(b"h", b"/p", b"");
    /// let now = cache_core::time::now_ms();
    /// let entry = Entry::new(primary.cache_key().bytes(), 200, vec![], "x".into(), now, now + 60_000)
    ///     .with_born(cache.begin_fill());
    /// assert!(cache.store(&primary, &primary.cache_key(), entry).await.is_ok());
    /// assert!(cache.fresh_in_l1(&primary, |_| unreachable!()).is_some());
    /// # });
    /// ```
    // Hidden: only the cache-actix middleware calls it; public because that is another crate.
    #[doc(hidden)]
    pub fn fresh_in_l1(
        &self,
        primary: &PrimaryKey,
        variant: impl Fn(&[String]) -> CacheKey,
    ) -> Option<Arc<Entry>> {
        let l1 = self.l1()?;
        let entry = match l1.get_now(&primary.cache_key())? {
            Record::Response(entry) => entry,
            Record::Variants(variants) => match l1.get_now(&variant(&variants.vary))? {
                Record::Response(entry) => entry,
                Record::Variants(_) => return None,
            },
        };
        let usable = self.is_valid(&entry) && self.freshness(&entry, now_ms()) == Freshness::Fresh;
        if usable {
            Tier::add(&self.inner.stats.l1.hits);
        }
        usable.then_some(entry)
    }

    /// Finds what is stored for a request. `variant` builds the variant key from the request's
    /// headers for a vary list.
    // Hidden: only the cache-actix middleware calls it; public because that is another crate.
    #[doc(hidden)]
    pub async fn lookup(
        &self,
        primary: &PrimaryKey,
        variant: impl Fn(&[String]) -> CacheKey,
    ) -> Lookup {
        let (entry, vary) = match self.get(&primary.cache_key()).await {
            Some(Record::Response(entry)) => (Some(entry), None),
            Some(Record::Variants(variants)) => {
                let key = variant(&variants.vary);
                match self.get(&key).await {
                    Some(Record::Response(entry)) => (Some(entry), Some(variants.vary.clone())),
                    _ => (None, Some(variants.vary.clone())),
                }
            }
            None => (None, None),
        };
        // `get` returned only records the clocks accept.
        let Some(entry) = entry else {
            return Lookup::Miss {
                stale_if_error: None,
                vary,
            };
        };
        match self.freshness(&entry, now_ms()) {
            Freshness::Fresh => Lookup::Fresh(entry),
            Freshness::StaleWhileRevalidate => Lookup::Stale(entry),
            Freshness::StaleIfError => Lookup::Miss {
                stale_if_error: Some(entry),
                vary,
            },
            Freshness::Expired if now_ms() < entry.expires_at_ms() => Lookup::Retained(entry),
            Freshness::Expired => Lookup::Miss {
                stale_if_error: None,
                vary,
            },
        }
    }

    /// Whether the tag clocks still accept `entry`.
    // Hidden: only the cache-actix middleware calls it; public because that is another crate.
    #[doc(hidden)]
    pub fn is_valid(&self, entry: &Entry) -> bool {
        self.inner
            .local
            .clocks
            .is_valid(entry.born, entry.tags.iter().map(String::as_str))
    }

    /// Whether `entry`, which the clocks refuse, is refused only because this node is out of
    /// touch with the shared clocks right now (its subscription is down: it may have missed
    /// invalidations), while no invalidation or purge it knows of concerns it. The middleware
    /// then lets the requests waiting on the fill that made it take it: with the L2 away nothing
    /// can be stored, and a refusal for this reason alone would turn every fill's waiters into a
    /// stampede.
    ///
    /// Out of touch is not proof that nothing was missed: when the shared clocks can be asked
    /// (Redis answers, only the subscription is down), they decide, and an entry they refuse is
    /// refused. Only when they cannot be asked either (Redis away from this node) does the
    /// local view decide. Then no other node can have an invalidation acknowledged either,
    /// unless this node alone is cut off from a Redis the others reach; in that case a request
    /// that joined the one fill in flight after such an acknowledgement may get its answer.
    // Hidden: only the cache-actix middleware calls it; public because that is another crate.
    #[doc(hidden)]
    pub async fn refused_only_out_of_touch(&self, entry: &Entry) -> bool {
        let locally = !self.in_sync()
            && self
                .inner
                .local
                .clocks
                .refused_only_as_forgotten(entry.born, entry.tags.iter().map(String::as_str));
        if !locally {
            return false;
        }
        match &self.inner.authority {
            // Unreachable: the local view decides (above). A reply we cannot read is a refusal.
            Some(authority) => match authority.accepts(entry.born, &entry.tags).await {
                Ok(accepted) => accepted,
                Err(CacheError::Corrupt(_)) => false,
                Err(_) => true,
            },
            None => true,
        }
    }

    /// Whether the clocks accept `record`.
    fn accepts(&self, record: &Record) -> bool {
        match record {
            Record::Response(entry) => self.is_valid(entry),
            Record::Variants(_) => true,
        }
    }

    /// The L1, if there is one and it may be used right now.
    fn l1(&self) -> Option<&MemoryStore> {
        self.inner
            .local
            .l1
            .as_ref()
            .filter(|_| self.inner.local.l1_live.load(Ordering::Acquire))
    }

    /// The record under `key`, from the L1 or else the L2, if its full key matches and the tag
    /// clocks accept it (a response's `born` against its tags; a vary list is always accepted).
    async fn get(&self, key: &CacheKey) -> Option<Record> {
        // A stale L1 copy is kept as the answer of last resort: another node may have refreshed
        // (revalidated, refilled) the record in the L2 since this one was copied.
        let mut stale_copy = None;
        if let Some(l1) = self.l1() {
            match l1.get_now(key) {
                // An invalidated copy here says nothing about the L2, which another node may
                // have refilled since: drop it and look there.
                Some(Record::Response(entry)) if !self.is_valid(&entry) => l1.remove_now(key),
                Some(Record::Response(entry))
                    if self.inner.l2.is_some()
                        && self.freshness(&entry, now_ms()) != Freshness::Fresh =>
                {
                    stale_copy = Some(Record::Response(entry));
                }
                Some(record) => {
                    Tier::add(&self.inner.stats.l1.hits);
                    return Some(record);
                }
                None => {}
            }
            Tier::add(&self.inner.stats.l1.misses);
        }
        let Some(l2) = self.inner.l2.as_ref() else {
            return stale_copy;
        };
        match l2.get(key).await {
            // The key check is ours, not the store's: a store returning a colliding or foreign
            // record must cause a miss. So is the clock check: it runs before the record can be
            // copied into the L1.
            Ok(Some(record)) if record.key() == key.as_bytes() && self.accepts(&record) => {
                Tier::add(&self.inner.stats.l2.hits);
                // The L1 copy expires with the L2 record and is checked against this node's
                // clocks, which the subscription keeps up.
                if let Some(l1) = self.l1() {
                    l1.put_now(key, record.clone());
                }
                Some(record)
            }
            Ok(_) => {
                Tier::add(&self.inner.stats.l2.misses);
                // The L1 copy must not outlive its L2 record.
                if let (Some(l1), Some(_)) = (self.l1(), &stale_copy) {
                    l1.remove_now(key);
                }
                None
            }
            Err(err) => {
                Tier::add(&self.inner.stats.l2.errors);
                tracing::debug!(error = %err, "l2 lookup failed; treating as a miss");
                stale_copy
            }
        }
    }

    /// Writes both tiers, the L2 first: a clock-keeping L2 may refuse the record as
    /// invalidated, and a leasing L2 as superseded (`token`: the fill's lease), and then the L1
    /// must not keep it either. `false` when refused.
    async fn put(&self, key: &CacheKey, record: Record, token: Option<u64>) -> bool {
        if let Some(l2) = &self.inner.l2 {
            let put = match token {
                Some(token) => l2.put_fenced(key, record.clone(), token).await,
                None => l2.put(key, record.clone()).await,
            };
            match put {
                Ok(()) => Tier::add(&self.inner.stats.l2.stores),
                Err(CacheError::Invalidated) => {
                    tracing::debug!(key = ?key, "tag invalidated during fill (shared clocks); not storing");
                    return false;
                }
                Err(CacheError::Superseded) => {
                    tracing::debug!(key = ?key, "a newer fill took the lease; not storing");
                    return false;
                }
                Err(err) => {
                    Tier::add(&self.inner.stats.l2.errors);
                    tracing::debug!(error = %err, "l2 store failed");
                }
            }
        }
        if let Some(l1) = self.l1() {
            l1.put_now(key, record);
            Tier::add(&self.inner.stats.l1.stores);
        }
        true
    }

    /// Stores a response for `primary` under `key` (equal to the primary's own key when the
    /// response has no vary list). Adds the URL's implicit tag. Returns `Ok` with the stored
    /// entry, or `Err` with the same entry, not kept, when a tag was invalidated while the
    /// handler ran or the store refused it; either way the caller can answer with it (the entry
    /// is handed back rather than cloned up front, because a miss should not copy a response).
    // Hidden: only the cache-actix middleware calls it; public because that is another crate.
    #[doc(hidden)]
    pub async fn store(
        &self,
        primary: &PrimaryKey,
        key: &CacheKey,
        entry: Entry,
    ) -> Result<Arc<Entry>, Arc<Entry>> {
        self.store_fenced(primary, key, entry, None).await
    }

    /// [`Cache::store`] for a fill that holds `lease` (see [`crate::lease`]): the L2 refuses
    /// the response when a newer fill took the lease or stored its record since (`Err`, as for
    /// an invalidation). Without a lease, a plain store. The vary list is never fenced.
    // Hidden: only the cache-actix middleware calls it; public because that is another crate.
    #[doc(hidden)]
    pub async fn store_fenced(
        &self,
        primary: &PrimaryKey,
        key: &CacheKey,
        mut entry: Entry,
        lease: Option<&Lease>,
    ) -> Result<Arc<Entry>, Arc<Entry>> {
        entry.tags.push(primary.url_tag());
        entry.key = key.bytes();
        if !self.is_valid(&entry) {
            tracing::debug!(key = ?key, "tag invalidated during fill; not storing");
            return Err(Arc::new(entry));
        }
        let life = entry.expires_at_ms().saturating_sub(entry.stored_at_ms);
        self.inner.local.clocks.note_lifetime(life);
        let entry = Arc::new(entry);
        if !entry.vary.is_empty() {
            let variants = Variants {
                key: primary.cache_key().bytes(),
                vary: entry.vary.clone(),
                expires_at_ms: entry.expires_at_ms(),
            };
            let variants = match self.get(&primary.cache_key()).await {
                Some(Record::Variants(old)) if old.vary == variants.vary => Variants {
                    expires_at_ms: old.expires_at_ms.max(variants.expires_at_ms),
                    ..variants
                },
                _ => variants,
            };
            self.put(
                &primary.cache_key(),
                Record::Variants(Arc::new(variants)),
                None,
            )
            .await;
        }
        // Fenced only under the lease of this very key: a fill that did not know the vary list
        // took the primary key's lease, which says nothing of this variant's record (and, on a
        // cluster, lives on another master with another clock).
        let token = lease
            .filter(|lease| lease.flight() == key.hash())
            .map(Lease::token);
        if !self.put(key, Record::Response(entry.clone()), token).await {
            return Err(entry);
        }
        self.record(Event::Store);
        tracing::debug!(key = ?key, status = entry.status, tags = ?entry.tags, "stored");
        if self
            .inner
            .stores_since_prune
            .fetch_add(1, Ordering::Relaxed)
            % PRUNE_EVERY
            == PRUNE_EVERY - 1
        {
            self.sweep_if_due();
        }
        Ok(entry)
    }

    /// Drops expired clocks and L1 records, at most once per [`SWEEP_INTERVAL_MS`]. Between
    /// sweeps, expired records still go when read and from the front of the L1's queue.
    fn sweep_if_due(&self) {
        let now = now_ms();
        let last = self.inner.last_sweep_ms.load(Ordering::Relaxed);
        let due = now.saturating_sub(last) >= SWEEP_INTERVAL_MS
            && self
                .inner
                .last_sweep_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        if due {
            self.inner.local.clocks.prune();
            if let Some(l1) = self.l1() {
                l1.reclaim_expired();
            }
        }
    }

    /// Invalidates one tag, at the cost of one clock write whatever the number of entries under
    /// it (see [`crate::tags`]).
    ///
    /// # Guarantees
    ///
    /// `Ok` means: no later request on this node is answered (fresh or stale) from an entry
    /// stored under `tag` before the call, and a fill that was running during the call is not
    /// stored as valid. With an L2 that is a [`ClockAuthority`] (`RedisStore`), the tick is in
    /// the shared clocks before `Ok`, so every node refuses to store such fills, and another
    /// node sharing the L2 stops answering from such entries once its subscription has delivered
    /// the invalidation (the pub/sub delay; with `RedisStore::strict_reads`, its reads from
    /// Redis stop at once, its L1 copies on delivery). A node whose subscription is down does not
    /// use its L1 and serves from Redis only what the clocks in Redis accept. With a plain
    /// [`Store`] as L2, only this node hears of it: other processes sharing that store keep
    /// answering from it until its entries expire.
    ///
    /// `Err` (the authority failed or did not answer in time): this node still keeps the
    /// promise, more bluntly: it drops its L1 and refuses everything stored or begun so far.
    /// Other nodes may or may not have heard of it; call again.
    ///
    /// ```
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
    /// // `fill` stands for a request whose response the middleware stores (`fill_starts` and
    /// // `fill_ends` for one whose handler is still running in between), `answered` for a
    /// // request the cache answers.
    /// let cache = Cache::memory();
    /// assert!(fill(&cache, "/products/1", &["products"]).await);
    /// let in_flight = fill_starts(&cache);
    /// cache.invalidate_tag("products").await?;
    /// assert!(!answered(&cache, "/products/1").await, "stored before the call");
    /// assert!(!fill_ends(&cache, in_flight, "/products/2", &["products"]).await, "in flight");
    /// assert!(fill(&cache, "/products/1", &["products"]).await, "begun after the call");
    /// assert!(answered(&cache, "/products/1").await);
    /// # Ok::<(), cache_core::CacheError>(())
    /// # }).unwrap();
    /// ```
    pub async fn invalidate_tag(&self, tag: impl Into<String>) -> Result<(), CacheError> {
        self.invalidate_tags([tag]).await
    }

    /// Invalidates several tags at once: one clock tick, one round trip to a shared authority.
    ///
    /// # Guarantees
    ///
    /// The guarantees of [`Cache::invalidate_tag`], for every tag given, with one tick: a
    /// shared authority applies all of them or none (`RedisStore` runs it as one script), and
    /// counts as one invalidation in [`Cache::stats`]. No tags is `Ok` and does nothing.
    ///
    /// ```
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
    /// // `fill` stands for a request whose response the middleware stores (`fill_starts` and
    /// // `fill_ends` for one whose handler is still running in between), `answered` for a
    /// // request the cache answers.
    /// let cache = Cache::memory();
    /// assert!(fill(&cache, "/products/1", &["product:1"]).await);
    /// assert!(fill(&cache, "/products/2", &["product:2"]).await);
    /// assert!(fill(&cache, "/products/3", &["product:3"]).await);
    /// cache.invalidate_tags(["product:1", "product:2"]).await?;
    /// assert!(!answered(&cache, "/products/1").await && !answered(&cache, "/products/2").await);
    /// assert!(answered(&cache, "/products/3").await);
    /// assert_eq!(cache.stats().invalidations, 1);
    /// cache.invalidate_tags(Vec::<String>::new()).await?;
    /// assert_eq!(cache.stats().invalidations, 1);
    /// # Ok::<(), cache_core::CacheError>(())
    /// # }).unwrap();
    /// ```
    pub async fn invalidate_tags<I, T>(&self, tags: I) -> Result<(), CacheError>
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let tags: Vec<String> = tags.into_iter().map(Into::into).collect();
        if tags.is_empty() {
            return Ok(());
        }
        self.record(Event::Invalidation);
        let ticked = self.tick(&tags, false).await;
        // After the local part, which `tick` has done whether or not the authority answered.
        self.notify_invalidated(&tags);
        ticked?;
        tracing::debug!(?tags, "invalidated tags");
        Ok(())
    }

    /// Marks the entries stored under `tag` stale instead of dead (a soft purge), so that a
    /// burst of requests after a write does not all reach the handler at once.
    ///
    /// # Guarantees
    ///
    /// When it resolves `Ok`, no later request on this node is answered as fresh from an entry
    /// stored under `tag` before the call, nor from a fill that was in flight (its result counts
    /// as softened too). Such an entry is stale from the call's time on, and its own windows
    /// decide the rest: inside its `stale_while_revalidate` window the middleware answers it as
    /// `STALE` at once and refreshes it once, in the background; inside `stale_if_error` it can
    /// still stand in for a failed handler; outside every window it is a miss, as after
    /// [`Cache::invalidate_tag`]. Other nodes as for `invalidate_tag`, with the same cost (one
    /// clock, whatever the number of entries). A second soft purge of a tag restarts the stale
    /// time of the entries still under it. If the L2 cannot be reached, this node's L1 is dropped
    /// and the error returned, as for a hard invalidation.
    ///
    /// ```
    /// # use cache_core::{Cache, Entry, Lookup};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let cache = Cache::memory();
    /// let primary = cache.primary_key(b"shop.example", b"/products/1", b"");
    /// let now = cache_core::time::now_ms();
    /// // Fresh for a minute, then servable stale for 30 s while it is refreshed.
    /// let entry = Entry::new(primary.cache_key().bytes(), 200, vec![], "v1".into(), now, now + 60_000)
    ///     .with_stale_while_revalidate_ms(30_000)
    ///     .with_born(cache.begin_fill())
    ///     .with_tags(vec!["products".into()]);
    /// cache.store(&primary, &primary.cache_key(), entry).await.unwrap();
    /// cache.soft_invalidate_tag("products").await?;
    /// let found = cache.lookup(&primary, |_| unreachable!()).await;
    /// assert!(matches!(found, Lookup::Stale(_)), "stale, not gone");
    /// # Ok::<(), cache_core::CacheError>(())
    /// # }).unwrap();
    /// ```
    pub async fn soft_invalidate_tag(&self, tag: impl Into<String>) -> Result<(), CacheError> {
        self.soft_invalidate_tags([tag]).await
    }

    /// Soft-purges several tags at once: one clock tick, one round trip to a shared authority.
    ///
    /// # Guarantees
    ///
    /// The guarantees of [`Cache::soft_invalidate_tag`], for every tag given, with one tick; it
    /// counts as one invalidation in [`Cache::stats`]. No tags is `Ok` and does nothing.
    ///
    /// ```
    /// # use cache_core::Cache;
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let cache = Cache::memory();
    /// cache.soft_invalidate_tags(["product:1", "product:2"]).await?;
    /// assert_eq!(cache.stats().invalidations, 1);
    /// # Ok::<(), cache_core::CacheError>(())
    /// # }).unwrap();
    /// ```
    pub async fn soft_invalidate_tags<I, T>(&self, tags: I) -> Result<(), CacheError>
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let tags: Vec<String> = tags.into_iter().map(Into::into).collect();
        if tags.is_empty() {
            return Ok(());
        }
        self.record(Event::Invalidation);
        let ticked = self.tick(&tags, true).await;
        // The hooks hear of it whether or not the L2 part succeeded, as for a hard one.
        self.notify_invalidated(&tags);
        ticked?;
        tracing::debug!(?tags, "soft-invalidated tags");
        Ok(())
    }

    /// When `entry` became stale through a soft purge of one of its tags (Unix ms), if it did.
    // Hidden: only the cache-actix middleware calls it; public because that is another crate.
    #[doc(hidden)]
    pub fn softened_at(&self, entry: &Entry) -> Option<u64> {
        self.inner
            .local
            .clocks
            .softened_at(entry.born, entry.tags.iter().map(String::as_str))
    }

    /// Where `entry` is in its life at `now`, a soft purge counted as the end of its freshness.
    fn freshness(&self, entry: &Entry, now: u64) -> Freshness {
        entry.freshness_softened(now, self.softened_at(entry))
    }

    /// One clock tick for `tags` (their soft clocks when `soft`): in the shared clocks when the
    /// L2 keeps them (then here, at the tick they returned), else here. If the shared clocks
    /// cannot be reached, this node's L1 is dropped and refuses every fill begun so far, and the
    /// error is returned.
    async fn tick(&self, tags: &[String], soft: bool) -> Result<(), CacheError> {
        let clocks = &self.inner.local.clocks;
        let Some(authority) = &self.inner.authority else {
            if soft {
                clocks.soften(tags.iter().cloned());
            } else {
                clocks.invalidate(tags.iter().cloned());
            }
            return Ok(());
        };
        let ticked = if soft {
            authority.soft_invalidate(tags).await
        } else {
            authority.invalidate(tags).await
        };
        match ticked {
            Ok(tick) if soft => {
                clocks.apply_soft(tick, tags.iter().cloned());
                Ok(())
            }
            Ok(tick) => {
                clocks.apply(tick, tags.iter().cloned());
                Ok(())
            }
            Err(err) => Err(self.shared_tick_failed(err)),
        }
    }

    /// After a failed shared invalidation: nothing stored on this node so far may be served
    /// (the same forgetting as when the authority loses its subscription), counted and logged.
    fn shared_tick_failed(&self, err: CacheError) -> CacheError {
        self.inner.local.forget_local();
        self.record(Event::Error);
        tracing::warn!(error = %err, "shared invalidation failed; dropped this node's L1");
        err
    }

    /// Invalidates the tags of a value ([`CacheTags`], usually `#[derive(CacheTags)]`): the
    /// pages stored with `Cached::tags_of(&value)`, or under a `#[cached]` tag spelled the same
    /// way, are dropped. The tags are read at the call, so the returned future does not borrow
    /// `value` (and is `Send` whatever `T` is).
    ///
    /// # Guarantees
    ///
    /// Those of [`Cache::invalidate_tags`] for the value's tags (one tick; a value without tags
    /// is `Ok` and does nothing), and the [`Cache::on_invalidate`] hooks see each of them.
    ///
    /// ```
    /// # use cache_core::{Cache, CacheTags, Entry, Lookup};
    /// # async fn fill(cache: &Cache, path: &str, tags: Vec<String>) -> bool {
    /// #     let primary = cache.primary_key(b"shop.example", path.as_bytes(), b"");
    /// #     let now = cache_core::time::now_ms();
    /// #     let entry = Entry::new(primary.cache_key().bytes(), 200, vec![], "body".into(), now, now + 60_000)
    /// #         .with_born(cache.begin_fill())
    /// #         .with_tags(tags);
    /// #     cache.store(&primary, &primary.cache_key(), entry).await.is_ok()
    /// # }
    /// # async fn answered(cache: &Cache, path: &str) -> bool {
    /// #     let primary = cache.primary_key(b"shop.example", path.as_bytes(), b"");
    /// #     matches!(cache.lookup(&primary, |_| unreachable!()).await, Lookup::Fresh(_))
    /// # }
    /// // What `#[derive(CacheTags)]` writes for a product with `#[cache_tag] id`.
    /// struct Product { id: u32 }
    /// impl CacheTags for Product {
    ///     fn cache_tags(&self) -> Vec<String> { vec![format!("product:{}", self.id)] }
    /// }
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// // `fill` stands for a request whose response the middleware stores under the tags given,
    /// // `answered` for a request the cache answers.
    /// let cache = Cache::memory();
    /// let (one, two) = (Product { id: 1 }, Product { id: 2 });
    /// assert!(fill(&cache, "/products/1", one.cache_tags()).await);
    /// assert!(fill(&cache, "/products/2", two.cache_tags()).await);
    /// cache.invalidate(&one).await?;
    /// assert!(!answered(&cache, "/products/1").await);
    /// assert!(answered(&cache, "/products/2").await);
    /// # Ok::<(), cache_core::CacheError>(())
    /// # }).unwrap();
    /// ```
    pub fn invalidate<T: CacheTags + ?Sized>(
        &self,
        value: &T,
    ) -> impl Future<Output = Result<(), CacheError>> + Send + '_ {
        self.invalidate_tags(value.cache_tags())
    }

    /// Registers a hook that receives every tag this `Cache` (this handle and its clones)
    /// invalidates: through [`Cache::invalidate_tag`], [`Cache::invalidate_tags`] and
    /// [`Cache::invalidate`], for instance to forward it to a CDN's purge API (with
    /// `cache_actix::TagHeader::encode`, the spelling the CDN was sent). There is no HTTP
    /// client here: queue the tag and send it from a task of yours, since the hook runs inside
    /// the invalidation call.
    ///
    /// - Each hook is called once per distinct tag of a call, in the order given, after the
    ///   local invalidation is done and whether or not the L2 part succeeded (an `Err` from a
    ///   shared authority still dropped this node's L1, and a CDN copy is as stale as ours).
    /// - Only invalidations made through this `Cache` are seen, not those other nodes make and
    ///   Redis delivers: each invalidation is forwarded once, by the node that made it.
    /// - Not seen: URL purges (a successful POST/PUT/PATCH/DELETE, [`Cache::purge_url`]) and
    ///   [`Cache::purge_all`], which invalidate no tag; nor the cache's internal per-URL tags
    ///   ([`PrimaryKey::url_tag`], which start with NUL), if passed to `invalidate_tag`.
    /// - Several hooks may be registered; they run in the order registered. A hook that panics
    ///   is logged and skipped (the other hooks still run, and the invalidation's result is
    ///   returned as if it had not panicked); no lock is held while hooks run, so nothing is
    ///   poisoned, and a hook may itself register hooks or invalidate (mind the recursion).
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use cache_core::Cache;
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let cache = Cache::memory();
    /// let purges = Arc::new(Mutex::new(Vec::new()));
    /// let queue = purges.clone();
    /// cache.on_invalidate(move |tag| queue.lock().unwrap().push(tag.to_string()));
    /// cache.invalidate_tags(["product:1", "category:7", "product:1"]).await?;
    /// assert_eq!(*purges.lock().unwrap(), ["product:1", "category:7"]);
    /// # Ok::<(), cache_core::CacheError>(())
    /// # }).unwrap();
    /// ```
    pub fn on_invalidate<F>(&self, hook: F)
    where
        F: Fn(&str) + Send + Sync + 'static,
    {
        let mut hooks = self
            .inner
            .invalidate_hooks
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<InvalidateHook> = hooks.iter().cloned().collect();
        all.push(Arc::new(hook));
        *hooks = Arc::from(all);
    }

    /// Hands `tags` to every [`Cache::on_invalidate`] hook: each distinct tag once, in order,
    /// internal per-URL tags left out. Call it after the local invalidation is done.
    pub(crate) fn notify_invalidated(&self, tags: &[String]) {
        let hooks = Arc::clone(
            &self
                .inner
                .invalidate_hooks
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if hooks.is_empty() {
            return;
        }
        let mut seen = std::collections::HashSet::with_capacity(tags.len());
        for tag in tags {
            if tag.starts_with('\0') || !seen.insert(tag.as_str()) {
                continue;
            }
            for hook in hooks.iter() {
                let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(tag)));
                if called.is_err() {
                    tracing::error!(tag = %tag, "an on_invalidate hook panicked; skipped");
                }
            }
        }
    }

    /// Drops every variant of one resource (what a successful POST/PUT/PATCH/DELETE does to its
    /// URL): an invalidation of the URL's implicit tag ([`PrimaryKey::url_tag`]), which every
    /// entry stored for `primary` carries, then a removal of the record under its key.
    ///
    /// # Guarantees
    ///
    /// The guarantees of [`Cache::invalidate_tag`] for that tag: `Ok` means no later request on
    /// this node is answered from anything stored for this primary key (every variant, with or
    /// without `Vary`) before the call, nor from a fill that was running; other nodes as there.
    /// Other URLs, and the same path with another query, are untouched. `Err` is either the
    /// failed invalidation (handled as there) or, after it succeeded, the failed removal of the
    /// record from the L2, which the clocks already refuse.
    ///
    /// ```
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
    /// // `fill` stands for a request whose response the middleware stores (`fill_starts` and
    /// // `fill_ends` for one whose handler is still running in between), `answered` for a
    /// // request the cache answers.
    /// let cache = Cache::memory();
    /// assert!(fill(&cache, "/products/1", &[]).await);
    /// assert!(fill(&cache, "/products/2", &[]).await);
    /// let in_flight = fill_starts(&cache);
    /// cache.purge_url(&cache.primary_key(b"shop.example", b"/products/1", b"")).await?;
    /// assert!(!answered(&cache, "/products/1").await);
    /// assert!(!fill_ends(&cache, in_flight, "/products/1", &[]).await, "in flight");
    /// assert!(answered(&cache, "/products/2").await);
    /// # Ok::<(), cache_core::CacheError>(())
    /// # }).unwrap();
    /// ```
    pub async fn purge_url(&self, primary: &PrimaryKey) -> Result<(), CacheError> {
        self.record(Event::Invalidation);
        if let Some(l1) = &self.inner.local.l1 {
            l1.remove_now(&primary.cache_key());
        }
        self.tick(&[primary.url_tag()], false).await?;
        if let Some(l2) = &self.inner.l2 {
            l2.remove(&primary.cache_key()).await?;
        }
        tracing::debug!(key = ?primary, "purged url");
        Ok(())
    }

    /// Drops everything this cache stored: one tick that invalidates every entry born before it.
    ///
    /// # Guarantees
    ///
    /// `Ok` means: no later request on this node is answered from anything stored before the
    /// call, under any key, and no fill running during the call is stored as valid. With a
    /// [`ClockAuthority`] as L2 the purge tick is in the shared clocks first, and other nodes
    /// drop their L1 and refuse older entries once their subscription delivers it (as for
    /// [`Cache::invalidate_tag`]). With a plain [`Store`] as L2, its [`Store::clear`] runs after
    /// this node's clocks moved: other processes sharing it find it empty, but their own L1s are
    /// not told; an `Err` from `clear` is returned, and this node refuses the old records anyway.
    /// An `Err` from an authority is handled as for [`Cache::invalidate_tag`].
    ///
    /// ```
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
    /// // `fill` stands for a request whose response the middleware stores (`fill_starts` and
    /// // `fill_ends` for one whose handler is still running in between), `answered` for a
    /// // request the cache answers.
    /// let cache = Cache::memory();
    /// assert!(fill(&cache, "/products/1", &["products"]).await);
    /// assert!(fill(&cache, "/about", &[]).await);
    /// let in_flight = fill_starts(&cache);
    /// cache.purge_all().await?;
    /// assert!(!answered(&cache, "/products/1").await && !answered(&cache, "/about").await);
    /// assert!(!fill_ends(&cache, in_flight, "/about", &[]).await, "in flight");
    /// assert!(fill(&cache, "/about", &[]).await && answered(&cache, "/about").await);
    /// # Ok::<(), cache_core::CacheError>(())
    /// # }).unwrap();
    /// ```
    pub async fn purge_all(&self) -> Result<(), CacheError> {
        self.record(Event::Invalidation);
        if let Some(l1) = &self.inner.local.l1 {
            l1.clear_now();
        }
        match (&self.inner.authority, &self.inner.l2) {
            (Some(authority), _) => match authority.purge_clocks().await {
                Ok(tick) => self.inner.local.clocks.apply_purge(tick),
                Err(err) => return Err(self.shared_tick_failed(err)),
            },
            (None, Some(l2)) => {
                self.inner.local.clocks.purge_all();
                l2.clear().await?;
            }
            (None, None) => {
                self.inner.local.clocks.purge_all();
            }
        }
        tracing::debug!("purged everything");
        Ok(())
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let l1 = self.inner.local.l1.as_ref().map(Store::stats);
        let l2 = self.inner.l2.as_ref().map(|s| s.stats());
        self.inner.stats.snapshot(l1, l2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(born: u64, tags: &[&str]) -> Entry {
        let now = now_ms();
        let mut e = Entry::new(
            Arc::from(Vec::new()),
            200,
            vec![],
            "body".into(),
            now,
            now + 60_000,
        );
        e.born = born;
        e.tags = tags.iter().map(|t| t.to_string()).collect();
        e
    }

    #[tokio::test]
    async fn a_fill_that_overlaps_an_invalidation_is_not_served() {
        let cache = Cache::memory();
        let primary = cache.primary_key(b"h", b"/p", b"");
        let born = cache.begin_fill();
        cache.invalidate_tag("products").await.unwrap();
        assert!(cache
            .store(&primary, &primary.cache_key(), entry(born, &["products"]))
            .await
            .is_err());
        assert!(matches!(
            cache.lookup(&primary, |_| unreachable!()).await,
            Lookup::Miss { .. }
        ));

        let born = cache.begin_fill();
        assert!(cache
            .store(&primary, &primary.cache_key(), entry(born, &["products"]))
            .await
            .is_ok());
        assert!(matches!(
            cache.lookup(&primary, |_| unreachable!()).await,
            Lookup::Fresh(_)
        ));
        cache.purge_url(&primary).await.unwrap();
        assert!(matches!(
            cache.lookup(&primary, |_| unreachable!()).await,
            Lookup::Miss { .. }
        ));
    }
}

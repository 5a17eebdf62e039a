//! [`RedisStore`]: the shared L2 tier on deadpool-redis, and the authority on tag clocks for
//! every process that shares it.
//!
//! Every call runs under a time limit (default 50 ms), behind a circuit breaker, on a
//! multiplexed connection kept per thread (`redis_conn`). One small background Tokio runtime,
//! shared by every store of the process, carries the invalidation subscriptions and the calls
//! made outside any Tokio runtime. Writes and invalidations are Lua scripts (`redis_scripts`):
//! one round trip each, atomic in Redis. A read is one `HGET` checked against this node's
//! mirror of the clocks while the subscription keeps the mirror current and the record is
//! newer than the subscription; otherwise (or with `strict_reads`) it is the `GET` script,
//! which checks the clocks in Redis.
//!
//! Redis at its `maxmemory`: only records expire, so a `volatile-*` policy evicts records and
//! never a clock (see `redis_scripts`); a full Redis under `noeviction` refuses stores, which are
//! misses (never a 5xx, and not a breaker failure: Redis answered), and still runs invalidations.
//! The subscription reads `maxmemory-policy` when it connects and every few seconds after. Under a
//! policy that may evict a clock (`allkeys-*`, or one it cannot read), a check in Redis proves
//! nothing: a record is then served only when this node's mirror vouches for it (born after the
//! subscription started), other reads are misses counted as `unverified`, and ticks are kept
//! above the wall clock (in µs) so that an evicted counter cannot start again below the ticks
//! records already carry. Back to a safe policy, everything stored meanwhile is purged.
//!
//! What must stay true: a Redis failure of any kind (down, slow, restarted, full, garbage values)
//! is an `Err` or a miss, never a panic and never a wrong answer; `invalidate` is `Ok` only once
//! Redis has ticked the clocks, which every later read checks.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis::{self, Script, Value};
use deadpool_redis::{Pool, Runtime};
use tokio::sync::Notify;

use super::breaker::Breaker;
use super::redis_conn::{self, Connector};
use super::redis_scripts as lua;
use super::{subscriber, ClockLink, Record, Store};
use crate::time::now_ms;
use crate::{codec, CacheError, CacheKey, TierStats};

/// Default limit on each Redis call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// Default most connections deadpool opens at once (each thread keeps one multiplexed
/// connection, which carries many calls at once).
pub const DEFAULT_POOL_SIZE: usize = 4;
/// Shortest time between two warnings that Redis is full and refuses stores.
const FULL_WARNING_EVERY_MS: u64 = 10_000;

/// A Redis-backed [`Store`]: the L2 that many processes share.
///
/// `from_url` checks the URL only; nothing connects until the first call, so a process starts
/// (and serves, from its handlers) while Redis is down.
///
/// ```
/// use std::time::Duration;
/// use cache_core::{Cache, MemoryStore, RedisStore};
///
/// let store = RedisStore::from_url("redis://127.0.0.1:1")? // nothing listens there: still Ok
///     .timeout(Duration::from_millis(20))
///     .pool_size(2)
///     .namespace("shop");
/// let cache = Cache::builder().l1(MemoryStore::new()).l2(store).build();
/// assert!(RedisStore::from_url("not a url").is_err());
/// # Ok::<(), cache_core::CacheError>(())
/// ```
pub struct RedisStore {
    shared: Arc<Shared>,
    /// Dropped with the store: its subscription and kept connections end.
    alive: Arc<()>,
}

static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(0);

/// The background runtime every store of the process shares (one thread): subscriptions, and
/// calls made outside any Tokio runtime. Never dropped, so dropping a store never blocks.
fn background() -> Result<&'static tokio::runtime::Runtime, CacheError> {
    static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("cache-actix-redis")
                .enable_all()
                .build()
                .ok()
        })
        .as_ref()
        .ok_or_else(|| CacheError::Config("cannot start the Redis background runtime".into()))
}

/// What every call of one store shares.
pub(crate) struct Shared {
    pub(crate) url: String,
    pub(crate) conn: Connector,
    options: Options,
    /// The tick at which the subscription last (re)started: the mirror of the clocks may lack
    /// invalidations of records born before it, which are therefore checked in Redis.
    pub(crate) synced_at: AtomicU64,
    keys: OnceLock<Keys>,
    breaker: Breaker,
    pub(crate) link: OnceLock<ClockLink>,
    /// Woken when an invalidation failed, so that the subscriber re-ticks as soon as Redis answers.
    pub(crate) resync: Notify,
    get: Script,
    put: Script,
    invalidate: Script,
    pub(crate) purge: Script,
    pub(crate) tick: Script,
    errors: AtomicU64,
    corrupt: AtomicU64,
    /// What the subscription last learnt of Redis's `maxmemory-policy` (an [`Eviction`]).
    eviction: AtomicU8,
    /// Reads answered as misses because nothing could vouch for the record.
    unverified: AtomicU64,
    /// When the last "Redis is full" warning was logged (Unix ms).
    full_warned_ms: AtomicU64,
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
struct Options {
    pool_size: usize,
    timeout: Duration,
    namespace: String,
    strict_reads: bool,
    assumed_policy: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pool_size: DEFAULT_POOL_SIZE,
            timeout: DEFAULT_TIMEOUT,
            namespace: String::new(),
            strict_reads: false,
            assumed_policy: None,
        }
    }
}

/// The Redis names of one namespace.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    base: String,
    pub(crate) seq: String,
    pub(crate) purged: String,
    life: String,
    index: String,
    clock_prefix: String,
    pub(crate) channel: String,
}

impl Keys {
    fn new(store_namespace: &str, cache_namespace: &str) -> Keys {
        // `{`, `}` and `%` are escaped so that a namespace cannot end the hash tag early or
        // collide with another namespace's spelling.
        let escape = |s: &str| {
            s.replace('%', "%25")
                .replace('{', "%7B")
                .replace('}', "%7D")
                .replace('/', "%2F")
        };
        let base = format!(
            "ca:{{{}/{}}}",
            escape(store_namespace),
            escape(cache_namespace)
        );
        Keys {
            seq: format!("{base}:seq"),
            purged: format!("{base}:purged"),
            life: format!("{base}:life"),
            index: format!("{base}:clocks"),
            clock_prefix: format!("{base}:t:"),
            channel: format!("{base}:inv"),
            base,
        }
    }

    fn record(&self, key: &CacheKey) -> String {
        format!("{}:r:{:032x}", self.base, key.hash())
    }

    fn clock(&self, tag: &str) -> Vec<u8> {
        let mut key = self.clock_prefix.as_bytes().to_vec();
        key.extend_from_slice(tag.as_bytes());
        key
    }

    /// The pattern that matches every key of the namespace (for tools and tests).
    pub(crate) fn pattern(&self) -> String {
        format!("{}:*", self.base)
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &redacted(&self.shared.url))
            .field("namespace", &self.shared.options.namespace)
            .field("timeout", &self.shared.options.timeout)
            .field("circuit_open", &self.shared.breaker.is_open())
            .field("clocks_at_risk", &self.shared.clocks_at_risk())
            .finish()
    }
}

/// The URL without its password, for logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_string(),
    }
}

impl RedisStore {
    /// A store for the Redis at `url` (`redis://[:password@]host:port[/db]`). Fails only on a
    /// malformed URL; it does not connect.
    pub fn from_url(url: &str) -> Result<RedisStore, CacheError> {
        RedisStore::build(url, Options::default())
    }

    fn build(url: &str, options: Options) -> Result<RedisStore, CacheError> {
        use redis::IntoConnectionInfo;
        let bad_url = |_| CacheError::Config(format!("not a Redis URL: {}", redacted(url)));
        redis::parse_redis_url(url).ok_or_else(|| bad_url(()))?;
        // Small calls must leave at once rather than wait for the previous one's ACK (Nagle).
        let info = url
            .into_connection_info()
            .map_err(|_| bad_url(()))?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        background()?;
        let manager = deadpool_redis::Manager::new(info).map_err(|_| bad_url(()))?;
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| CacheError::Config(format!("Redis pool: {e}")))?;
        let alive = Arc::new(());
        let id = NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed);
        Ok(RedisStore {
            shared: Arc::new(Shared {
                url: url.to_string(),
                conn: Connector::new(pool, id, Arc::downgrade(&alive)),
                options,
                synced_at: AtomicU64::new(u64::MAX),
                keys: OnceLock::new(),
                breaker: Breaker::new(5, Duration::from_millis(500)),
                link: OnceLock::new(),
                resync: Notify::new(),
                get: Script::new(&lua::get()),
                put: Script::new(&lua::put()),
                invalidate: Script::new(&lua::invalidate()),
                purge: Script::new(&lua::purge()),
                tick: Script::new(&lua::tick()),
                errors: AtomicU64::new(0),
                corrupt: AtomicU64::new(0),
                eviction: AtomicU8::new(Eviction::Unchecked as u8),
                unverified: AtomicU64::new(0),
                full_warned_ms: AtomicU64::new(0),
            }),
            alive,
        })
    }

    /// Rebuilds with changed options (the builder methods run before the store is in use).
    fn with(self, change: impl FnOnce(&mut Options)) -> RedisStore {
        let mut options = self.shared.options.clone();
        change(&mut options);
        let url = self.shared.url.clone();
        match RedisStore::build(&url, options) {
            Ok(store) => store,
            // The URL was accepted once; keep the working store.
            Err(err) => {
                tracing::warn!(error = %err, "could not apply a RedisStore option; keeping the previous one");
                self
            }
        }
    }

    /// Limit on each call (default 50 ms). A call that takes longer is a miss.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let store = cache_core::RedisStore::from_url("redis://127.0.0.1")?.timeout(Duration::from_millis(20));
    /// # Ok::<(), cache_core::CacheError>(())
    /// ```
    pub fn timeout(self, timeout: Duration) -> RedisStore {
        self.with(|o| o.timeout = timeout)
    }

    /// Most connections being opened at once (default 4). Each thread then keeps its own
    /// multiplexed connection, which carries any number of concurrent calls.
    ///
    /// ```
    /// let store = cache_core::RedisStore::from_url("redis://127.0.0.1")?.pool_size(8);
    /// # Ok::<(), cache_core::CacheError>(())
    /// ```
    pub fn pool_size(self, size: usize) -> RedisStore {
        self.with(|o| o.pool_size = size)
    }

    /// A prefix that keeps this store's keys, clocks and messages apart from every other
    /// namespace on the same Redis (combined with the cache's own namespace).
    ///
    /// ```
    /// let store = cache_core::RedisStore::from_url("redis://127.0.0.1")?.namespace("shop");
    /// # Ok::<(), cache_core::CacheError>(())
    /// ```
    pub fn namespace(self, namespace: &str) -> RedisStore {
        self.with(|o| o.namespace = namespace.to_string())
    }

    /// Check every L2 read against the tag clocks in Redis (a Lua script) instead of this
    /// node's mirror of them. Off by default: the mirror is current within the pub/sub
    /// propagation delay (the invalidation contract), and a plain `HGET` measured about twice
    /// the hit throughput. On, an invalidation is seen by the next L2 read on every node at once;
    /// L1 copies still follow pub/sub. While the subscription is down, reads are checked in
    /// Redis either way. While Redis may evict the clocks ([`TierStats::clocks_at_risk`]), a read
    /// that passes the check in Redis must also be one this node's own clocks vouch for.
    ///
    /// ```
    /// let store = cache_core::RedisStore::from_url("redis://127.0.0.1")?.strict_reads(true);
    /// # Ok::<(), cache_core::CacheError>(())
    /// ```
    pub fn strict_reads(self, strict: bool) -> RedisStore {
        self.with(|o| o.strict_reads = strict)
    }

    /// The `maxmemory-policy` to assume when Redis refuses `CONFIG GET` (some managed Redis
    /// services disable `CONFIG`). Without it such a Redis counts as one that may evict the tag
    /// clocks ([`TierStats::clocks_at_risk`]): fewer hits, never a wrong answer. Declare only
    /// what the service is really set to: a `volatile-lru` here over a Redis that evicts any key
    /// would let an evicted clock revive what it invalidated.
    ///
    /// ```
    /// let store = cache_core::RedisStore::from_url("redis://127.0.0.1")?.assume_maxmemory_policy("volatile-lru");
    /// # Ok::<(), cache_core::CacheError>(())
    /// ```
    pub fn assume_maxmemory_policy(self, policy: &str) -> RedisStore {
        self.with(|o| o.assumed_policy = Some(policy.to_string()))
    }

    /// The pattern matching every Redis key this store writes (after it is attached to a cache).
    pub fn key_pattern(&self) -> Option<String> {
        self.shared.keys.get().map(Keys::pattern)
    }

    /// Runs `f` under the breaker and the time limit: on the caller's Tokio runtime when there
    /// is one (no thread hop), else on the background one.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, CacheError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Shared>) -> Fut,
        Fut: Future<Output = Result<T, CacheError>> + Send + 'static,
    {
        let shared = self.shared.clone();
        if !shared.breaker.allow() {
            return Err(CacheError::Backend("circuit open: Redis is failing".into()));
        }
        let timeout = shared.options.timeout;
        let work = f(shared.clone());
        let result = if tokio::runtime::Handle::try_current().is_ok() {
            tokio::time::timeout(timeout, work)
                .await
                .unwrap_or(Err(CacheError::Timeout))
        } else {
            match background()?
                .spawn(async move { tokio::time::timeout(timeout, work).await })
                .await
            {
                Ok(Ok(result)) => result,
                Ok(Err(_elapsed)) => Err(CacheError::Timeout),
                Err(join) => Err(CacheError::Backend(format!("Redis call aborted: {join}"))),
            }
        };
        match &result {
            Ok(_) | Err(CacheError::Corrupt(_)) | Err(CacheError::Invalidated) => {
                shared.breaker.success()
            }
            // Redis answered: it is full, not failing. Opening the breaker would refuse the
            // invalidations it still runs.
            Err(err) if redis_conn::is_full(err) => {
                shared.breaker.success();
                shared.warn_full();
            }
            Err(_) => {
                shared.breaker.failure();
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    /// One `HGET` of the record's value, decoded; a value that is not what we wrote is counted
    /// and deleted. Nothing here checks the clocks: see [`RedisStore::vouched`].
    async fn hget(&self, key: &CacheKey, record_key: String) -> Result<Option<Record>, CacheError> {
        let reply = self
            .call(move |shared| async move {
                let mut hget = redis::cmd("HGET");
                hget.arg(&record_key).arg("v");
                shared.query::<Option<Vec<u8>>>(&hget).await
            })
            .await;
        let bytes = match reply {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(None),
            Err(err) => {
                if matches!(err, CacheError::Corrupt(_)) {
                    self.corrupt(key).await;
                }
                return Err(err);
            }
        };
        match codec::decode_shared(&bytes::Bytes::from(bytes)) {
            Ok(record) => Ok(Some(record)),
            Err(err) => {
                self.corrupt(key).await;
                Err(err)
            }
        }
    }

    /// Whether this node's mirror of the clocks can vouch for `record`, which the
    /// [`crate::Cache`] then checks against it: the subscription is up (checked after the read,
    /// so that one dropped during it counts) and the record was born after it started (an
    /// invalidation older than the subscription may be missing from the mirror). With clocks
    /// safe in Redis, also not above the highest tick seen (the counter in Redis went back, and
    /// the check in Redis raises it). A vary list carries no data an invalidation concerns;
    /// purges reach it by making the variants themselves invalid.
    fn vouched(&self, record: &Record, at_risk: bool) -> bool {
        let Some(link) = self.shared.link.get() else {
            return false;
        };
        let synced_at = self.shared.synced_at.load(Ordering::Acquire);
        link.in_sync()
            && match record {
                Record::Response(entry) => {
                    entry.born >= synced_at && (at_risk || entry.born <= link.seq())
                }
                Record::Variants(_) => true,
            }
    }

    /// A read while Redis may evict the clocks: what Redis says of them proves nothing, so a
    /// record is served only if this node's mirror vouches for it (with `strict_reads`, it must
    /// pass the check in Redis too); anything else is a miss, counted as unverified.
    async fn get_at_risk(
        &self,
        key: &CacheKey,
        keys: Keys,
        record_key: String,
    ) -> Result<Option<Record>, CacheError> {
        if !self.shared.link.get().is_some_and(ClockLink::in_sync) {
            return Ok(self.unverified());
        }
        let record = if self.shared.options.strict_reads {
            self.get_checked_in_redis(key, keys, record_key).await?
        } else {
            self.hget(key, record_key).await?
        };
        match record {
            Some(record) if self.vouched(&record, true) => Ok(Some(record)),
            Some(_) => Ok(self.unverified()),
            None => Ok(None),
        }
    }

    /// Counts a read answered as a miss because nothing could vouch for it.
    fn unverified(&self) -> Option<Record> {
        self.shared.unverified.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// The parts of a `GET`/`PUT` script reply, after noting the counter it carries first.
    fn script_reply(&self, reply: Value) -> Result<Vec<Value>, CacheError> {
        let Value::Array(parts) = reply else {
            return Err(CacheError::Corrupt("unexpected script reply".into()));
        };
        if let Some(seq) = parts.first().and_then(int) {
            self.shared.observed(seq);
        }
        Ok(parts)
    }

    /// The tick an invalidation or purge script returned. On failure the subscriber is woken to
    /// re-tick as soon as Redis answers, since this node's L1 was dropped meanwhile.
    fn tick_reply(&self, reply: Result<Value, CacheError>) -> Result<u64, CacheError> {
        let tick =
            reply.and_then(|v| int(&v).ok_or_else(|| CacheError::Corrupt("bad tick".into())));
        if tick.is_err() {
            self.shared.resync.notify_one();
        }
        tick
    }

    /// Counts a value that is not what we wrote and deletes it, so that the next fill replaces
    /// it (a failure to delete only delays that).
    async fn corrupt(&self, key: &CacheKey) {
        self.shared.corrupt.fetch_add(1, Ordering::Relaxed);
        let _ = self.remove(key).await;
    }

    /// The read checked in Redis: the `GET` script compares the record's `born` with its tags'
    /// clocks and the purge tick, and deletes it if they reject it.
    async fn get_checked_in_redis(
        &self,
        key: &CacheKey,
        keys: Keys,
        record_key: String,
    ) -> Result<Option<Record>, CacheError> {
        let reply = self
            .call(move |shared| async move {
                let mut invocation = shared.get.prepare_invoke();
                invocation
                    .key(&record_key)
                    .key(&keys.seq)
                    .key(&keys.purged)
                    .arg(&keys.clock_prefix);
                shared.run(&invocation).await
            })
            .await?;
        let mut parts = self.script_reply(reply)?;
        let status = parts.get(1).and_then(int);
        let value = match parts.get_mut(2) {
            Some(Value::BulkString(bytes)) => Some(bytes::Bytes::from(std::mem::take(bytes))),
            _ => None,
        };
        match (status, value) {
            (Some(1), Some(bytes)) => match codec::decode_shared(&bytes) {
                Ok(record) => Ok(Some(record)),
                Err(err) => {
                    self.corrupt(key).await;
                    Err(err)
                }
            },
            (Some(0 | 3), _) => Ok(None),
            (Some(2), _) => {
                self.shared.corrupt.fetch_add(1, Ordering::Relaxed);
                Err(CacheError::Corrupt("malformed record (deleted)".into()))
            }
            _ => Err(CacheError::Corrupt("unexpected script reply".into())),
        }
    }

    fn keys(&self) -> Result<Keys, CacheError> {
        self.shared.keys.get().cloned().ok_or_else(|| {
            CacheError::Config(
                "RedisStore is used before Cache::builder().build() attached it".into(),
            )
        })
    }
}

impl Shared {
    /// Runs a script invocation on this thread's connection.
    pub(crate) async fn run(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<Value, CacheError> {
        self.conn
            .with(|mut conn| async move { invocation.invoke_async::<Value>(&mut conn).await })
            .await
    }

    /// Runs one plain command on this thread's connection.
    pub(crate) async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, CacheError> {
        self.conn
            .with(|mut conn| async move { cmd.query_async::<T>(&mut conn).await })
            .await
    }

    fn observed(&self, seq: u64) {
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
    fn warn_full(&self) {
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

/// Tags as `len:tag` pieces, the form the scripts parse.
fn tag_pieces<'a>(tags: impl IntoIterator<Item = &'a String>) -> Vec<u8> {
    let mut out = Vec::new();
    for tag in tags {
        out.extend_from_slice(tag.len().to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(tag.as_bytes());
    }
    out
}

/// Parses `len:tag` pieces; `None` if malformed.
pub(crate) fn parse_pieces(mut bytes: &[u8]) -> Option<Vec<String>> {
    let mut tags = Vec::new();
    while !bytes.is_empty() {
        let colon = bytes.iter().position(|b| *b == b':')?;
        let len: usize = std::str::from_utf8(&bytes[..colon]).ok()?.parse().ok()?;
        let rest = &bytes[colon + 1..];
        if rest.len() < len {
            return None;
        }
        tags.push(String::from_utf8(rest[..len].to_vec()).ok()?);
        bytes = &rest[len..];
    }
    Some(tags)
}

fn int(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

#[async_trait]
impl Store for RedisStore {
    /// While subscribed (and without `strict_reads`): one `HGET`, checked by the
    /// [`crate::Cache`] against this node's mirror of the clocks, kept current by the
    /// subscription (within the propagation delay). A record the mirror cannot vouch for is
    /// checked in Redis, unless Redis may evict the clocks ([`RedisStore::get_at_risk`]).
    async fn get(&self, key: &CacheKey) -> Result<Option<Record>, CacheError> {
        let keys = self.keys()?;
        let record_key = keys.record(key);
        if self.shared.clocks_at_risk() {
            return self.get_at_risk(key, keys, record_key).await;
        }
        let mirrored = !self.shared.options.strict_reads
            && self.shared.link.get().is_some_and(ClockLink::in_sync);
        if mirrored {
            match self.hget(key, record_key.clone()).await? {
                None => return Ok(None),
                Some(record) if self.vouched(&record, false) => return Ok(Some(record)),
                Some(_) => {}
            }
        }
        self.get_checked_in_redis(key, keys, record_key).await
    }

    async fn put(&self, key: &CacheKey, record: Record) -> Result<(), CacheError> {
        let keys = self.keys()?;
        let now = now_ms();
        let ttl = record.expires_at_ms().saturating_sub(now);
        if ttl == 0 {
            return Ok(());
        }
        let (born, tags, life) = match &record {
            Record::Response(entry) => (
                entry.born.to_string(),
                tag_pieces(&entry.tags),
                entry.expires_at_ms().saturating_sub(entry.stored_at_ms),
            ),
            Record::Variants(_) => (String::new(), Vec::new(), ttl),
        };
        let value = codec::encode(&record);
        let record_key = keys.record(key);
        let reply = self
            .call(move |shared| async move {
                let mut invocation = shared.put.prepare_invoke();
                invocation
                    .key(&record_key)
                    .key(&keys.seq)
                    .key(&keys.purged)
                    .key(&keys.life)
                    .key(&keys.index)
                    .arg(&keys.clock_prefix)
                    .arg(value)
                    .arg(born)
                    .arg(tags)
                    .arg(ttl)
                    .arg(life)
                    .arg(now);
                shared.run(&invocation).await
            })
            .await?;
        let parts = self.script_reply(reply)?;
        match parts.get(1).and_then(int) {
            Some(1) => Ok(()),
            _ => Err(CacheError::Invalidated),
        }
    }

    async fn remove(&self, key: &CacheKey) -> Result<(), CacheError> {
        let record_key = self.keys()?.record(key);
        self.call(move |shared| async move {
            let mut del = redis::cmd("DEL");
            del.arg(&record_key);
            shared.query::<Value>(&del).await.map(|_| ())
        })
        .await
    }

    /// Records are not deleted one by one: the purge tick makes every one of them invalid
    /// ([`Store::purge_clocks`]) and they expire on their own.
    async fn clear(&self) -> Result<(), CacheError> {
        Ok(())
    }

    fn stats(&self) -> TierStats {
        TierStats {
            errors: self.shared.corrupt.load(Ordering::Relaxed),
            unverified: self.shared.unverified.load(Ordering::Relaxed),
            clocks_at_risk: self.shared.clocks_at_risk(),
            ..TierStats::default()
        }
    }

    fn keeps_clocks(&self) -> bool {
        true
    }

    async fn invalidate(&self, tags: &[String]) -> Result<u64, CacheError> {
        let keys = self.keys()?;
        let clock_keys: Vec<Vec<u8>> = tags.iter().map(|t| keys.clock(t)).collect();
        let pieces = tag_pieces(tags);
        let floor = self.shared.floor();
        let result = self
            .call(move |shared| async move {
                let mut invocation = shared.invalidate.prepare_invoke();
                invocation
                    .key(&keys.seq)
                    .key(&keys.life)
                    .key(&keys.purged)
                    .key(&keys.index);
                for key in &clock_keys {
                    invocation.key(key.as_slice());
                }
                invocation
                    .arg(&keys.channel)
                    .arg(pieces)
                    .arg(floor)
                    .arg(now_ms());
                shared.run(&invocation).await
            })
            .await;
        self.tick_reply(result)
    }

    async fn purge_clocks(&self) -> Result<u64, CacheError> {
        let keys = self.keys()?;
        let floor = self.shared.floor();
        let result = self
            .call(move |shared| async move {
                let mut invocation = shared.purge.prepare_invoke();
                invocation
                    .key(&keys.seq)
                    .key(&keys.purged)
                    .arg(&keys.channel)
                    .arg(floor);
                shared.run(&invocation).await
            })
            .await;
        self.tick_reply(result)
    }

    fn attach(&self, link: ClockLink) {
        let keys = Keys::new(&self.shared.options.namespace, link.namespace());
        if self.shared.keys.set(keys.clone()).is_err() || self.shared.link.set(link).is_err() {
            tracing::warn!("a RedisStore can serve one cache only; ignoring a second attach");
            return;
        }
        match background() {
            Ok(runtime) => {
                runtime.spawn(subscriber::run(
                    self.shared.clone(),
                    keys,
                    Arc::downgrade(&self.alive),
                ));
            }
            // build() started it already; without it the L1 simply stays unused.
            Err(err) => tracing::error!(error = %err, "no invalidation subscription"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_pieces_round_trip_any_text() {
        let tags = vec![
            "products".to_string(),
            "a:b".to_string(),
            String::new(),
            "\u{0}url:00ff".to_string(),
            "é 12:x".to_string(),
        ];
        assert_eq!(parse_pieces(&tag_pieces(&tags)), Some(tags));
        assert_eq!(parse_pieces(b"5:ab"), None);
        assert_eq!(parse_pieces(b"x:ab"), None);
    }

    #[test]
    fn namespaces_cannot_spell_each_other() {
        let a = Keys::new("a}", "b");
        let b = Keys::new("a", "}b");
        assert_ne!(a.seq, b.seq);
        assert!(a.seq.starts_with("ca:{a%7D/b}"));
    }

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

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redacted("redis://:hunter2@h:6379/0"),
            "redis://***@h:6379/0"
        );
        assert_eq!(redacted("redis://h:6379"), "redis://h:6379");
    }
}

//! [`RedisStore`]: the shared L2 tier on deadpool-redis, and the authority on tag clocks for
//! every process that shares it.
//!
//! Every call runs under a time limit (default 50 ms), behind a circuit breaker, on a
//! multiplexed connection kept per thread: an actix worker talks to Redis from its own thread,
//! with no hop to another one (a hop cost more than the Redis call itself in measurements).
//! The store also owns a small Tokio runtime (one thread) for the invalidation subscription and
//! for calls made outside any Tokio runtime. Every read, write and invalidation is one Lua
//! script: one round trip, atomic in Redis (see `redis_scripts`).
//!
//! What must stay true: a Redis failure of any kind (down, slow, restarted, garbage values) is
//! an `Err` or a miss, never a panic and never a wrong answer; `invalidate` is `Ok` only once
//! Redis has ticked the clocks, which every later read checks.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis::{self, aio::MultiplexedConnection, Script, Value};
use deadpool_redis::{Pool, Runtime};
use tokio::sync::Notify;

use super::breaker::Breaker;
use super::redis_scripts as lua;
use super::{subscriber, ClockLink, Record, Store};
use crate::time::now_ms;
use crate::{codec, CacheError, CacheKey, TierStats};

/// Default limit on each Redis call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// Default most connections deadpool opens at once (each thread keeps one multiplexed
/// connection, which carries many calls at once).
pub const DEFAULT_POOL_SIZE: usize = 4;

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
    runtime: Option<tokio::runtime::Runtime>,
}

static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Connections kept by this thread: (store id, the store's liveness, connection). Taken out
    /// of deadpool's pool once and kept, because each `Pool::get` costs deadpool's recycling
    /// `PING`, a second round trip on every hit.
    static KEPT: RefCell<Vec<(u64, Weak<()>, MultiplexedConnection)>> = const { RefCell::new(Vec::new()) };
}

/// What every call of one store shares.
pub(crate) struct Shared {
    pub(crate) url: String,
    pool: Pool,
    /// Distinguishes this store's connections in the per-thread table.
    id: u64,
    /// Dropped with the store, so that the per-thread table can drop its connections.
    alive: Arc<()>,
    options: Options,
    keys: OnceLock<Keys>,
    breaker: Breaker,
    pub(crate) link: OnceLock<ClockLink>,
    /// Woken when an invalidation failed, so that the subscriber re-ticks as soon as Redis answers.
    pub(crate) resync: Notify,
    get: Script,
    put: Script,
    invalidate: Script,
    purge: Script,
    pub(crate) tick: Script,
    errors: AtomicU64,
    corrupt: AtomicU64,
}

/// What the builder methods set.
#[derive(Debug, Clone)]
struct Options {
    pool_size: usize,
    timeout: Duration,
    namespace: String,
    strict_reads: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pool_size: DEFAULT_POOL_SIZE,
            timeout: DEFAULT_TIMEOUT,
            namespace: String::new(),
            strict_reads: false,
        }
    }
}

/// The Redis names of one namespace.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    base: String,
    pub(crate) seq: String,
    purged: String,
    life: String,
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
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cache-actix-redis")
            .enable_all()
            .build()
            .map_err(|e| CacheError::Config(format!("cannot start the Redis runtime: {e}")))?;
        let manager = deadpool_redis::Manager::new(info).map_err(|_| bad_url(()))?;
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| CacheError::Config(format!("Redis pool: {e}")))?;
        Ok(RedisStore {
            shared: Arc::new(Shared {
                url: url.to_string(),
                pool,
                id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
                alive: Arc::new(()),
                options,
                keys: OnceLock::new(),
                breaker: Breaker::new(5, Duration::from_millis(500)),
                link: OnceLock::new(),
                resync: Notify::new(),
                get: Script::new(lua::GET),
                put: Script::new(lua::PUT),
                invalidate: Script::new(lua::INVALIDATE),
                purge: Script::new(lua::PURGE),
                tick: Script::new(lua::TICK),
                errors: AtomicU64::new(0),
                corrupt: AtomicU64::new(0),
            }),
            runtime: Some(runtime),
        })
    }

    /// Rebuilds with changed options (the builder methods run before the store is in use).
    fn with(self, change: impl FnOnce(&mut Options)) -> RedisStore {
        let mut options = self.shared.options.clone();
        change(&mut options);
        let url = self.shared.url.clone();
        match RedisStore::build(&url, options) {
            Ok(store) => store,
            // The URL was accepted once and a runtime started once; keep the working store.
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

    /// Most connections opened at once (default 4; each thread keeps one multiplexed connection).
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
    /// Redis either way.
    ///
    /// ```
    /// let store = cache_core::RedisStore::from_url("redis://127.0.0.1")?.strict_reads(true);
    /// # Ok::<(), cache_core::CacheError>(())
    /// ```
    pub fn strict_reads(self, strict: bool) -> RedisStore {
        self.with(|o| o.strict_reads = strict)
    }

    /// The pattern matching every Redis key this store writes (after it is attached to a cache).
    pub fn key_pattern(&self) -> Option<String> {
        self.shared.keys.get().map(Keys::pattern)
    }

    /// Runs `f` under the breaker and the time limit: on the caller's Tokio runtime when there
    /// is one (no thread hop), else on the store's own.
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
            let runtime = self
                .runtime
                .as_ref()
                .ok_or_else(|| CacheError::Backend("Redis runtime stopped".into()))?;
            match runtime
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
            Err(_) => {
                shared.breaker.failure();
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    /// The hit path while subscribed: one `HGET`, checked against this node's clocks (a mirror of
    /// the shared ones, current within the propagation delay) by the [`crate::Cache`]. While not
    /// subscribed the mirror may lag, and `get` checks in Redis with the `GET` script instead.
    async fn get_checked_here(
        &self,
        key: &CacheKey,
        record_key: String,
    ) -> Result<Option<Record>, CacheError> {
        let reply = self
            .call(move |shared| async move {
                let (mut conn, _) = shared.connection().await?;
                let reply = redis::cmd("HGET")
                    .arg(&record_key)
                    .arg("v")
                    .query_async::<Option<Vec<u8>>>(&mut conn)
                    .await;
                match reply {
                    Ok(bytes) => Ok(bytes),
                    Err(err) if err.code() == Some("WRONGTYPE") => {
                        Err(CacheError::Corrupt(format!("{err}")))
                    }
                    Err(err) => {
                        if err.is_io_error() || err.is_connection_dropped() {
                            shared.drop_connection();
                        }
                        Err(CacheError::Backend(format!("Redis: {err}")))
                    }
                }
            })
            .await;
        let bytes = match reply {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(None),
            Err(err) => {
                if matches!(err, CacheError::Corrupt(_)) {
                    self.shared.corrupt.fetch_add(1, Ordering::Relaxed);
                    let _ = self.remove(key).await;
                }
                return Err(err);
            }
        };
        match codec::decode_shared(&bytes::Bytes::from(bytes)) {
            Ok(record) => Ok(Some(record)),
            Err(err) => {
                self.shared.corrupt.fetch_add(1, Ordering::Relaxed);
                // Deleted so that the next fill replaces it; a failure here only delays that.
                let _ = self.remove(key).await;
                Err(err)
            }
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

impl Drop for RedisStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside async code; this never blocks.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Shared {
    /// This thread's connection for this store, made (through the pool) on first use. `true`
    /// with it if it was kept from earlier, so that a failure on it may be a stale handle.
    pub(crate) async fn connection(&self) -> Result<(MultiplexedConnection, bool), CacheError> {
        let kept = KEPT.with(|kept| {
            kept.borrow()
                .iter()
                .find(|(id, _, _)| *id == self.id)
                .map(|(_, _, conn)| conn.clone())
        });
        if let Some(conn) = kept {
            return Ok((conn, true));
        }
        let pooled = self
            .pool
            .get()
            .await
            .map_err(|e| CacheError::Backend(format!("Redis connection: {e}")))?;
        let conn = deadpool_redis::Connection::take(pooled);
        let alive = Arc::downgrade(&self.alive);
        KEPT.with(|kept| {
            let mut kept = kept.borrow_mut();
            // Connections of dropped stores go here, so a long-lived thread does not hoard them.
            kept.retain(|(id, alive, _)| *id != self.id && alive.strong_count() > 0);
            kept.push((self.id, alive, conn.clone()));
        });
        Ok((conn, false))
    }

    /// Forgets this thread's connection, so that the next call makes a new one.
    pub(crate) fn drop_connection(&self) {
        KEPT.with(|kept| kept.borrow_mut().retain(|(id, _, _)| *id != self.id));
    }

    /// Runs a script invocation. A kept connection that turns out dead (its runtime ended, or
    /// Redis restarted) is replaced and the call tried once more on a new one.
    pub(crate) async fn run(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<Value, CacheError> {
        loop {
            let (mut conn, was_kept) = self.connection().await?;
            match invocation.invoke_async::<Value>(&mut conn).await {
                Ok(value) => return Ok(value),
                Err(err) => {
                    let broken = err.is_io_error()
                        || err.is_connection_dropped()
                        || err.is_unrecoverable_error();
                    if broken {
                        self.drop_connection();
                    }
                    if !(broken && was_kept) {
                        return Err(CacheError::Backend(format!("Redis: {err}")));
                    }
                }
            }
        }
    }

    fn observed(&self, seq: u64) {
        if let Some(link) = self.link.get() {
            link.observed(seq);
        }
    }

    fn floor(&self) -> u64 {
        self.link.get().map_or(0, ClockLink::seq)
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
    async fn get(&self, key: &CacheKey) -> Result<Option<Record>, CacheError> {
        let keys = self.keys()?;
        let record_key = keys.record(key);
        if !self.shared.options.strict_reads
            && self.shared.link.get().is_some_and(ClockLink::in_sync)
        {
            return self.get_checked_here(key, record_key).await;
        }
        let reply = self
            .call(move |shared| async move {
                let mut invocation = shared.get.prepare_invoke();
                invocation
                    .key(&record_key)
                    .key(&keys.seq)
                    .key(&keys.purged)
                    .arg(&keys.clock_prefix);
                shared.run(invocation).await
            })
            .await?;
        let Value::Array(parts) = reply else {
            return Err(CacheError::Corrupt("unexpected script reply".into()));
        };
        if let Some(seq) = parts.first().and_then(int) {
            self.shared.observed(seq);
        }
        match (parts.get(1).and_then(int), parts.get(2)) {
            (Some(1), Some(Value::BulkString(bytes))) => match codec::decode(bytes) {
                Ok(record) => Ok(Some(record)),
                Err(err) => {
                    self.shared.corrupt.fetch_add(1, Ordering::Relaxed);
                    // Deleted so that the next fill replaces it; a failure here only delays that.
                    let _ = self.remove(key).await;
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
                    .arg(&keys.clock_prefix)
                    .arg(value)
                    .arg(born)
                    .arg(tags)
                    .arg(ttl)
                    .arg(life);
                shared.run(invocation).await
            })
            .await?;
        let Value::Array(parts) = reply else {
            return Err(CacheError::Corrupt("unexpected script reply".into()));
        };
        if let Some(seq) = parts.first().and_then(int) {
            self.shared.observed(seq);
        }
        match parts.get(1).and_then(int) {
            Some(1) => Ok(()),
            _ => Err(CacheError::Invalidated),
        }
    }

    async fn remove(&self, key: &CacheKey) -> Result<(), CacheError> {
        let record_key = self.keys()?.record(key);
        self.call(move |shared| async move {
            let (mut conn, _) = shared.connection().await?;
            redis::cmd("DEL")
                .arg(&record_key)
                .query_async::<Value>(&mut conn)
                .await
                .map(|_| ())
                .map_err(|e| {
                    shared.drop_connection();
                    CacheError::Backend(format!("Redis: {e}"))
                })
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
                invocation.key(&keys.seq).key(&keys.life);
                for key in &clock_keys {
                    invocation.key(key.as_slice());
                }
                invocation.arg(&keys.channel).arg(pieces).arg(floor);
                shared.run(invocation).await
            })
            .await
            .and_then(|v| int(&v).ok_or_else(|| CacheError::Corrupt("bad tick".into())));
        if result.is_err() {
            self.shared.resync.notify_one();
        }
        result
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
                shared.run(invocation).await
            })
            .await
            .and_then(|v| int(&v).ok_or_else(|| CacheError::Corrupt("bad tick".into())));
        if result.is_err() {
            self.shared.resync.notify_one();
        }
        result
    }

    fn attach(&self, link: ClockLink) {
        let keys = Keys::new(&self.shared.options.namespace, link.namespace());
        if self.shared.keys.set(keys.clone()).is_err() || self.shared.link.set(link).is_err() {
            tracing::warn!("a RedisStore can serve one cache only; ignoring a second attach");
            return;
        }
        if let Some(runtime) = &self.runtime {
            runtime.spawn(subscriber::run(self.shared.clone(), keys));
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
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redacted("redis://:hunter2@h:6379/0"),
            "redis://***@h:6379/0"
        );
        assert_eq!(redacted("redis://h:6379"), "redis://h:6379");
    }
}

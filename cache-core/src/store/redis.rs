//! [`RedisStore`]: the shared L2 tier on deadpool-redis, and the authority on tag clocks for
//! every process that shares it.
//!
//! Every call runs on the store's own small Tokio runtime (one thread), under a time limit
//! (default 50 ms), behind a circuit breaker. That runtime owns the sockets, so the store works
//! the same from any actix worker, any test runtime, or none. Every read, write and
//! invalidation is one Lua script: one round trip, atomic in Redis (see `redis_scripts`).
//!
//! What must stay true: a Redis failure of any kind (down, slow, restarted, garbage values) is
//! an `Err` or a miss, never a panic and never a wrong answer; `invalidate` is `Ok` only once
//! Redis has ticked the clocks, which every later read checks.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis::{self, aio::MultiplexedConnection, Script, Value};
use deadpool_redis::{Config, Pool, PoolConfig, Runtime};
use tokio::sync::Notify;

use super::breaker::Breaker;
use super::redis_scripts as lua;
use super::{subscriber, ClockLink, Record, Store};
use crate::time::now_ms;
use crate::{codec, CacheError, CacheKey, TierStats};

/// Default limit on each Redis call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// Default number of multiplexed connections (each carries many calls at once).
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

/// What the calls running on the store's runtime share.
pub(crate) struct Shared {
    pub(crate) url: String,
    pool: Pool,
    /// Multiplexed connections taken from the pool and kept: handing one out per call would
    /// cost deadpool's recycling `PING`, a second round trip on every hit.
    connections: Vec<Mutex<Option<MultiplexedConnection>>>,
    next: AtomicUsize,
    timeout: Duration,
    namespace: String,
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
            .field("namespace", &self.shared.namespace)
            .field("timeout", &self.shared.timeout)
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
        RedisStore::build(url, DEFAULT_POOL_SIZE, DEFAULT_TIMEOUT, String::new())
    }

    fn build(
        url: &str,
        pool_size: usize,
        timeout: Duration,
        namespace: String,
    ) -> Result<RedisStore, CacheError> {
        redis::parse_redis_url(url)
            .ok_or_else(|| CacheError::Config(format!("not a Redis URL: {}", redacted(url))))?;
        let pool_size = pool_size.max(1);
        let mut config = Config::from_url(url);
        config.pool = Some(PoolConfig::new(pool_size));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cache-actix-redis")
            .enable_all()
            .build()
            .map_err(|e| CacheError::Config(format!("cannot start the Redis runtime: {e}")))?;
        let pool = {
            let _inside = runtime.enter();
            config
                .create_pool(Some(Runtime::Tokio1))
                .map_err(|e| CacheError::Config(format!("Redis pool: {e}")))?
        };
        Ok(RedisStore {
            shared: Arc::new(Shared {
                url: url.to_string(),
                pool,
                connections: (0..pool_size).map(|_| Mutex::new(None)).collect(),
                next: AtomicUsize::new(0),
                timeout,
                namespace,
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

    /// Rebuilds with a new option; only callable before the store is attached to a cache.
    fn rebuild(self, pool_size: usize, timeout: Duration, namespace: String) -> RedisStore {
        let url = self.shared.url.clone();
        match RedisStore::build(&url, pool_size, timeout, namespace) {
            Ok(store) => store,
            // The URL was accepted once and a runtime started once; keep the working store.
            Err(err) => {
                tracing::warn!(error = %err, "could not apply a RedisStore option; keeping the previous one");
                self
            }
        }
    }

    /// Limit on each call (default 50 ms). A call that takes longer is a miss.
    pub fn timeout(self, timeout: Duration) -> RedisStore {
        let (size, ns) = (self.shared.connections.len(), self.shared.namespace.clone());
        self.rebuild(size, timeout, ns)
    }

    /// Number of multiplexed connections (default 4).
    pub fn pool_size(self, size: usize) -> RedisStore {
        let (timeout, ns) = (self.shared.timeout, self.shared.namespace.clone());
        self.rebuild(size, timeout, ns)
    }

    /// A prefix that keeps this store's keys, clocks and messages apart from every other
    /// namespace on the same Redis (combined with the cache's own namespace).
    pub fn namespace(self, namespace: &str) -> RedisStore {
        let (size, timeout) = (self.shared.connections.len(), self.shared.timeout);
        self.rebuild(size, timeout, namespace.to_string())
    }

    /// The pattern matching every Redis key this store writes (after it is attached to a cache).
    pub fn key_pattern(&self) -> Option<String> {
        self.shared.keys.get().map(Keys::pattern)
    }

    /// Runs `f` on the store's runtime, under the breaker and the time limit.
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
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| CacheError::Backend("Redis runtime stopped".into()))?;
        let timeout = shared.timeout;
        let work = f(shared.clone());
        let outcome = runtime
            .spawn(async move { tokio::time::timeout(timeout, work).await })
            .await;
        let result = match outcome {
            Ok(Ok(result)) => result,
            Ok(Err(_elapsed)) => Err(CacheError::Timeout),
            Err(join) => Err(CacheError::Backend(format!("Redis call aborted: {join}"))),
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
    /// A connection, reusing the kept ones; a broken one is replaced from the pool.
    pub(crate) async fn connection(&self) -> Result<(usize, MultiplexedConnection), CacheError> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        let kept = self.connections[slot]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(conn) = kept {
            return Ok((slot, conn));
        }
        let pooled = self
            .pool
            .get()
            .await
            .map_err(|e| CacheError::Backend(format!("Redis connection: {e}")))?;
        let conn = deadpool_redis::Connection::take(pooled);
        *self.connections[slot]
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
        Ok((slot, conn))
    }

    /// Forgets a connection that failed, so that the next call makes a new one.
    pub(crate) fn drop_connection(&self, slot: usize) {
        *self.connections[slot]
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Runs a script invocation on a kept connection.
    pub(crate) async fn run(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<Value, CacheError> {
        let (slot, mut conn) = self.connection().await?;
        match invocation.invoke_async::<Value>(&mut conn).await {
            Ok(value) => Ok(value),
            Err(err) => {
                if err.is_io_error() || err.is_connection_dropped() || err.is_unrecoverable_error()
                {
                    self.drop_connection(slot);
                }
                Err(CacheError::Backend(format!("Redis: {err}")))
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
            let (slot, mut conn) = shared.connection().await?;
            redis::cmd("DEL")
                .arg(&record_key)
                .query_async::<Value>(&mut conn)
                .await
                .map(|_| ())
                .map_err(|e| {
                    shared.drop_connection(slot);
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
        let keys = Keys::new(&self.shared.namespace, link.namespace());
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

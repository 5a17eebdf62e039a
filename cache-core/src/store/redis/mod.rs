//! [`RedisStore`]: the shared L2 tier on deadpool-redis, and the authority on tag clocks for
//! every process that shares it.
//!
//! Every call runs under a time limit (default 50 ms), behind a circuit breaker (`breaker.rs`),
//! on a multiplexed connection kept per thread (`conn.rs`). One small background Tokio runtime
//! (`runtime.rs`), shared by every store of the process, carries the invalidation subscriptions
//! (`subscriber.rs`), each store's warm connection and the calls made outside any Tokio runtime.
//!
//! Cold start: attaching the store to its cache (`Cache::builder().l2(store).build()`) opens
//! its warm connection and starts its subscription at once; a thread's first calls use the
//! warm connection until the thread's own is open. A read made before the first subscription
//! attempt has settled waits for it, up to the call limit (`get`): measured, a
//! read without it is a miss that never reaches Redis (the eviction policy is not known yet, so
//! nothing can vouch for a record), and a fill after it is born at tick 0, which every other
//! node refuses; with it, a node's first request is an L2 hit. Writes and invalidations are
//! Lua scripts (`scripts.rs`): one round trip each, atomic in Redis. A read is one `HGET`
//! checked against this node's mirror of the clocks while the subscription keeps the mirror
//! current and the record is newer than the subscription; otherwise (or with `strict_reads`) it
//! is the `GET` script, which checks the clocks in Redis.
//!
//! Redis at its `maxmemory`: only records expire, so a `volatile-*` policy evicts records and
//! never a clock (see `scripts.rs`); a full Redis under `noeviction` refuses stores, which are
//! misses (never a 5xx, and not a breaker failure: Redis answered), and still runs invalidations.
//! The subscription reads `maxmemory-policy` when it connects and every few seconds after. Under a
//! policy that may evict a clock (`allkeys-*`, or one it cannot read), a check in Redis proves
//! nothing: a record is then served only when this node's mirror vouches for it (born after the
//! subscription started), other reads are misses counted as `unverified`, and ticks are kept
//! above the wall clock (in µs) so that an evicted counter cannot start again below the ticks
//! records already carry. Back to a safe policy, everything stored meanwhile is purged.
//!
//! Layout: this file is the store (the builder, [`Store`] and [`ClockAuthority`]); the state it
//! shares with the subscriber is in `shared.rs`, the Redis names in `keys.rs`, the script texts
//! and the forms of their arguments and replies in `scripts.rs`, everything about reaching Redis
//! in `conn.rs`. The subscriber uses those, never this file, so no import forms a cycle.
//!
//! What must stay true: a Redis failure of any kind (down, slow, restarted, full, garbage values)
//! is an `Err` or a miss, never a panic and never a wrong answer; `invalidate` is `Ok` only once
//! Redis has ticked the clocks, which every later read checks.

mod breaker;
mod conn;
mod keys;
mod lease;
mod runtime;
mod scripts;
mod shared;
mod subscriber;

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis::{self, Value};

use self::breaker::Breaker;
use self::conn::{Connector, Topology};
use self::keys::Keys;
use self::runtime::background;
use self::scripts::{int, tag_pieces, ScriptCall};
use self::shared::{Options, Shared};
use super::{ClockAuthority, ClockLink, Record, Store};
use crate::time::now_ms;
use crate::{codec, CacheError, CacheKey, LeaseReply, TierStats};

/// A Redis-backed [`Store`]: the L2 that many processes share, and the [`ClockAuthority`] on
/// their tag clocks.
///
/// `from_url` checks the URL only; nothing connects until the first call, so a process starts
/// (and serves, from its handlers) while Redis is down. A `rediss://` URL connects over TLS
/// (rustls), verifying Redis's certificate against the platform's trust store, or against the
/// CAs given to [`RedisStore::tls_root_ca_pem`]; [`RedisStore::tls_client_cert_pem`] adds a
/// client certificate.
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
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub struct RedisStore {
    shared: Arc<Shared>,
    /// Dropped with the store: its subscription and kept connections end.
    alive: Arc<()>,
}

static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(0);

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("redis", &self.shared.conn.topology().redacted())
            .field("namespace", &self.shared.options.namespace)
            .field("timeout", &self.shared.options.timeout)
            .field("tls", &self.shared.options.tls)
            .field("circuit_open", &self.shared.breaker.is_open())
            .field("clocks_at_risk", &self.shared.clocks_at_risk())
            .finish()
    }
}

impl RedisStore {
    /// A store for the Redis at `url` (`redis://[:password@]host:port[/db]`, or
    /// `rediss://[:password@]host:port[/db]` for TLS). Fails only on a malformed URL, or on a
    /// `rediss://` URL with the `#insecure` fragment (certificates are always verified); it does
    /// not connect.
    ///
    /// Over `rediss://`, Redis's certificate must chain to a CA of the platform's trust store
    /// (read by rustls-native-certs when each connection is made: on Linux the OpenSSL
    /// locations, `SSL_CERT_FILE` and `SSL_CERT_DIR` included) and name the host of the URL
    /// (a DNS name, or an IP address in its subject alternative names), as a managed Redis
    /// with a public certificate does. TLS uses rustls; if the process has not installed a
    /// rustls crypto provider, the first `rediss://` store installs `ring` as the default.
    ///
    /// ```
    /// use cache_core::RedisStore;
    ///
    /// // Nothing listens there: still Ok, and every call is a miss until it does.
    /// let store = RedisStore::from_url("rediss://:secret@127.0.0.1:1/0")?;
    /// assert!(RedisStore::from_url("rediss://127.0.0.1:1/#insecure").is_err());
    /// # Ok::<(), cache_core::CacheError>(())
    /// ```
    pub fn from_url(url: &str) -> Result<RedisStore, CacheError> {
        RedisStore::build(Topology::Node(url.to_string()), Options::default())
    }

    /// A store for a Redis Cluster reached through `urls`, any of its nodes (`redis://host:port`
    /// each; the client learns the rest of the cluster from them). Like [`RedisStore::from_url`],
    /// it fails only on a malformed URL or an empty list, and does not connect: while the
    /// cluster is down, every call is a miss.
    ///
    /// Records spread over every master (each has its own hash tag); a namespace's clocks live
    /// in one slot, so an invalidation is one script on one master, whatever the number of
    /// entries. A store writes its record, then asks the clocks, and deletes the record if they
    /// refuse it; reads check the same way. The invalidation contract is the one-node contract.
    ///
    /// # Guarantees
    /// An invalidation (or a purge) returns `Ok` only once a replica of the clocks' master has
    /// confirmed it (`WAIT 1` on that master, within half the call's time limit), so a failover
    /// to that replica keeps it; with the replica unreachable it returns `Err` (after dropping
    /// this node's L1). A master with no replica (none known to it, or only failed ones) has none
    /// a failover could promote, and its `Ok` stands without waiting.
    ///
    /// ```
    /// use cache_core::{Cache, RedisStore};
    /// let store = RedisStore::cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"])?;
    /// let cache = Cache::builder().l2(store).namespace("shop").build();
    /// # Ok::<(), cache_core::CacheError>(())
    /// ```
    pub fn cluster<I, S>(urls: I) -> Result<RedisStore, CacheError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let urls = urls.into_iter().map(|u| u.as_ref().to_string()).collect();
        RedisStore::build(Topology::Cluster(urls), Options::default())
    }

    /// A store for the primary that `sentinel_urls` (Redis Sentinel nodes) name for
    /// `master_name`. Like [`RedisStore::from_url`], it fails only on a URL it cannot use (see
    /// below) or an empty list, and does not connect.
    ///
    /// A password in the URLs is the sentinels' (`requirepass` of the sentinels); every URL must
    /// carry the same one, and none may name a database (a sentinel has none).
    ///
    /// # TLS
    /// With `rediss://` sentinel URLs the store reaches the sentinels over TLS **and** the
    /// primary they name over TLS too (as a TLS-only Sentinel setup with `tls-replication yes`
    /// announces it); with `redis://` URLs, both in plaintext. A mix of the two is refused.
    /// [`RedisStore::tls_root_ca_pem`] and [`RedisStore::tls_client_cert_pem`] apply to every
    /// connection: to the sentinels, to the primary's command connections and to the
    /// invalidation subscription. Certificates are always verified: the sentinels' must name the
    /// host of their URL, the primary's the address the sentinels give for it (an IP address, so
    /// an IP subject alternative name, unless the sentinels announce hostnames).
    ///
    /// A failover costs misses while it lasts: calls to the old primary fail, the next
    /// connection asks the sentinels for the new one, and the subscription moves with it (this
    /// node's L1 is dropped meanwhile, as whenever the subscription is down).
    ///
    /// # Guarantees
    /// Redis replicates asynchronously: a write the primary acknowledged may be missing from the
    /// replica a failover promotes. So an invalidation (or a purge) returns `Ok` only once at
    /// least one replica has confirmed it (`WAIT 1`, within the call's time limit), and a
    /// failover to that replica keeps it; without a replica that answers, it returns `Err`
    /// (after dropping this node's L1, as for any invalidation Redis did not take). A record
    /// stored just before a failover may be lost; that is a miss.
    ///
    /// ```
    /// use cache_core::{Cache, RedisStore};
    /// let store = RedisStore::sentinel(
    ///     ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379", "redis://10.0.0.3:26379"],
    ///     "cache",
    /// )?;
    /// let cache = Cache::builder().l2(store).namespace("shop").build();
    /// # Ok::<(), cache_core::CacheError>(())
    /// ```
    ///
    /// Over TLS, with a private CA and a client certificate:
    ///
    /// ```no_run
    /// use cache_core::RedisStore;
    ///
    /// let store = RedisStore::sentinel(
    ///     ["rediss://10.0.0.1:26380", "rediss://10.0.0.2:26380", "rediss://10.0.0.3:26380"],
    ///     "cache",
    /// )?
    /// .tls_root_ca_pem(std::fs::read("/etc/redis/tls/ca.crt")?)?
    /// .tls_client_cert_pem(
    ///     std::fs::read("/etc/redis/tls/client.crt")?,
    ///     std::fs::read("/etc/redis/tls/client.key")?,
    /// )?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// What is refused at once:
    ///
    /// ```
    /// use cache_core::RedisStore;
    ///
    /// // TLS to one sentinel and not to another.
    /// assert!(RedisStore::sentinel(["rediss://127.0.0.1:1", "redis://127.0.0.1:2"], "cache").is_err());
    /// // Two different passwords, a database number.
    /// assert!(RedisStore::sentinel(["redis://:a@127.0.0.1:1", "redis://:b@127.0.0.1:2"], "cache").is_err());
    /// assert!(RedisStore::sentinel(["redis://127.0.0.1:1/2"], "cache").is_err());
    /// ```
    pub fn sentinel<I, S>(sentinel_urls: I, master_name: &str) -> Result<RedisStore, CacheError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let sentinels = sentinel_urls
            .into_iter()
            .map(|u| u.as_ref().to_string())
            .collect();
        RedisStore::build(
            Topology::Sentinel {
                sentinels,
                master: master_name.to_string(),
                primary: None,
            },
            Options::default(),
        )
    }

    /// The credentials of the primary (and of the replica a failover promotes) that a
    /// [`RedisStore::sentinel`] store reaches: `AUTH [username] password` on each of its
    /// connections, the subscription's included. A password in the sentinel URLs is the
    /// sentinels' own and never sent to the primary, since the two are configured apart
    /// (`requirepass` or ACL users on the data nodes, `requirepass` on the sentinels). With no
    /// `username`, Redis's `default` user. The password is never logged.
    ///
    /// `Err(CacheError::Config)` for a store that is not a Sentinel store (put the credentials
    /// in the URL there).
    ///
    /// ```
    /// use cache_core::{CacheError, RedisStore};
    ///
    /// let store = RedisStore::sentinel(["redis://:sentinel-secret@10.0.0.1:26379"], "cache")?
    ///     .primary_auth(Some("cache"), "primary-secret")?;
    ///
    /// let one_node = RedisStore::from_url("redis://:secret@10.0.0.1:6379")?;
    /// assert!(matches!(one_node.primary_auth(None, "x"), Err(CacheError::Config(_))));
    /// # Ok::<(), cache_core::CacheError>(())
    /// ```
    pub fn primary_auth(
        self,
        username: Option<&str>,
        password: &str,
    ) -> Result<RedisStore, CacheError> {
        let Topology::Sentinel {
            sentinels, master, ..
        } = self.shared.conn.topology().clone()
        else {
            return Err(CacheError::Config(
                "primary_auth is for a Sentinel store; give a node's or a cluster's password in its URL"
                    .into(),
            ));
        };
        let primary = Some(conn::Credentials {
            username: username.map(str::to_string),
            password: password.to_string(),
        });
        RedisStore::build(
            Topology::Sentinel {
                sentinels,
                master,
                primary,
            },
            self.shared.options.clone(),
        )
    }

    fn build(topology: Topology, options: Options) -> Result<RedisStore, CacheError> {
        background()?;
        let alive = Arc::new(());
        let id = NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed);
        let conn = Connector::new(
            topology,
            &options.tls,
            options.pool_size,
            id,
            Arc::downgrade(&alive),
        )?;
        let breaker = Breaker::new(5, Duration::from_millis(500));
        Ok(RedisStore {
            shared: Arc::new(Shared::new(conn, options, breaker)),
            alive,
        })
    }

    /// Trusts the CA certificates in `pem` (one or more `CERTIFICATE` blocks) for a `rediss://`
    /// store, instead of the platform's trust store: Redis's certificate must then chain to one
    /// of the CAs given (each call adds its own to the previous ones) and name the URL's host.
    /// Applies to every connection of the store, the invalidation subscription's included.
    ///
    /// `Err(CacheError::Config)` for a PEM without a certificate or with one that cannot be a
    /// trust anchor, or for a `redis://` URL (TLS needs `rediss://`). There is no way to turn
    /// verification off: a Redis whose certificate does not verify is never used (every call is
    /// a miss, counted in `l2.errors`).
    ///
    /// ```no_run
    /// use cache_core::RedisStore;
    ///
    /// let store = RedisStore::from_url("rediss://redis.internal:6380")?
    ///     .tls_root_ca_pem(std::fs::read("/etc/redis/tls/ca.crt")?)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// A malformed PEM is refused at once:
    ///
    /// ```
    /// use cache_core::{CacheError, RedisStore};
    ///
    /// let store = RedisStore::from_url("rediss://127.0.0.1:1")?;
    /// let refused = store.tls_root_ca_pem("not a certificate");
    /// assert!(matches!(refused, Err(CacheError::Config(_))));
    /// # Ok::<(), cache_core::CacheError>(())
    /// ```
    pub fn tls_root_ca_pem(self, pem: impl Into<Vec<u8>>) -> Result<RedisStore, CacheError> {
        let mut options = self.shared.options.clone();
        options.tls.add_root_ca(pem.into())?;
        RedisStore::build(self.shared.conn.topology().clone(), options)
    }

    /// Presents a client certificate to a `rediss://` Redis that requires one
    /// (`tls-auth-clients yes`): `cert`, the PEM certificate chain (the client's certificate
    /// first), and `key`, its PEM private key (PKCS#8, PKCS#1 or SEC1). A second call replaces
    /// the first. Applies to every connection of the store, the invalidation subscription's
    /// included. The key is kept in memory for the connections to come and never logged.
    ///
    /// `Err(CacheError::Config)` for a PEM without a certificate, a key that cannot be read or
    /// does not match the certificate, or a `redis://` URL. Redis's own certificate is verified
    /// as always (see [`RedisStore::tls_root_ca_pem`]).
    ///
    /// ```no_run
    /// use cache_core::RedisStore;
    ///
    /// let store = RedisStore::from_url("rediss://redis.internal:6380")?
    ///     .tls_root_ca_pem(std::fs::read("/etc/redis/tls/ca.crt")?)?
    ///     .tls_client_cert_pem(
    ///         std::fs::read("/etc/redis/tls/client.crt")?,
    ///         std::fs::read("/etc/redis/tls/client.key")?,
    ///     )?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// ```
    /// use cache_core::{CacheError, RedisStore};
    ///
    /// let store = RedisStore::from_url("rediss://127.0.0.1:1")?;
    /// let refused = store.tls_client_cert_pem("no certificate", "no key");
    /// assert!(matches!(refused, Err(CacheError::Config(_))));
    /// # Ok::<(), cache_core::CacheError>(())
    /// ```
    pub fn tls_client_cert_pem(
        self,
        cert: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Result<RedisStore, CacheError> {
        let mut options = self.shared.options.clone();
        options.tls.set_client_cert(cert.into(), key.into())?;
        RedisStore::build(self.shared.conn.topology().clone(), options)
    }

    /// Rebuilds with changed options (the builder methods run before the store is in use).
    fn with(self, change: impl FnOnce(&mut Options)) -> RedisStore {
        let mut options = self.shared.options.clone();
        change(&mut options);
        let topology = self.shared.conn.topology().clone();
        match RedisStore::build(topology, options) {
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
        call_on(self.shared.clone(), f).await
    }

    /// Waits, up to the call limit, for the first subscription attempt to settle, while this
    /// thread's connection opens. Until it has, the eviction policy is not known (a read would
    /// be refused as unverified) and the mirror cannot vouch for anything; and a fill that
    /// follows this read is born at the tick the subscription takes, which other nodes accept
    /// (one born before it, at 0, every other node's clocks refuse). A read that waited the
    /// whole limit in vain ends the wait for every later one: a Redis that hangs costs each
    /// request its calls' limits only.
    async fn first_subscription(&self) {
        self.shared.conn.prepare();
        let shared = self.shared.clone();
        let limit = shared.options.timeout;
        let wait = async move {
            if tokio::time::timeout(limit, shared.first_attempt_settled())
                .await
                .is_err()
            {
                shared.settle();
            }
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            wait.await;
        } else if let Ok(runtime) = background() {
            let _ = runtime.spawn(wait).await;
        }
    }

    /// One `HGET` of the record's value, decoded; a value that is not what we wrote is counted
    /// and deleted. Nothing here checks the clocks: see [`RedisStore::vouched`].
    async fn hget(&self, key: &CacheKey, record_key: String) -> Result<Option<Record>, CacheError> {
        let reply = self
            .call(move |shared| async move {
                let mut hget = redis::cmd("HGET");
                hget.arg(&record_key).arg("v");
                shared.conn.query::<Option<Vec<u8>>>(&hget).await
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
        self.decoded(key, bytes).await
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

    /// The read checked in Redis: the record (`HMGET`), then its `born` and tags against the
    /// clocks and the purge tick (`check`, in the clock slot); a record they refuse is deleted.
    async fn get_checked_in_redis(
        &self,
        key: &CacheKey,
        keys: Keys,
        record_key: String,
    ) -> Result<Option<Record>, CacheError> {
        let read_key = record_key.clone();
        let fields = self
            .call(move |shared| async move {
                let mut hmget = redis::cmd("HMGET");
                hmget.arg(&read_key).arg("v").arg("b").arg("t");
                shared.conn.query::<Vec<Option<Vec<u8>>>>(&hmget).await
            })
            .await;
        let fields = match fields {
            Ok(fields) => fields,
            Err(err) => {
                if matches!(err, CacheError::Corrupt(_)) {
                    // Not a hash, or not ours.
                    self.corrupt(key).await;
                }
                return Err(err);
            }
        };
        let mut fields = fields.into_iter();
        let (value, born, tags) = match (fields.next(), fields.next(), fields.next()) {
            (Some(None), _, _) | (None, _, _) => return Ok(None),
            (Some(Some(value)), Some(Some(born)), Some(Some(tags))) => (value, born, tags),
            _ => return Err(self.malformed(key).await),
        };
        let born = std::str::from_utf8(&born)
            .ok()
            .and_then(|b| b.parse::<u64>().ok());
        let (Some(born), Some(tags)) = (born, scripts::parse_pieces(&tags)) else {
            return Err(self.malformed(key).await);
        };
        match self.check_clocks(&keys, born, &tags, None).await? {
            Checked::Refused => {
                // Refused by the clocks: gone for everyone (a failure to delete only delays
                // that).
                let _ = self.remove(key).await;
                Ok(None)
            }
            // Softened: still valid, and other nodes may serve it stale, so it stays. This
            // node serves it too if its mirror knows each of those soft purges, since the
            // mirror dates them and so decides the stale windows; else it is a miss.
            Checked::Valid { soft } if !self.mirror_knows_soft(born, &tags, &soft) => Ok(None),
            Checked::Valid { .. } => self.decoded(key, value).await,
        }
    }

    /// The record a value holds. A value we cannot read is a miss; it is counted and deleted,
    /// unless it is a record of another format version: during a rolling upgrade, old and new
    /// nodes would otherwise delete each other's records on every read.
    async fn decoded(&self, key: &CacheKey, value: Vec<u8>) -> Result<Option<Record>, CacheError> {
        if codec::is_other_version(&value) {
            self.shared.corrupt.fetch_add(1, Ordering::Relaxed);
            return Err(CacheError::Corrupt(
                "a record of another format version".into(),
            ));
        }
        match codec::decode_shared(&bytes::Bytes::from(value)) {
            Ok(record) => Ok(Some(record)),
            Err(err) => {
                self.corrupt(key).await;
                Err(err)
            }
        }
    }

    /// A record whose fields are not what we wrote: counted and deleted.
    async fn malformed(&self, key: &CacheKey) -> CacheError {
        self.corrupt(key).await;
        CacheError::Corrupt("malformed record (deleted)".into())
    }

    /// Whether this node's mirror of the clocks knows every soft purge of `tags` that Redis
    /// reports after `born` (`soft`, one tick per tag, 0 for none): the same one or a later
    /// one of each tag, so that the staleness it computes starts no later than Redis's.
    fn mirror_knows_soft(&self, born: u64, tags: &[String], soft: &[u64]) -> bool {
        let Some(link) = self.shared.link.get() else {
            return soft.iter().all(|tick| *tick <= born);
        };
        tags.iter()
            .zip(soft)
            .filter(|(_, tick)| **tick > born)
            .all(|(tag, tick)| link.knows_softened(tag, *tick))
    }

    /// What the clocks say of a record born at `born` under `tags` (`check`, in the clock
    /// slot); `life` (ms) is the record's whole life when a store asks, which the clocks keep
    /// the longest of. A store is refused by a soft purge after `born` too: a fill begun
    /// before it must not be stored as fresh.
    async fn check_clocks(
        &self,
        keys: &Keys,
        born: u64,
        tags: &[String],
        life: Option<u64>,
    ) -> Result<Checked, CacheError> {
        let clock_keys: Vec<Vec<u8>> = tags
            .iter()
            .map(|t| keys.clock(t))
            .chain(tags.iter().map(|t| keys.soft_clock(t)))
            .collect();
        let keys = keys.clone();
        let reply = self
            .call(move |shared| async move {
                let mut invocation = shared.scripts.check.prepare_invoke();
                invocation
                    .key(&keys.seq)
                    .key(&keys.purged)
                    .key(&keys.life)
                    .key(&keys.index);
                for clock in &clock_keys {
                    invocation.key(clock.as_slice());
                }
                invocation
                    .arg(born)
                    .arg(life.map(|l| l.to_string()).unwrap_or_default())
                    .arg(now_ms());
                shared.conn.run(&invocation).await
            })
            .await?;
        let parts = self.script_reply(reply)?;
        match parts.get(1).and_then(int) {
            Some(1) => {
                let soft: Option<Vec<u64>> = parts[2..].iter().map(int).collect();
                match soft {
                    Some(soft) if soft.len() == tags.len() => Ok(Checked::Valid { soft }),
                    _ => Err(CacheError::Corrupt("unexpected script reply".into())),
                }
            }
            Some(0) => Ok(Checked::Refused),
            _ => Err(CacheError::Corrupt("unexpected script reply".into())),
        }
    }

    /// Drops the clocks an invalidation named as older than its horizon (`prune`, which
    /// declares them), raising the purge tick to the highest dropped.
    async fn prune(
        &self,
        keys: Keys,
        horizon: u64,
        tick: u64,
        old: Vec<Value>,
    ) -> Result<(), CacheError> {
        let old: Vec<Vec<u8>> = old
            .into_iter()
            .filter_map(|v| match v {
                Value::BulkString(name) => Some(name),
                _ => None,
            })
            .collect();
        self.call(move |shared| async move {
            let mut invocation = shared.scripts.prune.prepare_invoke();
            invocation.key(&keys.purged).key(&keys.index);
            for clock in &old {
                invocation.key(clock.as_slice());
            }
            invocation.arg(horizon).arg(tick);
            shared.conn.run(&invocation).await
        })
        .await
        .map(|_| ())
    }

    /// `put` (`token`: none) and `put_fenced` (the lease's token; the fenced script refuses a
    /// record a newer fill supersedes, see `lease.rs`).
    async fn put_record(
        &self,
        key: &CacheKey,
        record: Record,
        token: Option<u64>,
    ) -> Result<(), CacheError> {
        let keys = self.keys()?;
        let now = now_ms();
        let ttl = record.expires_at_ms().saturating_sub(now);
        if ttl == 0 {
            return Ok(());
        }
        let (born, tags, life) = match &record {
            Record::Response(entry) => (
                entry.born(),
                entry.tags().to_vec(),
                entry.expires_at_ms().saturating_sub(entry.stored_at_ms()),
            ),
            // A vary list carries no tags; the highest tick seen dates it, so that a later purge
            // drops it.
            Record::Variants(_) => (self.shared.floor(), Vec::new(), ttl),
        };
        let value = codec::encode(&record);
        let record_key = keys.record(key);
        let pieces = tag_pieces(&tags);
        let lease_key = keys.lease(key.hash());
        let fence_key = keys.fence(key.hash());
        let reply = self
            .call(move |shared| async move {
                let mut invocation = match token {
                    Some(_) => shared.scripts.put_fenced.prepare_invoke(),
                    None => shared.scripts.put.prepare_invoke(),
                };
                invocation.key(&record_key);
                if token.is_some() {
                    invocation.key(&lease_key).key(&fence_key);
                }
                invocation.arg(value).arg(born).arg(pieces).arg(ttl);
                if let Some(token) = token {
                    invocation.arg(token);
                }
                shared.conn.run(&invocation).await
            })
            .await?;
        if token.is_some() && int(&reply) != Some(1) {
            return Err(CacheError::Superseded);
        }
        if matches!(
            self.check_clocks(&keys, born, &tags, Some(life)).await?,
            Checked::Valid { .. }
        ) {
            return Ok(());
        }
        let _ = self.remove(key).await;
        Err(CacheError::Invalidated)
    }

    fn keys(&self) -> Result<Keys, CacheError> {
        self.shared.keys.get().cloned().ok_or_else(|| {
            CacheError::Config(
                "RedisStore is used before Cache::builder().build() attached it".into(),
            )
        })
    }
}

#[async_trait]
impl Store for RedisStore {
    /// While subscribed (and without `strict_reads`): one `HGET`, checked by the
    /// [`crate::Cache`] against this node's mirror of the clocks, kept current by the
    /// subscription (within the propagation delay). A record the mirror cannot vouch for is
    /// checked in Redis; while Redis may evict the clocks, only records the mirror vouches for
    /// are served. Until the first subscription attempt has settled, a read first waits for it,
    /// up to the call limit (see `first_subscription`).
    async fn get(&self, key: &CacheKey) -> Result<Option<Record>, CacheError> {
        let keys = self.keys()?;
        if !self.shared.settled() {
            self.first_subscription().await;
        }
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

    /// Two steps, since a record and the clocks may lie in different slots: the record is
    /// written with its ttl (`put`, in its own slot), then the clocks are asked (`check`), and a
    /// record they refuse is deleted and reported as [`CacheError::Invalidated`]. A reader
    /// between the two steps checks the record against the clocks itself.
    async fn put(&self, key: &CacheKey, record: Record) -> Result<(), CacheError> {
        self.put_record(key, record, None).await
    }

    async fn remove(&self, key: &CacheKey) -> Result<(), CacheError> {
        let record_key = self.keys()?.record(key);
        self.call(move |shared| async move {
            let mut del = redis::cmd("DEL");
            del.arg(&record_key);
            shared.conn.query::<Value>(&del).await.map(|_| ())
        })
        .await
    }

    /// Records are not deleted one by one: the purge tick makes every one of them invalid
    /// ([`ClockAuthority::purge_clocks`]) and they expire on their own.
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

    fn clock_authority(self: Arc<Self>) -> Option<Arc<dyn ClockAuthority>> {
        Some(self)
    }

    /// One script in the key's own slot (`lease.rs`), so the same in one node, a cluster and
    /// under Sentinel.
    async fn acquire_lease(&self, flight: u128, time: Duration) -> Result<LeaseReply, CacheError> {
        self.acquire(flight, time).await
    }

    /// Compare and delete on the background runtime, under the store's breaker and time limit;
    /// a release that fails leaves the lease to expire.
    fn release_lease(&self, flight: u128, token: u64) {
        self.release(flight, token);
    }

    /// `put`, with the fenced script in place of the plain one (`lease.rs`).
    async fn put_fenced(
        &self,
        key: &CacheKey,
        record: Record,
        token: u64,
    ) -> Result<(), CacheError> {
        self.put_record(key, record, Some(token)).await
    }
}

#[async_trait]
impl ClockAuthority for RedisStore {
    async fn invalidate(&self, tags: &[String]) -> Result<u64, CacheError> {
        self.tick_clocks(tags, false).await
    }

    async fn soft_invalidate(&self, tags: &[String]) -> Result<u64, CacheError> {
        self.tick_clocks(tags, true).await
    }

    async fn accepts(&self, born: u64, tags: &[String]) -> Result<bool, CacheError> {
        let keys = self.keys()?;
        // Softened after `born` counts as refused: the result would be shared as fresh.
        let checked = self.check_clocks(&keys, born, tags, None).await?;
        Ok(matches!(checked, Checked::Valid { soft } if soft.iter().all(|tick| *tick <= born)))
    }

    async fn purge_clocks(&self) -> Result<u64, CacheError> {
        let keys = self.keys()?;
        let floor = self.shared.floor();
        let result = self
            .call(move |shared| async move {
                let mut call = ScriptCall::new(&shared.scripts.purge);
                call.key(&keys.seq)
                    .key(&keys.purged)
                    .arg(&keys.channel)
                    .arg(floor);
                run_replicated(&shared, &call, &keys.seq).await
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
                // Both start now, so that the first request finds them open.
                self.shared.conn.warm_up();
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

impl RedisStore {
    /// One tick of the clocks of `tags` (their soft clocks when `soft`), published to every
    /// process; old clocks the script names are pruned after.
    async fn tick_clocks(&self, tags: &[String], soft: bool) -> Result<u64, CacheError> {
        let keys = self.keys()?;
        let keys_for_prune = keys.clone();
        let clock_keys: Vec<Vec<u8>> = tags
            .iter()
            .map(|t| {
                if soft {
                    keys.soft_clock(t)
                } else {
                    keys.clock(t)
                }
            })
            .collect();
        let pieces = tag_pieces(tags);
        let floor = self.shared.floor();
        let result = self
            .call(move |shared| async move {
                let mut call = ScriptCall::new(&shared.scripts.invalidate);
                call.key(&keys.seq)
                    .key(&keys.life)
                    .key(&keys.purged)
                    .key(&keys.index);
                for key in &clock_keys {
                    call.key(key.as_slice());
                }
                call.arg(&keys.channel)
                    .arg(pieces)
                    .arg(floor)
                    .arg(now_ms())
                    .arg(if soft { "s" } else { "i" });
                run_replicated(&shared, &call, &keys.seq).await
            })
            .await;
        let (tick, prune) = match result {
            Ok(Value::Array(parts)) => {
                let prune = match (parts.get(1).and_then(int), parts.get(2..)) {
                    (Some(horizon), Some(old)) if !old.is_empty() => Some((horizon, old.to_vec())),
                    _ => None,
                };
                (parts.first().cloned().ok_or(()), prune)
            }
            Ok(_) => (Err(()), None),
            Err(err) => return self.tick_reply(Err(err)),
        };
        let tick = self.tick_reply(tick.map_err(|()| CacheError::Corrupt("bad tick".into())))?;
        if let Some((horizon, old)) = prune {
            // Housekeeping after the invalidation holds: a failure only leaves old clocks to a
            // later invalidation.
            let _ = self.prune(keys_for_prune, horizon, tick, old).await;
        }
        Ok(tick)
    }
}

/// [`RedisStore::call`] for work that outlives the call that started it (a lease released
/// from a `Drop`, on the background runtime): under the store's breaker and time limit.
async fn call_on<T, F, Fut>(shared: Arc<Shared>, f: F) -> Result<T, CacheError>
where
    T: Send + 'static,
    F: FnOnce(Arc<Shared>) -> Fut,
    Fut: Future<Output = Result<T, CacheError>> + Send + 'static,
{
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
        Ok(_)
        | Err(CacheError::Corrupt(_))
        | Err(CacheError::Invalidated)
        | Err(CacheError::Superseded) => shared.breaker.success(),
        // Redis answered: it is full, not failing. Opening the breaker would refuse the
        // invalidations it still runs.
        Err(err) if conn::is_full(err) => {
            shared.breaker.success();
            shared.warn_full();
        }
        Err(CacheError::Backend(message)) if message.starts_with(UNREPLICATED) => {
            shared.breaker.success();
        }
        Err(_) => {
            shared.breaker.failure();
            shared.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    result
}

/// What the clocks in Redis say of a record (`check_clocks`).
enum Checked {
    /// Invalidated or purged after it was born, or (for a store) softened.
    Refused,
    /// Valid; `soft` is each tag's soft-purge tick (0: never softened), for a read to judge.
    Valid { soft: Vec<u64> },
}

/// How the error of an invalidation no replica confirmed begins: Redis answered (and ran it),
/// so it is not a failure for the circuit breaker.
const UNREPLICATED: &str = "not replicated";

/// Runs `call` (a script on the clock slot, whose counter key is `seq`); where a failover could
/// lose an acknowledged write (Sentinel, Cluster), `Ok` only once at least one replica has it
/// (`WAIT 1`, for half the call's time limit): an invalidation must outlive a failover. `WAIT`
/// counts the writes of the connection it is sent on, so it goes on the connection that ran the
/// script (a thread may switch from the store's warm connection to its own between two calls):
/// under Sentinel in the same `with`, which reruns both on a new connection; on a cluster in one
/// pipeline with the script, routed to the clocks' master, which redis-rs redirects and retries
/// whole. The pipeline also asks that node's `CLUSTER NODES`: a master with no replica a
/// failover could promote (none, or only failed ones) has nothing to wait for, so its `Ok`
/// stands without a confirmation; it pays the `WAIT` all the same.
async fn run_replicated(
    shared: &Shared,
    call: &ScriptCall<'_>,
    seq: &str,
) -> Result<Value, CacheError> {
    let topology = shared.conn.topology();
    if !topology.fails_over() {
        return shared.conn.run(&call.invocation()).await;
    }
    let wait_ms = u64::try_from(shared.options.timeout.as_millis() / 2)
        .unwrap_or(u64::MAX)
        .max(1);
    let mut wait = redis::cmd("WAIT");
    wait.arg(1).arg(wait_ms);
    let unconfirmed = || {
        Err(CacheError::Backend(format!(
            "{UNREPLICATED}: no replica confirmed the invalidation within the time limit"
        )))
    };
    if !matches!(topology, conn::Topology::Cluster(_)) {
        let (invocation, wait) = (&call.invocation(), &wait);
        let (reply, replicas) = shared
            .conn
            .with(|mut conn| async move {
                let reply = invocation.invoke_async::<Value>(&mut conn).await?;
                let replicas = wait.query_async::<i64>(&mut conn).await?;
                Ok((reply, replicas))
            })
            .await?;
        return if replicas >= 1 {
            Ok(reply)
        } else {
            unconfirmed()
        };
    }
    let mut pipeline = redis::pipe();
    pipeline
        .add_command(call.evalsha())
        .cmd("CLUSTER")
        .arg("NODES")
        .add_command(wait);
    let pipeline = &pipeline;
    let replies = shared
        .conn
        .with(|mut conn| async move {
            let mut replies = conn.pipeline_on_master_of(seq, pipeline.clone(), 3).await;
            if no_script(&replies) {
                call.script.load_async(&mut conn).await?;
                replies = conn.pipeline_on_master_of(seq, pipeline.clone(), 3).await;
            }
            let mut replies = replies?.into_iter();
            match (replies.next(), replies.next(), replies.next()) {
                (Some(Value::ServerError(err)), _, _) => Err(err.into()),
                (Some(reply), Some(nodes), Some(acks)) => Ok(Some((reply, nodes, acks))),
                _ => Ok(None),
            }
        })
        .await?;
    let Some((reply, nodes, acks)) = replies else {
        return Err(CacheError::Corrupt(
            "a short reply to the invalidation's pipeline".into(),
        ));
    };
    match acks {
        Value::Int(1..) => Ok(reply),
        _ if !has_replicas(&nodes) => Ok(reply),
        _ => unconfirmed(),
    }
}

/// Whether the script of a pipeline failed because Redis had not loaded it.
fn no_script(replies: &Result<Vec<Value>, redis::RedisError>) -> bool {
    match replies {
        Err(err) => err.code() == Some("NOSCRIPT"),
        Ok(replies) => {
            matches!(replies.first(), Some(Value::ServerError(err)) if err.code() == "NOSCRIPT")
        }
    }
}

/// Whether a master's `CLUSTER NODES` reply names a replica of it that has not failed. A
/// reply this cannot read counts as "yes": the invalidation then waits for a confirmation.
fn has_replicas(reply: &Value) -> bool {
    let text = match reply {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes),
        Value::VerbatimString { text, .. } => text.as_str().into(),
        _ => return true,
    };
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    let flags = |fields: &[&str], flag: &str| {
        fields
            .get(2)
            .is_some_and(|f| f.split(',').any(|one| one == flag))
    };
    let Some(me) = lines
        .iter()
        .find(|fields| flags(fields, "myself"))
        .and_then(|fields| fields.first())
    else {
        return true;
    };
    lines
        .iter()
        .any(|fields| fields.get(3) == Some(me) && !flags(fields, "fail"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn an_invalidation_waits_for_a_replica_whenever_the_clock_master_has_one_that_could_be_promoted(
    ) {
        let master = "aaa 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n";
        let other = "bbb 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-16383\n";
        // No replica at all: nothing a failover could promote.
        assert!(!has_replicas(&nodes(&format!("{master}{other}"))));
        // A replica of another master does not count.
        let theirs = "ccc 127.0.0.1:7002@17002 slave bbb 0 0 2 connected\n";
        assert!(!has_replicas(&nodes(&format!("{master}{other}{theirs}"))));
        // Its own replica counts, reachable or not; a failed one cannot be promoted.
        let mine = "ddd 127.0.0.1:7003@17003 slave aaa 0 0 1 connected\n";
        assert!(has_replicas(&nodes(&format!("{master}{mine}"))));
        let unreachable = "ddd 127.0.0.1:7003@17003 slave,fail? aaa 0 0 1 disconnected\n";
        assert!(has_replicas(&nodes(&format!("{master}{unreachable}"))));
        let failed = "ddd 127.0.0.1:7003@17003 slave,fail aaa 0 0 1 disconnected\n";
        assert!(!has_replicas(&nodes(&format!("{master}{failed}"))));
        // What cannot be read asks for the confirmation.
        assert!(has_replicas(&Value::Nil));
        assert!(has_replicas(&nodes("garbage")));
    }
}

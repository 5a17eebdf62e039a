//! Connections to Redis for one `RedisStore`: the URLs checked and turned into connection
//! settings, one multiplexed connection kept per thread (to one node through deadpool-redis, or
//! to a Redis Cluster through redis-rs's cluster client, which routes each call by its keys'
//! slot and follows `MOVED`/`ASK`), opened in the background, replaced when it breaks, and the
//! subscriber's pub/sub connection. Nothing outside this file knows how Redis is reached, only
//! that a call may fail.
//!
//! TLS (`rediss://`, rustls): the command connections and the pub/sub connection are made from
//! the same settings ([`Tls`]), so both trust the same CAs and present the same client
//! certificate. Certificates given are parsed when given, so a bad one is a configuration error
//! at once rather than a miss on every call. Under Sentinel the same certificates serve the
//! sentinels and the primary they name, and `rediss://` sentinels mean TLS to the primary too
//! ([`sentinel_client`]): nothing reaches the cache's data in plaintext once the URLs say TLS.
//!
//! On a cluster the subscription is classic pub/sub on any one node: Redis Cluster forwards
//! every `PUBLISH` to every node over its bus, so one node hears every invalidation, and when it
//! fails the subscriber reconnects to the next seed.
//!
//! Why per thread: an actix worker then talks to Redis from its own thread, with no hop to
//! another one. Why kept: each `Pool::get` costs deadpool's recycling `PING`, a second round
//! trip on every call. Why in the background: opening a connection (TCP, maybe TLS and AUTH)
//! can take longer than a call's 50 ms limit; the attempt is never cancelled by that limit, so
//! a slow-to-connect Redis is reached by a later call instead of never.
//!
//! Cold start: each store also has one warm connection, opened on the background runtime
//! (whose threads drive it) as soon as the store is attached to its cache, alongside the
//! subscription. The subscriber's calls use it, and so does a thread whose own connection is
//! not open yet: its first calls go to the warm one if that is open (one hop to the background
//! runtime's threads) while its own opens, or else to whichever of the two opens first. So a
//! worker's first request does not pay for a TCP (or TLS) connection on top of its round trips
//! within the call limit, and the warm connection serves only until the thread's own is open
//! (one connection per process for every call would put a hop on every call).
//!
//! Isolation: nothing here waits synchronously on another store, nor holds a lock across an
//! await. redis-rs builds a TLS client, reading and parsing the platform's trust store (several
//! ms), synchronously as each TLS connection attempt starts; so a TLS store's warm and pub/sub
//! attempts run on the background runtime's blocking threads ([`attempt`]), and its threads
//! open their own connections only once its warm one is open (while Redis answers), never again
//! and again against a Redis that does not. A failing Redis sees at most one warm attempt at a
//! time and, from calls, at most about one a second ([`WARM_RETRY`]); the breaker, time limits
//! and pool of each store are its own. Not covered: redis-rs's cluster connection reconnects
//! to a node by itself, building a TLS client on the thread that drives it.
//!
//! What must stay true: a caller never waits longer than its own time limit; a dead connection
//! is dropped and the call tried once more on a new one; connections of a dropped store are
//! released by the next lookup on that thread (its warm one with the store); an attempt at a
//! Redis that does not answer never builds a TLS client on a thread other stores use; a Redis
//! that refuses a call because it is at its `maxmemory` is told apart ([`is_full`]) from one
//! that fails; a password never reaches a log ([`redacted`]), nor does a private key; the
//! server's certificate is always verified (the `#insecure` URL fragment is refused, and
//! redis-rs is built without `tls-rustls-insecure`).

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use deadpool_redis::redis::aio::{ConnectionLike, MultiplexedConnection, PubSub};
use deadpool_redis::redis::cluster::ClusterClient;
use deadpool_redis::redis::cluster_async::ClusterConnection;
use deadpool_redis::redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use deadpool_redis::redis::{
    self, ClientTlsConfig, Cmd, ConnectionAddr, ConnectionInfo, Pipeline, RedisError, RedisFuture,
    TlsCertificates, Value,
};
use deadpool_redis::Pool;
use futures_util::future::{select, BoxFuture, Either, FutureExt, Shared};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::runtime::{Handle, Runtime};

use super::runtime;
use crate::CacheError;

/// Longest wait for a new connection (the attempt goes on after the caller gives up).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Shortest time between two attempts at the warm connection that a thread's calls start
/// while they fail (the subscriber, which retries at its own pace, may start one sooner).
const WARM_RETRY: Duration = Duration::from_secs(1);

/// How the error of a call Redis refused for want of memory begins.
const FULL: &str = "Redis is full";

/// Whether `err` is Redis refusing a call because it is at its `maxmemory` (`-OOM`): Redis is
/// up and answering, so this is not a failure for the circuit breaker.
pub(crate) fn is_full(err: &CacheError) -> bool {
    matches!(err, CacheError::Backend(message) if message.starts_with(FULL))
}

/// Whether Redis refused a call for want of memory. A script passes on the code of the command
/// that failed in it (`OOM command not allowed when used memory > 'maxmemory'. script: …`).
fn out_of_memory(err: &RedisError) -> bool {
    err.code() == Some("OOM")
        || err
            .to_string()
            .contains("command not allowed when used memory")
}

/// Where a store's Redis is: the URLs as given (logged only [`redacted`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Topology {
    /// One node (`redis://` or `rediss://`).
    Node(String),
    /// A Redis Cluster, reached through any of these seed nodes.
    Cluster(Vec<String>),
    /// A primary with replicas under Sentinel: these sentinels name the primary of `master`,
    /// reached with `primary`'s credentials (none: no `AUTH`).
    Sentinel {
        sentinels: Vec<String>,
        master: String,
        primary: Option<Credentials>,
    },
}

/// A username (none: Redis's `default` user) and password, for the primary a Sentinel store
/// reaches. Its `Debug` shows neither.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) username: Option<String>,
    pub(crate) password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials(***)")
    }
}

impl Topology {
    /// The URLs, without passwords, for logs.
    pub(crate) fn redacted(&self) -> String {
        match self {
            Topology::Node(url) => redacted(url),
            Topology::Cluster(urls) => {
                let urls: Vec<String> = urls.iter().map(|u| redacted(u)).collect();
                format!("cluster [{}]", urls.join(", "))
            }
            Topology::Sentinel {
                sentinels, master, ..
            } => {
                let urls: Vec<String> = sentinels.iter().map(|u| redacted(u)).collect();
                format!("sentinel {master} [{}]", urls.join(", "))
            }
        }
    }

    /// Every URL given.
    fn urls(&self) -> Vec<&str> {
        match self {
            Topology::Node(url) => vec![url.as_str()],
            Topology::Cluster(urls) => urls.iter().map(String::as_str).collect(),
            Topology::Sentinel { sentinels, .. } => sentinels.iter().map(String::as_str).collect(),
        }
    }

    /// Whether a write acknowledged by the primary may yet be lost to a failover (Redis
    /// replicates asynchronously): then what must survive one is confirmed with `WAIT`.
    pub(crate) fn fails_over(&self) -> bool {
        matches!(self, Topology::Sentinel { .. } | Topology::Cluster(_))
    }
}

/// One connection a thread keeps: to one node, or to a cluster (redis-rs keeps a connection to
/// each of its nodes behind it).
#[derive(Clone)]
pub(crate) enum Conn {
    Node(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Sends `pipeline` (of `count` commands) to the node that serves `key`'s slot as one unit:
    /// redis-rs redirects and retries a routed pipeline whole, so every command of it runs on
    /// the node, and over the connection, that ran its keyed commands.
    pub(crate) async fn pipeline_on_master_of(
        &mut self,
        key: &str,
        pipeline: Pipeline,
        count: usize,
    ) -> Result<Vec<Value>, RedisError> {
        use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
        match self {
            Conn::Node(conn) => pipeline.query_async(conn).await,
            Conn::Cluster(conn) => {
                let route = Route::with_key(key.as_bytes(), SlotAddr::Master);
                conn.route_pipeline(
                    pipeline,
                    0,
                    count,
                    SingleNodeRoutingInfo::SpecificNode(route),
                )
                .await
            }
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Node(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Node(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Node(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

/// How connections are made.
enum Reach {
    /// The pool, and the client of the pub/sub connections (same TLS settings). Boxed, like
    /// the cluster client: large, and held for the connector's whole life.
    Node(Pool, Box<redis::Client>),
    // Boxed: the client is large, and a connector holds one or the other for its whole life.
    // With the certificates the subscription's connections to a seed need.
    Cluster(Box<ClusterClient>, Option<TlsCertificates>),
    // The sentinel client asks for `&mut` (it caches its sentinel connections); calls on this
    // thread share it through the lock only while a connection is being opened.
    Sentinel(Arc<tokio::sync::Mutex<SentinelClient>>),
}

type Opening = Shared<BoxFuture<'static, Result<Conn, String>>>;

thread_local! {
    /// This thread's connections: (store id, the store's liveness, the connection or its opening).
    static KEPT: RefCell<Vec<(u64, Weak<()>, Opening)>> = const { RefCell::new(Vec::new()) };
}

/// The URL without its password, for logs.
pub(crate) fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// The connection settings of `url` (`redis://[:password@]host:port[/db]`, or `rediss://` for
/// TLS); `Err` if it is not a Redis URL, or asks for TLS without certificate verification
/// (`#insecure`). Connects nothing.
pub(crate) fn connection_info(url: &str) -> Result<ConnectionInfo, CacheError> {
    use redis::IntoConnectionInfo;
    let bad_url = || CacheError::Config(format!("not a Redis URL: {}", redacted(url)));
    redis::parse_redis_url(url).ok_or_else(bad_url)?;
    // Small calls must leave at once rather than wait for the previous one's ACK (Nagle).
    let info = url
        .into_connection_info()
        .map_err(|_| bad_url())?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    if let ConnectionAddr::TcpTls { insecure: true, .. } = info.addr() {
        return Err(CacheError::Config(format!(
            "{}: `#insecure` would turn off the verification of Redis's certificate, which \
             RedisStore does not do; trust its CA with `tls_root_ca_pem` instead",
            redacted(url)
        )));
    }
    Ok(info)
}

/// The certificates of a `rediss://` store: CAs to trust instead of the platform's store, and
/// a client certificate. Both are checked when given; neither is ever printed.
#[derive(Clone, Default)]
pub(crate) struct Tls {
    /// One PEM bundle of every CA given (with none, the platform's trust store is used).
    roots: Option<Vec<u8>>,
    /// The client's certificate chain and private key, in PEM.
    client: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("custom_ca", &self.roots.is_some())
            .field("client_cert", &self.client.is_some())
            .finish()
    }
}

impl Tls {
    /// Adds the CA certificates of `pem` to those trusted; `Err` unless it holds at least one
    /// certificate and every one of them is a usable trust anchor.
    pub(crate) fn add_root_ca(&mut self, pem: Vec<u8>) -> Result<(), CacheError> {
        let bad = |why: String| CacheError::Config(format!("Redis TLS root CA: {why}"));
        let mut store = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| bad(format!("unreadable PEM ({e})")))?;
            store
                .add(cert)
                .map_err(|e| bad(format!("not a usable CA certificate ({e})")))?;
        }
        if store.is_empty() {
            return Err(bad("no CERTIFICATE block in the PEM".into()));
        }
        let roots = self.roots.get_or_insert_with(Vec::new);
        if !roots.is_empty() && !roots.ends_with(b"\n") {
            roots.push(b'\n');
        }
        roots.extend_from_slice(&pem);
        Ok(())
    }

    /// Sets the client certificate chain and its private key; `Err` unless the chain holds a
    /// certificate and the key is one rustls can sign with and matches it.
    pub(crate) fn set_client_cert(
        &mut self,
        cert: Vec<u8>,
        key: Vec<u8>,
    ) -> Result<(), CacheError> {
        // The messages name what is wrong, never what the key holds.
        let bad = |why: String| CacheError::Config(format!("Redis TLS client certificate: {why}"));
        let chain = CertificateDer::pem_slice_iter(&cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("unreadable certificate PEM ({e})")))?;
        if chain.is_empty() {
            return Err(bad("no CERTIFICATE block in the certificate PEM".into()));
        }
        let private_key = PrivateKeyDer::from_pem_slice(&key)
            .map_err(|e| bad(format!("no readable private key in the key PEM ({e})")))?;
        // What a connection will do with them, done once now.
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_client_auth_cert(chain, private_key)
        .map_err(|e| {
            bad(format!(
                "the key does not fit the certificate or is not supported ({e})"
            ))
        })?;
        self.client = Some((cert, key));
        Ok(())
    }

    /// In redis-rs's form; `None` when nothing was given.
    fn certificates(&self) -> Option<TlsCertificates> {
        if self.roots.is_none() && self.client.is_none() {
            return None;
        }
        Some(TlsCertificates {
            client_tls: self.client.as_ref().map(|(cert, key)| ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
            root_cert: self.roots.clone(),
        })
    }
}

/// redis-rs makes each TLS connection with rustls's process-wide crypto provider, and rustls
/// panics when there is none it can choose. Installs `ring` unless the application installed
/// one (or another thread just did: that one serves as well).
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The settings of the command connections (`info` with `tls` in it) and the client of the
/// pub/sub connections, which uses the same certificates.
fn clients(
    url: &str,
    info: ConnectionInfo,
    tls: &Tls,
) -> Result<(ConnectionInfo, redis::Client), CacheError> {
    let bad_url = || CacheError::Config(format!("not a Redis URL: {}", redacted(url)));
    let over_tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
    if over_tls {
        ensure_crypto_provider();
    }
    match tls.certificates() {
        None => Ok((info, redis::Client::open(url).map_err(|_| bad_url())?)),
        Some(_) if !over_tls => Err(CacheError::Config(format!(
            "TLS certificates need a rediss:// URL, not {}",
            redacted(url)
        ))),
        Some(certificates) => {
            let refused = |e: RedisError| {
                CacheError::Config(format!("Redis TLS settings for {}: {e}", redacted(url)))
            };
            let commands =
                redis::Client::build_with_tls(info, certificates.clone()).map_err(refused)?;
            let pubsub = redis::Client::build_with_tls(url, certificates).map_err(refused)?;
            Ok((commands.get_connection_info().clone(), pubsub))
        }
    }
}

/// The client that asks `sentinels` for the primary of `master`, and connects to it.
///
/// TLS follows the sentinels' scheme: with `rediss://` sentinels the primary they name is
/// reached over TLS too (a TLS-only Sentinel setup has `tls-replication yes`, so the addresses
/// the sentinels give are the nodes' TLS ports), with `redis://` in plaintext; a mix is refused,
/// so that no URL can quietly take TLS away from the others. `tls`'s CAs and client certificate
/// apply to both, and the primary's certificate must name the address the sentinels give for it
/// (an IP address unless they announce hostnames). The sentinels are asked with one set of
/// credentials, so every URL must carry the same username and password; a database number means
/// nothing to a sentinel (`SELECT` fails there), so one is refused rather than failing every call.
fn sentinel_client(
    sentinels: &[String],
    master: &str,
    primary: Option<&Credentials>,
    tls: &Tls,
) -> Result<SentinelClient, CacheError> {
    use redis::TlsMode;
    let config = |why: String| CacheError::Config(format!("Redis Sentinel: {why}"));
    let (Some(first), false) = (sentinels.first(), master.is_empty()) else {
        return Err(config(
            "it needs at least one sentinel URL and the master's name".into(),
        ));
    };
    let infos = sentinels
        .iter()
        .map(|url| connection_info(url))
        .collect::<Result<Vec<_>, _>>()?;
    let over_tls = |info: &ConnectionInfo| matches!(info.addr(), ConnectionAddr::TcpTls { .. });
    let tls_count = infos.iter().filter(|info| over_tls(info)).count();
    let over_tls = match tls_count {
        0 => false,
        n if n == infos.len() => true,
        _ => {
            let urls: Vec<String> = sentinels.iter().map(|u| redacted(u)).collect();
            return Err(config(format!(
                "either every sentinel URL is rediss:// (TLS) or none is: [{}]",
                urls.join(", ")
            )));
        }
    };
    let certificates = tls.certificates();
    if certificates.is_some() && !over_tls {
        return Err(config(format!(
            "TLS certificates need rediss:// sentinel URLs, not {}",
            redacted(first)
        )));
    }
    let settings = infos[0].redis_settings();
    for (url, info) in sentinels.iter().zip(&infos) {
        let other = info.redis_settings();
        if other.username() != settings.username() || other.password() != settings.password() {
            return Err(config(format!(
                "every sentinel URL must carry the same username and password ({} differs from {})",
                redacted(url),
                redacted(first)
            )));
        }
        if other.db() != 0 {
            return Err(config(format!(
                "a sentinel has no databases; drop the /db of {}",
                redacted(url)
            )));
        }
    }
    let nodelay = redis::io::tcp::TcpSettings::default().set_nodelay(true);
    let mut builder = SentinelClientBuilder::new(
        infos.iter().map(|info| info.addr().clone()),
        master,
        SentinelServerType::Master,
    )
    .map_err(|e| config(e.to_string()))?
    .set_client_to_sentinel_tcp_settings(nodelay.clone())
    .set_client_to_redis_tcp_settings(nodelay);
    if let Some(username) = settings.username() {
        builder = builder.set_client_to_sentinel_username(username);
    }
    if let Some(password) = settings.password() {
        builder = builder.set_client_to_sentinel_password(password);
    }
    if let Some(primary) = primary {
        if let Some(username) = &primary.username {
            builder = builder.set_client_to_redis_username(username);
        }
        builder = builder.set_client_to_redis_password(&primary.password);
    }
    if over_tls {
        ensure_crypto_provider();
        // `Secure`: the certificates are verified, against `tls`'s CAs or the platform's.
        builder = builder
            .set_client_to_sentinel_tls_mode(TlsMode::Secure)
            .set_client_to_redis_tls_mode(TlsMode::Secure);
        if let Some(certificates) = certificates {
            builder = builder
                .set_client_to_sentinel_certificates(certificates.clone())
                .set_client_to_redis_certificates(certificates);
        }
    }
    // Its messages name settings, never a password or a key.
    builder.build().map_err(|e| config(e.to_string()))
}

/// Makes and keeps one store's connections.
pub(crate) struct Connector {
    /// As given, for the pub/sub connection; logged only [`redacted`].
    topology: Topology,
    reach: Reach,
    id: u64,
    /// Held by the `RedisStore`: when it is dropped, its kept connections are released.
    alive: Weak<()>,
    /// The store-wide connection, opened on the background runtime (its driver runs there):
    /// what the subscriber's calls use, and what a thread's first calls use until its own
    /// connection is open. The lock is never held across an await.
    warm: Mutex<Warm>,
    /// Whether a connection attempt builds a TLS client (a `rediss://` URL): redis-rs then
    /// reads the platform's trust store, synchronously, as each attempt starts.
    tls: bool,
}

impl Connector {
    /// A connector for `topology` with at most `pool_size` connections being opened at once to
    /// one node. Checks every URL; connects nothing.
    pub(crate) fn new(
        topology: Topology,
        tls: &Tls,
        pool_size: usize,
        id: u64,
        alive: Weak<()>,
    ) -> Result<Connector, CacheError> {
        let reach = match &topology {
            Topology::Node(url) => {
                let (info, pubsub) = clients(url, connection_info(url)?, tls)?;
                let manager = deadpool_redis::Manager::new(info).map_err(|_| {
                    CacheError::Config(format!("not a Redis URL: {}", redacted(url)))
                })?;
                let pool = Pool::builder(manager)
                    .max_size(pool_size.max(1))
                    .runtime(deadpool_redis::Runtime::Tokio1)
                    .build()
                    .map_err(|e| CacheError::Config(format!("Redis pool: {e}")))?;
                Reach::Node(pool, Box::new(pubsub))
            }
            Topology::Cluster(urls) => {
                if urls.is_empty() {
                    return Err(CacheError::Config(
                        "a Redis Cluster needs at least one seed URL".into(),
                    ));
                }
                let infos = urls
                    .iter()
                    .map(|url| connection_info(url))
                    .collect::<Result<Vec<_>, _>>()?;
                if infos
                    .iter()
                    .any(|i| matches!(i.addr(), ConnectionAddr::TcpTls { .. }))
                {
                    ensure_crypto_provider();
                }
                // redis-rs retries a `TRYAGAIN` (a slot half-moved) or a lost node after 1.28 s
                // at least by default, far past a call's 50 ms limit: such a call would always be
                // a miss. Waits of 2 ms doubling (at most 64 ms, 6 tries) retry while the caller
                // still waits, and give up well before a failover ends.
                let builder = ClusterClient::builder(infos)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .retries(6)
                    .min_retry_wait(2)
                    .max_retry_wait(64)
                    .retry_wait_formula(2, 2)
                    .tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
                let certificates = tls.certificates();
                let builder = match certificates.clone() {
                    Some(certificates) => builder.certs(certificates),
                    None => builder,
                };
                let client = builder
                    .build()
                    .map_err(|e| CacheError::Config(format!("Redis Cluster: {e}")))?;
                Reach::Cluster(Box::new(client), certificates)
            }
            Topology::Sentinel {
                sentinels,
                master,
                primary,
            } => Reach::Sentinel(Arc::new(tokio::sync::Mutex::new(sentinel_client(
                sentinels,
                master,
                primary.as_ref(),
                tls,
            )?))),
        };
        let tls = topology
            .urls()
            .iter()
            .filter_map(|url| connection_info(url).ok())
            .any(|info| matches!(info.addr(), ConnectionAddr::TcpTls { .. }));
        Ok(Connector {
            topology,
            reach,
            id,
            alive,
            warm: Mutex::new(Warm {
                opening: None,
                started: Instant::now(),
            }),
            tls,
        })
    }

    /// Where the store's Redis is (log it only [`Topology::redacted`]).
    pub(crate) fn topology(&self) -> &Topology {
        &self.topology
    }

    /// A new pub/sub connection, not kept: the subscriber holds it for one session. On a
    /// cluster, to the first seed node that answers. The attempt runs on the background
    /// runtime, off its worker threads for a TLS store ([`attempt`]).
    pub(crate) async fn pubsub(self: &Arc<Self>, timeout: Duration) -> Result<PubSub, String> {
        let background = runtime::background().map_err(|e| e.to_string())?;
        let this = self.clone();
        let connect = async move { this.open_pubsub(timeout).await }.boxed();
        attempt(background, self.tls, connect).await
    }

    async fn open_pubsub(&self, timeout: Duration) -> Result<PubSub, String> {
        if let Reach::Sentinel(sentinel) = &self.reach {
            let sentinel = sentinel.clone();
            return tokio::time::timeout(timeout, async move {
                let client = sentinel
                    .lock()
                    .await
                    .async_get_client()
                    .await
                    .map_err(|e| e.to_string())?;
                client.get_async_pubsub().await.map_err(|e| e.to_string())
            })
            .await
            .map_err(|_| "connect timed out".to_string())?;
        }
        if let Reach::Node(_, pubsub) = &self.reach {
            return tokio::time::timeout(timeout, pubsub.get_async_pubsub())
                .await
                .map_err(|_| "connect timed out".to_string())?
                .map_err(|e| e.to_string());
        }
        let mut last = String::from("no seed node");
        let urls = match &self.topology {
            Topology::Cluster(urls) => urls.as_slice(),
            Topology::Node(_) | Topology::Sentinel { .. } => &[],
        };
        let certificates = match &self.reach {
            Reach::Cluster(_, certificates) => certificates.clone(),
            _ => None,
        };
        for url in urls {
            let client = match &certificates {
                Some(certificates) => {
                    redis::Client::build_with_tls(url.as_str(), certificates.clone())
                }
                None => redis::Client::open(url.as_str()),
            };
            let client = match client {
                Ok(client) => client,
                Err(err) => {
                    last = err.to_string();
                    continue;
                }
            };
            match tokio::time::timeout(timeout, client.get_async_pubsub()).await {
                Ok(Ok(pubsub)) => return Ok(pubsub),
                Ok(Err(err)) => last = err.to_string(),
                Err(_) => last = "connect timed out".to_string(),
            }
        }
        Err(last)
    }

    /// Runs a script invocation on this thread's connection.
    pub(crate) async fn run(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<Value, CacheError> {
        self.with(|mut conn| async move { invocation.invoke_async::<Value>(&mut conn).await })
            .await
    }

    /// Runs one plain command on this thread's connection.
    pub(crate) async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, CacheError> {
        self.with(|mut conn| async move { cmd.query_async::<T>(&mut conn).await })
            .await
    }

    /// The connection a call on this thread runs on: the thread's own once it is open; until
    /// then the store's warm one if that is open (the thread's own opens meanwhile); else the
    /// first of the two to open (the caller's time limit bounds the wait). On the background
    /// runtime, the warm one only.
    async fn connection(&self) -> Result<Used, CacheError> {
        let kept = self.kept();
        if let Some(own) = &kept {
            if let Some(Ok(conn)) = own.peek() {
                return Ok(Used::kept(conn.clone(), Which::Thread(own.clone())));
            }
        }
        let background = runtime::is_background();
        let warm = self.warm(background);
        if background {
            return self.open_one(Which::Warm(warm)).await;
        }
        let own = self.own(kept, &warm);
        if let Some(Ok(conn)) = warm.peek() {
            return Ok(Used::kept(conn.clone(), Which::Warm(warm)));
        }
        let Some(own) = own else {
            return self.open_one(Which::Warm(warm)).await;
        };
        // Neither is open yet: the first of the two to open.
        let (failed, rest) = match select(warm.clone(), own.clone()).await {
            Either::Left((Ok(conn), _)) => return Ok(Used::new(conn, Which::Warm(warm))),
            Either::Right((Ok(conn), _)) => return Ok(Used::new(conn, Which::Thread(own))),
            Either::Left((Err(_), _)) => (Which::Warm(warm), Which::Thread(own)),
            Either::Right((Err(_), _)) => (Which::Thread(own), Which::Warm(warm)),
        };
        self.drop_opening(&failed);
        self.open_one(rest).await
    }

    /// The connection `which` names, once it is open (at once if it is); an opening that
    /// failed is dropped, so that the next call makes a new one.
    async fn open_one(&self, which: Which) -> Result<Used, CacheError> {
        let opening = which.opening().clone();
        if let Some(Ok(conn)) = opening.peek() {
            return Ok(Used::kept(conn.clone(), which));
        }
        match opening.await {
            Ok(conn) => Ok(Used::new(conn, which)),
            Err(err) => {
                self.drop_opening(&which);
                Err(CacheError::Backend(format!("Redis connection: {err}")))
            }
        }
    }

    /// This thread's connection or its opening, unless it has none or the last failed.
    fn kept(&self) -> Option<Opening> {
        KEPT.with(|kept| {
            let mut kept = kept.borrow_mut();
            kept.retain(|(_, alive, _)| alive.strong_count() > 0);
            kept.iter()
                .find(|(id, _, _)| *id == self.id)
                .map(|(_, _, opening)| opening.clone())
        })
        .filter(|opening| !matches!(opening.peek(), Some(Err(_))))
    }

    /// `kept`, or else a new opening of this thread's connection; but a TLS store's thread
    /// opens its own only once the store's `warm` connection is open: building a TLS client is
    /// synchronous work on the thread (see [`attempt`]), done then once per thread while Redis
    /// answers, and not again and again against a Redis that does not.
    fn own(&self, kept: Option<Opening>, warm: &Opening) -> Option<Opening> {
        match kept {
            Some(opening) => Some(opening),
            None if !self.tls || matches!(warm.peek(), Some(Ok(_))) => Some(self.open()),
            None => None,
        }
    }

    /// Starts opening this thread's connection (see [`Connector::own`]) unless it has one or
    /// one is being opened: a caller about to wait for something else (the first subscription)
    /// lets it open meanwhile. Off any Tokio runtime, or on the background one, nothing to do.
    pub(crate) fn prepare(&self) {
        if Handle::try_current().is_ok() && !runtime::is_background() {
            // Spawned already: it opens whether or not anyone awaits it.
            let _ = self.own(self.kept(), &self.warm(false));
        }
    }

    /// Starts opening the store's warm connection on the background runtime (when the store is
    /// attached to its cache, so that it is open by the first request).
    pub(crate) fn warm_up(&self) {
        // Spawned already: it opens whether or not anyone awaits it.
        drop(self.warm(true));
    }

    /// The warm connection or its opening; a new opening if there is none, or if the last
    /// failed and started [`WARM_RETRY`] ago or more (at once if `eager`: the subscriber's calls,
    /// which come at its own pace, once Redis has answered its subscription). So there is at
    /// most one attempt at a time, and however many calls ask, a Redis that keeps failing sees
    /// about one a second from the warm slot.
    fn warm(&self, eager: bool) -> Opening {
        let mut warm = self.warm.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(opening) = &warm.opening {
            let failed = matches!(opening.peek(), Some(Err(_)));
            if !failed || (!eager && warm.started.elapsed() < WARM_RETRY) {
                return opening.clone();
            }
        }
        warm.started = Instant::now();
        let opening = self.start_warm();
        warm.opening = Some(opening.clone());
        opening
    }

    /// Opens a connection on the background runtime, whose threads then drive it.
    fn start_warm(&self) -> Opening {
        let connect = self.connect();
        let failed = |err: String| -> Opening { async move { Err(err) }.boxed().shared() };
        let background = match runtime::background() {
            Ok(background) => background,
            Err(err) => return failed(err.to_string()),
        };
        let opening = attempt(background, self.tls, connect).shared();
        // Driven to the end even if no caller waits for it.
        background.spawn(opening.clone());
        opening
    }

    /// A connection attempt, not started: to one node through the pool, to a cluster, or to
    /// the primary the sentinels name. It never waits longer than [`CONNECT_TIMEOUT`].
    fn connect(&self) -> BoxFuture<'static, Result<Conn, String>> {
        match &self.reach {
            Reach::Node(pool, _) => {
                let pool = pool.clone();
                async move {
                    match tokio::time::timeout(CONNECT_TIMEOUT, pool.get()).await {
                        Ok(Ok(pooled)) => Ok(Conn::Node(deadpool_redis::Connection::take(pooled))),
                        Ok(Err(err)) => Err(err.to_string()),
                        Err(_) => Err("connecting timed out".to_string()),
                    }
                }
                .boxed()
            }
            Reach::Cluster(client, _) => {
                let client = ClusterClient::clone(client);
                async move {
                    match tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_connection()).await
                    {
                        Ok(Ok(conn)) => Ok(Conn::Cluster(conn)),
                        Ok(Err(err)) => Err(err.to_string()),
                        Err(_) => Err("connecting timed out".to_string()),
                    }
                }
                .boxed()
            }
            Reach::Sentinel(sentinel) => {
                let sentinel = sentinel.clone();
                async move {
                    // Asks the sentinels which node is the primary now (and checks its `ROLE`).
                    let connect = async {
                        let client = sentinel.lock().await.async_get_client().await?;
                        client.get_multiplexed_async_connection().await
                    };
                    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                        Ok(Ok(conn)) => Ok(Conn::Node(conn)),
                        Ok(Err(err)) => Err(err.to_string()),
                        Err(_) => Err("connecting timed out".to_string()),
                    }
                }
                .boxed()
            }
        }
    }

    /// Starts opening a connection for this thread (on its runtime, where the connection's
    /// driver then runs) and keeps the attempt. A TLS store's runs only while Redis answers
    /// (see [`Connector::own`]).
    fn open(&self) -> Opening {
        let opening = self.connect().shared();
        // Driven to the end even if every caller stops waiting.
        tokio::spawn(opening.clone());
        let alive = self.alive.clone();
        let id = self.id;
        let kept_opening = opening.clone();
        KEPT.with(|kept| {
            let mut kept = kept.borrow_mut();
            kept.retain(|(other, _, _)| *other != id);
            kept.push((id, alive, kept_opening));
        });
        opening
    }

    /// Drops a connection (or an opening) that failed, if it is still the one kept, so that
    /// the next call opens a new one.
    fn drop_opening(&self, which: &Which) {
        match which {
            Which::Thread(opening) => KEPT.with(|kept| {
                kept.borrow_mut()
                    .retain(|(id, _, kept)| !(*id == self.id && kept.ptr_eq(opening)))
            }),
            // One that failed to open stays, so that the next starts only after [`WARM_RETRY`]
            // ([`Connector::warm`]); one that broke once open is replaced at once.
            Which::Warm(opening) => {
                let mut warm = self.warm.lock().unwrap_or_else(PoisonError::into_inner);
                let broke = warm.opening.as_ref().is_some_and(|kept| {
                    kept.ptr_eq(opening) && !matches!(kept.peek(), Some(Err(_)))
                });
                if broke {
                    warm.opening = None;
                }
            }
        }
    }

    /// Runs `op` on this thread's connection (or the warm one, see [`Connector::connection`]).
    /// A kept connection that turns out dead (Redis restarted, or the runtime that drove it
    /// ended) is replaced and `op` tried once more.
    pub(crate) async fn with<T, F, Fut>(&self, op: F) -> Result<T, CacheError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        loop {
            let used = self.connection().await?;
            match op(used.conn).await {
                Ok(value) => return Ok(value),
                Err(err) => {
                    let broken = err.is_io_error()
                        || err.is_connection_dropped()
                        || err.is_unrecoverable_error();
                    if broken {
                        self.drop_opening(&used.which);
                    }
                    if !(broken && used.kept) {
                        return Err(if err.code() == Some("WRONGTYPE") {
                            CacheError::Corrupt(err.to_string())
                        } else if out_of_memory(&err) {
                            CacheError::Backend(format!("{FULL}: {err}"))
                        } else {
                            CacheError::Backend(format!("Redis: {err}"))
                        });
                    }
                }
            }
        }
    }
}

/// The store's warm connection: the last opening, and when it started.
struct Warm {
    opening: Option<Opening>,
    started: Instant,
}

/// Which connection a call got: this thread's or the store's warm one, with its opening (to
/// drop that one, and only that one, when it breaks).
enum Which {
    Thread(Opening),
    Warm(Opening),
}

impl Which {
    fn opening(&self) -> &Opening {
        match self {
            Which::Thread(opening) | Which::Warm(opening) => opening,
        }
    }
}

/// A connection for one call.
struct Used {
    conn: Conn,
    /// It was open before the call: a failure on it may only mean it went stale.
    kept: bool,
    which: Which,
}

impl Used {
    fn kept(conn: Conn, which: Which) -> Used {
        Used {
            conn,
            kept: true,
            which,
        }
    }

    fn new(conn: Conn, which: Which) -> Used {
        Used {
            conn,
            kept: false,
            which,
        }
    }
}

/// Runs a connection attempt on the background runtime. A TLS store's attempt runs on one of
/// its blocking threads (its IO and timers are still the runtime's, and what it spawns, such as
/// the connection's driver, runs on the runtime's workers): redis-rs builds a TLS client as
/// each attempt starts, reading and parsing the platform's trust store (several ms of
/// synchronous work), which on a worker would stall every other store's subscription and calls.
/// The background runtime is never shut down, so such an attempt never outlives its runtime.
fn attempt<T: Send + 'static>(
    background: &'static Runtime,
    tls: bool,
    connect: BoxFuture<'static, Result<T, String>>,
) -> BoxFuture<'static, Result<T, String>> {
    if !tls {
        return connect;
    }
    let handle = background.handle().clone();
    let job = background.spawn_blocking(move || handle.block_on(connect));
    async move {
        job.await
            .unwrap_or_else(|e| Err(format!("connection attempt aborted: {e}")))
    }
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redacted("redis://:hunter2@h:6379/0"),
            "redis://***@h:6379/0"
        );
        assert_eq!(redacted("redis://h:6379"), "redis://h:6379");
    }
}

//! [`CacheMiddleware`]: the builder, and the actix `Transform` and `Service` that hand each
//! request to the flow ([`crate::flow`]).
//!
//! What must stay true: the builder is a plain value; every setting lands in the config of the
//! middleware it is called on, before or after a clone; the service never blocks and never
//! clones the request before the inner service has routed it.

use std::future::{ready, Ready};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_service::{Service, Transform};
use actix_web::{
    body::{BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    Error,
};
use cache_core::{encoding::Compression, Cache, CachePolicy};
use futures_util::future::{Either, LocalBoxFuture};

use crate::config::Config;
use crate::config::HttpOptions;
pub use crate::config::{DEFAULT_LOCK_TIMEOUT, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_KEY_BYTES};
use crate::downstream::TagHeader;
use crate::flow::{fast_hit, Flow};

/// Caches the responses of the services it wraps. Put it on an `App` or a `Scope`, inside any
/// authentication middleware so that access is checked before a hit is served.
///
/// Handlers opt in with `#[cached(...)]` or [`crate::Cached`]; responses without a policy are
/// cached only under a scope rule ([`CacheMiddleware::default_ttl`] with
/// [`CacheMiddleware::include`] / [`CacheMiddleware::exclude`]).
///
/// ```
/// use std::time::Duration;
/// use actix_web::{web, App, HttpResponse};
/// use cache_actix::{Cache, CacheMiddleware};
///
/// let cache = Cache::memory();
/// let app = App::new().app_data(web::Data::new(cache.clone())).service(
///     web::scope("/api")
///         .wrap(
///             CacheMiddleware::new(cache.clone())
///                 .default_ttl(Duration::from_secs(30))
///                 .include("/api/catalog")
///                 .exclude("/api/catalog/admin"),
///         )
///         .route("/catalog", web::get().to(|| async { HttpResponse::Ok().body("catalog") })),
/// );
/// ```
#[derive(Clone)]
pub struct CacheMiddleware {
    config: Arc<Config>,
}

impl CacheMiddleware {
    /// Caches through `cache`.
    pub fn new(cache: Cache) -> CacheMiddleware {
        CacheMiddleware {
            config: Arc::new(Config::new(cache)),
        }
    }

    /// Changes this middleware's own copy of the config: a clone made earlier keeps what it
    /// had, and nothing set here is lost.
    fn edit(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(Arc::make_mut(&mut self.config));
        self
    }

    /// Caches responses that carry no policy for this long, on the paths the include/exclude
    /// rules select (all paths under the middleware when no `include` is given).
    ///
    /// A scope rule does not know what the page reads, so it treats cookies as identity: the
    /// response to a request with `Cookie` is not stored, and such a request is not answered
    /// from a shared entry, unless the response says `Cache-Control: public` or the rule varies
    /// on the cookie ([`CacheMiddleware::default_policy`] with [`CachePolicy::vary_cookie`]).
    pub fn default_ttl(self, ttl: Duration) -> Self {
        self.default_policy(CachePolicy::new(ttl))
    }

    /// The scope rule as a whole policy: [`CacheMiddleware::default_ttl`] with vary headers,
    /// cookies, stale windows or visibility. Tags in it are ignored (a rule has no route).
    ///
    /// ```
    /// use std::time::Duration;
    /// use cache_actix::{Cache, CacheMiddleware, CachePolicy};
    /// // Pages that read the `sid` session cookie: one entry per session, and analytics
    /// // cookies beside it do not split the entry.
    /// let mw = CacheMiddleware::new(Cache::memory())
    ///     .default_policy(CachePolicy::new(Duration::from_secs(30)).vary_cookie("sid"));
    /// ```
    pub fn default_policy(self, policy: CachePolicy) -> Self {
        self.edit(|c| c.default_policy = Some(policy))
    }

    /// Adds a path prefix (whole segments: `/api/a` covers `/api/a/1`, not `/api/ab`) whose
    /// responses the default rule caches.
    pub fn include(self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        self.edit(|c| c.include.push(prefix))
    }

    /// Adds a path prefix the default rule never caches (it wins over `include`).
    pub fn exclude(self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        self.edit(|c| c.exclude.push(prefix))
    }

    /// Largest body stored (default 1 MiB); larger ones pass through without being buffered.
    pub fn max_body_bytes(self, bytes: usize) -> Self {
        self.edit(|c| c.max_body_bytes = bytes)
    }

    /// Largest key (default 8 KiB); requests with longer URLs or varied header values bypass.
    pub fn max_key_bytes(self, bytes: usize) -> Self {
        self.edit(|c| c.max_key_bytes = bytes)
    }

    /// Lets a client's `Cache-Control: no-cache` (or `Pragma: no-cache`) force the handler to
    /// run. Off by default: otherwise any client could defeat the cache at will.
    pub fn honor_client_no_cache(self, honor: bool) -> Self {
        self.edit(|c| c.honor_client_no_cache = honor)
    }

    /// Longest wait for a concurrent request's fill (default 10 s) before running the handler.
    pub fn lock_timeout(self, timeout: Duration) -> Self {
        self.edit(|c| c.lock_timeout = timeout)
    }

    /// How long the lease of a fill lasts in an L2 that keeps leases (`RedisStore`), by which
    /// concurrent misses for one key on different nodes run the handler once in total
    /// (default: half the [`CacheMiddleware::lock_timeout`], so 5 s).
    ///
    /// The holder releases the lease when its fill ends; one that dies holding it costs the
    /// other nodes at most this long before one of them takes the lease and runs the handler.
    /// A handler that runs longer than the lease lets another node run it too (its store is
    /// fenced: the later lease's record wins). Nodes wait at most the lock timeout for another
    /// node's fill. A Redis that is away, an open breaker or any lease error means filling on
    /// each node alone, at once; a cache without an L2 never takes leases.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cache_actix::{Cache, CacheMiddleware, RedisStore};
    ///
    /// let store = RedisStore::from_url("redis://127.0.0.1:6379")?;
    /// let cache = Cache::builder().l2(store).build();
    /// let middleware = CacheMiddleware::new(cache)
    ///     .lock_timeout(Duration::from_secs(4))
    ///     .lease_time(Duration::from_secs(1));
    /// # Ok::<(), cache_actix::CacheError>(())
    /// ```
    pub fn lease_time(self, time: Duration) -> Self {
        self.edit(|c| c.lease_time = Some(time))
    }

    /// Stores br and gzip copies of each cacheable response (compressed once, when it is
    /// stored) and answers each hit in the coding its `Accept-Encoding` prefers: no compression
    /// per hit, unlike actix's `Compress` wrapped around the app. Off by default.
    ///
    /// - Only text-like bodies are compressed (`text/*`, JSON, XML, JavaScript, SVG), of at
    ///   least [`Compression::min_bytes`] (1 KiB by default). Images, archives and other
    ///   compressed types, a response with its own `Content-Encoding`, and one marked
    ///   `Cache-Control: no-transform` are stored as they are.
    /// - A client that accepts neither coding gets the identity body. Every answer from a
    ///   compressed entry says `Vary: Accept-Encoding`, and each coding has its own `ETag`
    ///   (`"<tag>-br"`, `"<tag>-gzip"`), so `If-None-Match` confirms only the bytes it names.
    /// - The L1's byte budget counts the copies. Redis keeps the copies without the identity
    ///   body, and each process decodes it from a copy when it reads the record.
    /// - Responses stored under [`CacheMiddleware::http_semantics`] are not compressed.
    ///
    /// With this on, put actix's `Compress` nowhere around the middleware's services: the
    /// cache's answers already carry their `Content-Encoding`, which `Compress` leaves alone,
    /// but it would still compress every bypassed response per request.
    ///
    /// ```
    /// use actix_web::{web, App, HttpResponse};
    /// use cache_actix::{Cache, CacheMiddleware, Compression};
    ///
    /// let app = App::new().service(
    ///     web::scope("/api")
    ///         .wrap(CacheMiddleware::new(Cache::memory()).compress(Compression::new()))
    ///         .route("/list", web::get().to(|| async { HttpResponse::Ok().json([1, 2, 3]) })),
    /// );
    /// ```
    pub fn compress(self, compression: Compression) -> Self {
        self.edit(|c| c.compression = Some(compression))
    }

    /// Leaves query parameters out of the key: names (`fbclid`) or prefixes (`utm_*`), matched
    /// as actix's `web::Query` decodes them (a parameter holding a `;`, which some other
    /// frameworks split on, is always keyed). Requests that differ only in those parameters share
    /// one entry, so list only parameters no handler under the middleware reads: a parameter
    /// that changes the page and is ignored here serves one client's page to another.
    ///
    /// ```
    /// use cache_actix::{Cache, CacheMiddleware};
    /// // `/p?id=1&utm_source=mail` and `/p?id=1&fbclid=x` are one entry; `/p?id=2` another.
    /// let mw = CacheMiddleware::new(Cache::memory()).ignore_query(["utm_*", "fbclid"]);
    /// ```
    pub fn ignore_query<I, S>(self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.edit(|c| c.key_rules.ignore(names))
    }

    /// Keys only the listed query parameters (names or `prefix*` patterns) on paths under
    /// `prefix` (whole segments, like [`CacheMiddleware::include`]); every other parameter there
    /// is left out of the key. The longest prefix that covers a path decides (by the path the
    /// router matches, escapes decoded); calling it again for a prefix adds names to its list;
    /// paths no prefix covers keep their whole query. `ignore_query` still applies.
    ///
    /// ```
    /// use cache_actix::{Cache, CacheMiddleware};
    /// // Under /search only `q` and `page` tell pages apart.
    /// let mw = CacheMiddleware::new(Cache::memory()).allow_query("/search", ["q", "page"]);
    /// ```
    pub fn allow_query<I, S>(self, prefix: impl Into<String>, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let prefix = prefix.into();
        self.edit(|c| c.key_rules.allow(prefix, names))
    }

    /// Adds a value computed from the request to its key: a tenant, a role, a feature-flag
    /// cohort. Requests with different values never share an entry. `None` adds nothing, so a
    /// request for which the function returns `None` shares the entries of requests with no
    /// tenant at all: when reading the value can fail, return a marker such as
    /// `Some("unknown".into())` rather than `None`. This
    /// is how pages for "signed in" and "anonymous" are cached apart without varying on every
    /// token. The function runs on every request under the middleware (hits included), before
    /// the handler, so it should be cheap and must not depend on what the handler does.
    ///
    /// A request with `Authorization` is still not stored unless its policy varies on
    /// `Authorization` or says `public` (what is never stored does not change).
    ///
    /// ```
    /// use cache_actix::{Cache, CacheMiddleware};
    /// let mw = CacheMiddleware::new(Cache::memory()).key_with(|req| {
    ///     // One entry for members, one for everyone else.
    ///     Some(if req.headers().contains_key("x-member") { "member" } else { "anonymous" }.into())
    /// });
    /// ```
    pub fn key_with<F>(self, f: F) -> Self
    where
        F: Fn(&ServiceRequest) -> Option<String> + Send + Sync + 'static,
    {
        let f: crate::key_rules::KeyWith = Arc::new(f);
        self.edit(|c| c.key_rules.key_with = Some(f))
    }

    /// Sends each entry's tags to the caches downstream (a CDN) in `header`: `Surrogate-Key`
    /// (Fastly, Varnish xkey; space-separated) or `Cache-Tag` (Cloudflare, Akamai;
    /// comma-separated), so that the CDN can purge by the same tags as this cache. Off by default.
    ///
    /// - Sent on every answer from a stored entry: `HIT`, the `MISS` that stored it, `STALE`, a
    ///   304 from it; not on a `BYPASS`, nor on a `MISS` that was not stored.
    /// - The tags are the entry's own (a `#[cached]` policy's, [`crate::Cached::tag`],
    ///   [`crate::Cached::tags_of`], a `cache-tag` response header): each once, never the
    ///   cache's internal per-URL tag. An HTTP-mode entry has no tags, so it gets no header.
    /// - A tag is spelled by [`TagHeader::encode`]: as it is, or percent-encoded where it holds
    ///   a space, a comma, `%`, a control or non-ASCII byte. Forward that spelling from
    ///   [`Cache::on_invalidate`] to the CDN's purge API.
    /// - The header replaces one of that name the handler set. Mind the CDN's limits (Fastly
    ///   and Cloudflare take about 16 KiB of tags per response).
    /// - It is prepared with the entry's head, once per entry: middlewares that share one
    ///   `Cache` should agree on it (the first to answer from an entry decides its header).
    ///   Hits of a middleware without it pay nothing for it.
    ///
    /// ```
    /// use actix_web::{web, App, HttpResponse};
    /// use cache_actix::{Cache, CacheMiddleware, TagHeader};
    ///
    /// let cache = Cache::memory();
    /// // Tell the CDN which tags were purged, in its spelling (queue it: the hook runs inside
    /// // the invalidation call).
    /// let (purges, queue) = std::sync::mpsc::channel::<String>();
    /// cache.on_invalidate(move |tag| {
    ///     let _ = purges.send(TagHeader::encode(tag).into_owned());
    /// });
    /// let app = App::new().service(
    ///     web::scope("/api")
    ///         .wrap(CacheMiddleware::new(cache).downstream_tags(TagHeader::SurrogateKey))
    ///         .route("/list", web::get().to(|| async { HttpResponse::Ok().body("[]") })),
    /// );
    /// ```
    pub fn downstream_tags(self, header: TagHeader) -> Self {
        self.edit(|c| c.downstream = Some(header))
    }

    /// Acts as an RFC 9111 shared HTTP cache for responses that carry no `#[cached]` policy:
    /// whether and how long they are kept comes from their own `Cache-Control`, `Expires`,
    /// `Vary` and validators, with no default ttl. See [`crate::HttpOptions`] for the defaults
    /// that are stricter than the RFC, and [`CacheMiddleware::http_semantics_with`] to change
    /// them.
    ///
    /// ```
    /// use actix_web::{web, App, HttpResponse};
    /// use cache_actix::{Cache, CacheMiddleware};
    ///
    /// let app = App::new()
    ///     .wrap(CacheMiddleware::new(Cache::memory()).http_semantics())
    ///     .default_service(web::to(|| async {
    ///         HttpResponse::Ok().insert_header(("cache-control", "max-age=60")).body("hi")
    ///     }));
    /// ```
    pub fn http_semantics(self) -> Self {
        self.http_semantics_with(HttpOptions::default())
    }

    /// [`CacheMiddleware::http_semantics`] with explicit options.
    ///
    /// ```
    /// use cache_actix::{Cache, CacheMiddleware, HttpOptions};
    /// let mw = CacheMiddleware::new(Cache::memory())
    ///     .http_semantics_with(HttpOptions::default().cdn_cache_control(true));
    /// ```
    pub fn http_semantics_with(self, options: HttpOptions) -> Self {
        self.edit(|c| c.http = Some(options))
    }
}

impl<S, B> Transform<S, ServiceRequest> for CacheMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = Error;
    type Transform = CacheService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(CacheService {
            service: Rc::new(service),
            config: self.config.clone(),
        }))
    }
}

/// The service [`CacheMiddleware`] wraps around the inner service.
pub struct CacheService<S> {
    service: Rc<S>,
    config: Arc<Config>,
}

impl<S, B> Service<ServiceRequest> for CacheService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = Error;
    /// A fast hit is ready at once and needs no boxed future.
    type Future = Either<
        Ready<Result<ServiceResponse<BoxBody>, Error>>,
        LocalBoxFuture<'static, Result<ServiceResponse<BoxBody>, Error>>,
    >;

    actix_service::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let (req, known) = match fast_hit(&self.config, req) {
            Ok(res) => return Either::Left(ready(Ok(res))),
            Err(not_a_fast_hit) => not_a_fast_hit,
        };
        let flow = Flow {
            service: self.service.clone(),
            config: self.config.clone(),
        };
        Either::Right(Box::pin(flow.run(req, known)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setting_made_after_a_clone_stays_on_that_clone() {
        let first = CacheMiddleware::new(Cache::memory()).max_body_bytes(10);
        let second = first
            .clone()
            .max_body_bytes(20)
            .lock_timeout(Duration::from_secs(1));
        assert_eq!(first.config.max_body_bytes, 10);
        assert_eq!(second.config.max_body_bytes, 20);
        assert_eq!(second.config.lock_timeout, Duration::from_secs(1));
        assert_eq!(first.config.lock_timeout, DEFAULT_LOCK_TIMEOUT);
    }
}

//! [`CacheMiddleware`]: the whole request flow, top to bottom.
//!
//! request -> (not GET/HEAD: pass, then purge the URL on success) -> key -> lookup ->
//! fresh: answer `HIT` | stale in its revalidate window: answer `STALE`, the next request
//! refreshes | miss: single-flight -> handler -> storable? store, answer `MISS` : `BYPASS`.
//!
//! What must stay true:
//! - a cache failure never becomes a 5xx: store errors are misses;
//! - the `HttpRequest` is never cloned before the inner service has routed it (actix's router
//!   needs the only reference, and panics otherwise);
//! - a response is stored only if every rule of "what is never stored" lets it through, and an
//!   entry is served to a request with `Authorization` (or, under a scope rule, `Cookie`) only
//!   if the policy allowed that;
//! - no request shapes what another client is served: the key is built from what actix itself
//!   reports and reads (`ConnectionInfo`'s scheme and host, the query as `web::Query` decodes
//!   it, `Accept-Language` in rank order), and a GET or HEAD with a body is neither answered
//!   from the cache nor stored;
//! - bodies that are streamed or larger than `max_body_bytes` are passed through untouched.

use std::collections::HashSet;
use std::future::{ready, Ready};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_service::{Service, Transform};
use actix_web::{
    body::{BodySize, BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{
        header::{self, HeaderMap, HeaderName, HeaderValue},
        Method, StatusCode,
    },
    Error, HttpMessage, HttpResponse,
};
use bytes::Bytes;
use cache_core::{
    flight::{Ended, Join, Leader, Waiter},
    key::QueryOrder,
    policy::VARY_COOKIE_PREFIX,
    Cache, CacheKey, CachePolicy, Entry, Event, Lookup, PrimaryKey, Visibility,
};
use futures_util::future::LocalBoxFuture;

use crate::bypass::BypassReason;
use crate::headers::{self as h, Outcome};
use crate::prepared::Head;
use crate::request_body;
use crate::responder::ResolvedPolicy;

/// Default largest body stored: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// Default largest key (host + path + query, or vary values): 8 KiB.
pub const DEFAULT_MAX_KEY_BYTES: usize = 8 << 10;
/// Default longest wait for another request's fill before running the handler anyway.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct Config {
    cache: Cache,
    default_policy: Option<CachePolicy>,
    include: Vec<String>,
    exclude: Vec<String>,
    pub(crate) max_body_bytes: usize,
    pub(crate) max_key_bytes: usize,
    honor_client_no_cache: bool,
    lock_timeout: Duration,
    /// RFC 9111 shared-cache rules for responses that carry no policy.
    pub(crate) http: Option<crate::http_semantics::HttpOptions>,
    /// Flight keys whose stale entry was served once: the next request refreshes them.
    refresh_due: Mutex<HashSet<u128>>,
}

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
            config: Arc::new(Config {
                cache,
                default_policy: None,
                include: Vec::new(),
                exclude: Vec::new(),
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                max_key_bytes: DEFAULT_MAX_KEY_BYTES,
                honor_client_no_cache: false,
                lock_timeout: DEFAULT_LOCK_TIMEOUT,
                http: None,
                refresh_due: Mutex::new(HashSet::new()),
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Config)) -> Self {
        match Arc::get_mut(&mut self.config) {
            Some(config) => f(config),
            None => {
                tracing::warn!("CacheMiddleware configured after it was cloned; setting ignored")
            }
        }
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
        self.http_semantics_with(crate::http_semantics::HttpOptions::default())
    }

    /// [`CacheMiddleware::http_semantics`] with explicit options.
    ///
    /// ```
    /// use cache_actix::{Cache, CacheMiddleware, HttpOptions};
    /// let mw = CacheMiddleware::new(Cache::memory())
    ///     .http_semantics_with(HttpOptions::default().cdn_cache_control(true));
    /// ```
    pub fn http_semantics_with(self, options: crate::http_semantics::HttpOptions) -> Self {
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
    type Future = LocalBoxFuture<'static, Result<ServiceResponse<BoxBody>, Error>>;

    actix_service::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let (req, known) = match fast_hit(&self.config, req) {
            Ok(res) => return Box::pin(ready(Ok(res))),
            Err(not_a_fast_hit) => not_a_fast_hit,
        };
        let flow = Flow {
            service: self.service.clone(),
            config: self.config.clone(),
        };
        Box::pin(flow.run(req, known))
    }
}

/// The common case, answered without building the whole flow's future: a GET or HEAD whose
/// fresh entry sits in the L1 and may answer this request as it stands. Anything else (a
/// request directive to weigh, `Authorization` the entry does not cover, an L2 to ask) goes
/// back to the caller for [`Flow::run`], with the primary key when it was built.
fn fast_hit(
    config: &Config,
    req: ServiceRequest,
) -> Result<ServiceResponse<BoxBody>, (ServiceRequest, Option<PrimaryKey>)> {
    let method = req.method();
    if method != Method::GET && method != Method::HEAD {
        return Err((req, None));
    }
    let headers = req.headers();
    let asks = headers.contains_key(header::CACHE_CONTROL) || headers.contains_key(header::PRAGMA);
    if (asks && (config.http.is_some() || config.honor_client_no_cache))
        || request_body::announced(headers)
    {
        return Err((req, None));
    }
    let Some(primary) = primary_key(config, &req) else {
        return Err((req, None));
    };
    let entry = config
        .cache
        .fresh_in_l1(&primary, |vary| variant_key(&primary, vary, req.headers()));
    // `servable` below also holds the entry to its own cookie rule.
    match entry {
        Some(entry)
            if servable(&entry, req.headers()) && entry.http.is_none_or(|h| !h.no_cache) =>
        {
            config.cache.record(Event::Hit);
            Ok(answer(req, &entry, Outcome::Hit))
        }
        _ => Err((req, Some(primary))),
    }
}

pub(crate) struct Flow<S> {
    pub(crate) service: Rc<S>,
    pub(crate) config: Arc<Config>,
}

impl<S, B> Flow<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    pub(crate) fn cache(&self) -> &Cache {
        &self.config.cache
    }

    /// The whole flow; `known` is the primary key when [`fast_hit`] already built it.
    async fn run(
        self,
        req: ServiceRequest,
        known: Option<PrimaryKey>,
    ) -> Result<ServiceResponse<BoxBody>, Error> {
        let method = req.method().clone();
        if method != Method::GET && method != Method::HEAD {
            return self.pass_unsafe(req, method).await;
        }
        if request_body::announced(req.headers()) {
            // Whatever the handler makes of the body is not what a plain GET would get.
            return self.bypass_request(req, BypassReason::RequestBody).await;
        }
        let Some(primary) = known.or_else(|| self.primary_key(&req)) else {
            return self.bypass_request(req, BypassReason::KeyTooLarge).await;
        };
        let client_no_cache =
            self.config.honor_client_no_cache && client_says_no_cache(req.headers());
        let lookup = if client_no_cache {
            Lookup::Miss {
                stale_if_error: None,
                vary: None,
            }
        } else {
            self.cache()
                .lookup(&primary, |vary| variant_key(&primary, vary, req.headers()))
                .await
        };
        if self.config.http.is_some() {
            let stored = match &lookup {
                Lookup::Fresh(e) | Lookup::Stale(e) | Lookup::Retained(e) => Some(e),
                Lookup::Miss {
                    stale_if_error: Some(e),
                    ..
                } => Some(e),
                Lookup::Miss { .. } => None,
            };
            if let Some(entry) = stored.filter(|e| e.http.is_some()).cloned() {
                return self.http_reuse(req, primary, entry).await;
            }
            if crate::http_semantics::directives::Directives::of(
                req.headers(),
                &header::CACHE_CONTROL,
            )
            .only_if_cached
            {
                self.cache().record(Event::Bypass);
                return Ok(req.into_response(crate::http_semantics::gateway_timeout()));
            }
        }
        match lookup {
            Lookup::Fresh(entry) if servable(&entry, req.headers()) => {
                self.cache().record(Event::Hit);
                tracing::debug!(path = req.path(), "cache hit");
                Ok(answer(req, &entry, Outcome::Hit))
            }
            Lookup::Stale(entry) if servable(&entry, req.headers()) => {
                self.stale(req, primary, entry).await
            }
            Lookup::Fresh(entry) | Lookup::Stale(entry) => {
                let vary = Some(entry.vary.clone());
                self.fill(req, primary, vary, None).await
            }
            Lookup::Retained(entry) => {
                let vary = Some(entry.vary.clone());
                self.fill(req, primary, vary, None).await
            }
            Lookup::Miss {
                stale_if_error,
                vary,
            } => {
                let stale = stale_if_error.filter(|e| servable(e, req.headers()));
                self.fill(req, primary, vary, stale).await
            }
        }
    }

    /// POST, PUT, PATCH, DELETE (and anything else that is not GET/HEAD): run the handler; if it
    /// succeeded and the method is unsafe, drop every stored variant of the URL (RFC 9111 4.4).
    async fn pass_unsafe(
        self,
        req: ServiceRequest,
        method: Method,
    ) -> Result<ServiceResponse<BoxBody>, Error> {
        // RFC 9111 section 4.4: every method that is not safe; the policy mode keeps to the
        // four that change state in practice.
        let unsafe_method = if self.config.http.is_some() {
            !matches!(method, Method::OPTIONS | Method::TRACE)
        } else {
            matches!(
                method,
                Method::POST | Method::PUT | Method::PATCH | Method::DELETE
            )
        };
        let target = (unsafe_method && self.config.http.is_some())
            .then(|| (request_authority(&req), req.uri().path().to_string()));
        let primary = if unsafe_method {
            self.primary_key(&req)
        } else {
            None
        };
        let mut res = self.call_inner(req).await?.map_into_boxed_body();
        res.headers_mut().remove(h::CACHE_TAG);
        self.cache().record(Event::Bypass);
        let status = res.status();
        if let Some(primary) = primary.filter(|_| status.is_success() || status.is_redirection()) {
            if let Err(err) = self.cache().purge_url(&primary).await {
                self.cache().record(Event::Error);
                tracing::warn!(error = %err, "could not purge the URL after an unsafe request");
            }
            if let Some((authority, path)) = &target {
                self.http_invalidate_targets(authority, path, res.headers())
                    .await;
            }
        }
        mark(
            res.headers_mut(),
            Outcome::Bypass(BypassReason::Method),
            None,
        );
        Ok(res)
    }

    async fn bypass_request(
        self,
        req: ServiceRequest,
        reason: BypassReason,
    ) -> Result<ServiceResponse<BoxBody>, Error> {
        self.cache().record(Event::Bypass);
        Ok(bypassed(self.call_inner(req).await?, reason))
    }

    /// A stale entry inside its revalidate window: answer it at once, and let the next request
    /// that finds it stale refresh it while the others keep getting the stale copy.
    pub(crate) async fn stale(
        self,
        req: ServiceRequest,
        primary: PrimaryKey,
        entry: Arc<Entry>,
    ) -> Result<ServiceResponse<BoxBody>, Error> {
        let flight = variant_key(&primary, &entry.vary, req.headers()).hash();
        let refresh_now = {
            let mut due = self
                .config
                .refresh_due
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if due.len() > 100_000 {
                // Keys seen stale once and never again; forgetting them only delays a refresh.
                due.clear();
            }
            // The first sighting marks the entry due; the next one refreshes it.
            !due.insert(flight) && due.remove(&flight)
        };
        if refresh_now && !self.cache().flights().in_flight(flight) {
            let vary = Some(entry.vary.clone());
            return self.fill(req, primary, vary, Some(entry)).await;
        }
        self.cache().record(Event::StaleHit);
        tracing::debug!(path = req.path(), "stale hit (revalidate)");
        Ok(answer(req, &entry, Outcome::StaleRevalidate))
    }

    /// Nothing fresh is stored: join the single-flight for the key and run the handler, or
    /// wait for the request that runs it.
    pub(crate) async fn fill(
        self,
        req: ServiceRequest,
        primary: PrimaryKey,
        vary: Option<Arc<[String]>>,
        stale: Option<Arc<Entry>>,
    ) -> Result<ServiceResponse<BoxBody>, Error> {
        let flight = match &vary {
            Some(vary) => variant_key(&primary, vary, req.headers()).hash(),
            None => primary.hash(),
        };
        let vary_known = vary.is_some();
        let (leader, took_over) = match self.elect(flight, &primary, &req).await.into_runner() {
            Ok(runner) => runner,
            Err(entry) => {
                self.cache().record(Event::Hit);
                return Ok(answer(req, &entry, Outcome::Collapsed));
            }
        };
        if took_over {
            // Counted as a bypass (its reason is `lock-timeout`), not as a miss.
            self.cache().record(Event::Bypass);
            tracing::debug!(
                path = req.path(),
                "lock timeout: this request leads the fill"
            );
        } else {
            self.cache().record(Event::Miss);
        }
        let has_auth = req.headers().contains_key(header::AUTHORIZATION);
        let has_cookie = req.headers().contains_key(header::COOKIE);
        // A HEAD response may lack the body a GET would get: answer it, never store it.
        let is_head = req.method() == Method::HEAD;
        let born = self.cache().begin_fill();
        let request_ms = cache_core::time::now_ms();
        let mut req = req;
        let body_seen = request_body::watch(&mut req);
        let res = self.call_inner(req).await?;
        if body_seen.get() {
            // An HTTP/2 GET whose body the head did not announce: the answer may be made of it.
            release(leader, true);
            return Ok(bypassed(res, BypassReason::RequestBody));
        }

        if res.status().is_server_error() {
            let stale = stale.filter(|s| {
                s.http.is_none() || crate::http_semantics::may_serve_stale_on_error(s, &res)
            });
            if let Some(stale) = stale {
                self.cache().record(Event::StaleHit);
                tracing::debug!(status = %res.status(), "handler failed; serving stale");
                let (http_req, _) = res.into_parts();
                let response = render(http_req.headers(), &stale, Outcome::StaleIfError);
                return Ok(ServiceResponse::new(http_req, response));
            }
        }

        let policy = res
            .response()
            .extensions()
            .get::<ResolvedPolicy>()
            .cloned()
            // The path as the router matched it (percent-escapes decoded), so that an encoded
            // spelling of an excluded path cannot slip past the rules.
            .or_else(|| self.default_policy(res.request().match_info().as_str()));
        if policy.is_none() && self.config.http.is_some() {
            return self
                .http_finish(res, primary, leader, vary_known, has_auth, born, request_ms)
                .await;
        }
        let verdict = match &policy {
            Some(p) => storable(&res, p, has_auth, has_cookie, self.config.max_body_bytes),
            None => Err(BypassReason::NoPolicy),
        };
        let (policy, limit) = match (verdict, policy) {
            (Ok(limit), Some(policy)) => (policy, limit),
            (verdict, _) => {
                let reason = verdict.err().unwrap_or(BypassReason::NoPolicy);
                release(leader, reason.is_the_requests());
                self.cache().record(Event::Bypass);
                return Ok(bypassed(res, reason));
            }
        };

        let (http_req, response) = res.into_parts();
        let (head, body) = response.into_parts();
        let body = match actix_web::body::to_bytes_limited(body, limit).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(err)) => {
                tracing::warn!(error = %err.into(), "response body failed");
                return Err(actix_web::error::ErrorInternalServerError(
                    "response body failed",
                ));
            }
            Err(_) => {
                // The body lied about its size; never store what we could not read whole.
                tracing::warn!("response body longer than announced");
                return Err(actix_web::error::ErrorInternalServerError(
                    "response body failed",
                ));
            }
        };
        let key = variant_key(&primary, policy.policy.vary_headers(), http_req.headers());
        let entry = build_entry(&key, &head, body, &policy, born);
        let stored = if is_head || key.as_bytes().len() > self.config.max_key_bytes {
            Err(Arc::new(entry))
        } else {
            self.cache().store(&primary, &key, entry).await
        };
        let outcome = if took_over {
            Outcome::Bypass(BypassReason::LockTimeout)
        } else {
            Outcome::Miss {
                stored: stored.is_ok(),
                vary_known,
            }
        };
        match (leader, &stored) {
            (Some(leader), Ok(stored)) => leader.complete(stored.clone()),
            (leader, _) => release(leader, is_head),
        }
        tracing::debug!(
            path = http_req.path(),
            stored = stored.is_ok(),
            "cache miss"
        );
        let entry = stored.unwrap_or_else(|refused| refused);
        let response = render(http_req.headers(), &entry, outcome);
        Ok(ServiceResponse::new(http_req, response))
    }

    /// Joins the single-flight of `flight`: leads it, or waits for its leader and takes what
    /// the leader stored when it may answer this request.
    ///
    /// - A leader that steps down (its own request could not give a shareable answer: a HEAD,
    ///   `Authorization` or `Cookie` the rule does not share) makes the waiters elect one new
    ///   leader among themselves, instead of all running the handler at once; waiters that are
    ///   themselves unfit to lead run alone.
    /// - A leader that gives up (its response could not be stored for anyone) releases the
    ///   waiters to run the handler in parallel, as another leader would fare no better.
    /// - After `lock_timeout`, one waiter takes the lead from the slow leader (`took_over`); the
    ///   others wait for whichever of the two shares first, at most two more `lock_timeout`s,
    ///   then run alone.
    pub(crate) async fn elect(
        &self,
        mut flight: u128,
        primary: &PrimaryKey,
        req: &ServiceRequest,
    ) -> Elected {
        let flights = self.cache().flights();
        let headers = req.headers();
        let fit = fit_to_lead(req);
        let mut deadline = tokio::time::Instant::now() + self.config.lock_timeout;
        // After another waiter took over: the slow leader, whose value is still welcome.
        let mut superseded = None;
        loop {
            let mut waiter = match flights.join(flight) {
                Join::Leader(leader) => {
                    return Elected::Leader {
                        leader,
                        took_over: false,
                    }
                }
                Join::Waiter(waiter) => waiter,
            };
            let ended = tokio::time::timeout_at(deadline, async {
                match superseded.as_mut() {
                    Some(slow) => {
                        let slow: &mut Waiter<Arc<Entry>> = slow;
                        tokio::select! {
                            biased;
                            ended = waiter.wait() => ended,
                            value = slow.value() => Ended::Done(value),
                        }
                    }
                    None => waiter.wait().await,
                }
            })
            .await;
            let entry = match ended {
                Err(_) if superseded.is_some() => return Elected::Alone { timed_out: true },
                Err(_) => {
                    if let Some(leader) = flights.take_over(flight, &waiter) {
                        return Elected::Leader {
                            leader,
                            took_over: true,
                        };
                    }
                    // Another waiter took the lead: wait for it, or for the slow leader, which
                    // is likely to finish first.
                    superseded = Some(waiter);
                    deadline += 2 * self.config.lock_timeout;
                    continue;
                }
                Ok(Ended::Done(entry)) => entry,
                Ok(Ended::SteppedDown) if fit => continue,
                Ok(Ended::SteppedDown | Ended::GaveUp) => {
                    return Elected::Alone { timed_out: false }
                }
            };
            // Re-check the clocks: an invalidation may have resolved after the leader stored.
            if !self.cache().is_valid(&entry) {
                continue;
            }
            let own = variant_key(primary, &entry.vary, headers);
            if *entry.key == *own.as_bytes() {
                if servable(&entry, headers) {
                    return Elected::Shared(entry);
                }
                // Ours to fill, not to take (`Authorization`, `Cookie`): alone, in parallel.
                return Elected::Alone { timed_out: false };
            }
            // Another variant of the resource: coalesce with the requests of our own.
            flight = own.hash();
            superseded = None;
        }
    }

    /// Runs the wrapped service, with the cache in the request extensions so that the `Cache`
    /// extractor finds it without `app_data` (only here: hits never pay for the insert).
    pub(crate) fn call_inner(&self, req: ServiceRequest) -> S::Future {
        req.extensions_mut().insert(self.cache().clone());
        self.service.call(req)
    }

    pub(crate) fn primary_key(&self, req: &ServiceRequest) -> Option<PrimaryKey> {
        primary_key(&self.config, req)
    }

    fn default_policy(&self, path: &str) -> Option<ResolvedPolicy> {
        let policy = self.config.default_policy.as_ref()?;
        let covered = |prefix: &String| {
            let prefix = prefix.trim_end_matches('/');
            path == prefix
                || path
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
                || prefix.is_empty()
        };
        if self.config.exclude.iter().any(covered) {
            return None;
        }
        if !self.config.include.is_empty() && !self.config.include.iter().any(covered) {
            return None;
        }
        Some(ResolvedPolicy {
            policy: policy.clone(),
            tags: Vec::new(),
            from_scope: true,
        })
    }
}

/// A response passed through untouched but for `cache-tag` (ours, never the client's) and the
/// bypass marks.
pub(crate) fn bypassed<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
    reason: BypassReason,
) -> ServiceResponse<BoxBody> {
    tracing::debug!(path = res.request().path(), %reason, "cache bypass");
    let mut res = res.map_into_boxed_body();
    res.headers_mut().remove(h::CACHE_TAG);
    mark(res.headers_mut(), Outcome::Bypass(reason), None);
    res
}

/// A request that runs the handler: the flight it leads, if any, and whether it got there by a
/// lock timeout.
pub(crate) type Runner = (Option<Leader<Arc<Entry>>>, bool);

/// What [`Flow::elect`] decided for one request.
pub(crate) enum Elected {
    /// Run the handler and hand the result to the waiters; `took_over` when the previous
    /// leader was still running after `lock_timeout`.
    Leader {
        leader: Leader<Arc<Entry>>,
        took_over: bool,
    },
    /// Another request's fill answers this one.
    Shared(Arc<Entry>),
    /// Run the handler without leading anyone; `timed_out` after waiting out the lock twice.
    Alone { timed_out: bool },
}

impl Elected {
    /// The leader guard and whether this request is past the lock timeout, for a request that
    /// runs the handler; `Err` with the entry that answers it otherwise.
    pub(crate) fn into_runner(self) -> Result<Runner, Arc<Entry>> {
        match self {
            Elected::Leader { leader, took_over } => Ok((Some(leader), took_over)),
            Elected::Alone { timed_out } => Ok((None, timed_out)),
            Elected::Shared(entry) => Err(entry),
        }
    }
}

/// Whether a request can lead a fill whose answer others may take: a GET without credentials
/// or cookies. Others still lead when they come first; they then step down.
fn fit_to_lead(req: &ServiceRequest) -> bool {
    let headers = req.headers();
    req.method() == Method::GET
        && !headers.contains_key(header::AUTHORIZATION)
        && !headers.contains_key(header::COOKIE)
}

/// Ends a fill that stored nothing: a leader whose own request was the reason steps down so
/// that its waiters elect another; any other leader gives up and lets them run.
pub(crate) fn release(leader: Option<Leader<Arc<Entry>>>, request_was_the_reason: bool) {
    if let Some(leader) = leader {
        if request_was_the_reason {
            leader.step_down();
        }
    }
}

/// The scheme and host a request names, as actix reports them (`ConnectionInfo`, which is
/// what `url_for`, `full_url` and `connection_info()` give the handler): `scheme://host`.
/// `Forwarded` and `X-Forwarded-Host` / `-Proto` change what the handler sees, so they must
/// change the key too; otherwise one client's forwarded host would be served to everyone.
pub(crate) fn request_authority(req: &ServiceRequest) -> Vec<u8> {
    let headers = req.headers();
    let forwarded = headers.contains_key(header::FORWARDED)
        || headers.contains_key(X_FORWARDED_HOST)
        || headers.contains_key(X_FORWARDED_PROTO);
    if forwarded {
        let info = req.connection_info();
        return authority_of(info.scheme(), info.host());
    }
    // Without forwarding headers `ConnectionInfo` falls back to these, in this order; reading
    // them here spares the hit path its parse and its allocations (a unit test holds the two
    // to the same answer).
    let config = req.app_config();
    let scheme = req
        .uri()
        .scheme_str()
        .unwrap_or(if config.secure() { "https" } else { "http" });
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or_else(|| config.host());
    authority_of(scheme, host)
}

const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

fn authority_of(scheme: &str, host: &str) -> Vec<u8> {
    let mut authority = Vec::with_capacity(scheme.len() + 3 + host.len());
    authority.extend_from_slice(scheme.as_bytes());
    authority.extend_from_slice(b"://");
    authority.extend_from_slice(host.as_bytes());
    authority
}

/// The primary key of a request: scheme, host, path and query; `None` when they exceed the
/// key limit.
fn primary_key(config: &Config, req: &ServiceRequest) -> Option<PrimaryKey> {
    let authority = request_authority(req);
    let path = req.uri().path().as_bytes();
    let query = req.uri().query().unwrap_or_default().as_bytes();
    if authority.len() + path.len() + query.len() > config.max_key_bytes {
        return None;
    }
    Some(
        config
            .cache
            .primary_key_with(&authority, path, query, config.query_order()),
    )
}

impl Config {
    /// The policy mode's handlers read the query through actix, which cannot tell parameter
    /// orders apart; an origin behind the HTTP mode may, so that mode keys the query as sent
    /// unless told otherwise.
    pub(crate) fn query_order(&self) -> QueryOrder {
        match self.http {
            Some(options) if !options.sort_query => QueryOrder::AsSent,
            _ => QueryOrder::ByDecodedName,
        }
    }
}

/// The key of the variant of `primary` that a request with `headers` selects under `vary`.
pub(crate) fn variant_key(primary: &PrimaryKey, vary: &[String], headers: &HeaderMap) -> CacheKey {
    if vary.is_empty() {
        return primary.cache_key();
    }
    vary.iter()
        .fold(primary.variant(), |key, item| {
            if let Some(cookie) = item.strip_prefix(VARY_COOKIE_PREFIX) {
                let values = cookie_values(headers, cookie);
                return key.header(item, values.iter().map(|v| v.as_slice()));
            }
            let (name, rfc) = match item.strip_suffix(RFC_NORMALISED) {
                Some(name) => (name, true),
                None => (item.as_str(), false),
            };
            let mut lines = headers.get_all(name).peekable();
            if lines.peek().is_none() {
                return key.header(item, std::iter::empty());
            }
            let value = normalized(name, rfc, lines);
            key.header(item, [value.as_slice()])
        })
        .finish()
}

/// The suffix of a vary item of the HTTP mode whose header is normalised the RFC's way
/// (`accept-language` sorted, for an origin that is not actix). No header name contains `:`.
pub(crate) const RFC_NORMALISED: &str = ":rfc";

/// A vary list as the HTTP mode keys it: `Accept-Language` normalised the RFC's way.
pub(crate) fn rfc_vary(names: Vec<String>) -> Vec<String> {
    names
        .into_iter()
        .map(|n| {
            if n == "accept-language" {
                format!("{n}{RFC_NORMALISED}")
            } else {
                n
            }
        })
        .collect()
}

/// The values of cookie `name` in every `Cookie` line, in order, read exactly as actix reads
/// them (`HttpRequest::cookies`, with the `cookie` crate's `parse_encoded`): each line as
/// UTF-8, pairs split on `;` and trimmed of any Unicode space, name and value trimmed, the
/// value's quotes dropped, both percent-decoded as UTF-8 (a pair that fails is skipped, as
/// actix skips it). A line that is not UTF-8 makes actix read no cookie at all; it keys as a
/// value of its own, which separates it from everyone else (never the unsafe direction).
fn cookie_values(headers: &HeaderMap, name: &str) -> Vec<Vec<u8>> {
    use cache_core::key::percent_decode;
    let decode = |text: &str| String::from_utf8(percent_decode(text.as_bytes(), false)).ok();
    let mut values = Vec::new();
    for line in headers.get_all(header::COOKIE) {
        let Ok(line) = std::str::from_utf8(line.as_bytes()) else {
            values.push(b"\xff(not utf-8)".to_vec());
            continue;
        };
        for pair in line.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            let value = value.trim();
            let value = match (value.len() >= 2, value.strip_prefix('"')) {
                (true, Some(rest)) => rest.strip_suffix('"').unwrap_or(value),
                _ => value,
            };
            if let (Some(key), Some(value)) = (decode(key.trim()), decode(value.trim())) {
                if key == name {
                    values.push(value.into_bytes());
                }
            }
        }
    }
    values
}

/// A varied request header as one value, so that spellings with the same meaning share a
/// variant (RFC 9111 section 4.1 lets a cache normalise): every line joined as one list,
/// whitespace around members dropped. `Accept-Language` is ranked as actix ranks it when the
/// handler is ours (`rfc` false): by q-value, then position, since `preference()` and
/// `ranked()` break ties by position; with `rfc` (the HTTP mode) members are lowercased and
/// sorted, which the RFC's negotiation allows and the conformance suite expects.
fn normalized<'a>(name: &str, rfc: bool, lines: impl Iterator<Item = &'a HeaderValue>) -> Vec<u8> {
    let mut members: Vec<Vec<u8>> = lines
        .flat_map(|line| line.as_bytes().split(|b| *b == b','))
        .map(|m| m.trim_ascii().to_vec())
        .filter(|m| !m.is_empty())
        .collect();
    if name == "accept-language" {
        if rfc {
            for m in &mut members {
                m.make_ascii_lowercase();
                m.retain(|b| !b.is_ascii_whitespace());
            }
            members.sort();
        } else if let Some(ranked) = ranked_languages(&members) {
            return ranked;
        }
    }
    members.join(&b',')
}

/// `Accept-Language` members in actix's rank order (q descending, then position), each as
/// `tag;q=NNN` in thousandths; `None` when a member cannot be read, which then keys on the
/// members as sent (never merging what might differ).
fn ranked_languages(members: &[Vec<u8>]) -> Option<Vec<u8>> {
    let mut ranked: Vec<(u16, &[u8])> = Vec::with_capacity(members.len());
    for member in members {
        let mut parts = member.split(|b| *b == b';');
        let tag = parts.next()?.trim_ascii();
        let mut q = 1000;
        for param in parts {
            let param = param.trim_ascii();
            let value = param
                .strip_prefix(b"q=")
                .or_else(|| param.strip_prefix(b"Q="))?;
            q = q_thousandths(value)?;
        }
        if tag.is_empty() {
            return None;
        }
        ranked.push((q, tag));
    }
    ranked.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut out = Vec::new();
    for (q, tag) in ranked {
        if !out.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(tag);
        out.extend_from_slice(format!(";q={q}").as_bytes());
    }
    Some(out)
}

/// A q-value (`0`, `0.5`, `1.000`) in thousandths; `None` when malformed or above 1.
fn q_thousandths(value: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(value).ok()?;
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.len() != 1 || frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u16 = whole.parse().ok()?;
    let frac: u16 = format!("{frac:0<3}").parse().ok()?;
    let q = whole * 1000 + frac;
    (q <= 1000).then_some(q)
}

/// Whether `entry` may answer a request with `headers`: one with `Authorization` only when the
/// policy shared such responses (public, or varied on it, so the key already separates users);
/// one with `Cookie` only when the entry does not come from a scope rule that ignores cookies.
pub(crate) fn servable(entry: &Entry, headers: &HeaderMap) -> bool {
    (entry.shares_authorized || !headers.contains_key(header::AUTHORIZATION))
        && (entry.shares_cookied || !headers.contains_key(header::COOKIE))
}

fn client_says_no_cache(headers: &HeaderMap) -> bool {
    h::has_directive(headers, &header::CACHE_CONTROL, "no-cache")
        || h::has_directive(headers, &header::CACHE_CONTROL, "max-age")
            && headers
                .get_all(header::CACHE_CONTROL)
                .any(|v| v.as_bytes().windows(9).any(|w| w == b"max-age=0"))
        || h::has_directive(headers, &header::PRAGMA, "no-cache")
}

/// Every "never stored" rule of the policy mode (the README's "What is never stored";
/// ARCHITECTURE.md, "Storage"), in order. `Ok` carries the most bytes to read.
fn storable<B: MessageBody>(
    res: &ServiceResponse<B>,
    resolved: &ResolvedPolicy,
    has_auth: bool,
    has_cookie: bool,
    max_body: usize,
) -> Result<usize, BypassReason> {
    let policy = &resolved.policy;
    let headers = res.headers();
    if !policy.stores_status(res.status().as_u16()) {
        return Err(BypassReason::Status);
    }
    if headers.contains_key(header::SET_COOKIE) {
        return Err(BypassReason::SetCookie);
    }
    if h::has_directive(headers, &header::CACHE_CONTROL, "no-store") {
        return Err(BypassReason::NoStore);
    }
    if h::has_directive(headers, &header::CACHE_CONTROL, "private") {
        return Err(BypassReason::Private);
    }
    if has_auth && !policy.shares_authorized() {
        return Err(BypassReason::Authorization);
    }
    if has_cookie && !shares_cookied(resolved, headers) {
        return Err(BypassReason::Cookie);
    }
    if !vary_covered(headers, policy.vary_headers()) {
        return Err(BypassReason::Vary);
    }
    match res.response().body().size() {
        BodySize::None => Ok(0),
        BodySize::Sized(n) if n > max_body as u64 => Err(BypassReason::BodyTooLarge),
        BodySize::Sized(n) => Ok(n as usize),
        BodySize::Stream => Err(BypassReason::StreamingBody),
    }
}

/// Whether an entry of `resolved` may answer requests that carry `Cookie`: always for a
/// handler's own policy (its author chose what to vary on); for a scope rule only when it
/// varies on a cookie or the response says `public`.
fn shares_cookied(resolved: &ResolvedPolicy, response: &HeaderMap) -> bool {
    let policy = &resolved.policy;
    !resolved.from_scope
        || policy.varies_on_cookie()
        || policy.visibility_kind() == Visibility::Public
        || crate::http_semantics::directives::Directives::of(response, &header::CACHE_CONTROL)
            .public
}

/// Whether every header the handler's own `Vary` names is one the policy keys on (`*` never is;
/// a `vary_cookie` covers `Cookie`).
fn vary_covered(headers: &HeaderMap, policy_vary: &[String]) -> bool {
    let covers = |name: &str| {
        policy_vary.iter().any(|v| {
            v.eq_ignore_ascii_case(name)
                || (name.eq_ignore_ascii_case("cookie") && v.starts_with(VARY_COOKIE_PREFIX))
        })
    };
    headers
        .get_all(header::VARY)
        .all(|value| match value.to_str() {
            Ok(value) => value
                .split(',')
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .all(covers),
            Err(_) => false,
        })
}

/// The entry for a response: headers minus the ones never replayed, tags from the policy and
/// the `cache-tag` header, the handler's `etag` or a strong hash of the body.
fn build_entry(
    key: &CacheKey,
    head: &HttpResponse<()>,
    body: Bytes,
    policy: &ResolvedPolicy,
    born: u64,
) -> Entry {
    let now = cache_core::time::now_ms();
    let p = &policy.policy;
    let headers: Vec<(String, Bytes)> = head
        .headers()
        .iter()
        .filter(|(name, _)| {
            !h::HOP_BY_HOP.contains(&name.as_str()) && !h::NOT_STORED.contains(&name.as_str())
        })
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                Bytes::copy_from_slice(value.as_bytes()),
            )
        })
        .collect();
    // Room for the URL's implicit tag, which `Cache::store` adds.
    let mut tags = Vec::with_capacity(policy.tags.len() + 1);
    tags.extend(policy.tags.iter().cloned());
    for value in head
        .headers()
        .get_all(h::CACHE_TAG)
        .filter_map(|v| v.to_str().ok())
    {
        tags.extend(
            value
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
        );
    }
    let own_etag = head
        .headers()
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with('"') || v.starts_with("W/\""))
        .map(str::to_owned);
    // `Entry::new` hashes the body for a strong etag; keep that unless the handler sent its own.
    let mut entry = Entry::new(
        key.bytes(),
        head.status().as_u16(),
        headers,
        body,
        now,
        now.saturating_add(millis(p.ttl())),
    );
    if let Some(etag) = own_etag {
        entry.etag = etag;
    }
    entry.stale_while_revalidate_ms = millis(p.stale_while_revalidate_window());
    entry.stale_if_error_ms = millis(p.stale_if_error_window());
    entry.tags = tags;
    entry.born = born;
    if !p.vary_headers().is_empty() {
        entry.vary = Arc::from(p.vary_headers());
    }
    entry.visibility = p.visibility_kind();
    entry.max_age_secs = p.client_max_age().map(|d| d.as_secs());
    entry.shares_authorized = p.shares_authorized();
    entry.shares_cookied = shares_cookied(policy, head.headers());
    entry
}

/// A duration in whole milliseconds, saturating instead of wrapping for absurd policies.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Answers `req` from `entry`.
pub(crate) fn answer(
    req: ServiceRequest,
    entry: &Entry,
    outcome: Outcome,
) -> ServiceResponse<BoxBody> {
    let response = render(req.headers(), entry, outcome);
    req.into_response(response)
}

/// The response a client sees for `entry`: stored status, headers and body (or a 304 when its
/// `If-None-Match` matches), plus `etag`, `age`, `cache-control`, `expires`, `vary`, `x-cache`
/// and `cache-status`. HEAD bodies are dropped by actix itself.
pub(crate) fn render(
    request: &HeaderMap,
    entry: &Entry,
    outcome: Outcome,
) -> HttpResponse<BoxBody> {
    if entry.http.is_some() {
        let conditionals = crate::http_semantics::client_conditionals(request);
        return crate::http_semantics::render(Some(&conditionals), entry, outcome);
    }
    let now = cache_core::time::now_ms();
    // A 304 stands for the stored 2xx only; a stored 404 (say) is replayed as it is.
    let not_modified = (200..300).contains(&entry.status) && h::if_none_match(request, &entry.etag);
    let status = if not_modified {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::from_u16(entry.status).unwrap_or(StatusCode::OK)
    };
    let mut res = HttpResponse::with_body(status, BoxBody::new(()));
    let headers = res.headers_mut();
    Head::write_for(entry, headers, not_modified, now);
    if !matches!(outcome, Outcome::Miss { .. }) {
        headers.insert(header::AGE, h::age(entry, now));
    }
    mark(headers, outcome, Some((entry, now)));
    if not_modified {
        res
    } else {
        res.set_body(BoxBody::new(entry.body.clone()))
    }
}

pub(crate) fn mark(headers: &mut HeaderMap, outcome: Outcome, entry: Option<(&Entry, u64)>) {
    headers.insert(h::X_CACHE, outcome.x_cache());
    let now = entry.map_or(0, |(_, now)| now);
    headers.insert(
        h::CACHE_STATUS,
        outcome.cache_status(entry.map(|(e, _)| e), now),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn the_authority_is_what_connection_info_reports() {
        let requests = [
            TestRequest::get()
                .uri("/p")
                .insert_header(("host", "shop.example")),
            TestRequest::get().uri("/p"),
            TestRequest::get().uri("https://secure.example/p"),
            TestRequest::get()
                .uri("/p")
                .insert_header(("host", "Mixed.Example:8443")),
            TestRequest::get()
                .uri("/p")
                .insert_header(("host", "shop.example"))
                .insert_header(("x-forwarded-host", "evil.example")),
            TestRequest::get()
                .uri("/p")
                .insert_header(("forwarded", "proto=https;host=evil.example")),
            TestRequest::get()
                .uri("/p")
                .insert_header(("x-forwarded-proto", "https")),
        ];
        for req in requests {
            let req = req.to_srv_request();
            let info = req.connection_info().clone();
            let expected = format!("{}://{}", info.scheme(), info.host());
            assert_eq!(String::from_utf8_lossy(&request_authority(&req)), expected);
        }
    }
}

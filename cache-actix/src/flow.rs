//! The request flow, one for both rule sets, top to bottom:
//!
//! request -> key -> lookup -> decide reuse -> single-flight -> inner service -> decide
//! admission -> store -> render.
//!
//! - A method other than GET and HEAD passes, and a successful unsafe one purges its URL.
//! - Reuse ([`rules::reuse`]): answer `HIT`; answer `STALE` (refreshed in the background);
//!   revalidate with the entry's validators; or fill.
//! - A fill joins the single-flight of its variant ([`single_flight::elect`]): it leads and runs
//!   the handler, or takes the leader's entry (`HIT`, collapsed).
//! - Admission ([`rules::admit`]): the response becomes an entry (`MISS`, stored, with its
//!   compressed copies when the middleware compresses) or passes (`BYPASS` with its reason).
//!
//! What must stay true:
//! - a cache failure never becomes a 5xx: store errors are misses;
//! - the `HttpRequest` is never cloned before the inner service has routed it (actix's router
//!   needs the only reference, and panics otherwise);
//! - the decisions are the rules'; this file only carries them out, so each rule is met once;
//! - bodies that are streamed or larger than `max_body_bytes` are passed through untouched.

use std::rc::Rc;
use std::sync::Arc;

use actix_service::Service;
use actix_web::{
    body::{BodySize, BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{
        header::{self, HeaderMap},
        Method, StatusCode,
    },
    Error, HttpMessage,
};
use bytes::Bytes;
use cache_core::{
    flight::{Join, Leader},
    lease::Lease,
    time::now_ms,
    Cache, Entry, Event, Lookup, PrimaryKey,
};

use crate::bypass::BypassReason;
use crate::coalesce::{across_nodes, Across};
use crate::compression::encode_for_store;
use crate::config::Config;
use crate::headers::Outcome;
use crate::prepared::Head;
use crate::refresh;
use crate::render::{answer, bypassed, client_conditionals, gateway_timeout, render};
use crate::request_body;
use crate::request_key::{primary_key, request_authority, variant_key};
use crate::rules::{self, http, Asked, Exchange, Reuse, Validators};
use crate::single_flight::{elect, release, Runner};

/// The common case, answered without building the whole flow's future: a GET or HEAD whose
/// fresh entry sits in the L1 and may answer this request as it stands. Anything else (a
/// request directive to weigh, an L2 to ask) goes back to the caller for [`Flow::run`], with
/// the primary key when it was built.
pub(crate) fn fast_hit(
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
    let Some(entry) = entry else {
        return Err((req, Some(primary)));
    };
    // The same decision the full flow takes, on the entry as it stands now.
    // `fresh_in_l1` returned no entry a soft purge made stale.
    match rules::reuse(Lookup::Fresh(entry), req.headers(), false, now_ms(), None) {
        Reuse::Fresh(entry) => {
            prepare_downstream(config, &entry);
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

/// A request that runs the handler, from its election to its answer.
struct Fill {
    primary: PrimaryKey,
    /// The flight it leads, if any.
    leader: Option<Leader<Arc<Entry>>>,
    /// It leads because the previous leader was still running after `lock_timeout`.
    took_over: bool,
    /// The fill's lease in the L2 (coalescing across nodes): fences its store, and is
    /// released when the fill is dropped, however it ends.
    lease: Option<Lease>,
    /// Whether the resource's vary list was known (a `vary-miss`) or not (a `uri-miss`).
    vary_known: bool,
    asked: Asked,
    /// The tag-clock reading before the handler ran: an invalidation after it keeps the result
    /// out of the store.
    born: u64,
    /// When `born` was read: the waiters that joined before may take a result the store
    /// refused.
    born_at: std::time::Instant,
    request_ms: u64,
}

impl<S, B> Flow<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    fn cache(&self) -> &Cache {
        &self.config.cache
    }

    /// The whole flow; `known` is the primary key when [`fast_hit`] already built it.
    pub(crate) async fn run(
        self,
        req: ServiceRequest,
        known: Option<PrimaryKey>,
    ) -> Result<ServiceResponse<BoxBody>, Error> {
        // The request.
        let method = req.method().clone();
        if method != Method::GET && method != Method::HEAD {
            return self.pass(req, method).await;
        }
        if request_body::announced(req.headers()) {
            // Whatever the handler makes of the body is not what a plain GET would get.
            return self.bypass_request(req, BypassReason::RequestBody).await;
        }
        // The key.
        let Some(primary) = known.or_else(|| primary_key(&self.config, &req)) else {
            return self.bypass_request(req, BypassReason::KeyTooLarge).await;
        };
        // The lookup.
        let lookup = if rules::forces_refresh(&self.config, req.headers()) {
            Lookup::Miss {
                stale_if_error: None,
                vary: None,
            }
        } else {
            self.cache()
                .lookup(&primary, |vary| variant_key(&primary, vary, req.headers()))
                .await
        };
        if let Lookup::Fresh(entry)
        | Lookup::Stale(entry)
        | Lookup::Retained(entry)
        | Lookup::Miss {
            stale_if_error: Some(entry),
            ..
        } = &lookup
        {
            // Every answer from it below (hit, stale, stale-if-error, 304) carries its tags.
            prepare_downstream(&self.config, entry);
        }
        // The reuse decision.
        let http_mode = self.config.http.is_some();
        let softened = match &lookup {
            Lookup::Fresh(entry) | Lookup::Stale(entry) | Lookup::Retained(entry) => {
                self.cache().softened_at(entry)
            }
            Lookup::Miss {
                stale_if_error: Some(entry),
                ..
            } => self.cache().softened_at(entry),
            Lookup::Miss { .. } => None,
        };
        match rules::reuse(lookup, req.headers(), http_mode, now_ms(), softened) {
            Reuse::Fresh(entry) => {
                self.cache().record(Event::Hit);
                tracing::debug!(path = req.path(), "cache hit");
                Ok(answer(req, &entry, Outcome::Hit))
            }
            Reuse::Stale(entry) => {
                self.cache().record(Event::StaleHit);
                Ok(answer(req, &entry, Outcome::StaleRevalidate))
            }
            Reuse::StaleWhileRevalidate(entry) => self.stale(req, primary, entry).await,
            Reuse::Revalidate { entry, validators } => {
                self.revalidate(req, primary, entry, validators).await
            }
            Reuse::Fill { vary, stale } => self.fill(req, primary, vary, stale).await,
            Reuse::OnlyIfCached => {
                self.cache().record(Event::Bypass);
                Ok(gateway_timeout(req))
            }
        }
    }

    /// Any method but GET and HEAD: run the handler; if it succeeded and the method is unsafe,
    /// drop every stored variant of the URL (RFC 9111 section 4.4), and in the HTTP mode the
    /// `Location` / `Content-Location` targets on the same origin too.
    async fn pass(
        self,
        req: ServiceRequest,
        method: Method,
    ) -> Result<ServiceResponse<BoxBody>, Error> {
        let http_mode = self.config.http.is_some();
        // The RFC: every method that is not safe; the policy mode keeps to the four that change
        // state in practice.
        let unsafe_method = if http_mode {
            !matches!(method, Method::OPTIONS | Method::TRACE)
        } else {
            matches!(
                method,
                Method::POST | Method::PUT | Method::PATCH | Method::DELETE
            )
        };
        let target = (unsafe_method && http_mode)
            .then(|| (request_authority(&req), req.uri().path().to_string()));
        let primary = unsafe_method
            .then(|| primary_key(&self.config, &req))
            .flatten();
        let res = self.call_inner(req).await?;
        self.cache().record(Event::Bypass);
        let status = res.status();
        if let Some(primary) = primary.filter(|_| status.is_success() || status.is_redirection()) {
            self.purge(&primary, "the URL after an unsafe request")
                .await;
            if let Some((authority, path)) = &target {
                for (path, query) in http::invalidated_targets(authority, path, res.headers()) {
                    // Keyed as a request for it would be (`key_with` aside: there is none).
                    let query = self.config.key_rules.query(&path, query.as_bytes());
                    let primary = self.cache().primary_key_with(
                        authority,
                        path.as_bytes(),
                        &query,
                        self.config.query_order(),
                    );
                    self.purge(&primary, "a Location target").await;
                }
            }
        }
        Ok(bypassed(res, BypassReason::Method))
    }

    async fn bypass_request(
        self,
        req: ServiceRequest,
        reason: BypassReason,
    ) -> Result<ServiceResponse<BoxBody>, Error> {
        self.cache().record(Event::Bypass);
        Ok(bypassed(self.call_inner(req).await?, reason))
    }

    /// A stale entry inside its revalidate window: answered at once (`STALE`), and refreshed
    /// once per variant in the background by the first GET that finds it so: that request leads
    /// the variant's flight and hands itself to the refresh ([`refresh::take_over`]); others
    /// get the stale copy until the refreshed entry is stored, and no client waits for it.
    /// Where nothing can be spawned the first such request refreshes in the foreground.
    async fn stale(
        self,
        req: ServiceRequest,
        primary: PrimaryKey,
        entry: Arc<Entry>,
    ) -> Result<ServiceResponse<BoxBody>, Error> {
        let flight = variant_key(&primary, entry.vary(), req.headers()).hash();
        let flights = self.cache().flights();
        if req.method() == Method::GET && !flights.in_flight(flight) {
            if !refresh::can_spawn() {
                let vary = Some(entry.vary().clone());
                return self.fill(req, primary, vary, Some(entry)).await;
            }
            if let Join::Leader(leader) = flights.join(flight) {
                return Ok(self.refresh_behind(req, primary, entry, flight, leader));
            }
        }
        self.cache().record(Event::StaleHit);
        tracing::debug!(path = req.path(), "stale hit (revalidate)");
        Ok(answer(req, &entry, Outcome::StaleRevalidate))
    }

    /// Answers `req` from the stale `entry` and spawns its refresh, which leads the flight:
    /// a conditional request when the entry has validators (HTTP mode), else a fill. Waiters
    /// see only what the refresh stores, whole, or run the handler themselves if it stores
    /// nothing. With an L2 that keeps leases the refresh first coalesces with the other nodes
    /// (`coalesce.rs`), so a soft purge seen by fifty nodes refreshes each entry once, not fifty
    /// times: the node that holds the lease refreshes, and the others take its stored entry.
    fn refresh_behind(
        self,
        req: ServiceRequest,
        primary: PrimaryKey,
        entry: Arc<Entry>,
        flight: u128,
        leader: Leader<Arc<Entry>>,
    ) -> ServiceResponse<BoxBody> {
        self.cache().record(Event::StaleHit);
        tracing::debug!(path = req.path(), "stale hit; refreshing in the background");
        let (stand_in, refresh) = refresh::take_over(req);
        // Read before the refresh waits for another node: an invalidation meanwhile keeps what
        // it brings out of the store.
        let born_at = std::time::Instant::now();
        let born = self.cache().begin_fill();
        let asked = Asked::of(refresh.method(), refresh.headers());
        let validators = entry.http().and_then(|_| http::validators(&entry));
        let stale = entry.clone();
        actix_web::rt::spawn(async move {
            let deadline = tokio::time::Instant::now() + self.config.lock_timeout;
            let lease = match across_nodes(&self.config, flight, &primary, &refresh, deadline).await
            {
                Across::Run { lease, .. } => lease,
                Across::Shared(refreshed) => {
                    tracing::debug!("background refresh taken from another node's fill");
                    leader.complete(refreshed);
                    return;
                }
            };
            let fill = Fill {
                primary,
                leader: Some(leader),
                took_over: false,
                lease,
                vary_known: true,
                asked,
                born,
                born_at,
                request_ms: now_ms(),
            };
            let refreshed = match validators {
                Some(validators) => {
                    self.run_revalidation(refresh, fill, stale, validators)
                        .await
                }
                None => self.run_fill(refresh, fill, Some(stale)).await,
            };
            if let Err(err) = refreshed {
                tracing::debug!(error = %err, "background refresh failed");
            }
        });
        answer(stand_in, &entry, Outcome::StaleRevalidate)
    }

    /// Nothing stored answers: join the single-flight for the variant and run the handler, or
    /// take the answer of the request that runs it. `stale` may stand in if the handler fails.
    async fn fill(
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
        let fill = match self.elect(&req, flight, primary, vary.is_some()).await {
            Ok(fill) => fill,
            Err(entry) => return Ok(self.collapsed(req, &entry)),
        };
        self.run_fill(req, fill, stale).await
    }

    /// Runs the handler for the flight `fill` leads (or alone), and stores what it may.
    async fn run_fill(
        self,
        req: ServiceRequest,
        fill: Fill,
        stale: Option<Arc<Entry>>,
    ) -> Result<ServiceResponse<BoxBody>, Error> {
        if fill.took_over {
            // Counted as a bypass (its reason is `lock-timeout`), not as a miss.
            self.cache().record(Event::Bypass);
            tracing::debug!(
                path = req.path(),
                "lock timeout: this request leads the fill"
            );
        } else {
            self.cache().record(Event::Miss);
        }
        let mut req = req;
        let body_seen = request_body::watch(&mut req);
        let res = self.call_inner(req).await?;
        if body_seen.get() {
            // An HTTP/2 GET whose body the head did not announce: the answer may be made of it.
            release(fill.leader, true);
            return Ok(bypassed(res, BypassReason::RequestBody));
        }
        if res.status().is_server_error() {
            if let Some(stale) = stale.filter(|s| rules::stands_in_for_error(s, &res, now_ms())) {
                return Ok(self.stale_for_error(res, &stale, None));
            }
        }
        self.admit(res, fill).await
    }

    /// A stored entry the origin must confirm: forward the request with the entry's validators
    /// in place of the client's conditionals (which the cache answers itself); a 304 refreshes
    /// the entry, an error may be answered by it, anything else is a new response.
    async fn revalidate(
        self,
        req: ServiceRequest,
        primary: PrimaryKey,
        entry: Arc<Entry>,
        validators: Validators,
    ) -> Result<ServiceResponse<BoxBody>, Error> {
        // One revalidation per variant at a time; the others take its refreshed entry.
        let flight = variant_key(&primary, entry.vary(), req.headers()).hash();
        // Taken before waiting: an invalidation while this request waits must keep what it
        // revalidates out of the store, however weak the validator the origin confirms.
        let born_at = std::time::Instant::now();
        let born = self.cache().begin_fill();
        let mut fill = match self.elect(&req, flight, primary, true).await {
            Ok(fill) => fill,
            Err(fresh) => return Ok(self.collapsed(req, &fresh)),
        };
        fill.born = born;
        fill.born_at = born_at;
        self.run_revalidation(req, fill, entry, validators).await
    }

    /// Sends the conditional request for the flight `fill` leads (or alone).
    async fn run_revalidation(
        self,
        mut req: ServiceRequest,
        fill: Fill,
        entry: Arc<Entry>,
        validators: Validators,
    ) -> Result<ServiceResponse<BoxBody>, Error> {
        let conditionals = client_conditionals(req.headers());
        {
            let headers = req.headers_mut();
            headers.remove(header::IF_NONE_MATCH);
            headers.remove(header::IF_MODIFIED_SINCE);
            if let Some(etag) = validators.etag {
                headers.insert(header::IF_NONE_MATCH, etag);
            }
            if let Some(modified) = validators.last_modified {
                headers.insert(header::IF_MODIFIED_SINCE, modified);
            }
        }
        let body_seen = request_body::watch(&mut req);
        let res = self.call_inner(req).await?;
        if body_seen.get() {
            release(fill.leader, true);
            return Ok(bypassed(res, BypassReason::RequestBody));
        }
        if res.status() == StatusCode::NOT_MODIFIED {
            return Ok(self.merge(res, fill, &entry, &conditionals).await);
        }
        if res.status().is_server_error() && rules::stands_in_for_error(&entry, &res, now_ms()) {
            return Ok(self.stale_for_error(res, &entry, Some(&conditionals)));
        }
        self.cache().record(Event::Miss);
        self.admit(res, fill).await
    }

    /// Joins the single-flight of `flight`: `Ok` to run the handler, `Err` with the entry of
    /// another request's fill that answers this one.
    async fn elect(
        &self,
        req: &ServiceRequest,
        flight: u128,
        primary: PrimaryKey,
        vary_known: bool,
    ) -> Result<Fill, Arc<Entry>> {
        let Runner {
            leader,
            took_over,
            lease,
        } = elect(&self.config, flight, &primary, req)
            .await
            .into_runner()?;
        Ok(Fill {
            primary,
            leader,
            took_over,
            lease,
            vary_known,
            asked: Asked::of(req.method(), req.headers()),
            born_at: std::time::Instant::now(),
            born: self.cache().begin_fill(),
            request_ms: now_ms(),
        })
    }

    /// The answer of another request's fill.
    fn collapsed(&self, req: ServiceRequest, entry: &Entry) -> ServiceResponse<BoxBody> {
        prepare_downstream(&self.config, entry);
        self.cache().record(Event::Hit);
        answer(req, entry, Outcome::Collapsed)
    }

    /// The handler failed and `stale` may stand in (`STALE`, stale-if-error). `conditionals`:
    /// the client's, when the request carries the cache's validators instead.
    fn stale_for_error(
        &self,
        res: ServiceResponse<B>,
        stale: &Entry,
        conditionals: Option<&HeaderMap>,
    ) -> ServiceResponse<BoxBody> {
        self.cache().record(Event::StaleHit);
        tracing::debug!(status = %res.status(), "handler failed; serving stale");
        let (http_req, _) = res.into_parts();
        let asked = conditionals.unwrap_or(http_req.headers());
        let response = render(Some(asked), stale, Outcome::StaleIfError);
        ServiceResponse::new(http_req, response)
    }

    /// A 304 from the origin for `entry`: refresh the entry with its fields when they may be
    /// stored, and answer the client's own conditionals from it.
    async fn merge(
        &self,
        res: ServiceResponse<B>,
        fill: Fill,
        entry: &Entry,
        conditionals: &HeaderMap,
    ) -> ServiceResponse<BoxBody> {
        let exchange = Exchange {
            request_ms: fill.request_ms,
            response_ms: now_ms(),
        };
        let options = self.config.http.unwrap_or_default();
        let (http_req, response) = res.into_parts();
        let key = variant_key(&fill.primary, entry.vary(), http_req.headers());
        let merged = http::merge(
            entry,
            response.headers(),
            fill.asked,
            &key,
            exchange,
            fill.born,
            &options,
        );
        let (entry, outcome) = match merged {
            (updated, Ok(())) => {
                // Fenced like a fill's store: a revalidation that outlived its lease must not
                // replace a newer one's record.
                let stored = self
                    .cache()
                    .store_fenced(&fill.primary, &key, updated, fill.lease.as_ref())
                    .await;
                let entry = match stored {
                    Ok(stored) => {
                        prepare_downstream(&self.config, &stored);
                        if let Some(leader) = fill.leader {
                            leader.complete(stored.clone());
                        }
                        stored
                    }
                    Err(refused) => refused,
                };
                self.cache().record(Event::Hit);
                (entry, Outcome::Revalidated)
            }
            (updated, Err(not_merged)) => {
                if not_merged.withdrawn {
                    self.purge(&fill.primary, "an entry the origin withdrew")
                        .await;
                }
                release(fill.leader, fill.asked.no_store);
                self.cache().record(Event::Bypass);
                tracing::debug!(path = http_req.path(), reason = %not_merged.reason, "304 not merged");
                (Arc::new(updated), Outcome::Bypass(not_merged.reason))
            }
        };
        let response = render(Some(conditionals), &entry, outcome);
        ServiceResponse::new(http_req, response)
    }

    /// The handler's response: stored when the rules admit it, and answered (`MISS`) from the
    /// entry, or passed through (`BYPASS`) with the reason.
    async fn admit(
        self,
        res: ServiceResponse<B>,
        fill: Fill,
    ) -> Result<ServiceResponse<BoxBody>, Error> {
        let exchange = Exchange {
            request_ms: fill.request_ms,
            response_ms: now_ms(),
        };
        let draft = match rules::admit(&self.config, &res, fill.asked, exchange) {
            Ok(draft) => draft,
            Err(reason) => {
                release(fill.leader, fill.asked.is_the_reason(reason));
                self.cache().record(Event::Bypass);
                return Ok(bypassed(res, reason));
            }
        };
        let (http_req, response) = res.into_parts();
        let (head, body) = response.into_parts();
        // Copied into a buffer of its own even when the handler's body is one `Bytes` already:
        // that `Bytes` may be a slice of a larger buffer, which the entry would keep alive
        // uncounted, and the budget must count what the store holds.
        let exact = matches!(body.size(), BodySize::Sized(n) if n <= COLLECT_CHUNK);
        let body = match actix_web::body::to_bytes_limited(body, draft.limit).await {
            // Collecting starts at 32 KiB (or the announced size) and doubles; a body that
            // grew, or was streamed, is copied once more to its length, so that its buffer
            // holds no slack the budget does not see.
            Ok(Ok(bytes)) if !exact => Bytes::copy_from_slice(&bytes),
            Ok(Ok(bytes)) => bytes,
            Ok(Err(err)) => {
                tracing::warn!(error = %err.into(), "response body failed");
                return Err(body_failed());
            }
            Err(_) => {
                // The body lied about its size; never store what could not be read whole.
                tracing::warn!("response body longer than announced");
                return Err(body_failed());
            }
        };
        let key = variant_key(
            &fill.primary,
            &draft.vary(head.headers()),
            http_req.headers(),
        );
        let keep = draft.keep && key.as_bytes().len() <= self.config.max_key_bytes;
        let asked = draft.answers_conditionals().then_some(http_req.headers());
        let entry = match draft.entry(&key, &head, body, fill.born, now_ms()) {
            // Compressed once, here, for every hit to come.
            (entry, Ok(())) if keep => {
                encode_for_store(self.config.compression.as_ref(), entry, head.headers())
            }
            (entry, Ok(())) => entry,
            (entry, Err(reason)) => {
                release(fill.leader, false);
                self.cache().record(Event::Bypass);
                let response = render(asked, &entry, Outcome::Bypass(reason));
                return Ok(ServiceResponse::new(http_req, response));
            }
        };
        let stored = if keep {
            let lease = fill.lease.as_ref();
            self.cache()
                .store_fenced(&fill.primary, &key, entry, lease)
                .await
        } else {
            Err(Arc::new(entry))
        };
        let outcome = if fill.took_over {
            Outcome::Bypass(BypassReason::LockTimeout)
        } else {
            Outcome::Miss {
                stored: stored.is_ok(),
                vary_known: fill.vary_known,
            }
        };
        if let Ok(stored) = &stored {
            // Before the waiters get it: each of their answers carries its tags too.
            prepare_downstream(&self.config, stored);
        }
        match (fill.leader, &stored) {
            (Some(leader), Ok(stored)) => leader.complete(stored.clone()),
            // Refused by the store: still the origin's answer to the waiters that came before
            // the fill began, or to all of them when only a lost link to Redis refused it.
            (Some(leader), Err(refused)) if keep && !fill.asked.head => {
                let since = if self.cache().refused_only_out_of_touch(refused).await {
                    std::time::Instant::now()
                } else {
                    fill.born_at
                };
                leader.complete_unstored(refused.clone(), since)
            }
            (leader, _) => release(leader, fill.asked.head),
        }
        tracing::debug!(
            path = http_req.path(),
            stored = stored.is_ok(),
            "cache miss"
        );
        let entry = stored.unwrap_or_else(|refused| refused);
        let response = render(asked, &entry, outcome);
        Ok(ServiceResponse::new(http_req, response))
    }

    /// Drops every stored variant of `primary`; a failure is counted and logged, never the
    /// client's error (the request it follows has succeeded).
    async fn purge(&self, primary: &PrimaryKey, what: &str) {
        if let Err(err) = self.cache().purge_url(primary).await {
            self.cache().record(Event::Error);
            tracing::warn!(error = %err, "could not purge {what}");
        }
    }

    /// Runs the wrapped service, with the cache in the request extensions so that the `Cache`
    /// extractor finds it without `app_data` (only here: hits never pay for the insert).
    fn call_inner(&self, req: ServiceRequest) -> S::Future {
        req.extensions_mut().insert(self.cache().clone());
        self.service.call(req)
    }
}

/// With downstream tags on, prepares the head of a stored entry with them before it answers
/// (see [`Head::prepare`]); without, nothing, so hits pay nothing for the option.
fn prepare_downstream(config: &Config, entry: &Entry) {
    match config.downstream {
        // An HTTP-mode entry answers from its stored fields, never from a prepared head.
        Some(header) if entry.http().is_none() => Head::prepare(entry, header),
        _ => {}
    }
}

/// The buffer `to_bytes_limited` starts with at most (actix-http's `INITIAL_ALLOC_BYTES`): a
/// body announced at or under it is collected into a buffer of exactly its size.
const COLLECT_CHUNK: u64 = 32 * 1024;

/// The handler's body failed, or was longer than it announced: nothing whole to answer with.
/// The cache stands as a gateway to the handler here, so the answer is a 502 in both modes.
fn body_failed() -> Error {
    actix_web::error::ErrorBadGateway("response body failed")
}

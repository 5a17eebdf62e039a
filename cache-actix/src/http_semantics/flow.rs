//! The request flow of the HTTP semantics mode, as steps of the middleware's `Flow`:
//!
//! stored entry -> may it be reused for this request (its freshness, the request's
//! `Cache-Control`)? answer it (a 304 when the client's conditional matches) | stale but
//! allowed: answer `STALE` | otherwise revalidate: forward with `If-None-Match` /
//! `If-Modified-Since` from the entry; a 304 updates the stored fields and the entry answers;
//! a 5xx inside `stale-if-error` answers stale; anything else is a new response, stored when
//! the RFC allows.
//!
//! What must stay true: the client's own conditionals are evaluated against what the client
//! gets, never passed through to the origin in place of the cache's; a 304 is sent only to a
//! client that asked a conditional; every answer from storage carries a fresh `Age`; a 304
//! merged into an entry passes the same storability rules as a full response (a `Set-Cookie`,
//! `private` or `no-store` on it never reaches the shared entry); revalidations of one variant
//! are coalesced like fills.

use std::sync::Arc;

use actix_service::Service;
use actix_web::{
    body::{BodySize, BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{
        header::{self, HeaderMap, HeaderName, HeaderValue},
        Method, StatusCode,
    },
    Error, HttpResponse,
};
use cache_core::{flight::Leader, time::now_ms, Entry, Event, PrimaryKey};

use super::directives::{pragma_no_cache, Directives};
use super::{
    build_entry, current_age_secs, http_date_ms, storable, stored, updated_fields, vary_names,
    Asked, Exchange,
};
use crate::bypass::BypassReason;
use crate::headers::{self as h, Outcome};
use crate::middleware::{bypassed, mark, release, rfc_vary, servable, variant_key, Flow};
use crate::request_body;

/// Fields a 304 answer from storage carries (RFC 9110 section 15.4.5), besides `Age`.
const ON_304: &[&str] = &[
    "cache-control",
    "content-location",
    "date",
    "etag",
    "expires",
    "last-modified",
    "vary",
];

impl<S, B> Flow<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    /// A stored entry exists for the request: reuse it if the RFC lets us, else revalidate.
    pub(crate) async fn http_reuse(
        self,
        req: ServiceRequest,
        primary: PrimaryKey,
        entry: Arc<Entry>,
    ) -> Result<ServiceResponse<BoxBody>, Error> {
        let now = now_ms();
        let meta = entry.http.unwrap_or_default();
        if !servable(&entry, req.headers()) {
            let vary = Some(entry.vary.clone());
            return self.fill(req, primary, vary, None).await;
        }
        let ask = Directives::of(req.headers(), &header::CACHE_CONTROL);
        let client_no_cache = ask.no_cache || pragma_no_cache(req.headers());
        let age_ms = now.saturating_sub(entry.stored_at_ms);
        let fresh = now < entry.fresh_until_ms && !meta.no_cache;
        let young_enough = ask
            .max_age
            .is_none_or(|max| age_ms <= max.saturating_mul(1000));
        let fresh_enough = ask
            .min_fresh
            .is_none_or(|min| entry.fresh_until_ms.saturating_sub(now) >= min.saturating_mul(1000));
        if fresh && !client_no_cache && young_enough && fresh_enough {
            self.cache().record(Event::Hit);
            return Ok(answer(req, &entry, Outcome::Hit));
        }
        let stale_by = now.saturating_sub(entry.fresh_until_ms);
        let may_serve_stale =
            !fresh && !meta.must_revalidate && !meta.no_cache && !client_no_cache && young_enough;
        if may_serve_stale {
            let within_max_stale = ask
                .max_stale
                .is_some_and(|max| max.is_none_or(|s| stale_by <= s.saturating_mul(1000)));
            if within_max_stale {
                self.cache().record(Event::StaleHit);
                return Ok(answer(req, &entry, Outcome::StaleRevalidate));
            }
            if stale_by < entry.stale_while_revalidate_ms {
                return self.stale(req, primary, entry).await;
            }
        }
        if ask.only_if_cached {
            self.cache().record(Event::Bypass);
            return Ok(req.into_response(gateway_timeout()));
        }
        self.revalidate(req, primary, entry).await
    }

    /// Forwards the request with the entry's validators; a 304 refreshes the entry.
    async fn revalidate(
        self,
        mut req: ServiceRequest,
        primary: PrimaryKey,
        entry: Arc<Entry>,
    ) -> Result<ServiceResponse<BoxBody>, Error> {
        let last_modified = stored(&entry, "last-modified");
        let etag = HeaderValue::from_str(&entry.etag)
            .ok()
            .filter(|_| !entry.etag.is_empty());
        if etag.is_none() && last_modified.is_none() {
            // Whether the entry may stand in for an error is decided when the error comes.
            let vary = Some(entry.vary.clone());
            return self.fill(req, primary, vary, Some(entry)).await;
        }
        // Taken before waiting: an invalidation while this request waits must keep what it
        // revalidates out of the store, however weak the validator the origin confirms.
        let born = self.cache().begin_fill();
        // One revalidation per variant at a time; the others take its refreshed entry.
        let flight = variant_key(&primary, &entry.vary, req.headers()).hash();
        let (leader, _) = match self.elect(flight, &primary, &req).await.into_runner() {
            Ok(runner) => runner,
            Err(fresh) => {
                self.cache().record(Event::Hit);
                return Ok(answer(req, &fresh, Outcome::Collapsed));
            }
        };
        let conditionals = client_conditionals(req.headers());
        {
            let headers = req.headers_mut();
            headers.remove(header::IF_NONE_MATCH);
            headers.remove(header::IF_MODIFIED_SINCE);
            if let Some(etag) = etag {
                headers.insert(header::IF_NONE_MATCH, etag);
            }
            if let Some(modified) = last_modified {
                headers.insert(header::IF_MODIFIED_SINCE, modified);
            }
        }
        let has_auth = req.headers().contains_key(header::AUTHORIZATION);
        let request_ms = now_ms();
        let body_seen = request_body::watch(&mut req);
        let res = self.call_inner(req).await?;
        if body_seen.get() {
            release(leader, true);
            return Ok(bypassed(res, BypassReason::RequestBody));
        }
        if res.status() == StatusCode::NOT_MODIFIED {
            let exchange = Exchange {
                request_ms,
                response_ms: now_ms(),
            };
            let options = self.config.http.unwrap_or_default();
            let (http_req, response) = res.into_parts();
            let merged = updated_fields(&entry, response.headers());
            let key = variant_key(&primary, &entry.vary, http_req.headers());
            let status = StatusCode::from_u16(entry.status).unwrap_or(StatusCode::OK);
            let updated = build_entry(
                &key,
                status,
                &merged,
                entry.body.clone(),
                exchange,
                born,
                &options,
            );
            // The merged fields are a new response as far as storing goes: the client that
            // asked gets its own answer, but what it may not share stays out of the entry. Only
            // the response's side is weighed: the body was stored for a request that passed
            // the request's rules, and a client's own `no-store` keeps only its answer out.
            let request_no_store = Asked::of(http_req.headers()).no_store;
            let verdict = match storable(status, &merged, Asked::default(), &options) {
                Ok(()) if request_no_store => Err(BypassReason::NoStore),
                verdict => verdict,
            };
            if let Err(reason) = verdict {
                if !request_no_store
                    && matches!(reason, BypassReason::NoStore | BypassReason::Private)
                {
                    // The origin withdrew the response from shared caches.
                    if let Err(err) = self.cache().purge_url(&primary).await {
                        self.cache().record(Event::Error);
                        tracing::warn!(error = %err, "could not drop an entry the origin withdrew");
                    }
                }
                release(leader, request_no_store);
                self.cache().record(Event::Bypass);
                tracing::debug!(path = http_req.path(), %reason, "304 not merged");
                let response = render(Some(&conditionals), &updated, Outcome::Bypass(reason));
                return Ok(ServiceResponse::new(http_req, response));
            }
            let entry = match self.cache().store(&primary, &key, updated).await {
                Ok(stored) => {
                    if let Some(leader) = leader {
                        leader.complete(stored.clone());
                    }
                    stored
                }
                Err(refused) => refused,
            };
            self.cache().record(Event::Hit);
            let response = render(Some(&conditionals), &entry, Outcome::Revalidated);
            return Ok(ServiceResponse::new(http_req, response));
        }
        if res.status().is_server_error() && super::may_serve_stale_on_error(&entry, &res) {
            self.cache().record(Event::StaleHit);
            let (http_req, _) = res.into_parts();
            let response = render(Some(&conditionals), &entry, Outcome::StaleIfError);
            return Ok(ServiceResponse::new(http_req, response));
        }
        self.cache().record(Event::Miss);
        self.http_finish(res, primary, leader, true, has_auth, born, request_ms)
            .await
    }

    /// A response from the origin with no policy: store it when the RFC allows, and answer it
    /// with its header fields as received.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn http_finish(
        self,
        res: ServiceResponse<B>,
        primary: PrimaryKey,
        leader: Option<Leader<Arc<Entry>>>,
        vary_known: bool,
        has_auth: bool,
        born: u64,
        request_ms: u64,
    ) -> Result<ServiceResponse<BoxBody>, Error> {
        let options = self.config.http.unwrap_or_default();
        let asked = Asked {
            auth: has_auth,
            ..Asked::of(res.request().headers())
        };
        let is_get = res.request().method() == Method::GET;
        let verdict = storable(res.status(), res.headers(), asked, &options)
            .and_then(|()| match res.response().body().size() {
                BodySize::None => Ok(0),
                BodySize::Sized(n) if n > self.config.max_body_bytes as u64 => {
                    Err(BypassReason::BodyTooLarge)
                }
                BodySize::Sized(n) => Ok(n as usize),
                BodySize::Stream => Err(BypassReason::StreamingBody),
            })
            .and_then(|limit| {
                if is_get {
                    Ok(limit)
                } else {
                    Err(BypassReason::Method)
                }
            });
        let limit = match verdict {
            Ok(limit) => limit,
            Err(reason) => {
                // The request's own doing (a HEAD, its credentials, cookies or `no-store`):
                // another request may yet fill the entry for the waiters.
                let requests = reason.is_the_requests()
                    || !is_get
                    || (reason == BypassReason::NoStore && asked.no_store);
                release(leader, requests);
                self.cache().record(Event::Bypass);
                return Ok(bypassed(res, reason));
            }
        };
        let exchange = Exchange {
            request_ms,
            response_ms: now_ms(),
        };
        let (http_req, response) = res.into_parts();
        let (head, body) = response.into_parts();
        let body = match actix_web::body::to_bytes_limited(body, limit).await {
            Ok(Ok(bytes)) => bytes,
            _ => {
                tracing::warn!("response body failed or was longer than announced");
                return Err(actix_web::error::ErrorBadGateway("response body failed"));
            }
        };
        let vary = rfc_vary(vary_names(head.headers()).unwrap_or_default());
        let key = variant_key(&primary, &vary, http_req.headers());
        let entry = build_entry(
            &key,
            head.status(),
            head.headers(),
            body,
            exchange,
            born,
            &options,
        );
        if entry.expires_at_ms() <= exchange.response_ms {
            self.cache().record(Event::Bypass);
            let response = render(None, &entry, Outcome::Bypass(BypassReason::NotReusable));
            return Ok(ServiceResponse::new(http_req, response));
        }
        let stored = if key.as_bytes().len() <= self.config.max_key_bytes {
            self.cache().store(&primary, &key, entry).await
        } else {
            Err(Arc::new(entry))
        };
        let outcome = Outcome::Miss {
            stored: stored.is_ok(),
            vary_known,
        };
        if let (Some(leader), Ok(stored)) = (leader, &stored) {
            leader.complete(stored.clone());
        }
        let entry = stored.unwrap_or_else(|refused| refused);
        let response = render(None, &entry, outcome);
        Ok(ServiceResponse::new(http_req, response))
    }

    /// After a successful unsafe request: the target URI is purged by the caller; this purges
    /// the `Location` and `Content-Location` targets on the same host (RFC 9111 section 4.4).
    pub(crate) async fn http_invalidate_targets(
        &self,
        authority: &[u8],
        path: &str,
        res: &HeaderMap,
    ) {
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            for value in res.get_all(&name) {
                let Ok(target) = value.to_str() else { continue };
                let Some((path, query)) = resolve(authority, path, target) else {
                    continue;
                };
                let primary = self.cache().primary_key_with(
                    authority,
                    path.as_bytes(),
                    query.as_bytes(),
                    self.config.query_order(),
                );
                if let Err(err) = self.cache().purge_url(&primary).await {
                    self.cache().record(Event::Error);
                    tracing::warn!(error = %err, "could not purge a Location target");
                }
            }
        }
    }
}

/// Resolves a `Location` / `Content-Location` reference against the request's path; `None`
/// when it names another origin (`authority` is the request's `scheme://host`) or cannot be
/// read.
fn resolve(authority: &[u8], base_path: &str, target: &str) -> Option<(String, String)> {
    let target = target.trim();
    let path_and_query = if target.contains("://") {
        let scheme_end = target.find("://")? + 3;
        let host_end = target[scheme_end..]
            .find(['/', '?', '#'])
            .map_or(target.len(), |i| scheme_end + i);
        if !target.as_bytes()[..host_end].eq_ignore_ascii_case(authority) {
            return None;
        }
        let rest = &target[host_end..];
        if rest.is_empty() {
            "/".to_string()
        } else {
            rest.to_string()
        }
    } else if target.starts_with("//") {
        return None;
    } else if target.starts_with('/') {
        target.to_string()
    } else {
        let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
        format!("{dir}{target}")
    };
    let path_and_query = path_and_query
        .split('#')
        .next()
        .unwrap_or_default()
        .to_string();
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (path_and_query, String::new()),
    };
    Some((path, query))
}

/// What the client asked of the representation beyond the URL: its own `If-None-Match` /
/// `If-Modified-Since` (answered by the cache, not the origin, when the cache answers) and
/// `Range` / `If-Range` (served from a stored complete 200).
pub(crate) fn client_conditionals(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for name in [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::RANGE,
        header::IF_RANGE,
    ] {
        for value in headers.get_all(&name) {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

/// The one byte range (first, last, inclusive) a `Range` asks of a stored complete 200, or
/// `Err` when it cannot be satisfied (a 416). `None` serves the whole body: no `Range`, several
/// ranges, a unit other than bytes, a malformed one, or an `If-Range` the entry fails.
fn byte_range(asked: &HeaderMap, entry: &Entry) -> Option<Result<(u64, u64), ()>> {
    if entry.status != 200 {
        return None;
    }
    let spec = asked.get(header::RANGE)?.to_str().ok()?.trim();
    if let Some(if_range) = asked.get(header::IF_RANGE) {
        let validator = if_range.to_str().ok()?.trim();
        let strong_match = !validator.starts_with("W/") && validator == entry.etag;
        let date_match = stored(entry, "last-modified").is_some_and(|lm| lm == validator);
        if !(strong_match || date_match) {
            return None;
        }
    }
    let set = spec.strip_prefix("bytes=")?;
    if set.contains(',') {
        return None;
    }
    let len = entry.body.len() as u64;
    let (first, last) = set.trim().split_once('-')?;
    let number = |t: &str| -> Option<u64> {
        let t = t.trim();
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    let range = match (first.trim().is_empty(), last.trim().is_empty()) {
        (true, false) => {
            let suffix = number(last)?;
            if suffix == 0 || len == 0 {
                return Some(Err(()));
            }
            (len.saturating_sub(suffix), len - 1)
        }
        (false, _) => {
            let start = number(first)?;
            let end = if last.trim().is_empty() {
                u64::MAX
            } else {
                number(last)?
            };
            if end < start {
                return None;
            }
            if start >= len {
                return Some(Err(()));
            }
            (start, end.min(len - 1))
        }
        (true, true) => return None,
    };
    Some(Ok(range))
}

/// Whether the client's conditional (`If-None-Match`, else `If-Modified-Since`) says its copy
/// is current (RFC 9111 section 4.3.2).
fn not_modified(conditionals: &HeaderMap, entry: &Entry) -> bool {
    if !(200..300).contains(&entry.status) {
        return false;
    }
    if conditionals.contains_key(header::IF_NONE_MATCH) {
        return h::if_none_match(conditionals, &entry.etag)
            && (!entry.etag.is_empty() || has_star(conditionals));
    }
    let Some(since) = conditionals
        .get(header::IF_MODIFIED_SINCE)
        .and_then(http_date_ms)
    else {
        return false;
    };
    let modified = stored(entry, "last-modified")
        .or_else(|| stored(entry, "date"))
        .and_then(|v| http_date_ms(&v));
    modified.is_some_and(|m| m <= since)
}

fn has_star(conditionals: &HeaderMap) -> bool {
    conditionals
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|m| m.trim() == "*"))
}

/// Answers `req` from `entry`, evaluating the client's conditionals.
pub(crate) fn answer(
    req: ServiceRequest,
    entry: &Entry,
    outcome: Outcome,
) -> ServiceResponse<BoxBody> {
    let conditionals = client_conditionals(req.headers());
    let response = render(Some(&conditionals), entry, outcome);
    req.into_response(response)
}

/// The answer from an HTTP-semantics entry: its status and header fields as received (the
/// stored `Date` included), a fresh `Age` unless this is the miss that stored it, and the body;
/// or a 304 with the fields a 304 carries when `conditionals` say the client's copy is current.
pub(crate) fn render(
    conditionals: Option<&HeaderMap>,
    entry: &Entry,
    outcome: Outcome,
) -> HttpResponse<BoxBody> {
    let now = now_ms();
    let is_miss = matches!(outcome, Outcome::Miss { .. });
    let bodyless = conditionals.is_some_and(|c| not_modified(c, entry));
    let range = conditionals
        .filter(|_| !bodyless && !is_miss)
        .and_then(|c| byte_range(c, entry));
    let status = match range {
        _ if bodyless => StatusCode::NOT_MODIFIED,
        Some(Ok(_)) => StatusCode::PARTIAL_CONTENT,
        Some(Err(())) => StatusCode::RANGE_NOT_SATISFIABLE,
        None => StatusCode::from_u16(entry.status).unwrap_or(StatusCode::OK),
    };
    let mut res = HttpResponse::with_body(status, BoxBody::new(()));
    let headers = res.headers_mut();
    for (name, value) in &entry.headers {
        if (!is_miss && name == "age") || (bodyless && !ON_304.contains(&name.as_str())) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_maybe_shared(value.clone()),
        ) {
            headers.append(name, value);
        }
    }
    if !is_miss {
        headers.insert(header::AGE, HeaderValue::from(current_age_secs(entry, now)));
    }
    let total = entry.body.len();
    let body = match range {
        Some(Ok((first, last))) => {
            let text = format!("bytes {first}-{last}/{total}");
            if let Ok(value) = HeaderValue::from_str(&text) {
                headers.insert(header::CONTENT_RANGE, value);
            }
            // `byte_range` bounded both ends by the body's length.
            entry.body.slice(first as usize..=last as usize)
        }
        Some(Err(())) => {
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{total}")) {
                headers.insert(header::CONTENT_RANGE, value);
            }
            bytes::Bytes::new()
        }
        None => entry.body.clone(),
    };
    mark(headers, outcome, Some((entry, now)));
    if bodyless {
        res
    } else {
        res.set_body(BoxBody::new(body))
    }
}

/// `only-if-cached` with nothing usable stored (RFC 9111 section 5.2.1.7).
pub(crate) fn gateway_timeout() -> HttpResponse<BoxBody> {
    HttpResponse::GatewayTimeout().body("not cached (only-if-cached)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use cache_core::PrimaryKey;

    #[test]
    fn byte_ranges_of_a_stored_200() {
        let key = PrimaryKey::new("", b"h", b"/", b"").cache_key();
        let entry = Entry::new(key.bytes(), 200, vec![], "0123456789A".into(), 0, 1);
        let ask = |range: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::RANGE, HeaderValue::from_str(range).unwrap());
            byte_range(&h, &entry)
        };
        assert_eq!(ask("bytes=0-1"), Some(Ok((0, 1))));
        assert_eq!(ask("bytes=1-"), Some(Ok((1, 10))));
        assert_eq!(ask("bytes=-1"), Some(Ok((10, 10))));
        assert_eq!(ask("bytes=5-99"), Some(Ok((5, 10))));
        assert_eq!(ask("bytes=11-"), Some(Err(())));
        assert_eq!(ask("bytes=0-1,3-4"), None);
        assert_eq!(ask("items=0-1"), None);
        assert_eq!(ask("bytes=x-1"), None);
        assert_eq!(ask("bytes=3-1"), None);
    }

    #[test]
    fn location_targets_resolve_on_the_same_host_only() {
        let r = |t| resolve(b"http://example.com", "/a/b", t);
        assert_eq!(r("/x?q=1"), Some(("/x".into(), "q=1".into())));
        assert_eq!(r("c"), Some(("/a/c".into(), String::new())));
        assert_eq!(
            r("http://example.com/y#frag"),
            Some(("/y".into(), String::new()))
        );
        assert_eq!(r("http://other.com/y"), None);
        assert_eq!(
            r("https://example.com/y"),
            None,
            "another scheme is another origin"
        );
        assert_eq!(r("http://example.com.evil/y"), None);
        assert_eq!(r("//other.com/y"), None);
    }
}

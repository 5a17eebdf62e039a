//! The RFC 9111 rule set (the HTTP mode, [`crate::CacheMiddleware::http_semantics`]): for
//! responses that carry no `#[cached]` policy, whether and how long they are kept comes from
//! their own `Cache-Control`, `Expires`, `Vary` and validators.
//!
//! What lives here: the options, reuse (freshness, the request's directives, stale answers,
//! revalidation), what may be stored, the freshness lifetime and `Age` of a response, and the
//! merge of a 304 into the entry it confirms.
//!
//! What must stay true: a response is reused only as the RFC allows a shared cache to; stored
//! header fields are replayed as received (repeats, order within a field, odd values, the
//! stored `Date`); a 304 merged into an entry passes the same storability rules as a full
//! response; and the safety defaults of the policy mode hold unless an option lifts them: no
//! response that sets a cookie is stored, and none to a request with `Authorization` is shared
//! unless it varies on `Authorization`.

use std::sync::Arc;

use actix_web::dev::ServiceResponse;
use actix_web::http::{
    header::{self, HeaderMap, HeaderName, HeaderValue},
    StatusCode,
};
use bytes::Bytes;
use cache_core::entry::HttpMeta;
use cache_core::{CacheKey, Entry};

use super::{millis, servable, stored, stored_fields, Asked, Exchange, Reuse, Validators};
use crate::bypass::BypassReason;
pub(crate) use crate::config::HttpOptions;
use crate::directives::{self, pragma_no_cache, Directives};
use crate::http_date;
use crate::request_key::rfc_vary;

/// `CDN-Cache-Control` (RFC 9213).
const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

/// The directives that govern caching of a response: `CDN-Cache-Control` when enabled,
/// present and a valid dictionary (it then replaces `Expires` too), else `Cache-Control`.
fn governing(options: &HttpOptions, response: &HeaderMap) -> Directives {
    options
        .cdn_cache_control
        .then(|| Directives::targeted(response, &CDN_CACHE_CONTROL))
        .flatten()
        .unwrap_or_else(|| Directives::of(response, &header::CACHE_CONTROL))
}

/// Put in the extensions of a response that a handler made because it could not reach its
/// origin (a proxy's 502 or 504). The cache is then "disconnected" in the sense of RFC 9111
/// section 4.2.4 and may answer with a stale entry, unless the entry forbids it
/// (`must-revalidate`, `proxy-revalidate`, `s-maxage`, `no-cache`).
///
/// ```
/// use actix_web::{HttpMessage, HttpResponse};
/// use cache_actix::OriginUnreachable;
///
/// let mut res = HttpResponse::BadGateway().body("upstream down");
/// res.extensions_mut().insert(OriginUnreachable);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginUnreachable;

/// What an HTTP-mode entry can do for a request (RFC 9111 section 4): answer while fresh and
/// the request's `max-age`, `min-fresh` and `no-cache` accept it; answer stale where the
/// request's `max-stale` or the response's `stale-while-revalidate` allows and nothing forbids
/// it (`must-revalidate`, `no-cache`); else revalidate with its validators, or fill with it
/// standing by for an error when it has none.
pub(crate) fn reuse(
    entry: Arc<Entry>,
    meta: HttpMeta,
    request: &HeaderMap,
    now_ms: u64,
    softened: Option<u64>,
) -> Reuse {
    if !servable(&entry, request) {
        return Reuse::Fill {
            vary: Some(entry.vary().clone()),
            stale: None,
        };
    }
    let ask = Directives::of(request, &header::CACHE_CONTROL);
    let client_no_cache = ask.no_cache || pragma_no_cache(request);
    let age_ms = now_ms.saturating_sub(entry.stored_at_ms());
    // A soft purge ends freshness where it happened; the stale rules go on from there.
    let fresh_until = softened.map_or(entry.fresh_until_ms(), |at| at.min(entry.fresh_until_ms()));
    let fresh = now_ms < fresh_until && !meta.no_cache;
    let young_enough = ask
        .max_age
        .is_none_or(|max| age_ms <= max.saturating_mul(1000));
    let fresh_enough = ask
        .min_fresh
        .is_none_or(|min| fresh_until.saturating_sub(now_ms) >= min.saturating_mul(1000));
    if fresh && !client_no_cache && young_enough && fresh_enough {
        return Reuse::Fresh(entry);
    }
    let stale_by = now_ms.saturating_sub(fresh_until);
    let may_serve_stale =
        !fresh && !meta.must_revalidate && !meta.no_cache && !client_no_cache && young_enough;
    if may_serve_stale {
        let within_max_stale = ask
            .max_stale
            .is_some_and(|max| max.is_none_or(|s| stale_by <= s.saturating_mul(1000)));
        if within_max_stale {
            return Reuse::Stale(entry);
        }
        if stale_by < entry.stale_while_revalidate_ms() {
            return Reuse::StaleWhileRevalidate(entry);
        }
    }
    match validators(&entry) {
        Some(validators) => Reuse::Revalidate { entry, validators },
        // Whether the entry may stand in for an error is decided when the error comes.
        None => Reuse::Fill {
            vary: Some(entry.vary().clone()),
            stale: Some(entry),
        },
    }
}

/// What a conditional request for `entry` can send to its origin, if it has any validator.
pub(crate) fn validators(entry: &Entry) -> Option<Validators> {
    let validators = Validators {
        etag: HeaderValue::from_str(entry.etag())
            .ok()
            .filter(|_| !entry.etag().is_empty()),
        last_modified: stored(entry, "last-modified"),
    };
    (validators.etag.is_some() || validators.last_modified.is_some()).then_some(validators)
}

/// Whether a stale HTTP-mode `entry` may answer in place of the error `res`: the entry allows
/// stale answers at all, and either the origin was unreachable ([`OriginUnreachable`]) or a
/// `stale-if-error` window (the response's or the request's) covers it.
pub(crate) fn may_serve_stale_on_error<B>(
    entry: &Entry,
    meta: HttpMeta,
    res: &ServiceResponse<B>,
    now_ms: u64,
) -> bool {
    if meta.must_revalidate || meta.no_cache {
        return false;
    }
    let stale_by = now_ms.saturating_sub(entry.fresh_until_ms());
    let asked = Directives::of(res.request().headers(), &header::CACHE_CONTROL)
        .stale_if_error
        .is_some_and(|s| stale_by <= s.saturating_mul(1000));
    res.response()
        .extensions()
        .get::<OriginUnreachable>()
        .is_some()
        || stale_by < entry.stale_if_error_ms()
        || asked
}

/// Heuristic freshness: this share of the time since `Last-Modified` (RFC 9111 4.2.2 suggests
/// at most 10%).
const HEURISTIC_PERCENT: u64 = 10;

/// Status codes a cache may give heuristic freshness (RFC 9110 section 15.1), minus 206: this
/// cache does not store partial content.
const HEURISTIC_STATUSES: &[u16] = &[200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

/// Status codes this cache understands (for `must-understand`, RFC 9111 section 5.2.2.3).
const UNDERSTOOD_STATUSES: &[u16] = &[
    200, 203, 204, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 501,
];

/// Fields a 304 never changes in the stored response (RFC 9111 section 3.2): the length, and
/// the ones that describe the stored body itself.
const NOT_UPDATED: &[&str] = &["content-length", "content-encoding", "content-range"];

/// Whether a shared cache may store a response (RFC 9111 section 3) under `options`, for a
/// GET described by `asked`. Stricter than the RFC in one more way than the options say:
/// the response to a request with `Cookie` is stored only if it varies on `Cookie` or says
/// `public`, since a page answered to a session may show that session.
pub(crate) fn admit(
    status: StatusCode,
    response: &HeaderMap,
    asked: Asked,
    options: &HttpOptions,
) -> Result<(), BypassReason> {
    storable(status, response, asked, options)?;
    if asked.head {
        // A HEAD's answer may lack the body a GET would get.
        return Err(BypassReason::Method);
    }
    Ok(())
}

/// [`admit`] for any method: the rules a 304's merged fields pass too.
fn storable(
    status: StatusCode,
    response: &HeaderMap,
    asked: Asked,
    options: &HttpOptions,
) -> Result<(), BypassReason> {
    let (request_no_store, request_has_auth) = (asked.no_store, asked.auth);
    let cc = governing(options, response);
    let code = status.as_u16();
    // 206 and 304 are not stored: this cache neither combines ranges nor keeps bodiless answers.
    if !(200..600).contains(&code) || code == 206 || code == 304 {
        return Err(BypassReason::Status);
    }
    let understood = cc.must_understand && UNDERSTOOD_STATUSES.contains(&code);
    if cc.must_understand && !understood {
        return Err(BypassReason::Status);
    }
    if (cc.no_store && !understood) || request_no_store {
        return Err(BypassReason::NoStore);
    }
    if cc.private {
        return Err(BypassReason::Private);
    }
    if response.contains_key(header::SET_COOKIE) && !options.store_set_cookie {
        return Err(BypassReason::SetCookie);
    }
    let vary = vary_names(response).ok_or(BypassReason::Vary)?;
    if asked.cookie && !cc.public && !vary.iter().any(|v| v == "cookie") {
        return Err(BypassReason::Cookie);
    }
    if request_has_auth {
        let rfc_allows = cc.public || cc.s_maxage.is_some() || cc.must_revalidate;
        let keyed = vary.iter().any(|v| v == "authorization");
        if !rfc_allows || !(keyed || options.share_authorized) {
            return Err(BypassReason::Authorization);
        }
    }
    let explicit = cc.s_maxage.is_some()
        || cc.max_age.is_some()
        || (response.contains_key(header::EXPIRES) && !cc.targeted)
        || cc.public;
    let heuristic = HEURISTIC_STATUSES.contains(&code);
    if !(explicit || heuristic) {
        return Err(BypassReason::Status);
    }
    Ok(())
}

/// The lowercase names in `Vary`, or `None` for `Vary: *` (never matches a later request).
fn vary_names(headers: &HeaderMap) -> Option<Vec<String>> {
    let mut names = Vec::new();
    for value in headers.get_all(header::VARY) {
        let text = value.to_str().ok()?;
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return None;
            }
            let name = name.to_ascii_lowercase();
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Some(names)
}

/// The vary list an HTTP-mode entry is keyed under: the response's `Vary` names, with
/// `Accept-Language` normalised the RFC's way. Empty for `Vary: *`, which [`admit`] refuses.
pub(crate) fn keyed_vary(response: &HeaderMap) -> Vec<String> {
    rfc_vary(vary_names(response).unwrap_or_default())
}

/// An HTTP date in Unix ms; `None` when malformed.
pub(crate) fn http_date_ms(value: &HeaderValue) -> Option<u64> {
    http_date::parse(value.to_str().ok()?)?.checked_mul(1000)
}

/// The `Age` of a response in seconds: the first member of the field's combined list (RFC
/// 9110 5.3). A first member that is not `1*DIGIT` (a sign, a fraction, text) is ignored, as if
/// the field were absent (RFC 9111 5.1 asks a cache to ignore an invalid Age).
fn age_secs(headers: &HeaderMap) -> u64 {
    headers
        .get_all(header::AGE)
        .flat_map(|line| line.as_bytes().split(|b| *b == b','))
        .next()
        .and_then(|first| std::str::from_utf8(first.trim_ascii()).ok())
        .and_then(directives::delta_seconds)
        .unwrap_or(0)
}

/// How long a response stays fresh, and its age when received: everything its entry needs.
struct Freshness {
    /// The instant the response's age was zero (Unix ms).
    pub age_origin_ms: u64,
    pub lifetime_ms: u64,
    pub swr_ms: u64,
    pub sie_ms: u64,
    pub meta: HttpMeta,
}

/// Freshness lifetime (RFC 9111 4.2.1, shared cache: `s-maxage`, `max-age`, `Expires - Date`,
/// then heuristics) and the corrected initial age (4.2.3) of a response.
fn freshness(
    status: StatusCode,
    headers: &HeaderMap,
    exchange: Exchange,
    options: &HttpOptions,
) -> Freshness {
    let cc = governing(options, headers);
    let date_ms = headers
        .get(header::DATE)
        .and_then(http_date_ms)
        .unwrap_or(exchange.response_ms);
    let age = age_secs(headers);
    let apparent_age = exchange.response_ms.saturating_sub(date_ms);
    let response_delay = exchange.response_ms.saturating_sub(exchange.request_ms);
    let corrected_age = age.saturating_mul(1000).saturating_add(response_delay);
    let initial_age = apparent_age.max(corrected_age);

    let lifetime_ms = if cc.no_cache {
        0
    } else if let Some(secs) = cc.s_maxage.or(cc.max_age) {
        secs.saturating_mul(1000)
    } else if let Some(expires) = headers
        .get_all(header::EXPIRES)
        .next()
        .filter(|_| !cc.targeted)
    {
        // A malformed Expires (or a second line) means "already expired" (RFC 9111 5.3).
        match (
            http_date_ms(expires),
            headers.get_all(header::EXPIRES).count(),
        ) {
            (Some(at), 1) => at.saturating_sub(date_ms),
            _ => 0,
        }
    } else if HEURISTIC_STATUSES.contains(&status.as_u16()) || cc.public {
        headers
            .get(header::LAST_MODIFIED)
            .and_then(http_date_ms)
            .map_or(0, |modified| {
                date_ms.saturating_sub(modified) / 100 * HEURISTIC_PERCENT
            })
    } else {
        0
    };
    let has_validator =
        headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED);
    let age_origin_ms = exchange.response_ms.saturating_sub(initial_age);
    let fresh_until = age_origin_ms.saturating_add(lifetime_ms);
    let swr_ms = cc.stale_while_revalidate.unwrap_or(0).saturating_mul(1000);
    let sie_ms = cc.stale_if_error.unwrap_or(0).saturating_mul(1000);
    // Kept past freshness when it could still serve: revalidated through a validator, or
    // served stale where a client (`max-stale`), the origin (`stale-*`) or an outage allows.
    let keep_until_ms = if has_validator || lifetime_ms > 0 || swr_ms > 0 || sie_ms > 0 {
        fresh_until.saturating_add(millis(options.keep_stale))
    } else {
        fresh_until
    };
    Freshness {
        age_origin_ms,
        lifetime_ms,
        swr_ms,
        sie_ms,
        meta: HttpMeta {
            must_revalidate: cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some(),
            no_cache: cc.no_cache,
            keep_until_ms,
        },
    }
}

/// The entry for a response stored under HTTP semantics (tags: none beyond the URL's, which
/// `Cache::store` adds).
pub(crate) fn entry(
    key: &CacheKey,
    status: StatusCode,
    headers: &HeaderMap,
    body: Bytes,
    exchange: Exchange,
    born: u64,
    options: &HttpOptions,
) -> Entry {
    let fresh = freshness(status, headers, exchange, options);
    let etag = headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let vary = keyed_vary(headers);
    let shares_authorized = options.share_authorized || vary.iter().any(|v| v == "authorization");
    let entry = Entry::with_etag(
        key.bytes(),
        status.as_u16(),
        stored_fields(headers, &[]),
        body,
        etag,
        fresh.age_origin_ms,
        fresh.age_origin_ms.saturating_add(fresh.lifetime_ms),
    );
    let entry = if vary.is_empty() {
        entry
    } else {
        entry.with_vary(vary.into())
    };
    entry
        .with_stale_while_revalidate_ms(fresh.swr_ms)
        .with_stale_if_error_ms(fresh.sie_ms)
        .with_born(born)
        .with_shares_authorized(shares_authorized)
        .with_http(Some(fresh.meta))
}

/// Why a 304 was not merged into the entry it confirmed, and whether the origin withdrew the
/// response from shared caches (`private` or `no-store` on the 304), so that the stored entry
/// must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotMerged {
    pub(crate) reason: BypassReason,
    pub(crate) withdrawn: bool,
}

/// `entry` refreshed by a 304 (RFC 9111 section 4.3.4) received in `exchange`, born at `born`,
/// and whether it may be stored; it answers the client that asked either way.
///
/// The merged fields are a new response as far as storing goes: the client that asked gets its
/// own answer, but what it may not share stays out of the entry. Only the response's side is
/// weighed: the body was stored for a request that passed the request's rules, and a client's
/// own `no-store` keeps only its answer out (and never purges).
pub(crate) fn merge(
    entry: &Entry,
    not_modified: &HeaderMap,
    asked: Asked,
    key: &CacheKey,
    exchange: Exchange,
    born: u64,
    options: &HttpOptions,
) -> (Entry, Result<(), NotMerged>) {
    let merged = updated_fields(entry, not_modified);
    let status = StatusCode::from_u16(entry.status()).unwrap_or(StatusCode::OK);
    let updated = self::entry(
        key,
        status,
        &merged,
        entry.body().clone(),
        exchange,
        born,
        options,
    );
    let verdict = match storable(status, &merged, Asked::default(), options) {
        Ok(()) if asked.no_store => Err(BypassReason::NoStore),
        verdict => verdict,
    };
    let verdict = verdict.map_err(|reason| NotMerged {
        reason,
        withdrawn: !asked.no_store
            && matches!(reason, BypassReason::NoStore | BypassReason::Private),
    });
    (updated, verdict)
}

/// The stored fields of `entry` updated by a 304 (RFC 9111 section 3.2): every field the 304
/// carries replaces the stored lines of that name, except the ones never updated.
pub(crate) fn updated_fields(entry: &Entry, not_modified: &HeaderMap) -> HeaderMap {
    let mut merged = HeaderMap::new();
    for (name, value) in entry.headers() {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_maybe_shared(value.clone()),
        ) {
            merged.append(name, value);
        }
    }
    let fresh: Vec<(String, Bytes)> = stored_fields(not_modified, &[]);
    let mut replaced: Vec<&str> = Vec::new();
    for (name, value) in &fresh {
        if NOT_UPDATED.contains(&name.as_str()) {
            continue;
        }
        let (Ok(header), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_maybe_shared(value.clone()),
        ) else {
            continue;
        };
        if !replaced.contains(&name.as_str()) {
            merged.remove(&header);
            replaced.push(name);
        }
        merged.append(header, value);
    }
    merged
}

/// The `Location` and `Content-Location` targets of a successful unsafe request's response
/// that name the same origin (`authority` is the request's `scheme://host`, `path` its path),
/// as (path, query): RFC 9111 section 4.4 has a cache invalidate them with the target URI.
pub(crate) fn invalidated_targets(
    authority: &[u8],
    path: &str,
    response: &HeaderMap,
) -> Vec<(String, String)> {
    [header::LOCATION, header::CONTENT_LOCATION]
        .iter()
        .flat_map(|name| response.get_all(name))
        .filter_map(|value| value.to_str().ok())
        .filter_map(|target| resolve(authority, path, target))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::rules::test_headers as headers;

    const NOW: u64 = 1_700_000_000_000;
    const AT: Exchange = Exchange {
        request_ms: NOW,
        response_ms: NOW,
    };

    fn lifetime(lines: &[(&str, &str)]) -> u64 {
        freshness(StatusCode::OK, &headers(lines), AT, &HttpOptions::default()).lifetime_ms
    }

    #[test]
    fn s_maxage_beats_max_age_beats_expires() {
        assert_eq!(
            lifetime(&[("cache-control", "max-age=10, s-maxage=20")]),
            20_000
        );
        let date = httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_millis(NOW));
        let later =
            httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_millis(NOW + 30_000));
        assert_eq!(
            lifetime(&[
                ("cache-control", "max-age=10"),
                ("date", &date),
                ("expires", &later)
            ]),
            10_000
        );
        assert_eq!(lifetime(&[("date", &date), ("expires", &later)]), 30_000);
        assert_eq!(lifetime(&[("date", &date), ("expires", "0")]), 0);
    }

    #[test]
    fn heuristics_only_with_last_modified_and_a_heuristic_status() {
        let date = httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_millis(NOW));
        let modified = httpdate::fmt_http_date(
            std::time::UNIX_EPOCH + Duration::from_millis(NOW - 100_000_000),
        );
        let lm = [
            ("date", date.as_str()),
            ("last-modified", modified.as_str()),
        ];
        assert_eq!(lifetime(&lm), 10_000_000);
        assert_eq!(lifetime(&[("date", &date)]), 0);
        let f = freshness(
            StatusCode::CREATED,
            &headers(&lm),
            AT,
            &HttpOptions::default(),
        );
        assert_eq!(f.lifetime_ms, 0);
    }

    #[test]
    fn age_is_corrected_and_its_first_member_counts() {
        let f = freshness(
            StatusCode::OK,
            &headers(&[("cache-control", "max-age=100"), ("age", "30")]),
            Exchange {
                request_ms: NOW - 2_000,
                response_ms: NOW,
            },
            &HttpOptions::default(),
        );
        assert_eq!(f.age_origin_ms, NOW - 32_000);
        assert_eq!(f.lifetime_ms, 100_000);
        let origin = |lines: &[(&str, &str)]| {
            freshness(StatusCode::OK, &headers(lines), AT, &HttpOptions::default()).age_origin_ms
        };
        for ignored in ["abc", "-7200", "7200.0"] {
            assert_eq!(origin(&[("age", ignored)]), NOW, "{ignored}");
        }
        assert_eq!(origin(&[("age", "0, 7200")]), NOW);
        assert_eq!(origin(&[("age", "7200"), ("age", "0")]), NOW - 7_200_000);
    }

    #[test]
    fn storable_follows_the_rfc_and_the_safety_defaults() {
        let opts = HttpOptions::default();
        let ok = |lines: &[(&str, &str)], auth: bool| {
            let asked = Asked {
                auth,
                ..Asked::default()
            };
            storable(StatusCode::OK, &headers(lines), asked, &opts)
        };
        assert_eq!(ok(&[("cache-control", "max-age=5")], false), Ok(()));
        assert_eq!(
            ok(&[("cache-control", "no-store")], false),
            Err(BypassReason::NoStore)
        );
        assert_eq!(
            ok(&[("cache-control", "private, max-age=5")], false),
            Err(BypassReason::Private)
        );
        assert_eq!(
            ok(
                &[("cache-control", "max-age=5"), ("set-cookie", "a=b")],
                false
            ),
            Err(BypassReason::SetCookie)
        );
        assert_eq!(
            ok(&[("cache-control", "max-age=5"), ("vary", "*")], false),
            Err(BypassReason::Vary)
        );
        assert_eq!(
            ok(&[("cache-control", "max-age=5, public")], true),
            Err(BypassReason::Authorization)
        );
        assert_eq!(
            ok(
                &[
                    ("cache-control", "max-age=5, public"),
                    ("vary", "Authorization")
                ],
                true
            ),
            Ok(())
        );
        let lifted = HttpOptions::default().share_authorized(true);
        assert_eq!(
            storable(
                StatusCode::OK,
                &headers(&[("cache-control", "s-maxage=5")]),
                Asked {
                    auth: true,
                    ..Asked::default()
                },
                &lifted
            ),
            Ok(())
        );
        assert_eq!(
            storable(StatusCode::CREATED, &headers(&[]), Asked::default(), &opts),
            Err(BypassReason::Status)
        );
        assert_eq!(
            storable(
                StatusCode::OK,
                &headers(&[("cache-control", "no-store, must-understand")]),
                Asked::default(),
                &opts
            ),
            Ok(())
        );
        let cookie = Asked {
            cookie: true,
            ..Asked::default()
        };
        let with_cookie =
            |lines: &[(&str, &str)]| storable(StatusCode::OK, &headers(lines), cookie, &opts);
        assert_eq!(
            with_cookie(&[("cache-control", "max-age=5")]),
            Err(BypassReason::Cookie)
        );
        assert_eq!(
            with_cookie(&[("cache-control", "max-age=5"), ("vary", "Cookie")]),
            Ok(())
        );
        assert_eq!(
            with_cookie(&[("cache-control", "public, max-age=5")]),
            Ok(())
        );
    }

    #[test]
    fn a_304_replaces_fields_but_not_the_length_or_encoding() {
        let key = cache_core::PrimaryKey::new("", b"h", b"/", b"").cache_key();
        let entry = Entry::new(key.bytes(), 200, vec![], "x".into(), 0, 1).with_headers(vec![
            ("x-a".into(), Bytes::from_static(b"1")),
            ("x-a".into(), Bytes::from_static(b"2")),
            ("content-encoding".into(), Bytes::from_static(b"gzip")),
            ("x-b".into(), Bytes::from_static(b"keep")),
        ]);
        let merged = updated_fields(
            &entry,
            &headers(&[("x-a", "3"), ("content-encoding", "br"), ("x-c", "new")]),
        );
        let a: Vec<_> = merged.get_all("x-a").collect();
        assert_eq!(a, vec![&HeaderValue::from_static("3")]);
        assert_eq!(merged.get("content-encoding").unwrap(), "gzip");
        assert_eq!(merged.get("x-b").unwrap(), "keep");
        assert_eq!(merged.get("x-c").unwrap(), "new");
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

//! The two rule sets behind one interface: [`reuse`] (what a stored entry can do for a request)
//! and [`admit`] (whether a response may become an entry). The flow asks; the rules answer.
//!
//! - [`policy`]: a `#[cached]` policy or the scope rule decides (the policy mode);
//! - [`http`]: the response's own `Cache-Control`, `Expires`, `Vary` and validators decide, as
//!   RFC 9111 lets a shared cache (the HTTP mode).
//!
//! An entry remembers which set stored it (`Entry::http`), so reuse follows the entry; admission
//! follows the response (a policy in its extensions or a scope rule covering the route wins over
//! the HTTP mode).
//!
//! What must stay true: every decision here is a pure function of the entry, the request, the
//! response and the time it is given, so it can be tested without a server; and every rule of
//! "what is never stored" and "who may be answered from an entry" is written here once.

pub(crate) mod http;
pub(crate) mod policy;

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::{
    header::{self, HeaderMap, HeaderValue},
    Method,
};
use actix_web::HttpResponse;
use bytes::Bytes;
use cache_core::{CacheKey, Entry, Lookup};

use crate::bypass::BypassReason;
use crate::config::Config;
use crate::directives::{pragma_no_cache, Directives};
use crate::responder::ResolvedPolicy;

/// What a stored entry can do for a request.
#[derive(Debug)]
pub(crate) enum Reuse {
    /// Answer from it (`HIT`).
    Fresh(Arc<Entry>),
    /// Answer it stale without refreshing it: the client's `max-stale` accepts it (`STALE`).
    Stale(Arc<Entry>),
    /// Inside its stale-while-revalidate window: answer it stale (`STALE`); the next request
    /// that finds it so refreshes it.
    StaleWhileRevalidate(Arc<Entry>),
    /// Ask the origin whether it still stands, with the entry's validators.
    Revalidate {
        entry: Arc<Entry>,
        validators: Validators,
    },
    /// Run the handler. `vary` is the resource's vary list when one is stored (the request's
    /// variant, and its single-flight, are then known before the handler answers); `stale` is
    /// the entry that may stand in if the handler fails.
    Fill {
        vary: Option<Arc<[String]>>,
        stale: Option<Arc<Entry>>,
    },
    /// The client said `only-if-cached` and nothing stored answers it: a 504.
    OnlyIfCached,
}

/// The validators a revalidation sends in place of the client's own conditionals.
#[derive(Debug, Clone, Default)]
pub(crate) struct Validators {
    pub(crate) etag: Option<HeaderValue>,
    pub(crate) last_modified: Option<HeaderValue>,
}

/// What a stored entry can do for a request with `request` headers at `now_ms`, given what the
/// lookup found. `http_mode`: the middleware is an RFC 9111 cache, which honours the request's
/// `only-if-cached`. `softened`: when a soft purge made the entry stale (Unix ms), which ends its
/// freshness there (the lookup has counted it for policy entries already).
pub(crate) fn reuse(
    lookup: Lookup,
    request: &HeaderMap,
    http_mode: bool,
    now_ms: u64,
    softened: Option<u64>,
) -> Reuse {
    let at = At { now_ms, softened };
    let reuse = match lookup {
        Lookup::Miss {
            stale_if_error: None,
            vary,
        } => Reuse::Fill { vary, stale: None },
        Lookup::Fresh(entry) => by_entry(entry, Found::Fresh, request, at),
        Lookup::Stale(entry) => by_entry(entry, Found::StaleWhileRevalidate, request, at),
        Lookup::Retained(entry) => by_entry(entry, Found::Retained, request, at),
        Lookup::Miss {
            stale_if_error: Some(entry),
            vary,
        } => by_entry(entry, Found::StaleIfError(vary), request, at),
    };
    let answered = matches!(
        reuse,
        Reuse::Fresh(_) | Reuse::Stale(_) | Reuse::StaleWhileRevalidate(_)
    );
    if http_mode && !answered && Directives::of(request, &header::CACHE_CONTROL).only_if_cached {
        return Reuse::OnlyIfCached;
    }
    reuse
}

/// When a reuse decision is taken, and when a soft purge ended the entry's freshness.
#[derive(Clone, Copy)]
struct At {
    now_ms: u64,
    softened: Option<u64>,
}

/// The rules of the set that stored `entry`.
fn by_entry(entry: Arc<Entry>, found: Found, request: &HeaderMap, at: At) -> Reuse {
    match entry.http() {
        Some(meta) => http::reuse(entry, meta, request, at.now_ms, at.softened),
        None => policy::reuse(entry, found, request),
    }
}

/// Where the lookup found an entry in its life (by the entry's own windows).
pub(crate) enum Found {
    /// Inside its ttl.
    Fresh,
    /// Past its ttl, inside its stale-while-revalidate window.
    StaleWhileRevalidate,
    /// Past every window but kept (for revalidation).
    Retained,
    /// Usable only if the handler fails; the resource's vary list.
    StaleIfError(Option<Arc<[String]>>),
}

/// Whether `entry` may answer a request with `headers` at all: one with `Authorization` only
/// when its rule shared such responses (public, or varied on it, so the key already separates
/// users); one with `Cookie` only when it does not come from a scope rule that ignores cookies.
pub(crate) fn servable(entry: &Entry, headers: &HeaderMap) -> bool {
    (entry.shares_authorized() || !headers.contains_key(header::AUTHORIZATION))
        && (entry.shares_cookied() || !headers.contains_key(header::COOKIE))
}

/// Whether the client may force the handler to run (`Cache-Control: no-cache` or `max-age=0`,
/// `Pragma: no-cache`): only with [`crate::CacheMiddleware::honor_client_no_cache`], since
/// otherwise any client could defeat the cache at will. Nothing stored is then looked up.
pub(crate) fn forces_refresh(config: &Config, headers: &HeaderMap) -> bool {
    if !config.honor_client_no_cache {
        return false;
    }
    let ask = Directives::of(headers, &header::CACHE_CONTROL);
    ask.no_cache || ask.max_age == Some(0) || pragma_no_cache(headers)
}

/// Whether a stale `entry` may answer in place of the handler's error `res`: a policy's entry
/// always (the lookup found it inside its stale-if-error window); an HTTP-mode entry as the RFC
/// says ([`http::may_serve_stale_on_error`]).
pub(crate) fn stands_in_for_error<B>(entry: &Entry, res: &ServiceResponse<B>, now_ms: u64) -> bool {
    match entry.http() {
        None => true,
        Some(meta) => http::may_serve_stale_on_error(entry, meta, res, now_ms),
    }
}

/// What of the request decides admission, read before the inner service runs (an inner
/// middleware could change the request's headers; the key and the lookup saw them as sent).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Asked {
    /// The request's own `Cache-Control: no-store`.
    pub(crate) no_store: bool,
    /// It carried `Authorization`.
    pub(crate) auth: bool,
    /// It carried `Cookie`.
    pub(crate) cookie: bool,
    /// It was a HEAD: its answer may lack the body a GET would get.
    pub(crate) head: bool,
}

impl Asked {
    pub(crate) fn of(method: &Method, request: &HeaderMap) -> Asked {
        Asked {
            no_store: Directives::of(request, &header::CACHE_CONTROL).no_store,
            auth: request.contains_key(header::AUTHORIZATION),
            cookie: request.contains_key(header::COOKIE),
            head: method == Method::HEAD,
        }
    }

    /// Whether a refusal lies in this request rather than in the response: another request for
    /// the same variant could get a shareable answer, so a fill this request led hands the lead
    /// on instead of releasing every waiter.
    pub(crate) fn is_the_reason(&self, reason: BypassReason) -> bool {
        reason.is_the_requests() || self.head || (reason == BypassReason::NoStore && self.no_store)
    }
}

/// When the request left and the response arrived (Unix ms), for the age calculation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exchange {
    pub(crate) request_ms: u64,
    pub(crate) response_ms: u64,
}

/// A response admitted to the cache, before its body is read.
pub(crate) struct Draft {
    /// The most body bytes to read (what `Content-Length` announced).
    pub(crate) limit: usize,
    /// Whether the entry is stored; a HEAD's answer under a policy is answered from the draft
    /// and kept from no one else.
    pub(crate) keep: bool,
    rules: DraftRules,
}

enum DraftRules {
    Policy(ResolvedPolicy),
    Http(http::HttpOptions, Exchange),
}

/// Whether the response `res` to a request that `asked` may be stored: under its policy or the
/// scope rule when it has one, else under the HTTP mode when it is on. `Err` names the reason
/// it is passed through.
pub(crate) fn admit<B: MessageBody>(
    config: &Config,
    res: &ServiceResponse<B>,
    asked: Asked,
    exchange: Exchange,
) -> Result<Draft, BypassReason> {
    let policy = res
        .response()
        .extensions()
        .get::<ResolvedPolicy>()
        .cloned()
        .or_else(|| config.scope_rule(res.request().match_info().as_str()));
    let (keep, rules) = match (policy, config.http) {
        (Some(policy), _) => {
            policy::admit(&policy, res.status(), res.headers(), asked)?;
            (!asked.head, DraftRules::Policy(policy))
        }
        (None, Some(options)) => {
            http::admit(res.status(), res.headers(), asked, &options)?;
            (true, DraftRules::Http(options, exchange))
        }
        (None, None) => return Err(BypassReason::NoPolicy),
    };
    let limit = match res.response().body().size() {
        BodySize::None => 0,
        BodySize::Sized(n) if n > config.max_body_bytes as u64 => {
            return Err(BypassReason::BodyTooLarge)
        }
        BodySize::Sized(n) => n as usize,
        BodySize::Stream => return Err(BypassReason::StreamingBody),
    };
    Ok(Draft { limit, keep, rules })
}

impl Draft {
    /// Whether the cache answers the client's conditionals on this response: a policy's handler
    /// ignores them (the cache sends the 304), an origin behind the HTTP mode answered them
    /// itself.
    pub(crate) fn answers_conditionals(&self) -> bool {
        matches!(self.rules, DraftRules::Policy(_))
    }

    /// The vary list the entry is keyed under.
    pub(crate) fn vary(&self, response: &HeaderMap) -> Arc<[String]> {
        match &self.rules {
            DraftRules::Policy(policy) => Arc::from(policy.policy.vary_headers()),
            DraftRules::Http(..) => http::keyed_vary(response).into(),
        }
    }

    /// The entry for the response `head` with `body`, stored under `key`, born at `born` (the
    /// tag-clock reading taken before the handler ran), and whether it may be stored: `Err` for
    /// an entry that answers this request but no other (the HTTP mode's response that could
    /// never be reused).
    pub(crate) fn entry(
        self,
        key: &CacheKey,
        head: &HttpResponse<()>,
        body: Bytes,
        born: u64,
        now_ms: u64,
    ) -> (Entry, Result<(), BypassReason>) {
        match self.rules {
            DraftRules::Policy(policy) => (
                policy::entry(key, head, body, &policy, born, now_ms),
                Ok(()),
            ),
            DraftRules::Http(options, exchange) => {
                let entry = http::entry(
                    key,
                    head.status(),
                    head.headers(),
                    body,
                    exchange,
                    born,
                    &options,
                );
                let reusable = entry.expires_at_ms() > exchange.response_ms;
                (
                    entry,
                    reusable.then_some(()).ok_or(BypassReason::NotReusable),
                )
            }
        }
    }
}

/// Hop-by-hop header fields (RFC 9110 section 7.6.1, plus the older `Keep-Alive` and
/// `Proxy-Connection`): they describe one connection, so no cache stores or replays them.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Response fields never stored besides the hop-by-hop ones, in either mode: the length (actix
/// writes it from the body) and the cache's own.
const NEVER_STORED: &[&str] = &["content-length", "x-cache", "cache-status", "cache-tag"];

/// The header fields of a response as they are stored: in order, repeats kept, minus the
/// hop-by-hop ones, any named in `Connection`, the ones never stored, and `also` (what a rule
/// set recomputes for every answer).
pub(crate) fn stored_fields(headers: &HeaderMap, also: &[&str]) -> Vec<(String, Bytes)> {
    let connection: Vec<String> = headers
        .get_all(header::CONNECTION)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    headers
        .iter()
        .filter(|(name, _)| {
            let name = name.as_str();
            !HOP_BY_HOP.contains(&name)
                && !NEVER_STORED.contains(&name)
                && !also.contains(&name)
                && !connection.iter().any(|c| c == name)
        })
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                Bytes::copy_from_slice(value.as_bytes()),
            )
        })
        .collect()
}

/// The first stored line of `name` in `entry`, as a header value.
pub(crate) fn stored(entry: &Entry, name: &str) -> Option<HeaderValue> {
    entry
        .headers()
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| HeaderValue::from_maybe_shared(v.clone()).ok())
}

/// A duration in whole milliseconds, saturating instead of wrapping for absurd settings.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Header fields from `(name, value)` lines, for the rule sets' unit tests.
#[cfg(test)]
pub(crate) fn test_headers(lines: &[(&str, &str)]) -> HeaderMap {
    use actix_web::http::header::HeaderName;
    let mut map = HeaderMap::new();
    for (name, value) in lines {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use cache_core::PrimaryKey;

    use super::test_headers as headers;

    fn entry(fresh_until: u64) -> Arc<Entry> {
        let key = PrimaryKey::new("", b"h", b"/", b"").cache_key();
        Arc::new(Entry::new(
            key.bytes(),
            200,
            vec![],
            "x".into(),
            0,
            fresh_until,
        ))
    }

    #[test]
    fn a_policy_entry_answers_only_whom_its_rule_shares_with() {
        let plain = headers(&[]);
        let authorized = headers(&[("authorization", "Bearer a")]);
        let cookied = headers(&[("cookie", "sid=1")]);
        let fresh = || Lookup::Fresh(entry(10));
        assert!(matches!(
            reuse(fresh(), &plain, false, 5, None),
            Reuse::Fresh(_)
        ));
        assert!(matches!(
            reuse(fresh(), &authorized, false, 5, None),
            Reuse::Fill {
                vary: Some(_),
                stale: None
            }
        ));
        let scoped = Arc::new(Entry::clone(&entry(10)).with_shares_cookied(false));
        assert!(matches!(
            reuse(Lookup::Fresh(scoped), &cookied, false, 5, None),
            Reuse::Fill { .. }
        ));
        assert!(matches!(
            reuse(fresh(), &cookied, false, 5, None),
            Reuse::Fresh(_)
        ));
    }

    #[test]
    fn only_if_cached_is_a_504_in_the_http_mode_alone() {
        let ask = headers(&[("cache-control", "only-if-cached")]);
        let miss = || Lookup::Miss {
            stale_if_error: None,
            vary: None,
        };
        assert!(matches!(
            reuse(miss(), &ask, true, 5, None),
            Reuse::OnlyIfCached
        ));
        assert!(matches!(
            reuse(miss(), &ask, false, 5, None),
            Reuse::Fill { .. }
        ));
        // A fresh entry answers it.
        assert!(matches!(
            reuse(Lookup::Fresh(entry(10)), &ask, true, 5, None),
            Reuse::Fresh(_)
        ));
    }

    #[test]
    fn the_client_forces_a_refresh_only_when_allowed_and_max_age_is_read_as_a_number() {
        let mut config = Config::new(cache_core::Cache::memory());
        let zero = headers(&[("cache-control", "max-age=0")]);
        assert!(!forces_refresh(&config, &zero));
        config.honor_client_no_cache = true;
        assert!(forces_refresh(&config, &zero));
        assert!(forces_refresh(&config, &headers(&[("pragma", "no-cache")])));
        assert!(forces_refresh(
            &config,
            &headers(&[("cache-control", "No-Cache")])
        ));
        // Five seconds, not zero: the old substring reader read `max-age=05` as `max-age=0`.
        assert!(!forces_refresh(
            &config,
            &headers(&[("cache-control", "max-age=05")])
        ));
    }

    #[test]
    fn stored_fields_drop_connection_fields_and_the_caches_own() {
        let fields = stored_fields(
            &headers(&[
                ("connection", "x-private"),
                ("x-private", "1"),
                ("content-length", "3"),
                ("cache-tag", "t"),
                ("x-kept", "1"),
                ("date", "d"),
            ]),
            &["date"],
        );
        let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["x-kept"]);
    }

    #[test]
    fn a_refusal_is_the_requests_when_a_plain_get_could_do_better() {
        let head = Asked {
            head: true,
            ..Asked::default()
        };
        assert!(head.is_the_reason(BypassReason::SetCookie));
        let plain = Asked::default();
        assert!(!plain.is_the_reason(BypassReason::SetCookie));
        assert!(plain.is_the_reason(BypassReason::Authorization));
        let no_store = Asked {
            no_store: true,
            ..Asked::default()
        };
        assert!(no_store.is_the_reason(BypassReason::NoStore));
        assert!(!plain.is_the_reason(BypassReason::NoStore));
    }
}

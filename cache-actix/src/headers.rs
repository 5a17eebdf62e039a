//! The headers the cache writes and the one it matches: `x-cache`, `cache-status` (RFC 9211)
//! from an [`Outcome`], `cache-control` and `expires` of a policy's answers, and `If-None-Match`
//! matching. (`Cache-Control` is parsed in `directives.rs`.)
//!
//! What must stay true: parsing never fails loudly. A malformed or non-UTF-8 header reads as
//! "directive absent" / "no match", so bad input can only cost a cache hit, never an error.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use cache_core::{Entry, Visibility};

use crate::bypass::BypassReason;

/// `x-cache`: what the cache did, in one word.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
/// `cache-status` (RFC 9211).
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
/// `cache-tag`: a handler may list extra tags in it; the middleware removes it before the client sees it.
pub const CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");

/// The cache's name in `cache-status`.
const CACHE_NAME: &str = "cache-actix";

/// How an answer came about; rendered into `x-cache` and `cache-status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Fresh entry.
    Hit,
    /// Fresh entry filled by another request we waited for.
    Collapsed,
    /// Stale entry inside stale-while-revalidate.
    StaleRevalidate,
    /// Stale entry because the handler failed.
    StaleIfError,
    /// A stale entry the origin confirmed with a 304 (HTTP semantics mode).
    Revalidated,
    /// Handler ran; `stored` says whether the result was kept, `vary_known` whether the
    /// resource was known (a `vary-miss`) or not (a `uri-miss`).
    Miss { stored: bool, vary_known: bool },
    /// Left alone.
    Bypass(BypassReason),
}

impl Outcome {
    pub(crate) fn x_cache(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Outcome::Hit | Outcome::Collapsed | Outcome::Revalidated => "HIT",
            Outcome::StaleRevalidate | Outcome::StaleIfError => "STALE",
            Outcome::Miss { .. } => "MISS",
            Outcome::Bypass(_) => "BYPASS",
        })
    }

    pub(crate) fn cache_status(self, entry: Option<&Entry>, now_ms: u64) -> HeaderValue {
        let ttl = entry.map(|e| (e.fresh_until_ms() as i128 - now_ms as i128).div_euclid(1000));
        let text = match (self, ttl) {
            // The hit and miss paths: no formatting machinery, one copy.
            (Outcome::Hit, Some(ttl)) => return HIT_TTLS.get(ttl, || with_ttl("; hit; ttl=", ttl)),
            (Outcome::Collapsed, Some(ttl)) => {
                format!("{CACHE_NAME}; hit; ttl={ttl}; detail=collapsed")
            }
            (Outcome::StaleRevalidate, Some(ttl)) => {
                format!("{CACHE_NAME}; hit; ttl={ttl}; fwd=stale; detail=stale-while-revalidate")
            }
            (Outcome::StaleIfError, Some(ttl)) => {
                format!("{CACHE_NAME}; hit; ttl={ttl}; detail=stale-if-error")
            }
            (Outcome::Revalidated, Some(ttl)) => {
                format!("{CACHE_NAME}; fwd=stale; fwd-status=304; stored; ttl={ttl}")
            }
            (Outcome::Miss { stored, vary_known }, ttl) => {
                let fwd = if vary_known { "vary-miss" } else { "uri-miss" };
                match (stored, ttl, vary_known) {
                    (true, Some(ttl), false) => {
                        return with_ttl("; fwd=uri-miss; stored; ttl=", ttl)
                    }
                    (true, Some(ttl), true) => {
                        return with_ttl("; fwd=vary-miss; stored; ttl=", ttl)
                    }
                    _ => format!("{CACHE_NAME}; fwd={fwd}"),
                }
            }
            (Outcome::Bypass(reason), _) => {
                format!("{CACHE_NAME}; fwd=bypass; detail={}", reason.as_str())
            }
            (_, None) => format!("{CACHE_NAME}; fwd=miss"),
        };
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(CACHE_NAME))
    }
}

/// Header values that differ only by a small number of seconds (an `Age`, a hit's `ttl`), each
/// made the first time it is needed and then shared: a clone is a reference count, where making
/// one costs two allocations on every hit.
pub(crate) struct SharedValues([OnceLock<HeaderValue>; SHARED_VALUES]);

/// Seconds covered by a [`SharedValues`] table: an hour and a bit. Larger numbers are made per
/// answer, as before.
const SHARED_VALUES: usize = 4096;

impl SharedValues {
    const fn new() -> SharedValues {
        SharedValues([const { OnceLock::new() }; SHARED_VALUES])
    }

    fn get(&self, n: i128, make: impl FnOnce() -> HeaderValue) -> HeaderValue {
        match usize::try_from(n).ok().and_then(|i| self.0.get(i)) {
            Some(slot) => slot.get_or_init(make).clone(),
            None => make(),
        }
    }
}

static AGES: SharedValues = SharedValues::new();
static HIT_TTLS: SharedValues = SharedValues::new();

/// The `Age` field for `secs`.
pub(crate) fn age(secs: u64) -> HeaderValue {
    AGES.get(i128::from(secs), || HeaderValue::from(secs))
}

/// `cache-actix` + `middle` + `ttl`, written without `format!` (this runs on every hit and
/// every miss; a hit's is shared through [`HIT_TTLS`]).
fn with_ttl(middle: &str, ttl: i128) -> HeaderValue {
    let mut number = itoa::Buffer::new();
    let ttl = number.format(ttl);
    let mut text = bytes::BytesMut::with_capacity(CACHE_NAME.len() + middle.len() + ttl.len());
    for part in [CACHE_NAME, middle, ttl] {
        text.extend_from_slice(part.as_bytes());
    }
    HeaderValue::from_maybe_shared(text.freeze())
        .unwrap_or_else(|_| HeaderValue::from_static(CACHE_NAME))
}

/// Whether `If-None-Match` matches `etag` by weak comparison (RFC 9110 section 13.1.2): `*`, a
/// list, and `W/` prefixes on either side. Malformed members are skipped.
pub(crate) fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    let ours = opaque_tag(etag);
    headers
        .get_all(actix_web::http::header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|member| member == "*" || (ours.is_some() && opaque_tag(member) == ours))
}

/// The quoted part of an entity tag, without any `W/`; `None` if it is not a well-formed tag.
fn opaque_tag(tag: &str) -> Option<&str> {
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    let inner = tag.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('"')).then_some(tag)
}

/// Largest `max-age` sent (RFC 9111 section 1.2.2: 2^31 seconds stands for "infinity").
const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// `cache-control` for an answer from `entry`: `public`/`private` as the policy says and a
/// `max-age` that is the policy's, or the entry's whole ttl (0 once stale). The answer also
/// carries `Age`, and a client's freshness is `max-age - age` (RFC 9111 section 4.2), so the
/// whole ttl, not what remains of it, makes the client's copy expire when ours does. Returns the
/// seconds left for the client, for `Expires`.
pub(crate) fn cache_control(entry: &Entry, now_ms: u64) -> (HeaderValue, u64) {
    let max_age = if now_ms >= entry.fresh_until_ms() {
        0
    } else {
        entry
            .max_age_secs()
            .unwrap_or_else(|| {
                entry
                    .fresh_until_ms()
                    .saturating_sub(entry.stored_at_ms())
                    .div_ceil(1000)
            })
            .min(MAX_DELTA_SECONDS)
    };
    let text = match entry.visibility() {
        Visibility::Public => format!("public, max-age={max_age}"),
        Visibility::Private => format!("private, max-age={max_age}"),
        Visibility::Unspecified => format!("max-age={max_age}"),
    };
    (
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("no-cache")),
        max_age.saturating_sub(entry.age_secs(now_ms)),
    )
}

/// `expires`: `secs` after the instant `from_ms` (Unix ms); `None` past what an HTTP date can
/// say (httpdate panics after year 9999, so the bound is checked here).
pub(crate) fn expires_after(from_ms: u64, secs: u64) -> Option<HeaderValue> {
    const YEAR_9999_SECS: u64 = 253_402_300_799;
    let at = (from_ms / 1000).checked_add(secs)?;
    if at > YEAR_9999_SECS {
        return None;
    }
    let at = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(at))?;
    HeaderValue::from_str(&httpdate::fmt_http_date(at)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::IF_NONE_MATCH;

    fn with(name: HeaderName, values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            if let Ok(v) = HeaderValue::from_bytes(v) {
                map.append(name.clone(), v);
            }
        }
        map
    }

    #[test]
    fn if_none_match_handles_lists_weak_star_and_garbage() {
        let etag = "\"abc\"";
        assert!(if_none_match(
            &with(IF_NONE_MATCH, &[b"\"x\", \"abc\""]),
            etag
        ));
        assert!(if_none_match(&with(IF_NONE_MATCH, &[b"W/\"abc\""]), etag));
        assert!(if_none_match(&with(IF_NONE_MATCH, &[b"*"]), etag));
        assert!(if_none_match(
            &with(IF_NONE_MATCH, &[b"\"x\"", b"\"abc\""]),
            etag
        ));
        assert!(!if_none_match(&with(IF_NONE_MATCH, &[b"abc"]), etag));
        assert!(!if_none_match(
            &with(IF_NONE_MATCH, &[b"\"ab", b"\xff\xfe"]),
            etag
        ));
        assert!(!if_none_match(&HeaderMap::new(), etag));
    }

    #[test]
    fn statuses_with_a_ttl_read_like_formatted_ones() {
        for ttl in [0i128, 7, 59, -3, 1_000_000, i128::MAX, i128::MIN + 1] {
            assert_eq!(
                with_ttl("; hit; ttl=", ttl),
                format!("{CACHE_NAME}; hit; ttl={ttl}").as_str()
            );
            assert_eq!(
                with_ttl("; fwd=uri-miss; stored; ttl=", ttl),
                format!("{CACHE_NAME}; fwd=uri-miss; stored; ttl={ttl}").as_str()
            );
        }
    }

    #[test]
    fn expires_never_panics_on_huge_lifetimes() {
        let now = cache_core::time::now_ms();
        assert!(expires_after(now, u64::MAX).is_none());
        assert!(expires_after(u64::MAX, 1).is_none());
        assert!(expires_after(now, MAX_DELTA_SECONDS).is_some());
        assert_eq!(
            expires_after(784_111_777_000, 0)
                .as_ref()
                .map(|v| v.to_str().ok()),
            Some(Some("Sun, 06 Nov 1994 08:49:37 GMT"))
        );
    }

    #[test]
    fn max_age_is_the_whole_ttl_so_that_age_counts_once() {
        let key = cache_core::PrimaryKey::new("", b"h", b"/", b"").cache_key();
        let entry = Entry::new(key.bytes(), 200, vec![], "x".into(), 1_000, 61_000);
        // 20 s after storing: max-age stays 60 (the client subtracts Age = 20), Expires is 40 s out.
        let (cc, left) = cache_control(&entry, 21_000);
        assert_eq!(cc, "max-age=60");
        assert_eq!(left, 40);
        let huge = Entry::new(key.bytes(), 200, vec![], "x".into(), 1_000, u64::MAX);
        assert_eq!(cache_control(&huge, 21_000).0, "max-age=2147483648");
    }
}

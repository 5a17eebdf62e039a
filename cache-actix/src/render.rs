//! What a client sees: the answer from an entry (conditionals, 304, ranges, HEAD, `Age`,
//! `x-cache` and `cache-status`), and the marks on a response the cache passed through.
//!
//! Both rule sets render here. They differ only in the head: a policy's entry gets the
//! `Cache-Control`, `Expires`, `ETag` and `Vary` the cache computes ([`crate::prepared`]); an
//! HTTP-mode entry replays its stored fields as received, the stored `Date` included.
//!
//! A compressed entry answers in the coding the request accepts ([`crate::compression`]): its
//! body, `Content-Encoding`, `ETag`, ranges and 304s are those of that copy.
//!
//! What must stay true: a 304 is sent only to a client that asked a conditional, and only for a
//! stored 2xx; a 206 only for a stored complete 200; every answer from storage carries a fresh
//! `Age`; the handler's `cache-tag` (ours, never the client's) never leaves: a `Cache-Tag` an
//! answer carries is the middleware's downstream header ([`crate::TagHeader`]), written from the
//! stored entry's tags by its prepared head.

use actix_web::{
    body::{BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{
        header::{self, HeaderMap, HeaderName, HeaderValue},
        StatusCode,
    },
    HttpResponse,
};
use bytes::Bytes;
use cache_core::{time::now_ms, Entry};

use crate::bypass::BypassReason;
use crate::compression::Representation;
use crate::headers::{self as h, Outcome};
use crate::prepared::Head;
use crate::rules::http::http_date_ms;
use crate::rules::stored;

/// Answers `req` from `entry`.
pub(crate) fn answer(
    req: ServiceRequest,
    entry: &Entry,
    outcome: Outcome,
) -> ServiceResponse<BoxBody> {
    let response = render(Some(req.headers()), entry, outcome);
    req.into_response(response)
}

/// The answer from `entry` to a request whose conditionals (`If-None-Match`,
/// `If-Modified-Since`, `Range`, `If-Range`) are in `asked` (`None`: the origin answered them
/// itself): the stored status, head and body, a 304 when the client's copy is current, or the
/// one byte range it asked of a stored 200. HEAD bodies are dropped by actix itself.
pub(crate) fn render(
    asked: Option<&HeaderMap>,
    entry: &Entry,
    outcome: Outcome,
) -> HttpResponse<BoxBody> {
    let now = now_ms();
    let is_miss = matches!(outcome, Outcome::Miss { .. });
    // The copy this client accepts (identity unless the entry is stored compressed).
    let chosen = Representation::of(entry, asked);
    let bodyless = asked.is_some_and(|c| not_modified(c, entry, &chosen.etag));
    let range = asked
        .filter(|_| !bodyless && !is_miss)
        .and_then(|c| byte_range(c, entry, &chosen));
    let status = match range {
        _ if bodyless => StatusCode::NOT_MODIFIED,
        Some(Ok(_)) => StatusCode::PARTIAL_CONTENT,
        Some(Err(())) => StatusCode::RANGE_NOT_SATISFIABLE,
        None => StatusCode::from_u16(entry.status()).unwrap_or(StatusCode::OK),
    };
    let mut res = HttpResponse::with_body(status, BoxBody::new(()));
    let headers = res.headers_mut();
    match entry.http() {
        // An entry that is not stored has no hit to prepare for. A stored one prepares its head
        // at once, on its miss: the store has charged for it, so the budget stays true.
        None if matches!(
            outcome,
            Outcome::Bypass(_) | Outcome::Miss { stored: false, .. }
        ) =>
        {
            Head::write_unprepared(entry, headers, bodyless, now, chosen.coding)
        }
        None => Head::write_for(entry, headers, bodyless, now, chosen.coding),
        Some(_) => write_stored_fields(entry, headers, bodyless, is_miss),
    }
    if !is_miss {
        headers.insert(header::AGE, h::age(entry.age_secs(now)));
    }
    let total = chosen.body.len();
    let body = match range {
        Some(Ok((first, last))) => {
            let text = format!("bytes {first}-{last}/{total}");
            if let Ok(value) = HeaderValue::from_str(&text) {
                headers.insert(header::CONTENT_RANGE, value);
            }
            // `byte_range` bounded both ends by the body's length.
            chosen.body.slice(first as usize..=last as usize)
        }
        Some(Err(())) => {
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{total}")) {
                headers.insert(header::CONTENT_RANGE, value);
            }
            Bytes::new()
        }
        None => chosen.body.clone(),
    };
    mark(headers, outcome, Some((entry, now)));
    if bodyless {
        res
    } else {
        res.set_body(BoxBody::new(body))
    }
}

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

/// An HTTP-mode entry's fields as received: all of them, or on a 304 those a 304 carries; a
/// stored `Age` only on the miss that stored it (later answers get a fresh one).
fn write_stored_fields(entry: &Entry, headers: &mut HeaderMap, bodyless: bool, is_miss: bool) {
    for (name, value) in entry.headers() {
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
}

/// Whether the client's conditional (`If-None-Match`, else `If-Modified-Since`) says its copy
/// is current (RFC 9111 section 4.3.2). Only a stored 2xx has a representation to confirm.
fn not_modified(asked: &HeaderMap, entry: &Entry, etag: &str) -> bool {
    if !(200..300).contains(&entry.status()) {
        return false;
    }
    if asked.contains_key(header::IF_NONE_MATCH) {
        return h::if_none_match(asked, etag) && (!etag.is_empty() || has_star(asked));
    }
    let Some(since) = asked.get(header::IF_MODIFIED_SINCE).and_then(http_date_ms) else {
        return false;
    };
    let modified = stored(entry, "last-modified")
        .or_else(|| stored(entry, "date"))
        .and_then(|v| http_date_ms(&v));
    modified.is_some_and(|m| m <= since)
}

fn has_star(asked: &HeaderMap) -> bool {
    asked
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|m| m.trim() == "*"))
}

/// The one byte range (first, last, inclusive) a `Range` asks of a stored complete 200, or
/// `Err` when it cannot be satisfied (a 416). `None` serves the whole body: no `Range`, several
/// ranges, a unit other than bytes, a malformed one, or an `If-Range` the entry fails.
fn byte_range(
    asked: &HeaderMap,
    entry: &Entry,
    chosen: &Representation<'_>,
) -> Option<Result<(u64, u64), ()>> {
    if entry.status() != 200 {
        return None;
    }
    let spec = asked.get(header::RANGE)?.to_str().ok()?.trim();
    if let Some(if_range) = asked.get(header::IF_RANGE) {
        let validator = if_range.to_str().ok()?.trim();
        let strong_match = !validator.starts_with("W/") && validator == chosen.etag;
        // A date names no coding: with several copies, only the copy's own tag may resume it.
        let date_match = entry.encoded().is_none()
            && stored(entry, "last-modified").is_some_and(|lm| lm == validator);
        if !(strong_match || date_match) {
            return None;
        }
    }
    let set = spec.strip_prefix("bytes=")?;
    if set.contains(',') {
        return None;
    }
    let len = chosen.body.len() as u64;
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

/// The client's own conditionals, kept before a revalidation replaces them with the entry's
/// validators: the cache answers them, not the origin.
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

/// A response passed through untouched but for `cache-tag` and the bypass marks.
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

/// `only-if-cached` with nothing usable stored (RFC 9111 section 5.2.1.7).
pub(crate) fn gateway_timeout(req: ServiceRequest) -> ServiceResponse<BoxBody> {
    req.into_response(HttpResponse::GatewayTimeout().body("not cached (only-if-cached)"))
}

/// `x-cache` and `cache-status` for `outcome` (with the entry's ttl at `now` when it has one).
fn mark(headers: &mut HeaderMap, outcome: Outcome, entry: Option<(&Entry, u64)>) {
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
    use cache_core::PrimaryKey;

    fn entry(status: u16) -> Entry {
        let key = PrimaryKey::new("", b"h", b"/", b"").cache_key();
        Entry::new(
            key.bytes(),
            status,
            vec![],
            "0123456789A".into(),
            0,
            u64::MAX,
        )
    }

    fn ask(lines: &[(HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in lines {
            h.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        h
    }

    #[test]
    fn byte_ranges_of_a_stored_200() {
        let entry = entry(200);
        let range = |spec: &str| {
            byte_range(
                &ask(&[(header::RANGE, spec)]),
                &entry,
                &Representation::of(&entry, None),
            )
        };
        assert_eq!(range("bytes=0-1"), Some(Ok((0, 1))));
        assert_eq!(range("bytes=1-"), Some(Ok((1, 10))));
        assert_eq!(range("bytes=-1"), Some(Ok((10, 10))));
        assert_eq!(range("bytes=5-99"), Some(Ok((5, 10))));
        assert_eq!(range("bytes=11-"), Some(Err(())));
        assert_eq!(range("bytes=0-1,3-4"), None);
        assert_eq!(range("items=0-1"), None);
        assert_eq!(range("bytes=x-1"), None);
        assert_eq!(range("bytes=3-1"), None);
        let not_found = self::entry(404);
        assert_eq!(
            byte_range(
                &ask(&[(header::RANGE, "bytes=0-1")]),
                &not_found,
                &Representation::of(&not_found, None)
            ),
            None
        );
    }

    #[test]
    fn both_rule_sets_answer_conditionals_and_ranges_the_same_way() {
        let policy = entry(200);
        let etag = policy.etag().to_string();
        let http = entry(200).with_http(Some(Default::default()));
        for e in [&policy, &http] {
            let current = render(
                Some(&ask(&[(header::IF_NONE_MATCH, &etag)])),
                e,
                Outcome::Hit,
            );
            assert_eq!(current.status(), StatusCode::NOT_MODIFIED);
            let other = render(
                Some(&ask(&[(header::IF_NONE_MATCH, "\"x\"")])),
                e,
                Outcome::Hit,
            );
            assert_eq!(other.status(), StatusCode::OK);
            let part = render(Some(&ask(&[(header::RANGE, "bytes=0-1")])), e, Outcome::Hit);
            assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
            assert_eq!(
                part.headers().get(header::CONTENT_RANGE).unwrap(),
                "bytes 0-1/11"
            );
            assert!(part.headers().contains_key(header::AGE));
        }
        // The answer that stored the entry has no `Age` and serves no range.
        let miss = Outcome::Miss {
            stored: true,
            vary_known: false,
        };
        let range = ask(&[(header::RANGE, "bytes=0-1")]);
        let answer = render(Some(&range), &http, miss);
        assert_eq!(answer.status(), StatusCode::OK);
        assert!(!answer.headers().contains_key(header::AGE));
    }
}

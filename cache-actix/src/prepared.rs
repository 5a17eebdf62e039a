//! The part of a cached answer that is the same for every hit on one entry, built once at its
//! first answer and kept in the entry ([`cache_core::entry::Prepared`]): the stored headers as
//! actix header types, `etag` (one per coding of a compressed entry), `vary`, and, while the
//! entry is fresh, `cache-control` and `expires`.
//!
//! What must stay true: a prepared head says exactly what rebuilding it from the entry would;
//! only values that depend on the entry alone (never on the request or the clock) live here.

use std::sync::Arc;

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use cache_core::{encoding::Coding, Entry};

use crate::compression::coded_etag;
use crate::headers as h;

/// The constant headers of the answers from one entry, in two allocations beside the struct:
/// the header names, and one text buffer that every value is a span of. A value is sliced from
/// the buffer (a reference count, no allocation) and checked again when it is written; keeping
/// ready `HeaderValue`s instead would cost 40 bytes each and an allocation per value in every
/// entry, hit or not.
pub(crate) struct Head {
    /// The handler's headers, minus the ones never replayed, each value a span of `text`.
    stored: Box<[(HeaderName, Span)]>,
    text: Bytes,
    /// The `ETag` of each coding's copy, by [`Coding::index`].
    etags: [Span; 3],
    vary: Span,
    /// `cache-control` and `expires` while the entry is fresh (both fixed by its ttl).
    fresh_cache_control: Span,
    fresh_expires: Span,
}

/// A byte range of [`Head::text`]; [`Span::ABSENT`] stands for a field the head lacks (an empty
/// span is an empty value, which a handler may send).
#[derive(Clone, Copy)]
struct Span(u32, u32);

impl Span {
    const ABSENT: Span = Span(1, 0);
}

impl Head {
    /// Writes the head of `entry` into `headers`, building it on the entry's first answer.
    pub(crate) fn write_for(
        entry: &Entry,
        headers: &mut HeaderMap,
        bodyless: bool,
        now_ms: u64,
        coding: Coding,
    ) {
        let prepared = entry
            .prepared()
            .get_or_init(|| Arc::new(Head::build(entry)));
        match prepared.downcast_ref::<Head>() {
            Some(head) => head.write(entry, headers, bodyless, now_ms, coding),
            // Only this module fills the slot, so this is a Head; rebuilding is the safe answer
            // should that ever change.
            None => Head::build(entry).write(entry, headers, bodyless, now_ms, coding),
        }
    }

    /// Writes the same head as [`Head::write_for`] straight from `entry`, without preparing
    /// it: for an entry that is not stored (a bypass), which no hit will ever answer from.
    pub(crate) fn write_unprepared(
        entry: &Entry,
        headers: &mut HeaderMap,
        bodyless: bool,
        now_ms: u64,
        coding: Coding,
    ) {
        if !bodyless {
            for (name, value) in entry.headers() {
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_maybe_shared(value.clone()),
                ) {
                    headers.append(name, value);
                }
            }
            if let Some(token) = coding.token() {
                headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(token));
            }
        }
        if let Ok(etag) = HeaderValue::from_str(&coded_etag(entry.etag(), coding)) {
            if !entry.etag().is_empty() {
                headers.insert(header::ETAG, etag);
            }
        }
        if let Some(vary) = vary_field(entry.vary(), entry.encoded().is_some()) {
            headers.insert(header::VARY, vary);
        }
        // While fresh, the values a prepared head holds: computed from the instant of storing.
        let at = if now_ms < entry.fresh_until_ms() {
            entry.stored_at_ms()
        } else {
            now_ms
        };
        let (cache_control, left) = h::cache_control(entry, at);
        headers.insert(header::CACHE_CONTROL, cache_control);
        if let Some(expires) = h::expires_after(at, left) {
            headers.insert(header::EXPIRES, expires);
        }
    }

    fn build(entry: &Entry) -> Head {
        let mut text = Vec::with_capacity(head_text_len(entry));
        let span = |text: &mut Vec<u8>, value: &[u8]| {
            let start = text.len();
            text.extend_from_slice(value);
            // Heads are bounded by the key and body limits, far below 4 GiB.
            Span(start as u32, text.len() as u32)
        };
        let mut stored = Vec::with_capacity(entry.headers().len());
        for (name, value) in entry.headers() {
            // Names came from valid headers; a store that hands back garbage loses that
            // header only (values are checked when written).
            if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                stored.push((name, span(&mut text, value)));
            }
        }
        let compressed = entry.encoded();
        let mut etags = [Span::ABSENT; 3];
        for coding in [Coding::Identity, Coding::Gzip, Coding::Br] {
            let held =
                coding == Coding::Identity || compressed.and_then(|e| e.get(coding)).is_some();
            if held && !entry.etag().is_empty() {
                etags[coding.index()] =
                    span(&mut text, coded_etag(entry.etag(), coding).as_bytes());
            }
        }
        let vary = match vary_field(entry.vary(), compressed.is_some()) {
            Some(field) => span(&mut text, field.as_bytes()),
            None => Span::ABSENT,
        };
        let (cache_control, max_age) = h::cache_control(entry, entry.stored_at_ms());
        let fresh_cache_control = span(&mut text, cache_control.as_bytes());
        let fresh_expires = match h::expires_after(entry.stored_at_ms(), max_age) {
            Some(expires) => span(&mut text, expires.as_bytes()),
            None => Span::ABSENT,
        };
        // The estimate leaves room for the longest `cache-control`; give the rest back.
        text.shrink_to_fit();
        let text = Bytes::from(text);
        // Made shared now, once, so that the slices of every hit only count references.
        drop(text.clone());
        Head {
            stored: stored.into_boxed_slice(),
            text,
            etags,
            vary,
            fresh_cache_control,
            fresh_expires,
        }
    }

    /// The value a span holds, if any.
    fn value(&self, span: Span) -> Option<HeaderValue> {
        let Span(start, end) = span;
        if start > end {
            return None;
        }
        HeaderValue::from_maybe_shared(self.text.slice(start as usize..end as usize)).ok()
    }

    /// Writes the head of `coding`'s copy into `headers`: the stored headers and
    /// `content-encoding` unless `bodyless` (a 304), then `etag`, `vary`, and
    /// `cache-control`/`expires` as they stand at `now_ms`.
    pub(crate) fn write(
        &self,
        entry: &Entry,
        headers: &mut HeaderMap,
        bodyless: bool,
        now_ms: u64,
        coding: Coding,
    ) {
        if !bodyless {
            for (name, span) in self.stored.iter() {
                if let Some(value) = self.value(*span) {
                    headers.append(name.clone(), value);
                }
            }
            if let Some(token) = coding.token() {
                headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(token));
            }
        }
        if let Some(etag) = self.value(self.etags[coding.index()]) {
            headers.insert(header::ETAG, etag);
        }
        if let Some(vary) = self.value(self.vary) {
            headers.insert(header::VARY, vary);
        }
        if now_ms < entry.fresh_until_ms() {
            if let Some(cache_control) = self.value(self.fresh_cache_control) {
                headers.insert(header::CACHE_CONTROL, cache_control);
            }
            if let Some(expires) = self.value(self.fresh_expires) {
                headers.insert(header::EXPIRES, expires);
            }
        } else {
            let (cache_control, left) = h::cache_control(entry, now_ms);
            headers.insert(header::CACHE_CONTROL, cache_control);
            if let Some(expires) = h::expires_after(now_ms, left) {
                headers.insert(header::EXPIRES, expires);
            }
        }
    }
}

/// Bytes of [`Head::text`] for `entry`: its header values, an etag per coding, and room for
/// `vary`, `cache-control` and `expires`.
fn head_text_len(entry: &Entry) -> usize {
    let values: usize = entry.headers().iter().map(|(_, v)| v.len()).sum();
    let codings = 1 + entry.encoded().map_or(0, |_| 2);
    values + codings * (entry.etag().len() + 5) + 96 + entry.vary().len() * 16
}

/// The `Vary` field of a policy's vary list: its header names, `Cookie` once for any number
/// of `vary_cookie` items (downstream caches only know whole headers), and `Accept-Encoding`
/// for an entry answered in several codings.
fn vary_field(vary: &[String], compressed: bool) -> Option<HeaderValue> {
    let mut names: Vec<&str> = Vec::with_capacity(vary.len() + 1);
    for item in vary {
        let name = if item.starts_with(cache_core::policy::VARY_COOKIE_PREFIX) {
            "cookie"
        } else {
            item.as_str()
        };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if compressed && !names.contains(&"accept-encoding") {
        names.push("accept-encoding");
    }
    (!names.is_empty())
        .then(|| HeaderValue::from_str(&names.join(", ")).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cache_core::{encoding::Compression, PrimaryKey};
    use std::sync::Arc;

    fn written(
        entry: &Entry,
        prepared: bool,
        bodyless: bool,
        now: u64,
        coding: Coding,
    ) -> Vec<(String, String)> {
        let mut headers = HeaderMap::new();
        if prepared {
            Head::write_for(entry, &mut headers, bodyless, now, coding);
        } else {
            Head::write_unprepared(entry, &mut headers, bodyless, now, coding);
        }
        let mut out: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_prepared_head_says_exactly_what_writing_it_straight_from_the_entry_says() {
        let key = PrimaryKey::new("", b"h", b"/", b"").cache_key();
        let body = bytes::Bytes::from("{\"id\":1}".repeat(300));
        let stored_at = 1_700_000_000_000;
        let plain = Entry::new(
            key.bytes(),
            200,
            vec![
                ("content-type".into(), "application/json".into()),
                ("x-custom".into(), "one".into()),
                ("x-custom".into(), "two".into()),
                ("x-empty".into(), "".into()),
            ],
            body.clone(),
            stored_at,
            stored_at + 30_000,
        )
        .with_vary(Arc::from(vec!["accept-language".to_string()]))
        .with_stale_while_revalidate_ms(60_000);
        let compressed = plain.clone().with_encoded(Compression::new().encode(&body));
        let no_etag = Entry::with_etag(
            key.bytes(),
            200,
            vec![],
            body,
            String::new(),
            stored_at,
            stored_at + 5_000,
        );
        for entry in [&plain, &compressed, &no_etag] {
            for now in [stored_at + 1, stored_at + 29_999, stored_at + 31_000] {
                // A coding is chosen only when the entry holds it.
                let codings = match entry.encoded() {
                    Some(_) => vec![Coding::Identity, Coding::Gzip, Coding::Br],
                    None => vec![Coding::Identity],
                };
                for coding in codings {
                    for bodyless in [false, true] {
                        assert_eq!(
                            written(entry, true, bodyless, now, coding),
                            written(entry, false, bodyless, now, coding),
                            "now {now}, {coding:?}, bodyless {bodyless}"
                        );
                    }
                }
            }
        }
        assert!(written(&compressed, true, false, stored_at, Coding::Br)
            .contains(&("content-encoding".to_string(), "br".to_string())));
    }
}

//! The part of a cached answer that is the same for every hit on one entry, built once at its
//! first answer and kept in the entry ([`cache_core::entry::Prepared`]): the stored headers as
//! actix header types, `etag` (one per coding of a compressed entry), `vary`, while the entry is
//! fresh `cache-control` and `expires`, and the downstream tag header when the middleware sends
//! one ([`crate::CacheMiddleware::downstream_tags`]).
//!
//! What must stay true: a prepared head says exactly what rebuilding it from the entry would,
//! plus the downstream tag header, which only a stored entry's answers carry (so an unprepared
//! head never writes it); only values that depend on the entry alone (never on the request or
//! the clock) live here. With downstream tags on, the flow prepares an entry's head
//! ([`Head::prepare`]) before any answer from it, so no answer builds the head without them.

use std::sync::Arc;

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use cache_core::{encoding::Coding, Entry};

use crate::compression::coded_etag;
use crate::downstream::TagHeader;
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
    /// The downstream tag header: one byte naming it ([`DOWNSTREAM_KINDS`]), then its value.
    /// One span rather than a name and a span, so that the struct stays in its allocation size.
    downstream: Span,
}

/// The header a [`Head::downstream`] span's first byte names, by index.
const DOWNSTREAM_KINDS: [TagHeader; 2] = [TagHeader::SurrogateKey, TagHeader::CacheTag];

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
            .get_or_init(|| Arc::new(Head::build(entry, None)));
        match prepared.downcast_ref::<Head>() {
            Some(head) => head.write(entry, headers, bodyless, now_ms, coding),
            // Only this module fills the slot, so this is a Head; rebuilding is the safe answer
            // should that ever change.
            None => Head::build(entry, None).write(entry, headers, bodyless, now_ms, coding),
        }
    }

    /// Prepares the head of a stored `entry` with its tags in `downstream`, unless it is
    /// prepared already (then it keeps what it has: an entry's head is made once). The flow
    /// calls it before every answer from a stored entry when downstream tags are on; a no-op
    /// after the first, one atomic load.
    pub(crate) fn prepare(entry: &Entry, downstream: TagHeader) {
        entry
            .prepared()
            .get_or_init(|| Arc::new(Head::build(entry, Some(downstream))));
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

    fn build(entry: &Entry, downstream: Option<TagHeader>) -> Head {
        let tags = downstream.and_then(|kind| Some((kind, kind.value_of(entry.tags())?)));
        let tags_len = tags.as_ref().map_or(0, |(_, value)| value.len() + 1);
        let mut text = Vec::with_capacity(head_text_len(entry) + tags_len);
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
        let downstream = match tags {
            Some((kind, value)) => {
                let index = DOWNSTREAM_KINDS
                    .iter()
                    .position(|k| *k == kind)
                    .unwrap_or(0);
                let start = span(&mut text, &[index as u8]).0;
                let Span(_, end) = span(&mut text, value.as_bytes());
                Span(start, end)
            }
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
            downstream,
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
        // On a 304 too: a CDN that revalidates keeps the tags of what it holds up to date.
        let Span(start, end) = self.downstream;
        if start < end {
            let kind = DOWNSTREAM_KINDS.get(usize::from(self.text[start as usize]));
            if let (Some(kind), Some(value)) = (kind, self.value(Span(start + 1, end))) {
                headers.insert(kind.name(), value);
            }
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

    #[test]
    fn a_head_prepared_with_downstream_tags_writes_them_on_every_answer_and_fits_its_allocation() {
        let key = PrimaryKey::new("", b"h", b"/p", b"");
        let stored_at = 1_700_000_000_000;
        let entry = Entry::new(
            key.cache_key().bytes(),
            200,
            vec![("surrogate-key".into(), "from-the-handler".into())],
            "body".into(),
            stored_at,
            stored_at + 30_000,
        )
        .with_tags(vec![
            "product:1".into(),
            "brand:Acme Corp".into(),
            "product:1".into(),
            key.url_tag(),
        ]);
        Head::prepare(&entry, TagHeader::SurrogateKey);
        // A second preparation keeps what the first made.
        Head::prepare(&entry, TagHeader::CacheTag);
        for now in [stored_at + 1, stored_at + 31_000] {
            for bodyless in [false, true] {
                let head = written(&entry, true, bodyless, now, Coding::Identity);
                let keys: Vec<&(String, String)> =
                    head.iter().filter(|(n, _)| n == "surrogate-key").collect();
                assert_eq!(
                    keys,
                    [&(
                        "surrogate-key".to_string(),
                        "product:1 brand:Acme%20Corp".to_string()
                    )],
                    "now {now}, bodyless {bodyless}"
                );
                assert!(!head.iter().any(|(n, _)| n == "cache-tag"));
            }
        }
        // Never on an answer from an entry that is not stored.
        let unstored = entry.clone();
        assert!(
            !written(&unstored, false, false, stored_at + 1, Coding::Identity)
                .iter()
                .any(|(n, v)| n == "surrogate-key" && v.contains("product"))
        );
        let cloudflare = entry.clone();
        Head::prepare(&cloudflare, TagHeader::CacheTag);
        assert!(
            written(&cloudflare, true, false, stored_at + 1, Coding::Identity).contains(&(
                "cache-tag".to_string(),
                "product:1,brand:Acme%20Corp".to_string()
            ))
        );
        // The budget charges `PREPARED_STRUCT` for the head behind its `Arc`: the span that
        // holds the tags keeps it in the same allocator size class (16 B of counts, rounded to 16).
        assert!(
            std::mem::size_of::<Head>() + 16 <= 120,
            "{}",
            std::mem::size_of::<Head>()
        );
    }
}

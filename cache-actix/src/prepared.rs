//! The part of a cached answer that is the same for every hit on one entry, built once at its
//! first answer and kept in the entry ([`cache_core::entry::Prepared`]): the stored headers as
//! actix header types, `etag` (one per coding of a compressed entry), `vary`, and, while the
//! entry is fresh, `cache-control` and `expires`.
//!
//! What must stay true: a prepared head says exactly what rebuilding it from the entry would;
//! only values that depend on the entry alone (never on the request or the clock) live here.

use std::sync::Arc;

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use cache_core::{encoding::Coding, Entry};

use crate::compression::coded_etag;
use crate::headers as h;

/// The constant headers of the answers from one entry.
pub(crate) struct Head {
    /// The handler's headers, minus the ones never replayed.
    stored: Vec<(HeaderName, HeaderValue)>,
    /// The `ETag` of each coding's copy, by [`Coding::index`].
    etags: [Option<HeaderValue>; 3],
    vary: Option<HeaderValue>,
    /// `cache-control` and `expires` while the entry is fresh (both fixed by its ttl).
    fresh_cache_control: HeaderValue,
    fresh_expires: Option<HeaderValue>,
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

    fn build(entry: &Entry) -> Head {
        let stored = entry
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                // Values came from valid headers; a store that hands back garbage loses that
                // header only.
                Some((
                    HeaderName::from_bytes(name.as_bytes()).ok()?,
                    HeaderValue::from_maybe_shared(value.clone()).ok()?,
                ))
            })
            .collect();
        let (fresh_cache_control, max_age) = h::cache_control(entry, entry.stored_at_ms());
        let etag = |coding| HeaderValue::from_str(&coded_etag(entry.etag(), coding)).ok();
        let compressed = entry.encoded();
        let held = |coding: Coding| compressed.and_then(|e| e.get(coding)).is_some();
        Head {
            stored,
            etags: [
                etag(Coding::Identity),
                held(Coding::Gzip).then(|| etag(Coding::Gzip)).flatten(),
                held(Coding::Br).then(|| etag(Coding::Br)).flatten(),
            ],
            vary: vary_field(entry.vary(), compressed.is_some()),
            fresh_cache_control,
            fresh_expires: h::expires_after(entry.stored_at_ms(), max_age),
        }
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
            for (name, value) in &self.stored {
                headers.append(name.clone(), value.clone());
            }
            if let Some(token) = coding.token() {
                headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(token));
            }
        }
        if let Some(etag) = &self.etags[coding.index()] {
            headers.insert(header::ETAG, etag.clone());
        }
        if let Some(vary) = &self.vary {
            headers.insert(header::VARY, vary.clone());
        }
        if now_ms < entry.fresh_until_ms() {
            headers.insert(header::CACHE_CONTROL, self.fresh_cache_control.clone());
            if let Some(expires) = &self.fresh_expires {
                headers.insert(header::EXPIRES, expires.clone());
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

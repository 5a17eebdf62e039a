//! Compressed answers: which stored responses get br and gzip copies ([`encode_for_store`],
//! once, when stored) and which copy answers each request ([`Representation::of`], from its
//! `Accept-Encoding`), with the `ETag` of that copy.
//!
//! What must stay true: only a response the cache itself may transform is compressed (a policy
//! entry, of a text-like type, at least the configured size, without a `Content-Encoding` of the
//! handler's own or `Cache-Control: no-transform`); every answer from a compressed entry says
//! `Vary: Accept-Encoding`, whichever copy it carries; each copy has its own strong `ETag`, so a
//! validator never confirms one coding's bytes for another.

use std::borrow::Cow;

use actix_web::http::header::{self, HeaderMap};
use bytes::Bytes;
use cache_core::encoding::{compressible_type, Coding, Compression};
use cache_core::Entry;

use crate::directives::Directives;

/// Adds compressed copies to `entry` when `compression` is on and the response may be
/// compressed. `handler_headers` are the handler's own (before the cache dropped the ones it
/// recomputes, such as `Cache-Control`).
pub(crate) fn encode_for_store(
    compression: Option<&Compression>,
    entry: Entry,
    handler_headers: &HeaderMap,
) -> Entry {
    let Some(compression) = compression else {
        return entry;
    };
    let eligible = entry.http().is_none()
        && !handler_headers.contains_key(header::CONTENT_ENCODING)
        && handler_headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|t| compressible_type(t.as_bytes()))
        && !Directives::of(handler_headers, &header::CACHE_CONTROL).no_transform;
    if !eligible {
        return entry;
    }
    let encoded = compression.encode(entry.body());
    entry.with_encoded(encoded)
}

/// The copy of an entry that answers one request.
pub(crate) struct Representation<'e> {
    pub(crate) coding: Coding,
    pub(crate) body: &'e Bytes,
    /// Its strong `ETag` (empty when the entry has none).
    pub(crate) etag: Cow<'e, str>,
}

impl<'e> Representation<'e> {
    /// The copy `asked` (the request's headers; `None`: nothing known of the client) accepts.
    pub(crate) fn of(entry: &'e Entry, asked: Option<&HeaderMap>) -> Representation<'e> {
        let coding = match (entry.encoded(), asked) {
            (Some(encoded), Some(asked)) => {
                let mut lines = asked.get_all(header::ACCEPT_ENCODING);
                match (lines.next(), lines.next()) {
                    (None, _) => Coding::Identity,
                    (Some(only), None) => Coding::choose(Some(only.as_bytes()), encoded),
                    // Several lines are one list (RFC 9110 section 5.3); rare, so joined here
                    // rather than on every request.
                    (Some(_), Some(_)) => {
                        let joined = asked
                            .get_all(header::ACCEPT_ENCODING)
                            .map(|v| v.as_bytes())
                            .collect::<Vec<_>>()
                            .join(&b","[..]);
                        Coding::choose(Some(&joined), encoded)
                    }
                }
            }
            _ => Coding::Identity,
        };
        Representation {
            coding,
            body: entry.body_in(coding),
            etag: coded_etag(entry.etag(), coding),
        }
    }
}

/// The `ETag` of `coding`'s copy: the identity tag with the coding's name inside the quotes
/// (`"abc"` becomes `"abc-br"`), as Apache and nginx mark theirs.
pub(crate) fn coded_etag(etag: &str, coding: Coding) -> Cow<'_, str> {
    match coding.token() {
        Some(token) if etag.ends_with('"') && etag.len() >= 2 => {
            let open = &etag[..etag.len() - 1];
            Cow::Owned(format!("{open}-{token}\""))
        }
        _ => Cow::Borrowed(etag),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;
    use cache_core::PrimaryKey;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                header::HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        map
    }

    fn entry(len: usize) -> Entry {
        let key = PrimaryKey::new("", b"h", b"/", b"").cache_key();
        Entry::new(
            key.bytes(),
            200,
            vec![],
            "{\"a\":1}".repeat(len / 7).into(),
            0,
            1,
        )
    }

    #[test]
    fn only_text_like_bodies_the_handler_did_not_encode_or_protect_are_compressed() {
        let on = Compression::new();
        let json = headers(&[("content-type", "application/json")]);
        let stored = |h: &HeaderMap, len| {
            encode_for_store(Some(&on), entry(len), h)
                .encoded()
                .is_some()
        };
        assert!(stored(&json, 4096));
        assert!(!stored(&json, 500), "under min_bytes");
        assert!(!stored(&headers(&[("content-type", "image/png")]), 4096));
        assert!(!stored(&headers(&[]), 4096), "no content-type");
        assert!(!stored(
            &headers(&[("content-type", "text/plain"), ("content-encoding", "gzip")]),
            4096
        ));
        assert!(!stored(
            &headers(&[
                ("content-type", "text/plain"),
                ("cache-control", "public, no-transform")
            ]),
            4096
        ));
        assert!(encode_for_store(None, entry(4096), &json)
            .encoded()
            .is_none());
    }

    #[test]
    fn each_coding_has_its_own_etag_and_body() {
        let json = headers(&[("content-type", "application/json")]);
        let e = encode_for_store(Some(&Compression::new()), entry(4096), &json);
        let br = Representation::of(&e, Some(&headers(&[("accept-encoding", "gzip, br")])));
        let plain = Representation::of(&e, Some(&headers(&[])));
        assert_eq!(br.coding, Coding::Br);
        assert_ne!(br.etag, plain.etag);
        assert_eq!(plain.etag, e.etag());
        assert!(br.etag.ends_with("-br\""));
        assert!(br.body.len() < plain.body.len());
        assert_eq!(coded_etag("W/\"x\"", Coding::Gzip), "W/\"x-gzip\"");
        let mut two_lines = headers(&[("accept-encoding", "*")]);
        two_lines.append(header::ACCEPT_ENCODING, HeaderValue::from_static("br;q=0"));
        assert_eq!(
            Representation::of(&e, Some(&two_lines)).coding,
            Coding::Gzip
        );
        assert_eq!(coded_etag("", Coding::Gzip), "");
    }
}

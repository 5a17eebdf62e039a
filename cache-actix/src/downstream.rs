//! Tags for caches downstream of this one (a CDN, Varnish): [`TagHeader`], the header an answer
//! from a stored entry carries its tags in ([`crate::CacheMiddleware::downstream_tags`]), and
//! [`TagHeader::encode`], the one spelling of a tag in it.
//!
//! What must stay true: the header lists the entry's own tags only, never the cache's internal
//! per-URL tag (`PrimaryKey::url_tag`, which starts with NUL); every tag is spelled by
//! [`TagHeader::encode`] alone, so a purge hook that forwards `encode(tag)` names exactly what
//! the CDN was sent; the value is always a valid header value (visible ASCII, no separator
//! inside a tag).

use std::borrow::Cow;
use std::fmt::Write as _;

use actix_web::http::header::HeaderName;

/// The header that carries an entry's tags downstream, for the CDN to purge by.
///
/// ```
/// use cache_actix::{Cache, CacheMiddleware, TagHeader};
/// // Fastly, Varnish (xkey): `Surrogate-Key: product:1 category:7`.
/// let fastly = CacheMiddleware::new(Cache::memory()).downstream_tags(TagHeader::SurrogateKey);
/// // Cloudflare, Akamai: `Cache-Tag: product:1,category:7`.
/// let cloudflare = CacheMiddleware::new(Cache::memory()).downstream_tags(TagHeader::CacheTag);
/// assert_eq!(TagHeader::SurrogateKey.name(), "surrogate-key");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TagHeader {
    /// `Surrogate-Key`, tags separated by spaces (Fastly, Varnish xkey).
    SurrogateKey,
    /// `Cache-Tag`, tags separated by commas (Cloudflare, Akamai).
    CacheTag,
}

impl TagHeader {
    /// The header's name (lowercase, as HTTP/2 sends it).
    pub fn name(self) -> HeaderName {
        match self {
            TagHeader::SurrogateKey => HeaderName::from_static("surrogate-key"),
            TagHeader::CacheTag => HeaderName::from_static("cache-tag"),
        }
    }

    /// The byte between two tags in the header.
    pub fn separator(self) -> char {
        match self {
            TagHeader::SurrogateKey => ' ',
            TagHeader::CacheTag => ',',
        }
    }

    /// How a tag is spelled in either header: as it is when every byte is visible ASCII other
    /// than `,` and `%`, otherwise with each other byte (space, comma, `%`, control characters,
    /// every byte of a non-ASCII character) percent-encoded as `%XX` (uppercase hex). The
    /// encoding is the same for both headers and one-to-one, so two tags never share a spelling.
    /// A purge hook ([`crate::Cache::on_invalidate`]) that forwards a tag to the CDN should
    /// forward this spelling, which is the one the CDN saw.
    ///
    /// ```
    /// use cache_actix::TagHeader;
    /// assert_eq!(TagHeader::encode("product:1"), "product:1");
    /// assert_eq!(TagHeader::encode("brand:Acme Corp"), "brand:Acme%20Corp");
    /// assert_eq!(TagHeader::encode("a,b%c"), "a%2Cb%25c");
    /// assert_eq!(TagHeader::encode("caf\u{e9}"), "caf%C3%A9");
    /// ```
    pub fn encode(tag: &str) -> Cow<'_, str> {
        let plain = |b: u8| (0x21..=0x7e).contains(&b) && b != b',' && b != b'%';
        if tag.bytes().all(plain) {
            return Cow::Borrowed(tag);
        }
        let mut out = String::with_capacity(tag.len() + 8);
        for b in tag.bytes() {
            if plain(b) {
                out.push(char::from(b));
            } else {
                // Writing to a String cannot fail.
                let _ = write!(out, "%{b:02X}");
            }
        }
        Cow::Owned(out)
    }

    /// The header's value for an entry's tags: each distinct tag once, in order, encoded, the
    /// internal per-URL tags and empty tags left out; `None` when no tag is left.
    pub(crate) fn value_of(self, tags: &[String]) -> Option<String> {
        let mut out = String::new();
        let mut seen: Vec<&str> = Vec::with_capacity(tags.len());
        for tag in tags {
            if tag.is_empty() || tag.starts_with('\0') || seen.contains(&tag.as_str()) {
                continue;
            }
            seen.push(tag);
            if !out.is_empty() {
                out.push(self.separator());
            }
            out.push_str(&TagHeader::encode(tag));
        }
        (!out.is_empty()).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    #[test]
    fn every_tag_becomes_a_valid_value_and_no_two_tags_share_a_spelling() {
        let tags: Vec<String> = [
            "product:1",
            "brand:Acme Corp",
            "a,b",
            "a%2Cb",
            "tab\there",
            "line\r\nbreak",
            "caf\u{e9}",
            "\u{7f}",
            "",
            "product:1",
            "\u{0}url:00ff",
        ]
        .iter()
        .map(|t| t.to_string())
        .collect();
        let mut spellings = std::collections::HashSet::new();
        for tag in &tags[..9] {
            let spelled = TagHeader::encode(tag);
            assert!(spelled
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b','));
            assert!(spellings.insert(spelled.into_owned()), "{tag:?}");
        }
        for header in [TagHeader::SurrogateKey, TagHeader::CacheTag] {
            let value = header.value_of(&tags).unwrap();
            assert!(HeaderValue::from_str(&value).is_ok());
            let listed: Vec<&str> = value.split(header.separator()).collect();
            // Duplicates once, the URL tag and the empty tag not at all.
            assert_eq!(listed.len(), 8, "{value}");
            assert_eq!(listed[0], "product:1");
            assert!(!value.contains("url:"));
        }
        assert_eq!(TagHeader::CacheTag.value_of(&tags[10..]), None);
    }
}

//! A stored response and the arithmetic of its freshness.
//!
//! Times are absolute Unix milliseconds so that an entry means the same in every process. What
//! must stay true: an entry is served fresh only before `fresh_until_ms`, stale only inside the
//! window the policy granted, and never after `expires_at_ms()`.

use std::sync::Arc;

use bytes::Bytes;

use crate::encoding::{Coding, Encoded};
use crate::policy::Visibility;

/// Where an entry stands in its life at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Inside the ttl.
    Fresh,
    /// Past the ttl, inside `stale_while_revalidate`: serve it and refresh once.
    StaleWhileRevalidate,
    /// Past the ttl, usable only if the handler fails (`stale_if_error`).
    StaleIfError,
    /// Past every window: unusable.
    Expired,
}

/// A stored response: what a [`crate::Store`] keeps, built by the middleware from a handler's
/// answer. Its fields are read through accessors and set when it is built
/// ([`Entry::new`] and the `with_*` methods); once stored, an entry never changes, which is what
/// lets every hit share one copy and what a custom store may rely on.
///
/// ```
/// use cache_core::{Entry, Freshness, PrimaryKey};
/// let key = PrimaryKey::new("", b"h", b"/", b"").cache_key();
/// let entry = Entry::new(key.bytes(), 200, vec![], "hello".into(), 1_000, 31_000)
///     .with_stale_while_revalidate_ms(10_000);
/// assert_eq!(entry.freshness(30_999), Freshness::Fresh);
/// assert_eq!(entry.freshness(35_000), Freshness::StaleWhileRevalidate);
/// assert_eq!(entry.freshness(41_000), Freshness::Expired);
/// assert_eq!(entry.age_secs(6_500), 5);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The full key encoding, compared on read so that a hash collision is a miss.
    pub(crate) key: Arc<[u8]>,
    /// HTTP status code.
    pub(crate) status: u16,
    /// Response headers as sent by the handler (lowercase names), minus the ones never replayed.
    pub(crate) headers: Vec<(String, Bytes)>,
    /// The whole body, as the handler made it.
    pub(crate) body: Bytes,
    /// Its br and gzip copies, when the middleware compresses what it stores.
    pub(crate) encoded: Option<Box<Encoded>>,
    /// Strong entity tag, quoted: the handler's own, or a hash of the body.
    pub(crate) etag: String,
    /// When the response was stored (Unix ms).
    pub(crate) stored_at_ms: u64,
    /// Fresh until this instant (Unix ms).
    pub(crate) fresh_until_ms: u64,
    /// Length of the stale-while-revalidate window after `fresh_until_ms`.
    pub(crate) stale_while_revalidate_ms: u64,
    /// Length of the stale-if-error window after `fresh_until_ms`.
    pub(crate) stale_if_error_ms: u64,
    /// Tags it was stored under (templates already filled), including the URL's implicit tag.
    pub(crate) tags: Vec<String>,
    /// Tag-clock reading taken before the handler ran; see [`crate::tags`].
    pub(crate) born: u64,
    /// Lowercase names of the request headers this response varies on.
    pub(crate) vary: Arc<[String]>,
    /// What clients are told in `Cache-Control`.
    pub(crate) visibility: Visibility,
    /// Explicit client `max-age` in seconds; `None` means the whole ttl (clients subtract `Age`).
    pub(crate) max_age_secs: Option<u64>,
    /// Whether this entry may answer a request that carries `Authorization` without varying on it.
    pub(crate) shares_authorized: bool,
    /// Whether this entry may answer a request that carries `Cookie`. False for an entry stored
    /// by a scope rule that neither varies on a cookie nor is public: the page may depend on
    /// the session the cookie names.
    pub(crate) shares_cookied: bool,
    /// Set for entries stored under HTTP semantics (RFC 9111) rather than a policy: how they may
    /// be reused and how long they are kept for revalidation.
    /// Boxed: most entries are a policy's, and 8 bytes beat 24 in every one of them.
    pub(crate) http: Option<Box<HttpMeta>>,
    /// What a frontend prepared from this entry to answer hits faster (the actix middleware keeps
    /// the response headers here, built at the first answer). Not part of the stored value.
    pub(crate) prepared: Prepared,
}

/// How an entry stored under HTTP semantics (RFC 9111) may be reused. Its freshness lives in
/// the entry's own fields: `stored_at_ms` is the instant its age was zero (so the `Age` of an
/// answer is `now - stored_at_ms`), `fresh_until_ms` the end of its freshness lifetime, and the
/// stale windows come from `stale-while-revalidate` / `stale-if-error`.
///
/// ```
/// use cache_core::entry::HttpMeta;
/// let meta = HttpMeta { must_revalidate: true, no_cache: false, keep_until_ms: 90_000 };
/// assert!(meta.must_revalidate);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HttpMeta {
    /// `must-revalidate`, `proxy-revalidate` or `s-maxage`: never served stale unvalidated.
    pub must_revalidate: bool,
    /// `no-cache`: validated with the origin before every use.
    pub no_cache: bool,
    /// Kept until this instant (Unix ms), past its stale windows, so that it can be revalidated
    /// with a conditional request instead of fetched again.
    pub keep_until_ms: u64,
}

/// The empty vary list, shared: most entries vary on nothing, and an empty `Arc<[String]>` of
/// their own would cost each one an allocation.
fn no_vary() -> Arc<[String]> {
    static EMPTY: std::sync::OnceLock<Arc<[String]>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| Arc::from(Vec::new())).clone()
}

/// A slot where a frontend keeps its prepared form of an [`Entry`]. Entries are immutable once
/// stored, so what is prepared from one stays right for its whole life. Cloning an entry (to
/// change it) leaves the clone's slot empty, and the slot never makes two entries unequal.
///
/// ```
/// use std::sync::Arc;
/// let slot = cache_core::entry::Prepared::default();
/// let head = slot.get_or_init(|| Arc::new(42u32));
/// assert_eq!(head.downcast_ref::<u32>(), Some(&42));
/// ```
#[derive(Default)]
pub struct Prepared(std::sync::OnceLock<Arc<dyn std::any::Any + Send + Sync>>);

impl Prepared {
    /// The prepared value, made by `make` on first use.
    pub fn get_or_init(
        &self,
        make: impl FnOnce() -> Arc<dyn std::any::Any + Send + Sync>,
    ) -> &Arc<dyn std::any::Any + Send + Sync> {
        self.0.get_or_init(make)
    }
}

impl Clone for Prepared {
    fn clone(&self) -> Self {
        Prepared::default()
    }
}

impl PartialEq for Prepared {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Prepared {}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Prepared(..)"
        } else {
            "Prepared(empty)"
        })
    }
}

impl Entry {
    /// A fresh entry with no stale windows, tags or vary, and a strong etag hashed from the body;
    /// the `with_*` methods set the rest.
    pub fn new(
        key: Arc<[u8]>,
        status: u16,
        headers: Vec<(String, Bytes)>,
        body: Bytes,
        stored_at_ms: u64,
        fresh_until_ms: u64,
    ) -> Entry {
        let etag = strong_etag(&body);
        Entry::with_etag(
            key,
            status,
            headers,
            body,
            etag,
            stored_at_ms,
            fresh_until_ms,
        )
    }

    /// As [`Entry::new`], with a known etag (hashing the body again would be wasted work).
    ///
    /// ```
    /// use cache_core::{Entry, PrimaryKey};
    /// let key = PrimaryKey::new("", b"h", b"/", b"").cache_key();
    /// let entry = Entry::with_etag(key.bytes(), 200, vec![], "hi".into(), "\"v1\"".into(), 0, 1);
    /// assert_eq!(entry.etag(), "\"v1\"");
    /// ```
    pub fn with_etag(
        key: Arc<[u8]>,
        status: u16,
        headers: Vec<(String, Bytes)>,
        body: Bytes,
        etag: String,
        stored_at_ms: u64,
        fresh_until_ms: u64,
    ) -> Entry {
        Entry {
            key,
            status,
            headers,
            body,
            encoded: None,
            etag,
            stored_at_ms,
            fresh_until_ms,
            stale_while_revalidate_ms: 0,
            stale_if_error_ms: 0,
            tags: Vec::new(),
            born: 0,
            vary: no_vary(),
            visibility: Visibility::Unspecified,
            max_age_secs: None,
            shares_authorized: false,
            shares_cookied: true,
            http: None,
            prepared: Prepared::default(),
        }
    }

    /// The full key encoding, compared on read so that a hash collision is a miss.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The full key encoding, shared.
    pub fn key_bytes(&self) -> Arc<[u8]> {
        self.key.clone()
    }

    /// HTTP status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Response headers as stored (lowercase names, in order, repeats kept).
    pub fn headers(&self) -> &[(String, Bytes)] {
        &self.headers
    }

    /// The whole body, as the handler made it (identity).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The br and gzip copies of the body, when it was stored compressed.
    pub fn encoded(&self) -> Option<&Encoded> {
        self.encoded.as_deref()
    }

    /// The body in `coding`: the identity body, or the copy in that coding (the identity body
    /// when there is no such copy).
    ///
    /// ```
    /// use cache_core::encoding::{Coding, Compression};
    /// use cache_core::{Entry, PrimaryKey};
    /// let key = PrimaryKey::new("", b"h", b"/", b"").cache_key();
    /// let body = bytes::Bytes::from("[1,2,3]".repeat(300));
    /// let copies = Compression::new().encode(&body);
    /// let entry = Entry::new(key.bytes(), 200, vec![], body.clone(), 0, 1).with_encoded(copies);
    /// assert!(entry.body_in(Coding::Br).len() < body.len());
    /// assert_eq!(entry.body_in(Coding::Identity), &body);
    /// ```
    pub fn body_in(&self, coding: Coding) -> &Bytes {
        self.encoded
            .as_deref()
            .and_then(|e| e.get(coding))
            .unwrap_or(&self.body)
    }

    /// Entity tag, quoted (empty when an HTTP-semantics response had none).
    pub fn etag(&self) -> &str {
        &self.etag
    }

    /// When the response's age was zero (Unix ms): when it was stored, or earlier for a
    /// response that arrived with an `Age`.
    pub fn stored_at_ms(&self) -> u64 {
        self.stored_at_ms
    }

    /// Fresh until this instant (Unix ms).
    pub fn fresh_until_ms(&self) -> u64 {
        self.fresh_until_ms
    }

    /// Length of the stale-while-revalidate window after [`Entry::fresh_until_ms`].
    pub fn stale_while_revalidate_ms(&self) -> u64 {
        self.stale_while_revalidate_ms
    }

    /// Length of the stale-if-error window after [`Entry::fresh_until_ms`].
    pub fn stale_if_error_ms(&self) -> u64 {
        self.stale_if_error_ms
    }

    /// Tags it was stored under (templates already filled), including the URL's implicit tag.
    pub fn tags(&self) -> &[String] {
        &self.tags
    }

    /// The tag-clock reading taken before the handler ran: an invalidation after it makes the
    /// entry invalid.
    pub fn born(&self) -> u64 {
        self.born
    }

    /// Lowercase names of the request headers this response varies on.
    pub fn vary(&self) -> &Arc<[String]> {
        &self.vary
    }

    /// What clients are told in `Cache-Control`.
    pub fn visibility(&self) -> Visibility {
        self.visibility
    }

    /// Explicit client `max-age` in seconds; `None` means the whole ttl.
    pub fn max_age_secs(&self) -> Option<u64> {
        self.max_age_secs
    }

    /// Whether it may answer a request that carries `Authorization` without varying on it.
    pub fn shares_authorized(&self) -> bool {
        self.shares_authorized
    }

    /// Whether it may answer a request that carries `Cookie`.
    pub fn shares_cookied(&self) -> bool {
        self.shares_cookied
    }

    /// How an entry stored under HTTP semantics may be reused; `None` for a policy's entry.
    pub fn http(&self) -> Option<HttpMeta> {
        self.http.as_deref().copied()
    }

    /// The frontend's prepared form of this entry (the middleware's hit-path cache).
    #[doc(hidden)]
    pub fn prepared(&self) -> &Prepared {
        &self.prepared
    }

    /// Sets the entity tag (quoted).
    pub fn with_etag_value(mut self, etag: String) -> Entry {
        self.etag = etag;
        self
    }

    /// Sets the stored headers.
    pub fn with_headers(mut self, headers: Vec<(String, Bytes)>) -> Entry {
        self.headers = headers;
        self
    }

    /// Sets the stale-while-revalidate window.
    pub fn with_stale_while_revalidate_ms(mut self, ms: u64) -> Entry {
        self.stale_while_revalidate_ms = ms;
        self
    }

    /// Sets the stale-if-error window.
    pub fn with_stale_if_error_ms(mut self, ms: u64) -> Entry {
        self.stale_if_error_ms = ms;
        self
    }

    /// Sets the tags (the URL's implicit tag is added when the cache stores it).
    pub fn with_tags(mut self, tags: Vec<String>) -> Entry {
        self.tags = tags;
        self
    }

    /// Sets the tag-clock reading taken before the handler ran ([`crate::Cache::begin_fill`]).
    pub fn with_born(mut self, born: u64) -> Entry {
        self.born = born;
        self
    }

    /// Sets the vary list (lowercase names).
    pub fn with_vary(mut self, vary: Arc<[String]>) -> Entry {
        self.vary = vary;
        self
    }

    /// Sets what clients are told in `Cache-Control`.
    pub fn with_visibility(mut self, visibility: Visibility) -> Entry {
        self.visibility = visibility;
        self
    }

    /// Sets the client `max-age`.
    pub fn with_max_age_secs(mut self, secs: Option<u64>) -> Entry {
        self.max_age_secs = secs;
        self
    }

    /// Sets whether it may answer requests with `Authorization`.
    pub fn with_shares_authorized(mut self, shares: bool) -> Entry {
        self.shares_authorized = shares;
        self
    }

    /// Sets whether it may answer requests with `Cookie`.
    pub fn with_shares_cookied(mut self, shares: bool) -> Entry {
        self.shares_cookied = shares;
        self
    }

    /// Sets its compressed copies (see [`crate::encoding::Compression::encode`]); `None` or an
    /// empty set removes them.
    pub fn with_encoded(mut self, encoded: Option<Encoded>) -> Entry {
        self.encoded = encoded.filter(|e| !e.is_empty()).map(Box::new);
        self
    }

    /// Marks it as stored under HTTP semantics.
    pub fn with_http(mut self, http: Option<HttpMeta>) -> Entry {
        self.http = http.map(Box::new);
        self
    }

    /// Where the entry stands at `now_ms`.
    pub fn freshness(&self, now_ms: u64) -> Freshness {
        self.freshness_softened(now_ms, None)
    }

    /// [`Entry::freshness`] for an entry a soft purge made stale at `softened` (Unix ms), if
    /// one did: its freshness ends there, and its stale windows count from there.
    ///
    /// ```
    /// use cache_core::{Entry, Freshness};
    ///
    /// let entry = Entry::new(b"k".as_slice().into(), 200, vec![], "x".into(), 0, 60_000)
    ///     .with_stale_while_revalidate_ms(10_000);
    /// assert_eq!(entry.freshness_softened(5_000, None), Freshness::Fresh);
    /// assert_eq!(entry.freshness_softened(5_000, Some(4_000)), Freshness::StaleWhileRevalidate);
    /// assert_eq!(entry.freshness_softened(15_000, Some(4_000)), Freshness::Expired);
    /// ```
    pub fn freshness_softened(&self, now_ms: u64, softened: Option<u64>) -> Freshness {
        let fresh_until = softened.map_or(self.fresh_until_ms, |at| at.min(self.fresh_until_ms));
        if now_ms < fresh_until {
            return Freshness::Fresh;
        }
        let past = now_ms - fresh_until;
        if past < self.stale_while_revalidate_ms {
            Freshness::StaleWhileRevalidate
        } else if past < self.stale_if_error_ms {
            Freshness::StaleIfError
        } else {
            Freshness::Expired
        }
    }

    /// After this instant the entry is useless and may be reclaimed.
    pub fn expires_at_ms(&self) -> u64 {
        let windows = self
            .fresh_until_ms
            .saturating_add(self.stale_while_revalidate_ms.max(self.stale_if_error_ms));
        self.http
            .as_deref()
            .map_or(windows, |h| windows.max(h.keep_until_ms))
    }

    /// Whole seconds since it was stored (the `Age` header).
    pub fn age_secs(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.stored_at_ms) / 1000
    }

    /// Bytes this entry's variable-size parts occupy: key, headers, body, etag, tags, vary names.
    pub fn payload_bytes(&self) -> usize {
        self.key.len()
            + self
                .headers
                .iter()
                .map(|(n, v)| n.len() + v.len())
                .sum::<usize>()
            + self.body.len()
            + self.encoded.as_deref().map_or(0, Encoded::len)
            + self.etag.len()
            + self.tags.iter().map(String::len).sum::<usize>()
            + self.vary.iter().map(String::len).sum::<usize>()
    }
}

/// A quoted strong entity tag computed from the body: the same bytes give the same tag in every
/// process and after every restart (xxh3-128 is a fixed, seedless function).
///
/// ```
/// assert_eq!(cache_core::entry::strong_etag(b"a"), cache_core::entry::strong_etag(b"a"));
/// assert!(cache_core::entry::strong_etag(b"a").starts_with('"'));
/// let hash = xxhash_rust::xxh3::xxh3_128(b"a");
/// assert_eq!(cache_core::entry::strong_etag(b"a"), format!("\"{hash:032x}\""));
/// ```
pub fn strong_etag(body: &[u8]) -> String {
    // Written by hand: `format!` was a visible share of the miss path.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hash = xxhash_rust::xxh3::xxh3_128(body);
    let mut tag = String::with_capacity(34);
    tag.push('"');
    for shift in (0..32).rev() {
        tag.push(char::from(HEX[((hash >> (shift * 4)) & 0xf) as usize]));
    }
    tag.push('"');
    tag
}

//! Cache keys as values, not strings.
//!
//! A [`PrimaryKey`] names a resource: namespace, host, path and query. A [`CacheKey`] is a primary
//! key plus the values of the request headers (or cookies) the response varies on.
//!
//! What must stay true:
//! - the canonical encoding is injective. Every part is length-prefixed, so `a,b`+`c` and
//!   `a`+`b,c` differ, and the path and every parameter are kept as sent (still
//!   percent-encoded), so `/a%2Fb` and `/a/b` differ;
//! - a canonical form merges two requests only if they mean the same to the reader of the
//!   query: [`QueryOrder::ByDecodedName`] reorders parameters by their *decoded* names, keeping
//!   repeats of one name in their order (what actix's `web::Query` reads is unchanged), and
//!   [`QueryOrder::AsSent`] keeps the query exactly as sent (an origin that is not actix may
//!   read parameter order);
//! - lookups go by a 128-bit hash of the encoding, seeded with a secret ([`KeySeed`]) so that a
//!   client who chooses URLs cannot aim them at another URL's slot; the full encoding travels
//!   with every stored entry and is compared on read, so a collision is still only a miss.

use std::fmt;
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_128_with_seed;

thread_local! {
    /// Where primary keys are encoded before their one allocation.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Format version of the canonical encoding; bumping it makes every old key unreachable.
const KEY_VERSION: u8 = 1;
const KIND_PRIMARY: u8 = b'P';
const KIND_PRIMARY_AS_SENT: u8 = b'Q';
const KIND_VARIANT: u8 = b'V';

fn put_part(out: &mut Vec<u8>, part: &[u8]) {
    out.extend_from_slice(&(part.len() as u32).to_le_bytes());
    out.extend_from_slice(part);
}

/// The secret that seeds every key hash of one cache. Nodes that share an L2 must share it;
/// [`crate::CacheBuilder::key_secret`] sets it, and without one a memory-only cache draws a
/// random one per process while a cache with an L2 derives it from its namespace (so that nodes
/// configured alike still share entries).
///
/// ```
/// use cache_core::key::KeySeed;
/// assert_eq!(KeySeed::from_secret(b"s3cret"), KeySeed::from_secret(b"s3cret"));
/// assert_ne!(KeySeed::random(), KeySeed::random());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct KeySeed(u64);

impl fmt::Debug for KeySeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A secret: never in a log line.
        f.write_str("KeySeed(..)")
    }
}

impl KeySeed {
    /// A seed derived from a secret every node of a deployment shares.
    pub fn from_secret(secret: &[u8]) -> KeySeed {
        KeySeed(xxhash_rust::xxh3::xxh3_64_with_seed(
            secret,
            0x6361_6368_652d_6b65,
        ))
    }

    /// A seed no other process can guess: for a cache that shares nothing.
    pub fn random() -> KeySeed {
        use std::hash::{BuildHasher, Hasher};
        // std's RandomState is seeded from the OS's random source once per process and then
        // moved on per instance; a hasher of a fresh one is as good a random u64 as we need.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(crate::time::now_ms());
        KeySeed(hasher.finish())
    }
}

/// How the query string takes part in a [`PrimaryKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueryOrder {
    /// Parameters sorted by their percent-decoded names (stable: repeats of one name keep their
    /// order). Right when the handler reads the query through actix (`web::Query`), which
    /// cannot tell the two orders apart: `?b=2&a=1` and `?a=1&b=2` share an entry, while
    /// `?a=1&%61=2` and `?%61=2&a=1` do not (actix reads `a` as 2 in one and 1 in the other).
    #[default]
    ByDecodedName,
    /// The query exactly as sent: for an origin that may read parameter order.
    AsSent,
}

/// The resource a request names: namespace + host + path + query.
///
/// ```
/// use cache_core::PrimaryKey;
/// let a = PrimaryKey::new("shop", b"example.com", b"/products", b"b=2&a=1");
/// let b = PrimaryKey::new("shop", b"example.com", b"/products", b"a=1&b=2");
/// assert_eq!(a, b);
/// assert_ne!(a, PrimaryKey::new("shop", b"example.com", b"/products%2F", b"a=1&b=2"));
/// // Names are compared decoded, and repeats keep their order: actix reads these differently.
/// assert_ne!(
///     PrimaryKey::new("", b"h", b"/", b"a=1&%61=2"),
///     PrimaryKey::new("", b"h", b"/", b"%61=2&a=1"),
/// );
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PrimaryKey {
    hash: u128,
    seed: KeySeed,
    bytes: Arc<[u8]>,
}

impl PrimaryKey {
    /// Builds the key with the default seed and [`QueryOrder::ByDecodedName`]. `query` is the
    /// raw query string without `?`; empty segments (`a=1&&b=2`) carry no meaning and are
    /// dropped, everything else is kept byte for byte.
    pub fn new(namespace: &str, host: &[u8], path: &[u8], query: &[u8]) -> PrimaryKey {
        PrimaryKey::seeded(
            KeySeed::default(),
            namespace,
            host,
            path,
            query,
            QueryOrder::ByDecodedName,
        )
    }

    /// Builds the key hashed with `seed`, the query taken as `order` says.
    ///
    /// ```
    /// use cache_core::key::{KeySeed, PrimaryKey, QueryOrder};
    /// let seed = KeySeed::from_secret(b"shared");
    /// let sent = |q: &[u8]| PrimaryKey::seeded(seed, "", b"h", b"/", q, QueryOrder::AsSent);
    /// assert_ne!(sent(b"a=1&b=2"), sent(b"b=2&a=1"));
    /// ```
    pub fn seeded(
        seed: KeySeed,
        namespace: &str,
        host: &[u8],
        path: &[u8],
        query: &[u8],
        order: QueryOrder,
    ) -> PrimaryKey {
        let mut params: Vec<&[u8]> = query
            .split(|b| *b == b'&')
            .filter(|p| !p.is_empty())
            .collect();
        if order == QueryOrder::ByDecodedName {
            // Stable: `a=2&a=1` keeps its order, which the app reads.
            params.sort_by_cached_key(|p| decoded_name(p));
        }
        let build = |bytes: &mut Vec<u8>| {
            bytes.clear();
            bytes.reserve(
                24 + namespace.len() + host.len() + path.len() + query.len() + 4 * params.len(),
            );
            bytes.push(KEY_VERSION);
            bytes.push(match order {
                QueryOrder::ByDecodedName => KIND_PRIMARY,
                QueryOrder::AsSent => KIND_PRIMARY_AS_SENT,
            });
            put_part(bytes, namespace.as_bytes());
            put_part(bytes, host);
            put_part(bytes, path);
            bytes.extend_from_slice(&(params.len() as u32).to_le_bytes());
            for param in &params {
                put_part(bytes, param);
            }
            PrimaryKey {
                hash: xxh3_128_with_seed(bytes, seed.0),
                seed,
                bytes: Arc::from(&bytes[..]),
            }
        };
        // Built in a per-thread buffer and copied once into its `Arc`: building it in a `Vec` of
        // its own and converting would allocate twice on every request.
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut buffer) => build(&mut buffer),
            Err(_) => build(&mut Vec::new()),
        })
    }

    /// The 128-bit hash used to find the key in a store.
    pub fn hash(&self) -> u128 {
        self.hash
    }

    /// The canonical encoding.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Length of the canonical encoding, for size limits.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: a key holds at least its version and kind bytes.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The key under which the primary record (a response without `Vary`, or the variant list) lives.
    pub fn cache_key(&self) -> CacheKey {
        CacheKey {
            hash: self.hash,
            bytes: self.bytes.clone(),
        }
    }

    /// Starts a variant key: add the values of each vary header, in the order of the vary list.
    pub fn variant(&self) -> VariantBuilder {
        let mut bytes = Vec::with_capacity(self.bytes.len() + 64);
        bytes.extend_from_slice(&self.bytes);
        bytes.push(KIND_VARIANT);
        VariantBuilder {
            bytes,
            seed: self.seed,
        }
    }

    /// The name of the implicit tag every entry of this resource carries, so that purging one URL
    /// is a tag invalidation (constant cost, safe against fills in flight).
    ///
    /// One tag per URL, named by its whole seeded 128-bit hash: an unsafe request to one URL
    /// never drops another URL's entries. The clocks of such tags are pruned like every other
    /// clock once no entry they could reject is alive ([`crate::tags`]).
    pub fn url_tag(&self) -> String {
        // By hand: `format!` was a visible share of the miss path.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut tag = String::with_capacity(5 + 32);
        tag.push_str("\u{0}url:");
        for shift in (0..32).rev() {
            tag.push(char::from(HEX[((self.hash >> (shift * 4)) & 0xf) as usize]));
        }
        tag
    }
}

impl fmt::Debug for PrimaryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrimaryKey({:032x})", self.hash)
    }
}

/// A parameter's name as `application/x-www-form-urlencoded` readers (actix's `web::Query`)
/// decode it: `+` is a space, `%XX` a byte, and the bytes read as UTF-8 with invalid
/// sequences replaced (so `%FE` and `%FF` are one name to actix, and must sort as one).
fn decoded_name(param: &[u8]) -> Vec<u8> {
    let name = match param.iter().position(|b| *b == b'=') {
        Some(i) => &param[..i],
        None => param,
    };
    String::from_utf8_lossy(&percent_decode(name, true))
        .into_owned()
        .into_bytes()
}

/// `%XX` escapes decoded (and `+` as a space when `plus_is_space`); a malformed escape stays
/// as it is, which is what form and cookie readers do.
///
/// ```
/// use cache_core::key::percent_decode;
/// assert_eq!(percent_decode(b"s%69d+x%zz", true), b"sid x%zz");
/// assert_eq!(percent_decode(b"a+b", false), b"a+b");
/// ```
pub fn percent_decode(name: &[u8], plus_is_space: bool) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(name.len());
    let mut i = 0;
    while i < name.len() {
        match name[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' => match (
                name.get(i + 1).and_then(|b| hex(*b)),
                name.get(i + 2).and_then(|b| hex(*b)),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// Adds vary header values to a primary key. Built by [`PrimaryKey::variant`].
///
/// ```
/// use cache_core::PrimaryKey;
/// let p = PrimaryKey::new("", b"h", b"/me", b"");
/// let alice = p.variant().header("authorization", [&b"alice"[..]]).finish();
/// let bob = p.variant().header("authorization", [&b"bob"[..]]).finish();
/// let nobody = p.variant().header("authorization", std::iter::empty::<&[u8]>()).finish();
/// assert_ne!(alice, bob);
/// assert_ne!(nobody, p.variant().header("authorization", [&b""[..]]).finish());
/// ```
#[derive(Debug)]
pub struct VariantBuilder {
    bytes: Vec<u8>,
    seed: KeySeed,
}

impl VariantBuilder {
    /// Adds one vary header: its (lowercase) name and every value the request sent for it.
    /// An absent header and an empty one give different keys.
    pub fn header<'a>(mut self, name: &str, values: impl IntoIterator<Item = &'a [u8]>) -> Self {
        put_part(&mut self.bytes, name.as_bytes());
        let count_at = self.bytes.len();
        self.bytes.extend_from_slice(&0u32.to_le_bytes());
        let mut count: u32 = 0;
        for value in values {
            put_part(&mut self.bytes, value);
            count = count.saturating_add(1);
        }
        self.bytes[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
        self
    }

    /// The finished key.
    pub fn finish(self) -> CacheKey {
        CacheKey {
            hash: xxh3_128_with_seed(&self.bytes, self.seed.0),
            bytes: self.bytes.into(),
        }
    }
}

/// The key of one stored record: a primary key, or a primary key plus vary values.
///
/// ```
/// use cache_core::PrimaryKey;
/// let key = PrimaryKey::new("", b"h", b"/", b"").cache_key();
/// assert_eq!(key.hash(), PrimaryKey::new("", b"h", b"/", b"").hash());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    hash: u128,
    bytes: Arc<[u8]>,
}

impl CacheKey {
    /// The 128-bit lookup hash.
    pub fn hash(&self) -> u128 {
        self.hash
    }

    /// The full canonical encoding, compared on every read.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// A shared handle to the encoding, stored inside entries.
    pub fn bytes(&self) -> Arc<[u8]> {
        self.bytes.clone()
    }

    /// Rebuilds a key from a stored encoding (for stores that persist keys), hashed with the
    /// seed of the cache that built it.
    pub fn from_bytes(seed: KeySeed, bytes: Arc<[u8]>) -> CacheKey {
        CacheKey {
            hash: xxh3_128_with_seed(&bytes, seed.0),
            bytes,
        }
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({:032x})", self.hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_order_does_not_matter_but_repeated_names_keep_order() {
        let k = |q: &[u8]| PrimaryKey::new("", b"h", b"/", q);
        assert_eq!(k(b"b=1&a=2"), k(b"a=2&b=1"));
        assert_ne!(k(b"a=1&a=2"), k(b"a=2&a=1"));
        assert_eq!(k(b"a=1&&b=2"), k(b"b=2&a=1"));
        // Decoded names: `%61` is `a`, so these two orders mean different things to actix.
        assert_ne!(k(b"a=1&%61=2"), k(b"%61=2&a=1"));
        assert_eq!(k(b"b=1&%61=2"), k(b"%61=2&b=1"));
        assert_ne!(k(b"a=1"), k(b"%61=1"), "spellings are kept as sent");
        // Invalid UTF-8 decodes to U+FFFD for actix: both names are one, so order is kept.
        assert_ne!(k(b"%FE=1&%FF=2"), k(b"%FF=2&%FE=1"));
        let sent = |q: &[u8]| PrimaryKey::seeded(KeySeed(0), "", b"h", b"/", q, QueryOrder::AsSent);
        assert_ne!(sent(b"b=1&a=2"), sent(b"a=2&b=1"));
        assert_ne!(sent(b"a=1"), k(b"a=1"), "the two orders never share a key");
    }

    #[test]
    fn seeds_change_every_hash_but_not_the_encoding() {
        let at = |seed| PrimaryKey::seeded(seed, "", b"h", b"/p", b"", QueryOrder::ByDecodedName);
        let (a, b) = (at(KeySeed(1)), at(KeySeed(2)));
        assert_eq!(a.as_bytes(), b.as_bytes());
        assert_ne!(a.hash(), b.hash());
        assert_ne!(a.url_tag(), b.url_tag());
        assert_eq!(a.url_tag(), format!("\u{0}url:{:032x}", a.hash()));
        let va = a.variant().header("x", [&b"1"[..]]).finish();
        let vb = b.variant().header("x", [&b"1"[..]]).finish();
        assert_ne!(va.hash(), vb.hash());
        assert_eq!(CacheKey::from_bytes(KeySeed(1), va.bytes()), va);
    }

    #[test]
    fn url_tags_do_not_share_buckets() {
        let tags: std::collections::HashSet<String> = (0..100_000)
            .map(|i| PrimaryKey::new("", b"h", format!("/{i}").as_bytes(), b"").url_tag())
            .collect();
        assert_eq!(tags.len(), 100_000);
    }

    #[test]
    fn parts_cannot_run_into_each_other() {
        assert_ne!(
            PrimaryKey::new("", b"a,b", b"c", b""),
            PrimaryKey::new("", b"a", b"b,c", b"")
        );
        assert_ne!(
            PrimaryKey::new("ns", b"h", b"/", b""),
            PrimaryKey::new("n", b"sh", b"/", b"")
        );
        assert_ne!(
            PrimaryKey::new("", b"h", b"/", b"a=1&b"),
            PrimaryKey::new("", b"h", b"/", b"a=1%26b")
        );
        assert_ne!(
            PrimaryKey::new("", b"h", b"/a%2Fb", b""),
            PrimaryKey::new("", b"h", b"/a/b", b"")
        );
    }

    #[test]
    fn variant_values_are_framed() {
        let p = PrimaryKey::new("", b"h", b"/", b"");
        let one = p.variant().header("x", [&b"a"[..], &b"b"[..]]).finish();
        let two = p.variant().header("x", [&b"ab"[..]]).finish();
        assert_ne!(one, two);
        assert_ne!(p.cache_key(), p.variant().finish());
    }
}

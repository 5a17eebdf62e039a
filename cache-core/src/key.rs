//! Cache keys as values, not strings.
//!
//! A [`PrimaryKey`] names a resource: namespace, host, path and query with its parameters sorted
//! by name (stable, so repeated names keep their order). A [`CacheKey`] is a primary key plus the
//! values of the request headers the response varies on.
//!
//! What must stay true: the canonical encoding is injective. Every part is length-prefixed, so
//! `a,b`+`c` and `a`+`b,c` differ, and the path is kept as sent (still percent-encoded), so `/a%2Fb`
//! and `/a/b` differ. Lookups go by a 128-bit hash of the encoding; the full encoding travels with
//! every stored entry and is compared on read, so a hash collision is a miss.

use std::fmt;
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_128;

/// Format version of the canonical encoding; bumping it makes every old key unreachable.
const KEY_VERSION: u8 = 1;
const KIND_PRIMARY: u8 = b'P';
const KIND_VARIANT: u8 = b'V';

fn put_part(out: &mut Vec<u8>, part: &[u8]) {
    out.extend_from_slice(&(part.len() as u32).to_le_bytes());
    out.extend_from_slice(part);
}

/// The resource a request names: namespace + host + path + sorted query.
///
/// ```
/// use cache_core::PrimaryKey;
/// let a = PrimaryKey::new("shop", b"example.com", b"/products", b"b=2&a=1");
/// let b = PrimaryKey::new("shop", b"example.com", b"/products", b"a=1&b=2");
/// assert_eq!(a, b);
/// assert_ne!(a, PrimaryKey::new("shop", b"example.com", b"/products%2F", b"a=1&b=2"));
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PrimaryKey {
    hash: u128,
    bytes: Arc<[u8]>,
}

impl PrimaryKey {
    /// Builds the key. `query` is the raw query string without `?`; empty segments (`a=1&&b=2`)
    /// carry no meaning and are dropped, everything else is kept byte for byte.
    pub fn new(namespace: &str, host: &[u8], path: &[u8], query: &[u8]) -> PrimaryKey {
        let mut params: Vec<&[u8]> = query
            .split(|b| *b == b'&')
            .filter(|p| !p.is_empty())
            .collect();
        // Stable sort by parameter name: `a=2&a=1` keeps its order, which may matter to the app.
        params.sort_by(|x, y| param_name(x).cmp(param_name(y)));
        let mut bytes = Vec::with_capacity(
            24 + namespace.len() + host.len() + path.len() + query.len() + 4 * params.len(),
        );
        bytes.push(KEY_VERSION);
        bytes.push(KIND_PRIMARY);
        put_part(&mut bytes, namespace.as_bytes());
        put_part(&mut bytes, host);
        put_part(&mut bytes, path);
        bytes.extend_from_slice(&(params.len() as u32).to_le_bytes());
        for param in params {
            put_part(&mut bytes, param);
        }
        PrimaryKey {
            hash: xxh3_128(&bytes),
            bytes: bytes.into(),
        }
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
        VariantBuilder { bytes }
    }

    /// The name of the implicit tag every entry of this resource carries, so that purging one URL
    /// is a tag invalidation (constant cost, safe against fills in flight).
    ///
    /// URLs share [`URL_TAG_SLOTS`] such tags by hash: clients choose which URLs they write to,
    /// and a clock per URL would let them grow the clock map without bound. Two URLs in one slot
    /// only cost each other a miss when one is written.
    pub fn url_tag(&self) -> String {
        format!("\u{0}url:{:04x}", (self.hash as usize) % URL_TAG_SLOTS)
    }
}

/// How many implicit URL tags exist; see [`PrimaryKey::url_tag`].
pub const URL_TAG_SLOTS: usize = 1 << 16;

impl fmt::Debug for PrimaryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrimaryKey({:032x})", self.hash)
    }
}

fn param_name(param: &[u8]) -> &[u8] {
    match param.iter().position(|b| *b == b'=') {
        Some(i) => &param[..i],
        None => param,
    }
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
            hash: xxh3_128(&self.bytes),
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

    /// Rebuilds a key from a stored encoding (for stores that persist keys).
    pub fn from_bytes(bytes: Arc<[u8]>) -> CacheKey {
        CacheKey {
            hash: xxh3_128(&bytes),
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

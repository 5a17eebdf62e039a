//! The versioned binary encoding of a [`Record`], as shared stores (Redis) keep it.
//!
//! Layout: `b"CAR"`, a version byte, a kind byte (1 response, 2 variant list), the fields in a
//! fixed order (integers little-endian; byte strings as a `u32` length and the bytes), then an
//! xxh3-64 checksum of everything before it. Hand-written rather than serde + a binary codec:
//! the format is small and fixed, every length is checked against what remains before anything
//! is allocated, and it adds no dependency whose own format could change under us.
//!
//! A response kept compressed ([`crate::encoding`]) is written with its gzip and br copies and
//! without its identity body, which [`decode`] makes again from a copy (and refuses the record
//! when that does not give back exactly the recorded length): the shared store holds the
//! smaller form, and every process can still answer a client that accepts no coding.
//!
//! What must stay true: [`decode`] never panics and never allocates more than the input's length
//! for any input (an identity body rebuilt from a compressed copy: at most the recorded length,
//! itself bounded by [`MAX_DECODED_BODY`] and, for gzip, by the copy's size times deflate's
//! largest ratio, and the buffer grows only as decoded bytes arrive); a truncated, mutated, foreign or future-version value is an `Err`, so the
//! caller treats it as a miss. A new field means a new version number, never a silent reinterpretation.

use std::sync::Arc;

use bytes::Bytes;

use crate::encoding::Encoded;
use crate::entry::HttpMeta;
use crate::store::{Record, Variants};
use crate::{CacheError, Entry, Visibility};

const MAGIC: &[u8; 3] = b"CAR";
/// The format written today. Readers reject every other version.
pub const VERSION: u8 = 4;
const KIND_RESPONSE: u8 = 1;
const KIND_VARIANTS: u8 = 2;
const CHECKSUM_LEN: usize = 8;

/// Encodes a record.
///
/// ```
/// use cache_core::{codec, Entry, PrimaryKey, Record};
/// let key = PrimaryKey::new("", b"h", b"/", b"").cache_key();
/// let record = Record::Response(Entry::new(key.bytes(), 200, vec![], "hi".into(), 1, 2).into());
/// assert_eq!(codec::decode(&codec::encode(&record)).unwrap(), record);
/// assert!(codec::decode(b"not ours").is_err());
/// ```
pub fn encode(record: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(record.payload_bytes() + 128);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    match record {
        Record::Response(e) => {
            out.push(KIND_RESPONSE);
            put_bytes(&mut out, &e.key);
            out.extend_from_slice(&e.status.to_le_bytes());
            put_len(&mut out, e.headers.len());
            for (name, value) in &e.headers {
                put_bytes(&mut out, name.as_bytes());
                put_bytes(&mut out, value);
            }
            match e.encoded.as_deref() {
                // The identity body is rebuilt from a copy on read.
                Some(_) => put_bytes(&mut out, &[]),
                None => put_bytes(&mut out, &e.body),
            }
            put_bytes(&mut out, e.etag.as_bytes());
            for n in [
                e.stored_at_ms,
                e.fresh_until_ms,
                e.stale_while_revalidate_ms,
                e.stale_if_error_ms,
                e.born,
            ] {
                out.extend_from_slice(&n.to_le_bytes());
            }
            put_strings(&mut out, &e.tags);
            put_strings(&mut out, &e.vary);
            out.push(match e.visibility {
                Visibility::Unspecified => 0,
                Visibility::Public => 1,
                Visibility::Private => 2,
            });
            match e.max_age_secs {
                Some(secs) => {
                    out.push(1);
                    out.extend_from_slice(&secs.to_le_bytes());
                }
                None => out.push(0),
            }
            out.push(u8::from(e.shares_authorized) | u8::from(!e.shares_cookied) << 1);
            match e.http.as_deref() {
                Some(http) => {
                    out.push(1);
                    out.push(u8::from(http.must_revalidate) | u8::from(http.no_cache) << 1);
                    out.extend_from_slice(&http.keep_until_ms.to_le_bytes());
                }
                None => out.push(0),
            }
            match e.encoded.as_deref() {
                Some(encoded) => {
                    out.push(
                        u8::from(encoded.gzip.is_some()) | u8::from(encoded.br.is_some()) << 1,
                    );
                    put_len(&mut out, e.body.len());
                    for copy in [&encoded.gzip, &encoded.br].into_iter().flatten() {
                        put_bytes(&mut out, copy);
                    }
                }
                None => out.push(0),
            }
        }
        Record::Variants(v) => {
            out.push(KIND_VARIANTS);
            put_bytes(&mut out, &v.key);
            put_strings(&mut out, &v.vary);
            out.extend_from_slice(&v.expires_at_ms.to_le_bytes());
        }
    }
    let sum = xxhash_rust::xxh3::xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// Whether `bytes` starts like a record of ours in a format version other than [`VERSION`]
/// (another release's, during a rolling upgrade): a miss to leave in place, not garbage to
/// delete.
///
/// ```
/// use cache_core::codec;
/// assert!(codec::is_other_version(&[b'C', b'A', b'R', codec::VERSION - 1, 1]));
/// assert!(!codec::is_other_version(&[b'C', b'A', b'R', codec::VERSION, 1]));
/// assert!(!codec::is_other_version(b"garbage"));
/// ```
pub fn is_other_version(bytes: &[u8]) -> bool {
    bytes.len() > MAGIC.len() + 1 && &bytes[..3] == MAGIC && bytes[3] != VERSION
}

/// Largest identity body rebuilt from a compressed copy: far above any body the middleware
/// stores (`max_body_bytes` is 1 MiB by default), and a bound on what a forged record can make
/// a reader allocate.
pub const MAX_DECODED_BODY: usize = 64 << 20;

/// Decodes what [`encode`] wrote; anything else is `Err(CacheError::Corrupt)`.
pub fn decode(bytes: &[u8]) -> Result<Record, CacheError> {
    decode_shared(&Bytes::copy_from_slice(bytes))
}

/// As [`decode`], but the body shares `bytes`' buffer instead of being copied (the hit path of
/// a shared store, which owns the value it read).
pub fn decode_shared(shared: &Bytes) -> Result<Record, CacheError> {
    let bytes: &[u8] = shared;
    let body_len = bytes
        .len()
        .checked_sub(CHECKSUM_LEN)
        .ok_or_else(|| corrupt("shorter than a checksum"))?;
    let (body, sum) = bytes.split_at(body_len);
    let mut expected = [0u8; CHECKSUM_LEN];
    expected.copy_from_slice(sum);
    if xxhash_rust::xxh3::xxh3_64(body) != u64::from_le_bytes(expected) {
        return Err(corrupt("checksum mismatch"));
    }
    let mut r = Reader {
        rest: body,
        whole: shared,
    };
    if r.take(3)? != MAGIC {
        return Err(corrupt("not a cache-actix record"));
    }
    let version = r.u8()?;
    if version != VERSION {
        return Err(corrupt(&format!("unknown format version {version}")));
    }
    let record = match r.u8()? {
        KIND_RESPONSE => Record::Response(Arc::new(r.entry()?)),
        KIND_VARIANTS => Record::Variants(Arc::new(Variants {
            key: Arc::from(r.bytes()?),
            vary: Arc::from(r.strings()?),
            expires_at_ms: r.u64()?,
        })),
        kind => return Err(corrupt(&format!("unknown record kind {kind}"))),
    };
    if !r.rest.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(record)
}

fn corrupt(why: &str) -> CacheError {
    CacheError::Corrupt(why.to_string())
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    // Records are bounded by max_body_bytes and the key limit, far below 4 GiB; a larger one
    // would be cut to a length that fails the checksum-protected decode rather than wrap.
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn put_strings(out: &mut Vec<u8>, items: &[String]) {
    put_len(out, items.len());
    for item in items {
        put_bytes(out, item.as_bytes());
    }
}

/// A cursor that checks every length against what remains before taking it.
struct Reader<'a> {
    rest: &'a [u8],
    /// The buffer `rest` points into, to hand out the body without copying it.
    whole: &'a Bytes,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CacheError> {
        if n > self.rest.len() {
            return Err(corrupt("truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, CacheError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, CacheError> {
        let mut b = [0u8; 2];
        b.copy_from_slice(self.take(2)?);
        Ok(u16::from_le_bytes(b))
    }

    fn u32(&mut self) -> Result<u32, CacheError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, CacheError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn bytes(&mut self) -> Result<&'a [u8], CacheError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn string(&mut self) -> Result<String, CacheError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| corrupt("text is not UTF-8"))
    }

    /// A count of items each at least `min_item` bytes long, checked against what remains so
    /// that a forged count cannot make us reserve memory the input does not back.
    fn count(&mut self, min_item: usize) -> Result<usize, CacheError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item) > self.rest.len() {
            return Err(corrupt("count exceeds the value"));
        }
        Ok(n)
    }

    fn strings(&mut self) -> Result<Vec<String>, CacheError> {
        let n = self.count(4)?;
        (0..n).map(|_| self.string()).collect()
    }

    fn entry(&mut self) -> Result<Entry, CacheError> {
        let key: Arc<[u8]> = Arc::from(self.bytes()?);
        let status = self.u16()?;
        if !(100..=999).contains(&status) {
            return Err(corrupt("status out of range"));
        }
        let n = self.count(8)?;
        let mut headers = Vec::with_capacity(n);
        for _ in 0..n {
            let name = self.string()?;
            let value = Bytes::copy_from_slice(self.bytes()?);
            headers.push((name, value));
        }
        let body = self.whole.slice_ref(self.bytes()?);
        let etag = self.string()?;
        let stored_at_ms = self.u64()?;
        let fresh_until_ms = self.u64()?;
        let stale_while_revalidate_ms = self.u64()?;
        let stale_if_error_ms = self.u64()?;
        let born = self.u64()?;
        let tags = self.strings()?;
        let vary = self.strings()?;
        let visibility = match self.u8()? {
            0 => Visibility::Unspecified,
            1 => Visibility::Public,
            2 => Visibility::Private,
            _ => return Err(corrupt("unknown visibility")),
        };
        let max_age_secs = match self.u8()? {
            0 => None,
            1 => Some(self.u64()?),
            _ => return Err(corrupt("bad max-age flag")),
        };
        let sharing = self.u8()?;
        if sharing > 3 {
            return Err(corrupt("bad sharing flags"));
        }
        let http = match self.u8()? {
            0 => None,
            1 => {
                let flags = self.u8()?;
                if flags > 3 {
                    return Err(corrupt("unknown http flags"));
                }
                Some(HttpMeta {
                    must_revalidate: flags & 1 != 0,
                    no_cache: flags & 2 != 0,
                    keep_until_ms: self.u64()?,
                })
            }
            _ => return Err(corrupt("bad http flag")),
        };
        let codings = self.u8()?;
        let (body, encoded) = match codings {
            0 => (body, None),
            1..=3 if body.is_empty() => {
                let identity_len = self.u32()? as usize;
                let mut copy = |held: bool| -> Result<Option<Bytes>, CacheError> {
                    Ok(held
                        .then(|| self.bytes())
                        .transpose()?
                        .map(|b| self.whole.slice_ref(b)))
                };
                let encoded = Encoded {
                    gzip: copy(codings & 1 != 0)?,
                    br: copy(codings & 2 != 0)?,
                };
                // A gzip copy expands at most ~1032x (deflate's limit); brotli has no such
                // bound, so every record is also held to `MAX_DECODED_BODY`.
                let gzip_bound = encoded
                    .gzip
                    .as_ref()
                    .map_or(usize::MAX, |g| g.len().saturating_mul(1032).max(64));
                if identity_len > gzip_bound.min(MAX_DECODED_BODY) {
                    return Err(corrupt("identity length out of range"));
                }
                let body = encoded
                    .decode(identity_len)
                    .ok_or_else(|| corrupt("compressed copy does not decode"))?;
                (body, Some(encoded))
            }
            _ => return Err(corrupt("bad codings flag")),
        };
        let mut entry = Entry::with_etag(
            key,
            status,
            headers,
            body,
            etag,
            stored_at_ms,
            fresh_until_ms,
        );
        entry.http = http.map(Box::new);
        entry.encoded = encoded.map(Box::new);
        entry.stale_while_revalidate_ms = stale_while_revalidate_ms;
        entry.stale_if_error_ms = stale_if_error_ms;
        entry.born = born;
        entry.tags = tags;
        entry.vary = Arc::from(vary);
        entry.visibility = visibility;
        entry.max_age_secs = max_age_secs;
        entry.shares_authorized = sharing & 1 != 0;
        entry.shares_cookied = sharing & 2 == 0;
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PrimaryKey;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    fn sample() -> Vec<Record> {
        let primary = PrimaryKey::new("ns", b"host", b"/p/1", b"a=1");
        let mut e = Entry::new(
            primary.cache_key().bytes(),
            203,
            vec![
                (
                    "content-type".into(),
                    Bytes::from_static(b"application/json"),
                ),
                ("x-raw".into(), Bytes::from_static(b"\xff\x00v")),
            ],
            Bytes::from(vec![7u8; 300]),
            1_700_000_000_000,
            1_700_000_030_000,
        );
        e.stale_while_revalidate_ms = 5_000;
        e.stale_if_error_ms = 60_000;
        e.born = 42;
        e.tags = vec![
            "products".into(),
            "product:1".into(),
            "\u{0}url:00ff".into(),
        ];
        e.vary = Arc::from(vec!["authorization".to_string()]);
        e.visibility = Visibility::Private;
        e.max_age_secs = Some(10);
        e.shares_authorized = true;
        e.shares_cookied = false;
        let mut http = e.clone();
        http.http = Some(Box::new(HttpMeta {
            must_revalidate: true,
            no_cache: true,
            keep_until_ms: 1_700_003_600_000,
        }));
        let json = Bytes::from("{\"id\":1,\"name\":\"kettle\"}".repeat(100));
        let mut compressed = e.clone();
        compressed.encoded = crate::encoding::Compression::new()
            .encode(&json)
            .map(Box::new);
        compressed.body = json;
        assert!(compressed.encoded.is_some());
        let v = Variants {
            key: primary.cache_key().bytes(),
            vary: Arc::from(vec!["accept".to_string(), "authorization".to_string()]),
            expires_at_ms: 99,
        };
        vec![
            Record::Response(Arc::new(e)),
            Record::Response(Arc::new(http)),
            Record::Response(Arc::new(compressed)),
            Record::Variants(Arc::new(v)),
            Record::Response(Arc::new(Entry::new(
                Arc::from(vec![]),
                200,
                vec![],
                Bytes::new(),
                0,
                0,
            ))),
        ]
    }

    #[test]
    fn every_field_survives_a_round_trip() {
        for record in sample() {
            assert_eq!(decode(&encode(&record)), Ok(record));
        }
    }

    #[test]
    fn a_compressed_response_is_kept_without_its_identity_body() {
        let compressed = &sample()[2];
        let Record::Response(entry) = compressed else {
            panic!("sample 2 is a response")
        };
        let encoded = encode(compressed).len();
        let copies = entry.encoded().map_or(0, |e| e.len());
        assert!(
            encoded < entry.body().len(),
            "{encoded} bytes for a {} byte body",
            entry.body().len()
        );
        assert!(
            encoded < copies + 400,
            "{encoded} bytes: the identity body was written too"
        );
        assert_eq!(
            decode(&encode(compressed)).unwrap().payload_bytes(),
            compressed.payload_bytes()
        );
    }

    #[test]
    fn other_versions_and_kinds_are_rejected() {
        for record in sample() {
            let mut bytes = encode(&record);
            bytes[3] = VERSION + 1; // a future writer
            let body = bytes.len() - CHECKSUM_LEN;
            let sum = xxhash_rust::xxh3::xxh3_64(&bytes[..body]).to_le_bytes();
            bytes[body..].copy_from_slice(&sum);
            assert!(matches!(decode(&bytes), Err(CacheError::Corrupt(m)) if m.contains("version")));
        }
    }

    /// Property: every truncation and every single-byte mutation of a valid value is rejected,
    /// and random bytes never decode or panic.
    #[test]
    fn truncated_mutated_and_random_bytes_are_errors_not_panics() {
        let mut rng = StdRng::seed_from_u64(0x00ca_c4e5);
        for record in sample() {
            let bytes = encode(&record);
            for len in 0..bytes.len() {
                assert!(decode(&bytes[..len]).is_err(), "truncated at {len}");
            }
            for _ in 0..5_000 {
                let mut mutated = bytes.clone();
                let i = rng.gen_range(0..mutated.len());
                mutated[i] ^= rng.gen_range(1..=255u8);
                assert!(decode(&mutated).is_err(), "mutation at {i} accepted");
            }
        }
        for _ in 0..50_000 {
            let len = rng.gen_range(0..512);
            let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            assert!(decode(&bytes).is_err());
        }
    }

    /// Property: a value whose checksum is right but whose fields are garbage (a forged or
    /// buggy writer) is still an error, never a panic or a huge allocation.
    #[test]
    fn well_checksummed_garbage_is_rejected_without_panicking() {
        let mut rng = StdRng::seed_from_u64(7);
        let valid = encode(&sample()[0]);
        for _ in 0..20_000 {
            let mut body: Vec<u8> = valid[..valid.len() - CHECKSUM_LEN].to_vec();
            for _ in 0..rng.gen_range(1..4) {
                let i = rng.gen_range(5..body.len());
                body[i] = rng.gen();
            }
            if rng.gen_bool(0.3) {
                let cut = rng.gen_range(5..body.len());
                body.truncate(cut);
            }
            let sum = xxhash_rust::xxh3::xxh3_64(&body).to_le_bytes();
            body.extend_from_slice(&sum);
            // Either an error, or a record that re-encodes to exactly these bytes.
            if let Ok(record) = decode(&body) {
                assert_eq!(encode(&record), body);
            }
        }
    }
}

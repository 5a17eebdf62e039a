//! Content codings: the br and gzip copies of a stored body, made once when the response is
//! stored ([`Compression::encode`]), and the choice of copy for each request
//! ([`Coding::choose`], from its `Accept-Encoding`).
//!
//! What must stay true: an encoded copy decodes to exactly the identity body; a coding that does
//! not make the body smaller is not kept; a request gets a coding only if its `Accept-Encoding`
//! accepts it (no header, or one that accepts none of ours, gets identity); decoding never
//! produces more than the length recorded for the identity body.

use std::io::{Read, Write};

use bytes::Bytes;

/// A content coding a stored response can be answered in.
///
/// ```
/// use cache_core::encoding::Coding;
/// assert_eq!(Coding::Br.token(), Some("br"));
/// assert_eq!(Coding::Identity.token(), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coding {
    /// The body as the handler made it.
    Identity,
    /// `Content-Encoding: gzip` (RFC 1952).
    Gzip,
    /// `Content-Encoding: br` (RFC 7932).
    Br,
}

impl Coding {
    /// The `Content-Encoding` token, `None` for identity (which is sent without the header).
    pub fn token(self) -> Option<&'static str> {
        match self {
            Coding::Identity => None,
            Coding::Gzip => Some("gzip"),
            Coding::Br => Some("br"),
        }
    }

    /// A small index (identity 0, gzip 1, br 2), for tables kept per coding.
    pub fn index(self) -> usize {
        match self {
            Coding::Identity => 0,
            Coding::Gzip => 1,
            Coding::Br => 2,
        }
    }

    /// The coding to answer a request with, given its `Accept-Encoding` value (`None`: no such
    /// header) and the copies `encoded` holds.
    ///
    /// The coding with the highest `q` among those held wins, br before gzip on a tie, and a
    /// held coding beats identity unless the client ranks identity (named, or through `*`)
    /// strictly higher. `q=0`
    /// refuses a coding; `*` stands for every coding not named. A value that cannot be read
    /// gets identity, which every client understands.
    ///
    /// ```
    /// use cache_core::encoding::{Coding, Compression};
    /// let body = "{\"a\":1}".repeat(400);
    /// let copies = Compression::new().encode(body.as_bytes()).unwrap();
    /// assert_eq!(Coding::choose(Some(b"gzip, deflate, br"), &copies), Coding::Br);
    /// assert_eq!(Coding::choose(Some(b"br;q=0.5, gzip"), &copies), Coding::Gzip);
    /// assert_eq!(Coding::choose(Some(b"br;q=0, *"), &copies), Coding::Gzip);
    /// assert_eq!(Coding::choose(Some(b"identity"), &copies), Coding::Identity);
    /// assert_eq!(Coding::choose(None, &copies), Coding::Identity);
    /// ```
    pub fn choose(accept_encoding: Option<&[u8]>, encoded: &Encoded) -> Coding {
        let Some(value) = accept_encoding.and_then(|v| std::str::from_utf8(v).ok()) else {
            return Coding::Identity;
        };
        let (mut br, mut gzip, mut identity, mut star) = (None, None, None, None);
        for item in value.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            if name.is_empty() {
                continue;
            }
            let mut q = Some(1000);
            for param in parts {
                if let Some((key, v)) = param.split_once('=') {
                    if key.trim().eq_ignore_ascii_case("q") {
                        q = qvalue(v.trim());
                    }
                }
            }
            // An unreadable weight refuses the item rather than guess at it.
            let q = q.unwrap_or(0);
            let slot = if name.eq_ignore_ascii_case("br") {
                &mut br
            } else if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
                &mut gzip
            } else if name.eq_ignore_ascii_case("identity") {
                &mut identity
            } else if name == "*" {
                &mut star
            } else {
                continue;
            };
            *slot = Some(q);
        }
        let weight = |named: Option<u16>| named.or(star).unwrap_or(0);
        // `*` covers identity too when identity is not named (RFC 9110 section 12.5.3).
        let mut best = (Coding::Identity, identity.or(star).unwrap_or(0));
        for (coding, q) in [(Coding::Br, weight(br)), (Coding::Gzip, weight(gzip))] {
            if q > 0
                && encoded.get(coding).is_some()
                && (q > best.1 || best.0 == Coding::Identity && q == best.1)
            {
                best = (coding, q);
            }
        }
        best.0
    }
}

/// An RFC 9110 qvalue in thousandths: `0`, `0.5`, `1`, `1.000`; `None` for anything else.
fn qvalue(text: &str) -> Option<u16> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |n, b| n * 10 + u16::from(b - b'0'));
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The encoded copies of one body: what a store keeps beside (or, in Redis, instead of) the
/// identity body. A coding that did not shrink the body is absent.
///
/// ```
/// use cache_core::encoding::{Coding, Compression};
/// let body = "hello, world. ".repeat(200);
/// let copies = Compression::new().encode(body.as_bytes()).unwrap();
/// assert!(copies.get(Coding::Br).unwrap().len() < body.len());
/// assert_eq!(copies.decode(body.len()).as_deref(), Some(body.as_bytes()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Encoded {
    pub(crate) gzip: Option<Bytes>,
    pub(crate) br: Option<Bytes>,
}

impl Encoded {
    /// The copy in `coding`, if held (never for identity: that is the entry's body).
    pub fn get(&self, coding: Coding) -> Option<&Bytes> {
        match coding {
            Coding::Identity => None,
            Coding::Gzip => self.gzip.as_ref(),
            Coding::Br => self.br.as_ref(),
        }
    }

    /// Bytes the copies occupy.
    pub fn len(&self) -> usize {
        self.gzip.as_ref().map_or(0, Bytes::len) + self.br.as_ref().map_or(0, Bytes::len)
    }

    /// Whether no copy is held.
    pub fn is_empty(&self) -> bool {
        self.gzip.is_none() && self.br.is_none()
    }

    /// The identity body these copies were made from, decoded from gzip (the faster to decode)
    /// or else br; `None` when neither decodes to exactly `identity_len` bytes.
    pub fn decode(&self, identity_len: usize) -> Option<Bytes> {
        // Grown as bytes arrive rather than reserved whole: the length is the record's word.
        let mut out = Vec::with_capacity(identity_len.min(4 * self.len() + 1024));
        // One byte past the expected length shows a copy that is longer than it should be.
        let limit = identity_len as u64 + 1;
        let read = if let Some(gzip) = &self.gzip {
            flate2::read::GzDecoder::new(&gzip[..])
                .take(limit)
                .read_to_end(&mut out)
        } else if let Some(br) = &self.br {
            brotli::Decompressor::new(&br[..], 4096)
                .take(limit)
                .read_to_end(&mut out)
        } else {
            return None;
        };
        (read.is_ok() && out.len() == identity_len).then(|| Bytes::from(out))
    }
}

/// Which stored responses get encoded copies, and how hard they are squeezed. A policy type:
/// the middleware holds one ([`Compression::new`] for the defaults) and asks it once per store.
///
/// Defaults: bodies of at least 1 KiB (smaller ones gain too little to pay the header and the
/// CPU), br at quality 5 and gzip at level 6 (the fast end of each: this runs on the miss path,
/// once per stored response, and buys most of the size of the slow settings).
///
/// ```
/// use cache_core::encoding::Compression;
/// let compression = Compression::new().min_bytes(512).brotli_quality(9).gzip(false);
/// assert!(compression.encode(&[b'a'; 100]).is_none()); // under 512 bytes
/// let copies = compression.encode(&[b'a'; 4096]).unwrap();
/// assert!(copies.get(cache_core::encoding::Coding::Gzip).is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compression {
    min_bytes: usize,
    brotli_quality: Option<u32>,
    gzip_level: Option<u32>,
}

impl Default for Compression {
    fn default() -> Self {
        Compression::new()
    }
}

/// Brotli's window (log2 bytes): 1 MiB covers every body a cache stores by default
/// (`max_body_bytes`) while keeping the encoder's memory small.
const BROTLI_LGWIN: u32 = 20;

impl Compression {
    /// br and gzip for bodies of 1 KiB or more.
    pub fn new() -> Compression {
        Compression {
            min_bytes: 1024,
            brotli_quality: Some(5),
            gzip_level: Some(6),
        }
    }

    /// Smallest body compressed.
    pub fn min_bytes(mut self, bytes: usize) -> Self {
        self.min_bytes = bytes;
        self
    }

    /// Brotli quality, 0 (fastest) to 11 (smallest); larger values are taken as 11.
    pub fn brotli_quality(mut self, quality: u32) -> Self {
        self.brotli_quality = Some(quality.min(11));
        self
    }

    /// gzip level, 0 to 9; larger values are taken as 9.
    pub fn gzip_level(mut self, level: u32) -> Self {
        self.gzip_level = Some(level.min(9));
        self
    }

    /// Whether a br copy is made (on by default).
    pub fn brotli(mut self, on: bool) -> Self {
        self.brotli_quality = match (on, self.brotli_quality) {
            (true, None) => Some(5),
            (true, q) => q,
            (false, _) => None,
        };
        self
    }

    /// Whether a gzip copy is made (on by default).
    pub fn gzip(mut self, on: bool) -> Self {
        self.gzip_level = match (on, self.gzip_level) {
            (true, None) => Some(6),
            (true, l) => l,
            (false, _) => None,
        };
        self
    }

    /// The copies of `body`; `None` when it is too small or no coding shrinks it.
    pub fn encode(&self, body: &[u8]) -> Option<Encoded> {
        if body.len() < self.min_bytes || body.is_empty() {
            return None;
        }
        // Boxed to their length: a `Bytes` made from a `Vec` keeps its whole capacity, which
        // the budget would not see.
        let smaller =
            |copy: Vec<u8>| (copy.len() < body.len()).then(|| Bytes::from(copy.into_boxed_slice()));
        let gzip = self.gzip_level.and_then(|level| {
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 3),
                flate2::Compression::new(level),
            );
            encoder.write_all(body).ok()?;
            smaller(encoder.finish().ok()?)
        });
        let br = self.brotli_quality.and_then(|quality| {
            let mut out = Vec::with_capacity(body.len() / 3);
            {
                let mut encoder =
                    brotli::CompressorWriter::new(&mut out, 4096, quality, BROTLI_LGWIN);
                encoder.write_all(body).ok()?;
                encoder.flush().ok()?;
            }
            smaller(out)
        });
        let encoded = Encoded { gzip, br };
        (!encoded.is_empty()).then_some(encoded)
    }
}

/// Whether a `Content-Type` names text-like content that compresses: `text/*`, JSON, XML,
/// JavaScript, SVG and their `+json` / `+xml` kin. Everything else (images, archives, fonts,
/// video, `application/octet-stream`, no type at all) is taken as already compressed or opaque.
///
/// ```
/// use cache_core::encoding::compressible_type;
/// assert!(compressible_type(b"application/json; charset=utf-8"));
/// assert!(compressible_type(b"application/problem+json"));
/// assert!(!compressible_type(b"image/png"));
/// assert!(!compressible_type(b"application/gzip"));
/// ```
pub fn compressible_type(content_type: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(content_type) else {
        return false;
    };
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    match kind {
        "text" => true,
        "application" => {
            matches!(
                sub,
                "json"
                    | "javascript"
                    | "ecmascript"
                    | "xml"
                    | "xhtml+xml"
                    | "x-ndjson"
                    | "ndjson"
                    | "graphql-response+json"
                    | "wasm"
                    | "x-javascript"
            ) || sub.ends_with("+json")
                || sub.ends_with("+xml")
        }
        "image" => sub == "svg+xml",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copies() -> Encoded {
        Compression::new()
            .encode("{\"k\":\"value\"}".repeat(200).as_bytes())
            .unwrap()
    }

    #[test]
    fn each_copy_decodes_to_the_body_and_a_corrupt_one_to_nothing() {
        let body = "{\"k\":\"value\"}".repeat(200);
        let all = copies();
        let mut gz = Vec::new();
        flate2::read::GzDecoder::new(&all.gzip.clone().unwrap()[..])
            .read_to_end(&mut gz)
            .unwrap();
        assert_eq!(gz, body.as_bytes());
        let only_br = Encoded {
            gzip: None,
            br: all.br.clone(),
        };
        assert_eq!(only_br.decode(body.len()).as_deref(), Some(body.as_bytes()));
        assert_eq!(
            all.decode(body.len() - 1),
            None,
            "a wrong length is refused"
        );
        let mut bad = all.gzip.clone().unwrap().to_vec();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        let corrupt = Encoded {
            gzip: Some(bad.into()),
            br: None,
        };
        assert_eq!(corrupt.decode(body.len()), None);
    }

    #[test]
    fn a_body_that_does_not_shrink_gets_no_copy() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            })
            .collect();
        assert_eq!(Compression::new().encode(&noise), None);
        assert_eq!(Compression::new().encode(b""), None);
    }

    #[test]
    fn accept_encoding_weights_are_honoured() {
        let all = copies();
        let gzip_only = Encoded {
            gzip: all.gzip.clone(),
            br: None,
        };
        let choose = |v: &str, e: &Encoded| Coding::choose(Some(v.as_bytes()), e);
        assert_eq!(choose("br", &all), Coding::Br);
        assert_eq!(choose("BR", &all), Coding::Br);
        assert_eq!(choose("br", &gzip_only), Coding::Identity);
        assert_eq!(choose("gzip;q=1.0, br;q=0.9", &all), Coding::Gzip);
        assert_eq!(choose("x-gzip", &all), Coding::Gzip);
        assert_eq!(choose("*", &all), Coding::Br);
        assert_eq!(choose("*;q=0", &all), Coding::Identity);
        assert_eq!(choose("gzip;q=0, br;q=0", &all), Coding::Identity);
        assert_eq!(choose("identity;q=1, br;q=0.5", &all), Coding::Identity);
        assert_eq!(choose("identity, br", &all), Coding::Br);
        assert_eq!(choose("deflate, zstd", &all), Coding::Identity);
        assert_eq!(
            choose("br;q=2", &all),
            Coding::Identity,
            "q above 1 is unreadable"
        );
        assert_eq!(choose("br;q=0.0001", &all), Coding::Identity);
        assert_eq!(choose(",,;, br ; q=0.8 ,", &all), Coding::Br);
        assert_eq!(
            choose("br; q = 0, gzip", &all),
            Coding::Gzip,
            "spaces around ="
        );
        assert_eq!(
            choose("br;q=0.1, *", &all),
            Coding::Gzip,
            "* ranks gzip at 1"
        );
        let br_only = Encoded {
            gzip: None,
            br: all.br.clone(),
        };
        assert_eq!(
            choose("br;q=0.1, *", &br_only),
            Coding::Identity,
            "* ranks identity at 1"
        );
        assert_eq!(choose("br;q=0.1, *;q=0.05", &all), Coding::Br);
        assert_eq!(Coding::choose(Some(&[0xff, 0xfe]), &all), Coding::Identity);
    }
}

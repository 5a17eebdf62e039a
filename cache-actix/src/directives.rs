//! `Cache-Control` (and `CDN-Cache-Control`, `Pragma`) as RFC 9111 section 5.2 reads them.
//!
//! What must stay true: parsing never fails. Commas inside quoted strings do not split
//! directives, names are case-insensitive, a directive with a malformed argument is ignored
//! (never read as a shorter or longer lifetime), the first occurrence of a repeated directive
//! wins (RFC 9111 4.2.1), and unknown directives are ignored.

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

/// The largest delta-seconds we keep: RFC 9111 1.2.2 says to treat bigger ones as 2^31.
const DELTA_MAX: u64 = 1 << 31;

/// The directives of one field (all its lines together).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Directives {
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub must_understand: bool,
    pub only_if_cached: bool,
    /// `no-transform`: no cache or proxy may change the content (a compressed copy included).
    pub no_transform: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub min_fresh: Option<u64>,
    /// `max-stale` (request): `Some(None)` accepts any staleness.
    pub max_stale: Option<Option<u64>>,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
    /// Read from a targeted field (`CDN-Cache-Control`), which replaces `Expires` too.
    pub targeted: bool,
}

impl Directives {
    /// Reads every line of `name` in `headers`; non-UTF-8 lines are skipped.
    pub(crate) fn of(headers: &HeaderMap, name: &HeaderName) -> Directives {
        let mut d = Directives::default();
        let mut seen = Seen::default();
        for value in headers.get_all(name) {
            if let Ok(text) = value.to_str() {
                for (name, arg) in split(text) {
                    d.apply(&name, arg.as_deref(), &mut seen);
                }
            }
        }
        d
    }

    /// A targeted field such as `CDN-Cache-Control` (RFC 9213): a Structured Field Dictionary
    /// (RFC 8941). `None` when it is absent or not a valid dictionary; the caller then falls back
    /// to `Cache-Control`. A member of the wrong type (`max-age="60"`) is ignored.
    pub(crate) fn targeted(headers: &HeaderMap, name: &HeaderName) -> Option<Directives> {
        let mut lines = headers.get_all(name).peekable();
        lines.peek()?;
        let mut text = String::new();
        for line in lines {
            if !text.is_empty() {
                text.push(',');
            }
            text.push_str(line.to_str().ok()?);
        }
        let mut d = Directives {
            targeted: true,
            ..Directives::default()
        };
        let mut seen = Seen::default();
        for (key, value) in sf_dictionary(&text)? {
            let arg = match value {
                SfItem::True => None,
                SfItem::Integer(n) if n >= 0 => Some(n.to_string()),
                // Wrong type for every directive we read: the member is ignored.
                SfItem::Integer(_) | SfItem::Other => continue,
            };
            d.apply(&key, arg.as_deref(), &mut seen);
        }
        Some(d)
    }

    fn apply(&mut self, name: &str, arg: Option<&str>, seen: &mut Seen) {
        let delta = || arg.and_then(delta_seconds);
        match name {
            "no-store" => self.no_store = true,
            // A qualified `no-cache="field"` or `private="field"` is read as the whole directive:
            // stricter than the RFC requires, never less safe.
            "no-cache" => self.no_cache = true,
            "private" => self.private = true,
            "public" => self.public = true,
            "must-revalidate" => self.must_revalidate = true,
            "proxy-revalidate" => self.proxy_revalidate = true,
            "must-understand" => self.must_understand = true,
            "only-if-cached" => self.only_if_cached = true,
            "no-transform" => self.no_transform = true,
            "max-age" => first(&mut self.max_age, &mut seen.max_age, delta()),
            "s-maxage" => first(&mut self.s_maxage, &mut seen.s_maxage, delta()),
            "min-fresh" => first(&mut self.min_fresh, &mut seen.min_fresh, delta()),
            "stale-while-revalidate" => first(
                &mut self.stale_while_revalidate,
                &mut seen.stale_while_revalidate,
                delta(),
            ),
            "stale-if-error" => first(&mut self.stale_if_error, &mut seen.stale_if_error, delta()),
            "max-stale" if !seen.max_stale => {
                seen.max_stale = true;
                self.max_stale = match arg {
                    None => Some(None),
                    Some(a) => delta_seconds(a).map(Some),
                };
            }
            _ => {}
        }
    }
}

#[derive(Default)]
struct Seen {
    max_age: bool,
    s_maxage: bool,
    min_fresh: bool,
    max_stale: bool,
    stale_while_revalidate: bool,
    stale_if_error: bool,
}

/// Keeps the first occurrence of a directive; a malformed first occurrence is ignored and
/// does not hide a well-formed later one.
fn first(slot: &mut Option<u64>, seen: &mut bool, value: Option<u64>) {
    if *seen {
        return;
    }
    if let Some(v) = value {
        *slot = Some(v);
        *seen = true;
    }
}

/// `1*DIGIT`, saturating at 2^31; anything else (signs, decimals, spaces, letters) is `None`.
pub(crate) fn delta_seconds(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = text.trim_start_matches('0');
    if digits.len() > 10 {
        return Some(DELTA_MAX);
    }
    Some(digits.parse::<u64>().unwrap_or(0).min(DELTA_MAX))
}

/// Splits one field line into lowercase directive names and their arguments (quoted strings
/// unquoted). A name with whitespace in it (`max-age =1`) is kept as is and so never matches.
pub(crate) fn split(text: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut start = 0;
    while start < text.len() {
        // Name: up to '=' or ','.
        let mut end = start;
        while end < text.len() && bytes[end] != b'=' && bytes[end] != b',' {
            end += 1;
        }
        let raw = &text[start..end];
        // Whitespace before '=' is kept in the name, so that `max-age =1` matches nothing.
        let name = if bytes.get(end) == Some(&b'=') {
            raw.trim_start()
        } else {
            raw.trim()
        }
        .to_ascii_lowercase();
        let mut arg = None;
        let mut next = end;
        if end < text.len() && bytes[end] == b'=' {
            let value_start = end + 1;
            if bytes.get(value_start) == Some(&b'"') {
                let mut value = String::new();
                let mut i = value_start + 1;
                let mut closed = false;
                while i < text.len() {
                    match bytes[i] {
                        b'\\' if i + 1 < text.len() && bytes[i + 1].is_ascii() => {
                            value.push(char::from(bytes[i + 1]));
                            i += 2;
                        }
                        b'"' => {
                            closed = true;
                            i += 1;
                            break;
                        }
                        _ => {
                            // Copy one whole UTF-8 character (header text is ASCII, but this
                            // must not panic on anything a caller passes).
                            let Some(c) = text.get(i..).and_then(|t| t.chars().next()) else {
                                break;
                            };
                            value.push(c);
                            i += c.len_utf8();
                        }
                    }
                }
                // Skip to the next comma; an unclosed quote swallows the rest of the line.
                while i < text.len() && bytes[i] != b',' {
                    i += 1;
                }
                next = i;
                // An unclosed quote is a malformed argument: one no reader of it accepts.
                arg = Some(if closed { value } else { String::from("\u{0}") });
            } else {
                let mut i = value_start;
                while i < text.len() && bytes[i] != b',' {
                    i += 1;
                }
                arg = Some(text[value_start..i].trim_end().to_string());
                next = i;
            }
        }
        if !name.is_empty() {
            out.push((name, arg));
        }
        start = next + 1;
    }
    out
}

/// A bare item of a dictionary member, as far as cache directives care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SfItem {
    True,
    Integer(i64),
    Other,
}

/// Parses an RFC 8941 dictionary; `None` if any of it is invalid. Parameters are checked for
/// syntax and dropped; inner lists are not used by cache directives and make it invalid here.
fn sf_dictionary(text: &str) -> Option<Vec<(String, SfItem)>> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let ows = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t') {
            *i += 1;
        }
    };
    let sp = |i: &mut usize| {
        while *i < b.len() && b[*i] == b' ' {
            *i += 1;
        }
    };
    sp(&mut i);
    if i == b.len() {
        return Some(out);
    }
    loop {
        let key = sf_key(b, &mut i)?;
        let item = if b.get(i) == Some(&b'=') {
            i += 1;
            sf_bare_item(b, &mut i)?
        } else {
            SfItem::True
        };
        sf_parameters(b, &mut i)?;
        out.retain(|(k, _): &(String, SfItem)| *k != key);
        out.push((key, item));
        ows(&mut i);
        if i == b.len() {
            return Some(out);
        }
        if b[i] != b',' {
            return None;
        }
        i += 1;
        ows(&mut i);
        if i == b.len() {
            return None;
        }
    }
}

fn sf_key(b: &[u8], i: &mut usize) -> Option<String> {
    let start = *i;
    match b.get(*i) {
        Some(c) if c.is_ascii_lowercase() || *c == b'*' => *i += 1,
        _ => return None,
    }
    while let Some(c) = b.get(*i) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-.*".contains(c) {
            *i += 1;
        } else {
            break;
        }
    }
    String::from_utf8(b[start..*i].to_vec()).ok()
}

fn sf_bare_item(b: &[u8], i: &mut usize) -> Option<SfItem> {
    match *b.get(*i)? {
        b'-' | b'0'..=b'9' => {
            let start = *i;
            if b[*i] == b'-' {
                *i += 1;
            }
            let digits = *i;
            while b.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            let int_len = *i - digits;
            if int_len == 0 {
                return None;
            }
            if b.get(*i) == Some(&b'.') {
                *i += 1;
                let frac = *i;
                while b.get(*i).is_some_and(u8::is_ascii_digit) {
                    *i += 1;
                }
                let frac_len = *i - frac;
                return (int_len <= 12 && (1..=3).contains(&frac_len)).then_some(SfItem::Other);
            }
            if int_len > 15 {
                return None;
            }
            std::str::from_utf8(&b[start..*i])
                .ok()?
                .parse()
                .ok()
                .map(SfItem::Integer)
        }
        b'"' => {
            *i += 1;
            loop {
                match *b.get(*i)? {
                    b'\\' => {
                        if !matches!(b.get(*i + 1), Some(b'"' | b'\\')) {
                            return None;
                        }
                        *i += 2;
                    }
                    b'"' => {
                        *i += 1;
                        return Some(SfItem::Other);
                    }
                    c if (0x20..0x7f).contains(&c) => *i += 1,
                    _ => return None,
                }
            }
        }
        b'?' => {
            *i += 1;
            let item = match *b.get(*i)? {
                b'1' => SfItem::True,
                b'0' => SfItem::Other,
                _ => return None,
            };
            *i += 1;
            Some(item)
        }
        b':' => {
            *i += 1;
            while *b.get(*i)? != b':' {
                let c = b[*i];
                if !(c.is_ascii_alphanumeric() || b"+/=".contains(&c)) {
                    return None;
                }
                *i += 1;
            }
            *i += 1;
            Some(SfItem::Other)
        }
        c if c.is_ascii_alphabetic() || c == b'*' => {
            *i += 1;
            while b
                .get(*i)
                .is_some_and(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(c))
            {
                *i += 1;
            }
            Some(SfItem::Other)
        }
        _ => None,
    }
}

fn sf_parameters(b: &[u8], i: &mut usize) -> Option<()> {
    while b.get(*i) == Some(&b';') {
        *i += 1;
        while b.get(*i) == Some(&b' ') {
            *i += 1;
        }
        sf_key(b, i)?;
        if b.get(*i) == Some(&b'=') {
            *i += 1;
            sf_bare_item(b, i)?;
        }
    }
    Some(())
}

/// `Pragma: no-cache` on a request without `Cache-Control` (RFC 9111 5.4 keeps it only for
/// HTTP/1.0 clients that send no `Cache-Control`).
pub(crate) fn pragma_no_cache(headers: &HeaderMap) -> bool {
    !headers.contains_key(actix_web::http::header::CACHE_CONTROL)
        && headers
            .get_all(actix_web::http::header::PRAGMA)
            .filter_map(|v: &HeaderValue| v.to_str().ok())
            .flat_map(split)
            .any(|(name, _)| name == "no-cache")
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::CACHE_CONTROL;

    fn parse(lines: &[&str]) -> Directives {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(CACHE_CONTROL, HeaderValue::from_str(line).unwrap());
        }
        Directives::of(&headers, &CACHE_CONTROL)
    }

    #[test]
    fn quoted_strings_hide_commas_and_directives() {
        let d = parse(&[r#"extension="max-age=3600, public", max-age=1"#]);
        assert_eq!(d.max_age, Some(1));
        assert!(!d.public);
        assert_eq!(parse(&[r#"max-age="3600""#]).max_age, Some(3600));
        assert_eq!(parse(&["max-age='3600'"]).max_age, None);
    }

    #[test]
    fn malformed_arguments_are_ignored_and_the_first_good_one_wins() {
        assert_eq!(parse(&["max-age=003600"]).max_age, Some(3600));
        assert_eq!(parse(&["max-age =3600"]).max_age, None);
        assert_eq!(parse(&["max-age= 3600"]).max_age, None);
        assert_eq!(parse(&["max-age=-1"]).max_age, None);
        assert_eq!(parse(&["max-age=3600.5"]).max_age, None);
        assert_eq!(parse(&["max-age=1, max-age=1800"]).max_age, Some(1));
        assert_eq!(parse(&["max-age=1800", "max-age=1"]).max_age, Some(1800));
        assert_eq!(parse(&["MAX-AGE=5, No-Store"]).max_age, Some(5));
        assert!(parse(&["MAX-AGE=5, No-Store"]).no_store);
        assert_eq!(
            parse(&["max-age=99999999999999999999"]).max_age,
            Some(DELTA_MAX)
        );
        assert_eq!(parse(&["max-age=2147483648"]).max_age, Some(DELTA_MAX));
    }

    #[test]
    fn targeted_fields_are_structured_dictionaries() {
        let cdn = HeaderName::from_static("cdn-cache-control");
        let parse = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(cdn.clone(), HeaderValue::from_str(v).unwrap());
            Directives::targeted(&h, &cdn)
        };
        assert_eq!(parse("max-age=3600").and_then(|d| d.max_age), Some(3600));
        assert_eq!(
            parse("foobar, max-age=99999999999").and_then(|d| d.max_age),
            Some(DELTA_MAX)
        );
        assert!(parse("no-store").is_some_and(|d| d.no_store));
        assert_eq!(parse("max-age=\"10000\"").map(|d| d.max_age), Some(None));
        for invalid in [
            "max-age=10000, &&&&&",
            "max-age =10",
            "max-age= 10",
            "MaX-aGe=10",
            "a,",
        ] {
            assert_eq!(parse(invalid), None, "{invalid}");
        }
        assert_eq!(Directives::targeted(&HeaderMap::new(), &cdn), None);
    }

    #[test]
    fn no_input_panics() {
        for text in [
            "\"",
            "a=\"\\",
            "a=\"\\é\", max-age=1",
            "é=é, max-age=ü",
            ",,,=,=\"",
            "max-age=\"1",
            "a=\"x\\\"y\", b",
        ] {
            let _ = split(text);
        }
        assert_eq!(split("a=\"x\\\"y\", b")[1].0, "b");
    }

    #[test]
    fn request_directives() {
        let d = parse(&["max-stale, min-fresh=10, only-if-cached"]);
        assert_eq!(d.max_stale, Some(None));
        assert_eq!(d.min_fresh, Some(10));
        assert!(d.only_if_cached);
        assert_eq!(parse(&["max-stale=5"]).max_stale, Some(Some(5)));
        assert_eq!(parse(&["unknown, ,,"]), Directives::default());
    }
}

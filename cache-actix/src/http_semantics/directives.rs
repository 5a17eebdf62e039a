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
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub min_fresh: Option<u64>,
    /// `max-stale` (request): `Some(None)` accepts any staleness.
    pub max_stale: Option<Option<u64>>,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
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

    /// Whether `name` is present at all (so that an empty `CDN-Cache-Control` still counts).
    pub(crate) fn present(headers: &HeaderMap, name: &HeaderName) -> bool {
        headers.contains_key(name)
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
                        b'\\' if i + 1 < text.len() => {
                            value.push(char::from(bytes[i + 1]));
                            i += 2;
                        }
                        b'"' => {
                            closed = true;
                            i += 1;
                            break;
                        }
                        _ => {
                            // Copy one whole UTF-8 character.
                            let c = text[i..].chars().next().unwrap_or(' ');
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
    fn request_directives() {
        let d = parse(&["max-stale, min-fresh=10, only-if-cached"]);
        assert_eq!(d.max_stale, Some(None));
        assert_eq!(d.min_fresh, Some(10));
        assert!(d.only_if_cached);
        assert_eq!(parse(&["max-stale=5"]).max_stale, Some(Some(5)));
        assert_eq!(parse(&["unknown, ,,"]), Directives::default());
    }
}

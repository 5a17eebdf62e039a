//! Keys from requests: the primary key (scheme, host, path, query) and the variant key (the
//! values of the headers and cookies an entry varies on).
//!
//! What must stay true: a key is built only from what actix itself reports and reads, so no
//! request shapes what another client is served: `ConnectionInfo`'s scheme and host (what
//! `url_for` and `connection_info()` give the handler), the query as `web::Query` decodes it,
//! `Accept-Language` in actix's rank order, cookies as `HttpRequest::cookie` reads them. The HTTP
//! mode's origin is not actix: it keys the query as sent and normalises `Accept-Language` the
//! RFC's way.

use actix_web::{
    dev::ServiceRequest,
    http::header::{self, HeaderMap, HeaderName, HeaderValue},
};
use cache_core::{policy::VARY_COOKIE_PREFIX, CacheKey, PrimaryKey};

use crate::config::Config;

/// The primary key of a request: scheme, host, path and query; `None` when they exceed the
/// key limit.
///
/// The middleware's key control applies here: parameters `ignore_query` and `allow_query` leave
/// out are not keyed, and a `key_with` value is keyed after the host, behind a NUL byte, which
/// no `Host` value can hold (so no host spells another host's tenant).
pub(crate) fn primary_key(config: &Config, req: &ServiceRequest) -> Option<PrimaryKey> {
    let rules = &config.key_rules;
    let extra = rules.key_with.as_ref().and_then(|f| f(req));
    with_authority(req, |authority| {
        let path = req.uri().path();
        // The allow-list is chosen by the path the router matches (percent-escapes decoded),
        // so an encoded spelling of a path gets that path's list, never a laxer one.
        let routed = req.match_info().as_str();
        let query = rules.query(routed, req.uri().query().unwrap_or_default().as_bytes());
        let extra_len = extra.as_ref().map_or(0, |e| e.len() + 1);
        if authority.len() + extra_len + path.len() + query.len() > config.max_key_bytes {
            return None;
        }
        let key = |host: &[u8]| {
            config
                .cache
                .primary_key_with(host, path.as_bytes(), &query, config.query_order())
        };
        Some(match &extra {
            None => key(authority),
            Some(extra) => {
                let mut host = Vec::with_capacity(authority.len() + 1 + extra.len());
                host.extend_from_slice(authority);
                host.push(0);
                host.extend_from_slice(extra.as_bytes());
                key(&host)
            }
        })
    })
}

/// The scheme and host a request names, as actix reports them (`ConnectionInfo`, which is
/// what `url_for`, `full_url` and `connection_info()` give the handler): `scheme://host`.
/// `Forwarded` and `X-Forwarded-Host` / `-Proto` change what the handler sees, so they must
/// change the key too; otherwise one client's forwarded host would be served to everyone.
pub(crate) fn request_authority(req: &ServiceRequest) -> Vec<u8> {
    with_authority(req, <[u8]>::to_vec)
}

/// Calls `f` with the request's `scheme://host` ([`request_authority`]), written on the stack
/// when it is short: this runs on every hit.
fn with_authority<R>(req: &ServiceRequest, f: impl FnOnce(&[u8]) -> R) -> R {
    let headers = req.headers();
    let forwarded = headers.contains_key(header::FORWARDED)
        || headers.contains_key(X_FORWARDED_HOST)
        || headers.contains_key(X_FORWARDED_PROTO);
    if forwarded {
        let info = req.connection_info();
        return joined(info.scheme(), info.host(), f);
    }
    // Without forwarding headers `ConnectionInfo` falls back to these, in this order; reading
    // them here spares the hit path its parse and its allocations (a unit test holds the two
    // to the same answer).
    let config = req.app_config();
    let scheme = req
        .uri()
        .scheme_str()
        .unwrap_or(if config.secure() { "https" } else { "http" });
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or_else(|| config.host());
    joined(scheme, host, f)
}

const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// `f(scheme + "://" + host)`.
fn joined<R>(scheme: &str, host: &str, f: impl FnOnce(&[u8]) -> R) -> R {
    let len = scheme.len() + 3 + host.len();
    let mut stack = [0u8; 256];
    if len <= stack.len() {
        let (s, rest) = stack.split_at_mut(scheme.len());
        s.copy_from_slice(scheme.as_bytes());
        rest[..3].copy_from_slice(b"://");
        rest[3..3 + host.len()].copy_from_slice(host.as_bytes());
        return f(&stack[..len]);
    }
    let mut authority = Vec::with_capacity(len);
    authority.extend_from_slice(scheme.as_bytes());
    authority.extend_from_slice(b"://");
    authority.extend_from_slice(host.as_bytes());
    f(&authority)
}

/// The key of the variant of `primary` that a request with `headers` selects under `vary`.
pub(crate) fn variant_key(primary: &PrimaryKey, vary: &[String], headers: &HeaderMap) -> CacheKey {
    if vary.is_empty() {
        return primary.cache_key();
    }
    vary.iter()
        .fold(primary.variant(), |key, item| {
            if let Some(cookie) = item.strip_prefix(VARY_COOKIE_PREFIX) {
                let values = cookie_values(headers, cookie);
                return key.header(item, values.iter().map(|v| v.as_slice()));
            }
            let (name, rfc) = match item.strip_suffix(RFC_NORMALISED) {
                Some(name) => (name, true),
                None => (item.as_str(), false),
            };
            let mut lines = headers.get_all(name).peekable();
            if lines.peek().is_none() {
                return key.header(item, std::iter::empty());
            }
            let value = normalized(name, rfc, lines);
            key.header(item, [value.as_slice()])
        })
        .finish()
}

/// The suffix of a vary item of the HTTP mode whose header is normalised the RFC's way
/// (`accept-language` sorted, for an origin that is not actix). No header name contains `:`.
pub(crate) const RFC_NORMALISED: &str = ":rfc";

/// A vary list as the HTTP mode keys it: `Accept-Language` normalised the RFC's way.
pub(crate) fn rfc_vary(names: Vec<String>) -> Vec<String> {
    names
        .into_iter()
        .map(|n| {
            if n == "accept-language" {
                format!("{n}{RFC_NORMALISED}")
            } else {
                n
            }
        })
        .collect()
}

/// The values of cookie `name` in every `Cookie` line, in order, read exactly as actix reads
/// them (`HttpRequest::cookies`, with the `cookie` crate's `parse_encoded`): each line as
/// UTF-8, pairs split on `;` and trimmed of any Unicode space, name and value trimmed, the
/// value's quotes dropped, both percent-decoded as UTF-8 (a pair that fails is skipped, as
/// actix skips it). A line that is not UTF-8 makes actix read no cookie at all; it keys as a
/// value of its own, which separates it from everyone else (never the unsafe direction).
fn cookie_values(headers: &HeaderMap, name: &str) -> Vec<Vec<u8>> {
    use cache_core::key::percent_decode;
    let decode = |text: &str| String::from_utf8(percent_decode(text.as_bytes(), false)).ok();
    let mut values = Vec::new();
    for line in headers.get_all(header::COOKIE) {
        let Ok(line) = std::str::from_utf8(line.as_bytes()) else {
            values.push(b"\xff(not utf-8)".to_vec());
            continue;
        };
        for pair in line.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            let value = value.trim();
            let value = match (value.len() >= 2, value.strip_prefix('"')) {
                (true, Some(rest)) => rest.strip_suffix('"').unwrap_or(value),
                _ => value,
            };
            if let (Some(key), Some(value)) = (decode(key.trim()), decode(value.trim())) {
                if key == name {
                    values.push(value.into_bytes());
                }
            }
        }
    }
    values
}

/// A varied request header as one value, so that spellings with the same meaning share a
/// variant (RFC 9111 section 4.1 lets a cache normalise): every line joined as one list,
/// whitespace around members dropped. `Accept-Language` is ranked as actix ranks it when the
/// handler is ours (`rfc` false): by q-value, then position, since `preference()` and
/// `ranked()` break ties by position; with `rfc` (the HTTP mode) members are lowercased and
/// sorted, which the RFC's negotiation allows and the conformance suite expects.
fn normalized<'a>(name: &str, rfc: bool, lines: impl Iterator<Item = &'a HeaderValue>) -> Vec<u8> {
    let mut members: Vec<Vec<u8>> = lines
        .flat_map(|line| line.as_bytes().split(|b| *b == b','))
        .map(|m| m.trim_ascii().to_vec())
        .filter(|m| !m.is_empty())
        .collect();
    if name == "accept-language" {
        if rfc {
            for m in &mut members {
                m.make_ascii_lowercase();
                m.retain(|b| !b.is_ascii_whitespace());
            }
            members.sort();
        } else if let Some(ranked) = ranked_languages(&members) {
            return ranked;
        }
    }
    members.join(&b',')
}

/// `Accept-Language` members in actix's rank order (q descending, then position), each as
/// `tag;q=NNN` in thousandths; `None` when a member cannot be read, which then keys on the
/// members as sent (never merging what might differ).
fn ranked_languages(members: &[Vec<u8>]) -> Option<Vec<u8>> {
    let mut ranked: Vec<(u16, &[u8])> = Vec::with_capacity(members.len());
    for member in members {
        let mut parts = member.split(|b| *b == b';');
        let tag = parts.next()?.trim_ascii();
        let mut q = 1000;
        for param in parts {
            let param = param.trim_ascii();
            let value = param
                .strip_prefix(b"q=")
                .or_else(|| param.strip_prefix(b"Q="))?;
            q = q_thousandths(value)?;
        }
        if tag.is_empty() {
            return None;
        }
        ranked.push((q, tag));
    }
    ranked.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut out = Vec::new();
    for (q, tag) in ranked {
        if !out.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(tag);
        out.extend_from_slice(format!(";q={q}").as_bytes());
    }
    Some(out)
}

/// A q-value (`0`, `0.5`, `1.000`) in thousandths; `None` when malformed or above 1.
fn q_thousandths(value: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(value).ok()?;
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.len() != 1 || frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u16 = whole.parse().ok()?;
    let frac: u16 = format!("{frac:0<3}").parse().ok()?;
    let q = whole * 1000 + frac;
    (q <= 1000).then_some(q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn the_authority_is_what_connection_info_reports() {
        let requests = [
            TestRequest::get()
                .uri("/p")
                .insert_header(("host", "shop.example")),
            TestRequest::get().uri("/p"),
            TestRequest::get().uri("https://secure.example/p"),
            TestRequest::get()
                .uri("/p")
                .insert_header(("host", "Mixed.Example:8443")),
            TestRequest::get()
                .uri("/p")
                .insert_header(("host", "shop.example"))
                .insert_header(("x-forwarded-host", "evil.example")),
            TestRequest::get()
                .uri("/p")
                .insert_header(("forwarded", "proto=https;host=evil.example")),
            TestRequest::get()
                .uri("/p")
                .insert_header(("x-forwarded-proto", "https")),
        ];
        for req in requests {
            let req = req.to_srv_request();
            let info = req.connection_info().clone();
            let expected = format!("{}://{}", info.scheme(), info.host());
            assert_eq!(String::from_utf8_lossy(&request_authority(&req)), expected);
        }
    }
}

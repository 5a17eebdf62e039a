//! The policy rule set: a `#[cached]` policy, a [`crate::Cached`] responder or the scope rule
//! decides how long a response is kept and whom it may answer.
//!
//! What must stay true: every "what is never stored" rule of the README holds whatever the
//! policy says (a `Set-Cookie`, `no-store` or `private` from the handler, `Authorization` the
//! policy does not share, `Cookie` a scope rule does not vary on, a `Vary` the key does not
//! cover); the cache computes `Date`, `Age`, `Expires`, `Cache-Control` and `ETag` for every
//! answer, so the handler's own are not replayed.

use std::sync::Arc;

use actix_web::http::{
    header::{self, HeaderMap},
    StatusCode,
};
use actix_web::HttpResponse;
use bytes::Bytes;
use cache_core::{policy::VARY_COOKIE_PREFIX, CacheKey, Entry, Visibility};

use super::{millis, servable, stored_fields, Asked, Found, Reuse};
use crate::bypass::BypassReason;
use crate::directives::Directives;
use crate::headers::CACHE_TAG;
use crate::responder::ResolvedPolicy;

/// What a policy's entry can do for a request: answer while fresh or inside its
/// stale-while-revalidate window, stand in for an error inside its stale-if-error window, and
/// nothing for a request it may not answer (`Authorization` or `Cookie` it does not share).
pub(crate) fn reuse(entry: Arc<Entry>, found: Found, request: &HeaderMap) -> Reuse {
    let servable = servable(&entry, request);
    match found {
        Found::Fresh if servable => Reuse::Fresh(entry),
        Found::StaleWhileRevalidate if servable => Reuse::StaleWhileRevalidate(entry),
        Found::StaleIfError(vary) => Reuse::Fill {
            vary,
            stale: servable.then_some(entry),
        },
        Found::Fresh | Found::StaleWhileRevalidate | Found::Retained => Reuse::Fill {
            vary: Some(entry.vary().clone()),
            stale: None,
        },
    }
}

/// Every "never stored" rule of the policy mode (the README's "What is never stored";
/// ARCHITECTURE.md, "Storage"), in order.
pub(crate) fn admit(
    resolved: &ResolvedPolicy,
    status: StatusCode,
    response: &HeaderMap,
    asked: Asked,
) -> Result<(), BypassReason> {
    let policy = &resolved.policy;
    if !policy.stores_status(status.as_u16()) {
        return Err(BypassReason::Status);
    }
    if response.contains_key(header::SET_COOKIE) {
        return Err(BypassReason::SetCookie);
    }
    let said = Directives::of(response, &header::CACHE_CONTROL);
    if said.no_store {
        return Err(BypassReason::NoStore);
    }
    if said.private {
        return Err(BypassReason::Private);
    }
    if asked.auth && !policy.shares_authorized() {
        return Err(BypassReason::Authorization);
    }
    if asked.cookie && !shares_cookied(resolved, said.public) {
        return Err(BypassReason::Cookie);
    }
    if !vary_covered(response, policy.vary_headers()) {
        return Err(BypassReason::Vary);
    }
    Ok(())
}

/// Whether an entry of `resolved` may answer requests that carry `Cookie`: always for a
/// handler's own policy (its author chose what to vary on); for a scope rule only when it
/// varies on a cookie or the response says `public`.
fn shares_cookied(resolved: &ResolvedPolicy, response_says_public: bool) -> bool {
    let policy = &resolved.policy;
    !resolved.from_scope
        || policy.varies_on_cookie()
        || policy.visibility_kind() == Visibility::Public
        || response_says_public
}

/// Whether every header the handler's own `Vary` names is one the policy keys on (`*` never is;
/// a `vary_cookie` covers `Cookie`).
fn vary_covered(headers: &HeaderMap, policy_vary: &[String]) -> bool {
    let covers = |name: &str| {
        policy_vary.iter().any(|v| {
            v.eq_ignore_ascii_case(name)
                || (name.eq_ignore_ascii_case("cookie") && v.starts_with(VARY_COOKIE_PREFIX))
        })
    };
    headers
        .get_all(header::VARY)
        .all(|value| match value.to_str() {
            Ok(value) => value
                .split(',')
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .all(covers),
            Err(_) => false,
        })
}

/// What the policy mode computes for every answer instead of replaying the handler's, and
/// `set-cookie`, which belongs to one client.
const RECOMPUTED: &[&str] = &[
    "date",
    "age",
    "expires",
    "cache-control",
    "etag",
    "set-cookie",
];

/// The entry for a response: headers minus the ones never replayed, tags from the policy and
/// the `cache-tag` header, the handler's `etag` or a strong hash of the body.
pub(crate) fn entry(
    key: &CacheKey,
    head: &HttpResponse<()>,
    body: Bytes,
    resolved: &ResolvedPolicy,
    born: u64,
    now_ms: u64,
) -> Entry {
    let policy = &resolved.policy;
    let headers = head.headers();
    // Room for the URL's implicit tag, which `Cache::store` adds.
    let mut tags = Vec::with_capacity(resolved.tags.len() + 1);
    tags.extend(resolved.tags.iter().cloned());
    for value in headers.get_all(CACHE_TAG).filter_map(|v| v.to_str().ok()) {
        tags.extend(
            value
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
        );
    }
    let own_etag = headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with('"') || v.starts_with("W/\""))
        .map(str::to_owned);
    let says_public = Directives::of(headers, &header::CACHE_CONTROL).public;
    let fields = stored_fields(headers, RECOMPUTED);
    let status = head.status().as_u16();
    let fresh_until = now_ms.saturating_add(millis(policy.ttl()));
    // `Entry::new` hashes the body for a strong etag; spare that when the handler sent its own.
    let entry = match own_etag {
        Some(etag) => {
            Entry::with_etag(key.bytes(), status, fields, body, etag, now_ms, fresh_until)
        }
        None => Entry::new(key.bytes(), status, fields, body, now_ms, fresh_until),
    };
    let entry = if policy.vary_headers().is_empty() {
        entry
    } else {
        entry.with_vary(Arc::from(policy.vary_headers()))
    };
    entry
        .with_stale_while_revalidate_ms(millis(policy.stale_while_revalidate_window()))
        .with_stale_if_error_ms(millis(policy.stale_if_error_window()))
        .with_tags(tags)
        .with_born(born)
        .with_visibility(policy.visibility_kind())
        .with_max_age_secs(policy.client_max_age().map(|d| d.as_secs()))
        .with_shares_authorized(policy.shares_authorized())
        .with_shares_cookied(shares_cookied(resolved, says_public))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cache_core::CachePolicy;
    use std::time::Duration;

    use crate::rules::test_headers as headers;

    fn resolved(policy: CachePolicy, from_scope: bool) -> ResolvedPolicy {
        ResolvedPolicy {
            policy,
            tags: Vec::new(),
            from_scope,
        }
    }

    #[test]
    fn the_never_stored_rules_hold_whatever_the_policy() {
        let own = resolved(CachePolicy::new(Duration::from_secs(5)), false);
        let scope = resolved(CachePolicy::new(Duration::from_secs(5)), true);
        let ok = StatusCode::OK;
        let plain = Asked::default();
        assert_eq!(admit(&own, ok, &headers(&[]), plain), Ok(()));
        assert_eq!(
            admit(&own, ok, &headers(&[("set-cookie", "a=b")]), plain),
            Err(BypassReason::SetCookie)
        );
        assert_eq!(
            admit(&own, ok, &headers(&[("cache-control", "No-Store")]), plain),
            Err(BypassReason::NoStore)
        );
        assert_eq!(
            admit(
                &own,
                ok,
                &headers(&[("cache-control", "private=\"x\"")]),
                plain
            ),
            Err(BypassReason::Private)
        );
        // A parsed directive, not a substring: `no-storex` is an unknown extension.
        assert_eq!(
            admit(&own, ok, &headers(&[("cache-control", "no-storex")]), plain),
            Ok(())
        );
        let auth = Asked {
            auth: true,
            ..Asked::default()
        };
        assert_eq!(
            admit(&own, ok, &headers(&[]), auth),
            Err(BypassReason::Authorization)
        );
        let cookie = Asked {
            cookie: true,
            ..Asked::default()
        };
        assert_eq!(admit(&own, ok, &headers(&[]), cookie), Ok(()));
        assert_eq!(
            admit(&scope, ok, &headers(&[]), cookie),
            Err(BypassReason::Cookie)
        );
        assert_eq!(
            admit(&scope, ok, &headers(&[("cache-control", "public")]), cookie),
            Ok(())
        );
        assert_eq!(
            admit(&own, ok, &headers(&[("vary", "accept-language")]), plain),
            Err(BypassReason::Vary)
        );
        assert_eq!(
            admit(&own, StatusCode::NOT_FOUND, &headers(&[]), plain),
            Err(BypassReason::Status)
        );
    }
}

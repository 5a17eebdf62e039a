//! [`Config`]: what a [`crate::CacheMiddleware`] was built with, as one plain value (the HTTP
//! mode's [`HttpOptions`] included), and the scope rule's path matching.
//!
//! What must stay true: the config is a value. The builder changes its own copy
//! (`Arc::make_mut`), so a setting made after a clone is kept on that clone and never lost, and
//! a running service never sees its config change.

use std::time::Duration;

use cache_core::{encoding::Compression, key::QueryOrder, Cache, CachePolicy};

use crate::downstream::TagHeader;
use crate::key_rules::KeyRules;
use crate::responder::ResolvedPolicy;

/// Default largest body stored: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// Default largest key (host + path + query, or vary values): 8 KiB.
pub const DEFAULT_MAX_KEY_BYTES: usize = 8 << 10;
/// Default longest wait for another request's fill before running the handler anyway.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) cache: Cache,
    pub(crate) default_policy: Option<CachePolicy>,
    pub(crate) include: Vec<String>,
    pub(crate) exclude: Vec<String>,
    pub(crate) max_body_bytes: usize,
    pub(crate) max_key_bytes: usize,
    pub(crate) honor_client_no_cache: bool,
    pub(crate) lock_timeout: Duration,
    /// How long a fill's lease in the L2 lasts ([`Config::lease_time`]); `None`: half the
    /// lock timeout.
    pub(crate) lease_time: Option<Duration>,
    /// RFC 9111 shared-cache rules for responses that carry no policy.
    pub(crate) http: Option<HttpOptions>,
    /// br/gzip copies made when a policy's response is stored.
    pub(crate) compression: Option<Compression>,
    /// What the key leaves out (`ignore_query`, `allow_query`) and adds (`key_with`).
    pub(crate) key_rules: KeyRules,
    /// The header answers from stored entries carry their tags in, for a CDN.
    pub(crate) downstream: Option<TagHeader>,
}

impl Config {
    pub(crate) fn new(cache: Cache) -> Config {
        Config {
            cache,
            default_policy: None,
            include: Vec::new(),
            exclude: Vec::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            honor_client_no_cache: false,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            lease_time: None,
            http: None,
            compression: None,
            key_rules: KeyRules::default(),
            downstream: None,
        }
    }

    /// How long a fill's lease in the L2 lasts (coalescing across nodes): as set, or half the
    /// lock timeout, so that when a holder dies, another node takes the lease while its
    /// waiters still have time to wait for it rather than all running the handler.
    pub(crate) fn lease_time(&self) -> Duration {
        self.lease_time.unwrap_or(self.lock_timeout / 2)
    }

    /// The scope rule for a response that carries no policy of its own, when the
    /// include/exclude prefixes cover `path` (whole segments: `/api/a` covers `/api/a/1`, not
    /// `/api/ab`; `exclude` wins). `path` is the one the router matched (percent-escapes
    /// decoded), so an encoded spelling of an excluded path cannot slip past the rules.
    pub(crate) fn scope_rule(&self, path: &str) -> Option<ResolvedPolicy> {
        let policy = self.default_policy.as_ref()?;
        let covered = |prefix: &String| covers(prefix, path);
        if self.exclude.iter().any(covered) {
            return None;
        }
        if !self.include.is_empty() && !self.include.iter().any(covered) {
            return None;
        }
        Some(ResolvedPolicy {
            policy: policy.clone(),
            tags: Vec::new(),
            from_scope: true,
        })
    }

    /// The policy mode's handlers read the query through actix, which cannot tell parameter
    /// orders apart; an origin behind the HTTP mode may, so that mode keys the query as sent
    /// unless told otherwise.
    pub(crate) fn query_order(&self) -> QueryOrder {
        match self.http {
            Some(options) if !options.sort_query => QueryOrder::AsSent,
            _ => QueryOrder::ByDecodedName,
        }
    }
}

/// Whether `prefix` covers `path` in whole segments (`/api/a` covers `/api/a/1`, not
/// `/api/ab`; an empty prefix covers everything): the scope rule's prefixes and the query
/// allow-lists' both.
pub(crate) fn covers(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Options of the HTTP semantics mode. The defaults follow RFC 9111 for a shared cache, except
/// two safety rules kept from the policy mode, each of which an option lifts:
///
/// - a response with `Set-Cookie` is never stored ([`HttpOptions::store_set_cookie`]);
/// - a response to a request with `Authorization` is stored (when the RFC allows it: `public`,
///   `s-maxage` or `must-revalidate`) only if it also varies on `Authorization`, and an entry
///   is served to a request with `Authorization` only if it varies on it
///   ([`HttpOptions::share_authorized`]).
///
/// ```
/// use std::time::Duration;
/// use cache_actix::{Cache, CacheMiddleware, HttpOptions};
///
/// let options = HttpOptions::default()
///     .cdn_cache_control(true)
///     .keep_stale_for(Duration::from_secs(600));
/// let middleware = CacheMiddleware::new(Cache::memory()).http_semantics_with(options);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct HttpOptions {
    pub(crate) cdn_cache_control: bool,
    pub(crate) store_set_cookie: bool,
    pub(crate) share_authorized: bool,
    pub(crate) keep_stale: Duration,
    pub(crate) sort_query: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            cdn_cache_control: false,
            store_set_cookie: false,
            share_authorized: false,
            keep_stale: Duration::from_secs(3600),
            sort_query: false,
        }
    }
}

impl HttpOptions {
    /// Reads `CDN-Cache-Control` (RFC 9213): when a response has it, its directives decide
    /// storing and freshness instead of `Cache-Control`. Off by default.
    ///
    /// ```
    /// let options = cache_actix::HttpOptions::default().cdn_cache_control(true);
    /// ```
    pub fn cdn_cache_control(mut self, on: bool) -> Self {
        self.cdn_cache_control = on;
        self
    }

    /// Stores responses that carry `Set-Cookie` (and replays the cookie to every client), as
    /// the RFC permits. Off by default: such a response usually belongs to one client.
    ///
    /// ```
    /// let options = cache_actix::HttpOptions::default().store_set_cookie(true);
    /// ```
    pub fn store_set_cookie(mut self, on: bool) -> Self {
        self.store_set_cookie = on;
        self
    }

    /// Follows RFC 9111 section 3.5 to the letter for `Authorization`: a response to such a
    /// request is stored when it says `public`, `s-maxage` or `must-revalidate`, and any fresh
    /// entry may answer a request with `Authorization`. Off by default.
    ///
    /// ```
    /// let options = cache_actix::HttpOptions::default().share_authorized(true);
    /// ```
    pub fn share_authorized(mut self, on: bool) -> Self {
        self.share_authorized = on;
        self
    }

    /// How long an entry is kept past its freshness (default one hour): one with a validator
    /// (`ETag` or `Last-Modified`) can then be revalidated with a conditional request instead
    /// of being fetched whole again, and any can answer stale where that is allowed
    /// (`max-stale`, `stale-if-error`, an unreachable origin).
    ///
    /// ```
    /// let options = cache_actix::HttpOptions::default()
    ///     .keep_stale_for(std::time::Duration::from_secs(60));
    /// ```
    pub fn keep_stale_for(mut self, keep: Duration) -> Self {
        self.keep_stale = keep;
        self
    }

    /// Sorts query parameters (by decoded name, repeats kept in order) before keying, so that
    /// `?a=1&b=2` and `?b=2&a=1` share an entry. Off by default: an origin that is not actix
    /// may read parameter order, and then one client's spelling would answer another's.
    ///
    /// ```
    /// let options = cache_actix::HttpOptions::default().sort_query(true);
    /// ```
    pub fn sort_query(mut self, on: bool) -> Self {
        self.sort_query = on;
        self
    }
}

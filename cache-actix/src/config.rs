//! [`Config`]: what a [`crate::CacheMiddleware`] was built with, as one plain value, and the
//! scope rule's path matching.
//!
//! What must stay true: the config is a value. The builder changes its own copy
//! (`Arc::make_mut`), so a setting made after a clone is kept on that clone and never lost, and
//! a running service never sees its config change.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_core::{key::QueryOrder, Cache, CachePolicy};

use crate::responder::ResolvedPolicy;
use crate::rules::http::HttpOptions;

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
    /// RFC 9111 shared-cache rules for responses that carry no policy.
    pub(crate) http: Option<HttpOptions>,
    /// Flight keys whose stale entry was served once: the next request refreshes them. Shared
    /// by every clone of one middleware, as its single-flights are shared through the cache.
    pub(crate) refresh_due: Arc<Mutex<HashSet<u128>>>,
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
            http: None,
            refresh_due: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// The scope rule for a response that carries no policy of its own, when the
    /// include/exclude prefixes cover `path` (whole segments: `/api/a` covers `/api/a/1`, not
    /// `/api/ab`; `exclude` wins). `path` is the one the router matched (percent-escapes
    /// decoded), so an encoded spelling of an excluded path cannot slip past the rules.
    pub(crate) fn scope_rule(&self, path: &str) -> Option<ResolvedPolicy> {
        let policy = self.default_policy.as_ref()?;
        let covered = |prefix: &String| {
            let prefix = prefix.trim_end_matches('/');
            path == prefix
                || path
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
                || prefix.is_empty()
        };
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

//! Key control: what the middleware leaves out of a request's key (`ignore_query`, and the
//! query allow-lists of `allow_query`) and what it adds to it (`key_with`).
//!
//! What must stay true: a rule only ever makes two requests share an entry when the user said
//! so. Parameter names are matched as actix's `web::Query` decodes them; a path the allow-lists
//! do not cover keeps its whole query; with no rule the key is exactly what it was without key
//! control (the query is borrowed, not rebuilt).

use std::borrow::Cow;
use std::sync::Arc;

use actix_web::dev::ServiceRequest;
use cache_core::key::percent_decode;

use crate::config::covers;

/// A value a user's function computes from the request and adds to its key.
pub(crate) type KeyWith = Arc<dyn Fn(&ServiceRequest) -> Option<String> + Send + Sync>;

/// A query parameter name, or every name that starts with a prefix (`utm_*`).
#[derive(Clone, Debug, PartialEq, Eq)]
enum NamePattern {
    Exact(String),
    Prefix(String),
}

impl NamePattern {
    fn new(text: &str) -> NamePattern {
        match text.strip_suffix('*') {
            Some(prefix) => NamePattern::Prefix(prefix.to_string()),
            None => NamePattern::Exact(text.to_string()),
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            NamePattern::Exact(exact) => name == exact,
            NamePattern::Prefix(prefix) => name.starts_with(prefix.as_str()),
        }
    }
}

/// The key control of one middleware.
#[derive(Clone, Default)]
pub(crate) struct KeyRules {
    ignored: Vec<NamePattern>,
    /// (path prefix, the only parameters keyed under it).
    allowed: Vec<(String, Vec<NamePattern>)>,
    pub(crate) key_with: Option<KeyWith>,
}

impl KeyRules {
    pub(crate) fn ignore<I, S>(&mut self, names: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.ignored
            .extend(names.into_iter().map(|n| NamePattern::new(n.as_ref())));
    }

    pub(crate) fn allow<I, S>(&mut self, prefix: String, names: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        // One list per prefix, as `include` reads it: `/search` and `/search/` are one prefix,
        // and a second call for it adds names rather than replacing the first list.
        let prefix = prefix.trim_end_matches('/').to_string();
        let names = names.into_iter().map(|n| NamePattern::new(n.as_ref()));
        match self.allowed.iter_mut().find(|(p, _)| *p == prefix) {
            Some((_, list)) => list.extend(names),
            None => self.allowed.push((prefix, names.collect())),
        }
    }

    /// The query of a request to `path` as it is keyed: the parameters the rules keep, in the
    /// order sent (the key puts them in its own order afterwards).
    pub(crate) fn query<'q>(&self, path: &str, query: &'q [u8]) -> Cow<'q, [u8]> {
        // The longest prefix that covers the path picks the allow-list.
        let allowed = self
            .allowed
            .iter()
            .filter(|(prefix, _)| covers(prefix, path))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, names)| names);
        if self.ignored.is_empty() && allowed.is_none() {
            return Cow::Borrowed(query);
        }
        let keep = |param: &[u8]| {
            // Some origins (the HTTP mode's, not actix) split on `;` as well: a parameter that
            // holds one might hide another name from this rule, so it is always keyed.
            if param.contains(&b';') {
                return true;
            }
            let raw = param.split(|b| *b == b'=').next().unwrap_or_default();
            let decoded = percent_decode(raw, true);
            let name = String::from_utf8_lossy(&decoded);
            !self.ignored.iter().any(|p| p.matches(&name))
                && allowed.is_none_or(|names| names.iter().any(|p| p.matches(&name)))
        };
        let params = query.split(|b| *b == b'&').filter(|p| !p.is_empty());
        if params.clone().all(keep) {
            return Cow::Borrowed(query);
        }
        let mut kept = Vec::with_capacity(query.len());
        for param in params.filter(|p| keep(p)) {
            if !kept.is_empty() {
                kept.push(b'&');
            }
            kept.extend_from_slice(param);
        }
        Cow::Owned(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> KeyRules {
        let mut rules = KeyRules::default();
        rules.ignore(["utm_*", "fbclid"]);
        rules.allow("/search".to_string(), ["q", "page"]);
        rules
    }

    fn keyed(rules: &KeyRules, path: &str, query: &str) -> String {
        String::from_utf8_lossy(&rules.query(path, query.as_bytes())).into_owned()
    }

    #[test]
    fn ignored_and_unlisted_parameters_leave_the_key() {
        let r = rules();
        assert_eq!(keyed(&r, "/p", "id=1&utm_source=x&fbclid=y"), "id=1");
        assert_eq!(
            keyed(&r, "/p", "utm%5Fmedium=x&id=1"),
            "id=1",
            "decoded as actix does"
        );
        assert_eq!(keyed(&r, "/p", "utmx=1&fbclids=2"), "utmx=1&fbclids=2");
        assert_eq!(keyed(&r, "/search", "q=a&sid=9&page=2"), "q=a&page=2");
        assert_eq!(keyed(&r, "/search/deep", "q=a&x=1"), "q=a");
        assert_eq!(
            keyed(&r, "/searching", "q=a&x=1"),
            "q=a&x=1",
            "whole segments only"
        );
        assert!(matches!(r.query("/p", b"id=1&b=2"), Cow::Borrowed(_)));
        assert_eq!(
            keyed(&r, "/p", "id=1&utm_source=x;id=2"),
            "id=1&utm_source=x;id=2"
        );
        let mut nested = rules();
        nested.allow("/search/".to_string(), ["sort"]);
        assert_eq!(
            keyed(&nested, "/search", "q=a&sort=1&x=2"),
            "q=a&sort=1",
            "lists merge"
        );
        let plain = KeyRules::default();
        assert!(matches!(
            plain.query("/p", b"utm_source=1"),
            Cow::Borrowed(_)
        ));
    }
}

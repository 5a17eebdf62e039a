//! The Redis names of one namespace: record keys, the tick counter, the purge tick, the clock
//! keys and their index, and the invalidation channel (the layout is described in `scripts.rs`).
//!
//! What must stay true: every name of a namespace carries the same hash tag `{store/cache}`, so
//! on Redis Cluster they all live in one slot and one script may touch them; and no namespace
//! can spell another's names (the characters that end the tag or separate its parts are
//! escaped).

use crate::CacheKey;

/// The Redis names of one namespace.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    base: String,
    pub(crate) seq: String,
    pub(crate) purged: String,
    pub(crate) life: String,
    pub(crate) index: String,
    pub(crate) clock_prefix: String,
    pub(crate) channel: String,
}

impl Keys {
    pub(crate) fn new(store_namespace: &str, cache_namespace: &str) -> Keys {
        // `{`, `}` and `%` are escaped so that a namespace cannot end the hash tag early or
        // collide with another namespace's spelling.
        let escape = |s: &str| {
            s.replace('%', "%25")
                .replace('{', "%7B")
                .replace('}', "%7D")
                .replace('/', "%2F")
        };
        let base = format!(
            "ca:{{{}/{}}}",
            escape(store_namespace),
            escape(cache_namespace)
        );
        Keys {
            seq: format!("{base}:seq"),
            purged: format!("{base}:purged"),
            life: format!("{base}:life"),
            index: format!("{base}:clocks"),
            clock_prefix: format!("{base}:t:"),
            channel: format!("{base}:inv"),
            base,
        }
    }

    pub(crate) fn record(&self, key: &CacheKey) -> String {
        format!("{}:r:{:032x}", self.base, key.hash())
    }

    pub(crate) fn clock(&self, tag: &str) -> Vec<u8> {
        let mut key = self.clock_prefix.as_bytes().to_vec();
        key.extend_from_slice(tag.as_bytes());
        key
    }

    /// The pattern that matches every key of the namespace (for tools and tests).
    pub(crate) fn pattern(&self) -> String {
        format!("{}:*", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_cannot_spell_each_other() {
        let a = Keys::new("a}", "b");
        let b = Keys::new("a", "}b");
        assert_ne!(a.seq, b.seq);
        assert!(a.seq.starts_with("ca:{a%7D/b}"));
    }
}

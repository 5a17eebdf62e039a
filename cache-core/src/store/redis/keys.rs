//! The Redis names of one namespace: record keys, the tick counter, the purge tick, the clock
//! keys and their index, and the invalidation channel (the layout is described in `scripts.rs`).
//!
//! What must stay true: every name the clock scripts touch carries the namespace's hash tag
//! `{store/cache}`, so on Redis Cluster they live in one slot and one script may touch them; a
//! record's name carries a hash tag of its own (its key's hash), so records spread over every
//! master; and no namespace can spell another's names (the characters that end the tag or
//! separate its parts are escaped).

use crate::CacheKey;

/// The Redis names of one namespace.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// The namespace without the hash tag: the prefix of record names.
    records: String,
    pub(crate) seq: String,
    pub(crate) purged: String,
    pub(crate) life: String,
    pub(crate) index: String,
    pub(crate) clock_prefix: String,
    pub(crate) soft_prefix: String,
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
        let name = format!("{}/{}", escape(store_namespace), escape(cache_namespace));
        let base = format!("ca:{{{name}}}");
        Keys {
            seq: format!("{base}:seq"),
            purged: format!("{base}:purged"),
            life: format!("{base}:life"),
            index: format!("{base}:clocks"),
            clock_prefix: format!("{base}:t:"),
            soft_prefix: format!("{base}:s:"),
            channel: format!("{base}:inv"),
            records: format!("ca:{name}:r:"),
        }
    }

    /// A record's name: its own hash tag, so that records spread over a cluster's slots.
    pub(crate) fn record(&self, key: &CacheKey) -> String {
        format!("{}{{{:032x}}}", self.records, key.hash())
    }

    pub(crate) fn clock(&self, tag: &str) -> Vec<u8> {
        let mut key = self.clock_prefix.as_bytes().to_vec();
        key.extend_from_slice(tag.as_bytes());
        key
    }

    /// A tag's soft clock: the tick of its last soft invalidation.
    pub(crate) fn soft_clock(&self, tag: &str) -> Vec<u8> {
        let mut key = self.soft_prefix.as_bytes().to_vec();
        key.extend_from_slice(tag.as_bytes());
        key
    }

    /// The pattern that matches every record of the namespace (for tools and tests).
    pub(crate) fn pattern(&self) -> String {
        format!("{}*", self.records)
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
        let key = crate::PrimaryKey::new("", b"h", b"/", b"").cache_key();
        assert_ne!(a.record(&key), b.record(&key));
        // The record's hash tag is its own hash, not the namespace's.
        let record = a.record(&key);
        let tag = &record[record.find('{').unwrap() + 1..record.find('}').unwrap()];
        assert_eq!(tag, format!("{:032x}", key.hash()));
    }
}

//! The Redis names of one namespace: record keys, fill leases and their fencing counters, the
//! tick counter, the purge tick, the clock keys and their index, and the invalidation channel
//! (the layout is described in `scripts.rs`).
//!
//! What must stay true: every name the clock scripts touch carries the namespace's hash tag
//! `{store/cache}`, so on Redis Cluster they live in one slot and one script may touch them; a
//! record's name carries a hash tag of its own (its key's hash), so records spread over every
//! master, and a key's lease and fencing counter carry the same one, so that one script may
//! touch the three; and no namespace can spell another's names (the characters that end the tag or
//! separate its parts are escaped).

use crate::CacheKey;

/// The Redis names of one namespace.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// The namespace without the hash tag: the prefix of record names...
    records: String,
    /// ...of lease names...
    leases: String,
    /// ...and of the leases' fencing counters.
    fences: String,
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
            leases: format!("ca:{name}:l:"),
            fences: format!("ca:{name}:f:"),
        }
    }

    /// A record's name: its own hash tag, so that records spread over a cluster's slots.
    pub(crate) fn record(&self, key: &CacheKey) -> String {
        format!("{}{{{:032x}}}", self.records, key.hash())
    }

    /// The name of the record of the key whose hash is `hash` (the same as [`Keys::record`]).
    pub(crate) fn record_of(&self, hash: u128) -> String {
        format!("{}{{{hash:032x}}}", self.records)
    }

    /// The fill lease of the key whose hash is `hash`: in its record's slot.
    pub(crate) fn lease(&self, hash: u128) -> String {
        format!("{}{{{hash:032x}}}", self.leases)
    }

    /// The last fencing token granted for the key whose hash is `hash`: in its record's slot.
    pub(crate) fn fence(&self, hash: u128) -> String {
        format!("{}{{{hash:032x}}}", self.fences)
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
        // A lease and its counter share the record's hash tag, and nothing else of its name.
        let slot = |name: &str| name[name.find('{').unwrap()..].to_string();
        assert_eq!(a.record_of(key.hash()), record);
        assert_eq!(slot(&a.lease(key.hash())), slot(&record));
        assert_eq!(slot(&a.fence(key.hash())), slot(&record));
        assert_ne!(a.lease(key.hash()), record);
        assert_ne!(a.fence(key.hash()), a.lease(key.hash()));
        assert!(!a
            .lease(key.hash())
            .starts_with(&a.pattern()[..a.pattern().len() - 1]));
    }
}

//! Tag clocks: invalidation at constant cost, safe against fills in flight.
//!
//! One counter, `seq`, ticks on every invalidation. A tag's clock is the `seq` value of its last
//! invalidation. Before a handler runs, its fill reads `seq` (the entry's `born`). An entry is
//! valid while every one of its tags has a clock `<= born` and no `purge_all` came after `born`.
//!
//! What must stay true: invalidating a tag touches one map slot, whatever the number of entries
//! under it; an entry whose fill began before an invalidation of one of its tags resolved is
//! never valid afterwards, even if it is stored after that invalidation (its `born` is too old).
//! Clocks older than the longest life of any stored entry are dropped by [`TagClocks::prune`],
//! so the map stays bounded by the tags invalidated within that life.

use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

use crate::time::now_ms;

/// The clock of every invalidated tag.
///
/// ```
/// use cache_core::tags::TagClocks;
/// let clocks = TagClocks::default();
/// let born = clocks.now();                    // a fill starts
/// clocks.invalidate(["products"]);            // a write lands while it runs
/// assert!(!clocks.is_valid(born, ["products"]));
/// assert!(clocks.is_valid(clocks.now(), ["products"]));
/// ```
#[derive(Debug, Default)]
pub struct TagClocks {
    seq: AtomicU64,
    purged_at: AtomicU64,
    /// Tag -> (clock, wall time of the invalidation in ms).
    clocks: DashMap<String, (u64, u64)>,
    /// Longest `expires_at - stored_at` of any entry stored, in ms.
    longest_life_ms: AtomicU64,
}

impl TagClocks {
    /// The current reading; take it before running the handler whose result will be stored.
    pub fn now(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    /// Invalidates every tag given, as one tick of the clock.
    pub fn invalidate<I, T>(&self, tags: I) -> u64
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let tick = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let wall = now_ms();
        for tag in tags {
            self.clocks.insert(tag.into(), (tick, wall));
        }
        tick
    }

    /// Invalidates everything stored so far.
    pub fn purge_all(&self) -> u64 {
        let tick = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        self.purged_at.fetch_max(tick, Ordering::SeqCst);
        tick
    }

    /// Whether an entry read at `born` under `tags` is still valid.
    pub fn is_valid<'a, I>(&self, born: u64, tags: I) -> bool
    where
        I: IntoIterator<Item = &'a str>,
    {
        if self.purged_at.load(Ordering::SeqCst) > born {
            return false;
        }
        tags.into_iter()
            .all(|tag| self.clocks.get(tag).is_none_or(|clock| clock.0 <= born))
    }

    /// Records how long an entry may live, so that [`TagClocks::prune`] keeps every clock that can
    /// still matter.
    pub fn note_lifetime(&self, life_ms: u64) {
        self.longest_life_ms.fetch_max(life_ms, Ordering::Relaxed);
    }

    /// Drops clocks older than the longest entry life: every entry they could reject has expired.
    pub fn prune(&self) -> usize {
        let horizon = now_ms().saturating_sub(self.longest_life_ms.load(Ordering::Relaxed) + 1000);
        let before = self.clocks.len();
        self.clocks.retain(|_, (_, wall)| *wall >= horizon);
        before.saturating_sub(self.clocks.len())
    }

    /// Number of clocks held.
    pub fn len(&self) -> usize {
        self.clocks.len()
    }

    /// Whether no tag has been invalidated (or all clocks were pruned).
    pub fn is_empty(&self) -> bool {
        self.clocks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidation_before_the_fill_started_does_not_reject_it() {
        let clocks = TagClocks::default();
        clocks.invalidate(["a"]);
        let born = clocks.now();
        assert!(clocks.is_valid(born, ["a", "b"]));
        clocks.invalidate(["b"]);
        assert!(!clocks.is_valid(born, ["a", "b"]));
        assert!(clocks.is_valid(born, ["a"]));
        clocks.purge_all();
        assert!(!clocks.is_valid(born, ["a"]));
    }

    #[test]
    fn prune_keeps_recent_clocks() {
        let clocks = TagClocks::default();
        clocks.note_lifetime(60_000);
        clocks.invalidate(["a"]);
        assert_eq!(clocks.prune(), 0);
        assert_eq!(clocks.len(), 1);
    }
}

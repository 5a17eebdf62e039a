//! Tag clocks: invalidation at constant cost, safe against fills in flight.
//!
//! One counter, `seq`, ticks on every invalidation. A tag's clock is the `seq` value of its last
//! invalidation. Before a handler runs, its fill reads `seq` (the entry's `born`). An entry is
//! valid while every one of its tags has a clock `<= born` and no `purge_all` came after `born`.
//!
//! What must stay true: invalidating a tag touches one map slot, whatever the number of entries
//! under it; an entry whose fill began before an invalidation of one of its tags resolved is
//! never valid afterwards, even if it is stored after that invalidation (its `born` is too old).
//! Clocks older than the longest life of any stored entry are dropped, so the map stays bounded
//! by the tags invalidated within that life; the highest tick dropped is kept as a floor
//! (`pruned_upto`), so a fill that began before a pruned invalidation (a handler that ran longer
//! than any entry lives) is still rejected.
//!
//! `seq` starts at the wall clock in microseconds so that an entry kept by a persistent user
//! store across a restart cannot look newer than invalidations made after the restart. A cache
//! whose L2 is a [`crate::ClockAuthority`] (Redis) starts at 0 instead and takes every tick from
//! that store, which is the one authority; this process's clocks then only mirror it.
//!
//! A soft invalidation (`TagClocks::soften`) keeps a second clock per tag: an entry born before
//! it stays valid but counts as stale from the soft invalidation's wall time on
//! (`TagClocks::softened_at`), so its own stale windows decide what it may still answer. A
//! later soft invalidation of the same tag restarts that time for the entries still under it.
//!
//! Nothing here is public but this explanation: the clocks are the [`crate::Cache`]'s, reached
//! through its invalidation methods and, for an authority, through a [`crate::ClockLink`].

use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

use crate::time::now_ms;

/// The clock of every invalidated tag.
#[derive(Debug)]
pub(crate) struct TagClocks {
    seq: AtomicU64,
    purged_at: AtomicU64,
    /// Entries born before it are rejected because this node may have missed invalidations
    /// (its link to the shared clocks was lost): kept apart from `purged_at`, a purge that
    /// happened, so that a fill refused only for this can be told apart.
    forgotten_before: AtomicU64,
    /// Highest tick ever dropped by `prune`: entries born before it are rejected.
    pruned_upto: AtomicU64,
    /// Tag -> (clock, wall time of the invalidation in ms).
    clocks: DashMap<String, (u64, u64)>,
    /// The highest clock of any tag: an entry born at or after it is older than no tag's
    /// invalidation, so the hit path can skip hashing its tags into `clocks`.
    newest_tag_tick: AtomicU64,
    /// Tag -> (clock, wall time in ms) of its last soft invalidation.
    soft: DashMap<String, (u64, u64)>,
    /// The highest soft clock: an entry born at or after it was softened by no tag.
    newest_soft_tick: AtomicU64,
    /// Highest soft clock `prune` dropped, and the earliest wall time among those dropped: an
    /// entry born before that tick may be under a dropped soft clock (another process may store
    /// longer lives than this one knows), so it counts as softened then, the safe side.
    soft_pruned_upto: AtomicU64,
    soft_pruned_wall: AtomicU64,
    /// Longest `expires_at - stored_at` of any entry stored, in ms.
    longest_life_ms: AtomicU64,
}

impl Default for TagClocks {
    /// Clocks for a cache that is the only authority on its invalidations, starting at the wall
    /// clock (microseconds) so that ticks after a restart are above every earlier `born`.
    fn default() -> Self {
        let clocks = TagClocks::shared();
        clocks
            .seq
            .store(now_ms().saturating_mul(1000), Ordering::SeqCst);
        clocks
    }
}

impl TagClocks {
    /// Clocks mirroring a shared authority: they start at 0 and move only by [`TagClocks::observe`]
    /// and [`TagClocks::apply`].
    pub(crate) fn shared() -> Self {
        TagClocks {
            seq: AtomicU64::new(0),
            purged_at: AtomicU64::new(0),
            forgotten_before: AtomicU64::new(0),
            pruned_upto: AtomicU64::new(0),
            clocks: DashMap::new(),
            newest_tag_tick: AtomicU64::new(0),
            soft: DashMap::new(),
            newest_soft_tick: AtomicU64::new(0),
            soft_pruned_upto: AtomicU64::new(0),
            soft_pruned_wall: AtomicU64::new(u64::MAX),
            longest_life_ms: AtomicU64::new(0),
        }
    }

    /// Raises the reading to `seq` (a tick seen in the shared authority); never lowers it.
    pub(crate) fn observe(&self, seq: u64) {
        self.seq.fetch_max(seq, Ordering::SeqCst);
    }

    /// Applies an invalidation made elsewhere: `tags` were invalidated at `tick`.
    pub(crate) fn apply<I, T>(&self, tick: u64, tags: I)
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let wall = now_ms();
        for tag in tags {
            self.newest_tag_tick.fetch_max(tick, Ordering::SeqCst);
            self.clocks
                .entry(tag.into())
                .and_modify(|c| *c = (c.0.max(tick), wall))
                .or_insert((tick, wall));
        }
        self.observe(tick);
    }

    /// Applies a soft invalidation made elsewhere: `tags` were softened at `tick`.
    pub(crate) fn apply_soft<I, T>(&self, tick: u64, tags: I)
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.soften_at(tick, tags);
        self.observe(tick);
    }

    /// Rejects every entry born before `tick` without moving the clock: used when invalidations
    /// may have been missed. With `tick` above the reading, fills begun from now on are rejected
    /// too until the shared authority's clock is observed at `tick`.
    pub(crate) fn purge_before(&self, tick: u64) {
        self.forgotten_before.fetch_max(tick, Ordering::SeqCst);
    }

    /// Applies a `purge_all` made elsewhere at `tick`.
    pub(crate) fn apply_purge(&self, tick: u64) {
        self.purged_at.fetch_max(tick, Ordering::SeqCst);
        self.observe(tick);
    }

    /// The current reading; take it before running the handler whose result will be stored.
    pub(crate) fn now(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    /// Invalidates every tag given, as one tick of the clock.
    pub(crate) fn invalidate<I, T>(&self, tags: I) -> u64
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let tick = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let wall = now_ms();
        for tag in tags {
            // Raised before the clock is written, and both before the caller hears of it.
            self.newest_tag_tick.fetch_max(tick, Ordering::SeqCst);
            self.clocks.insert(tag.into(), (tick, wall));
        }
        tick
    }

    /// Marks every entry stored so far under `tags` stale (not invalid), as one tick.
    pub(crate) fn soften<I, T>(&self, tags: I) -> u64
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let tick = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        self.soften_at(tick, tags);
        tick
    }

    fn soften_at<I, T>(&self, tick: u64, tags: I)
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let wall = now_ms();
        for tag in tags {
            self.newest_soft_tick.fetch_max(tick, Ordering::SeqCst);
            self.soft
                .entry(tag.into())
                .and_modify(|c| {
                    if tick >= c.0 {
                        *c = (tick, wall);
                    }
                })
                .or_insert((tick, wall));
        }
    }

    /// The tick of the latest soft invalidation of `tag` this process knows, if any.
    pub(crate) fn soft_tick(&self, tag: &str) -> Option<u64> {
        self.soft.get(tag).map(|c| c.0)
    }

    /// When an entry born at `born` under `tags` became stale by a soft invalidation (Unix ms):
    /// the earliest wall time among its tags softened after it was born, `None` if none was.
    pub(crate) fn softened_at<'a, I>(&self, born: u64, tags: I) -> Option<u64>
    where
        I: IntoIterator<Item = &'a str>,
    {
        if self.newest_soft_tick.load(Ordering::SeqCst) <= born {
            return None;
        }
        let pruned = (self.soft_pruned_upto.load(Ordering::SeqCst) > born)
            .then(|| self.soft_pruned_wall.load(Ordering::SeqCst));
        tags.into_iter()
            .filter_map(|tag| self.soft.get(tag).and_then(|c| (c.0 > born).then_some(c.1)))
            .chain(pruned)
            .min()
    }

    /// Invalidates everything stored so far.
    pub(crate) fn purge_all(&self) -> u64 {
        let tick = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        self.purged_at.fetch_max(tick, Ordering::SeqCst);
        tick
    }

    /// Whether an entry read at `born` under `tags` is still valid.
    pub(crate) fn is_valid<'a, I>(&self, born: u64, tags: I) -> bool
    where
        I: IntoIterator<Item = &'a str>,
    {
        self.forgotten_before.load(Ordering::SeqCst) <= born && self.known_valid(born, tags)
    }

    /// Whether `is_valid` refuses an entry only because this node may have missed
    /// invalidations (no purge, prune or tag clock it knows of refuses it).
    pub(crate) fn refused_only_as_forgotten<'a, I>(&self, born: u64, tags: I) -> bool
    where
        I: IntoIterator<Item = &'a str>,
    {
        self.forgotten_before.load(Ordering::SeqCst) > born && self.known_valid(born, tags)
    }

    /// `is_valid` by what this node knows happened: purges, prunes and tag clocks.
    fn known_valid<'a, I>(&self, born: u64, tags: I) -> bool
    where
        I: IntoIterator<Item = &'a str>,
    {
        if self.purged_at.load(Ordering::SeqCst) > born
            || self.pruned_upto.load(Ordering::SeqCst) > born
        {
            return false;
        }
        if self.newest_tag_tick.load(Ordering::SeqCst) <= born {
            return true;
        }
        tags.into_iter()
            .all(|tag| self.clocks.get(tag).is_none_or(|clock| clock.0 <= born))
    }

    /// Records how long an entry may live, so that [`TagClocks::prune`] keeps every clock that can
    /// still matter.
    pub(crate) fn note_lifetime(&self, life_ms: u64) {
        self.longest_life_ms.fetch_max(life_ms, Ordering::Relaxed);
    }

    /// Drops clocks older than the longest entry life: every entry they could reject has expired.
    pub(crate) fn prune(&self) -> usize {
        let horizon = now_ms().saturating_sub(self.longest_life_ms.load(Ordering::Relaxed) + 1000);
        let before = self.clocks.len();
        let mut dropped_max = 0;
        self.clocks.retain(|_, (tick, wall)| {
            let keep = *wall >= horizon;
            if !keep {
                dropped_max = dropped_max.max(*tick);
            }
            keep
        });
        self.pruned_upto.fetch_max(dropped_max, Ordering::SeqCst);
        // A soft clock past the horizon softens only entries that have expired here; one that
        // another process stored with a longer life still counts as softened (the floor).
        let (mut soft_max, mut soft_wall) = (0, u64::MAX);
        self.soft.retain(|_, (tick, wall)| {
            let keep = *wall >= horizon;
            if !keep {
                soft_max = soft_max.max(*tick);
                soft_wall = soft_wall.min(*wall);
            }
            keep
        });
        if soft_max > 0 {
            self.soft_pruned_wall.fetch_min(soft_wall, Ordering::SeqCst);
            self.soft_pruned_upto.fetch_max(soft_max, Ordering::SeqCst);
        }
        before.saturating_sub(self.clocks.len())
    }

    /// Number of clocks held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.clocks.len()
    }

    /// Whether no tag has been invalidated (or all clocks were pruned).
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.clocks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_during_a_fill_rejects_it_and_later_fills_pass() {
        let clocks = TagClocks::default();
        let born = clocks.now(); // a fill starts
        clocks.invalidate(["products"]); // a write lands while it runs
        assert!(!clocks.is_valid(born, ["products"]));
        assert!(clocks.is_valid(clocks.now(), ["products"]));
    }

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
    fn a_fill_older_than_a_pruned_clock_is_still_rejected() {
        let clocks = TagClocks::default();
        let born = clocks.now(); // a handler starts and runs for a long time
        clocks.invalidate(["a"]);
        // Pretend every clock is past the horizon: no entry lives at all.
        clocks.clocks.alter_all(|_, (tick, _)| (tick, 0));
        assert_eq!(clocks.prune(), 1);
        assert!(clocks.is_empty());
        assert!(
            !clocks.is_valid(born, ["a"]),
            "the pruned invalidation still counts"
        );
        assert!(clocks.is_valid(clocks.now(), ["a"]));
    }

    #[test]
    fn fresh_clocks_start_above_any_tick_of_an_earlier_process() {
        let earlier = TagClocks::default();
        let born = earlier.now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        // A restarted process invalidates a tag an entry from the old one still carries.
        let later = TagClocks::default();
        later.invalidate(["a"]);
        assert!(!later.is_valid(born, ["a"]));
    }

    #[test]
    fn shared_clocks_follow_the_authority() {
        let clocks = TagClocks::shared();
        assert_eq!(clocks.now(), 0);
        clocks.apply(7, ["a"]);
        assert_eq!(clocks.now(), 7);
        assert!(!clocks.is_valid(6, ["a"]));
        assert!(clocks.is_valid(7, ["a", "b"]));
        clocks.apply(5, ["a"]); // a late, older message never lowers a clock
        assert!(!clocks.is_valid(6, ["a"]));
        clocks.apply_purge(9);
        assert!(!clocks.is_valid(8, ["b"]));
    }

    #[test]
    fn a_soft_invalidation_stales_older_entries_without_rejecting_them() {
        let clocks = TagClocks::default();
        let born = clocks.now(); // a fill starts (or an entry was stored)
        assert_eq!(clocks.softened_at(born, ["a"]), None);
        let before = now_ms();
        clocks.soften(["a"]);
        assert!(clocks.is_valid(born, ["a", "b"]), "soft keeps it valid");
        let at = clocks.softened_at(born, ["b", "a"]).unwrap();
        assert!(at >= before);
        assert_eq!(clocks.softened_at(born, ["b"]), None);
        // A fill begun after the soft invalidation is fresh.
        assert_eq!(clocks.softened_at(clocks.now(), ["a"]), None);
        // Mirrored clocks: an older message never moves a newer soft clock back.
        let shared = TagClocks::shared();
        shared.apply_soft(9, ["a"]);
        shared.apply_soft(4, ["a"]);
        assert!(shared.softened_at(5, ["a"]).is_some());
        assert_eq!(shared.now(), 9);
    }

    #[test]
    fn an_entry_older_than_a_pruned_soft_clock_still_counts_as_softened() {
        let clocks = TagClocks::default();
        let born = clocks.now(); // stored by a process that keeps entries longer than this one
        clocks.soften(["a"]);
        let softened = clocks.softened_at(born, ["a"]);
        assert!(softened.is_some());
        // Past this process's horizon: the soft clock goes, its floor stays.
        clocks.soft.alter_all(|_, (tick, _)| (tick, 5));
        clocks.prune();
        assert!(clocks.soft.is_empty());
        assert_eq!(
            clocks.softened_at(born, ["a"]),
            Some(5),
            "never fresh again"
        );
        assert_eq!(
            clocks.softened_at(born, ["b"]),
            Some(5),
            "tags unknown: the safe side"
        );
        assert_eq!(
            clocks.softened_at(clocks.now(), ["a"]),
            None,
            "later fills are fresh"
        );
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

//! The in-process store: a [`DashMap`] under a byte budget.
//!
//! Eviction is CLOCK (second-chance FIFO): entries queue in insertion order, a hit only sets an
//! atomic "referenced" bit, and when the budget is exceeded the oldest entry is evicted unless its
//! bit is set, in which case the bit is cleared and the entry goes to the back. Reads therefore
//! never take a lock beyond the map shard's read lock, and hot entries survive like under LRU.
//!
//! What must stay true: the bytes charged (keys, headers, bodies, tags and a fixed per-entry
//! overhead) never exceed `max_bytes` once `put` returns, however many threads call it, because
//! admission and eviction happen under one mutex. Expired records are dropped when read, and up
//! to two per `put` from the front of the queue; [`MemoryStore::reclaim_expired`] sweeps them all.

use std::collections::VecDeque;
use std::hash::{BuildHasherDefault, Hasher};
use std::mem::size_of;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use dashmap::DashMap;

use super::{Record, Store};
use crate::time::now_ms;
use crate::{CacheError, CacheKey, Entry, TierStats};

/// Default budget: 64 MiB.
pub(crate) const DEFAULT_MAX_BYTES: usize = 64 << 20;

/// What one heap allocation of `n` bytes occupies under glibc's malloc: the request plus an
/// 8-byte header, rounded up to 16, and never less than 32.
const fn chunk(n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    let c = (n + 8 + 15) & !15;
    if c < 32 {
        32
    } else {
        c
    }
}

/// The `bytes` crate's shared header, made when a `Bytes` from a `Vec` is first cloned (a body
/// is, by every answer).
const SHARED: usize = chunk(24);

/// A map bucket (key and [`Slot`], plus its control byte), twice: a hash table that grows by
/// doubling holds between one and two buckets per record, two at 1M records in 8 shards.
const MAP_SLOT: usize = 2 * (size_of::<(u128, Slot)>() + 1);

/// A queue item, twice for the spare capacity of a `VecDeque` that grows by doubling.
const QUEUE_SLOT: usize = 2 * size_of::<(u128, u64)>();

/// What a frontend prepares from a response on its first answer ([`crate::entry::Prepared`]):
/// the actix middleware's head is a struct of this size behind an `Arc`...
pub(crate) const PREPARED_STRUCT: usize = 112;
/// ...a name and a span per stored header...
pub(crate) const PREPARED_PER_HEADER: usize = 40;
/// ...and one text buffer with every header value, the etag of each coding, `vary`, and at
/// most this much for `cache-control` and `expires`.
pub(crate) const PREPARED_FIXED_TEXT: usize = 56;

/// What a record costs the budget: every allocation it holds, as the allocator sizes it, its
/// share of the map and the queue, and the head a frontend prepares from it. Checked against
/// the resident set size by `examples/src/bin/memory_overhead.rs`.
fn charge(record: &Record) -> usize {
    let strings = |items: &[String]| items.iter().map(|t| chunk(t.len())).sum::<usize>();
    match record {
        Record::Response(e) => {
            let headers: usize = e
                .headers
                .iter()
                .map(|(name, value)| chunk(name.len()) + chunk(value.len()))
                .sum();
            let encoded = e.encoded.as_deref().map_or(0, |copies| {
                [&copies.gzip, &copies.br]
                    .into_iter()
                    .flatten()
                    .map(|copy| chunk(copy.len()) + SHARED)
                    .sum::<usize>()
                    + chunk(size_of::<crate::encoding::Encoded>())
            });
            let vary = if e.vary.is_empty() {
                0
            } else {
                chunk(16 + e.vary.len() * size_of::<String>()) + strings(&e.vary)
            };
            let codings = 1 + if e.encoded.is_some() { 2 } else { 0 };
            let head_text = e.headers.iter().map(|(_, v)| v.len()).sum::<usize>()
                + codings * (e.etag.len() + 5)
                + e.vary.iter().map(|v| v.len() + 2).sum::<usize>()
                + PREPARED_FIXED_TEXT;
            let prepared = chunk(16 + PREPARED_STRUCT)
                + chunk(e.headers.len() * PREPARED_PER_HEADER)
                + chunk(head_text)
                + SHARED;
            chunk(16 + size_of::<Entry>())
                + chunk(16 + e.key.len())
                + chunk(e.headers.capacity() * size_of::<(String, bytes::Bytes)>())
                + headers
                + chunk(e.body.len())
                + SHARED
                + encoded
                + chunk(e.etag.len())
                + chunk(e.tags.capacity() * size_of::<String>())
                + strings(&e.tags)
                + vary
                + prepared
                + MAP_SLOT
                + QUEUE_SLOT
        }
        Record::Variants(v) => {
            chunk(16 + size_of::<super::Variants>())
                + chunk(16 + v.key.len())
                + chunk(16 + v.vary.len() * size_of::<String>())
                + strings(&v.vary)
                + MAP_SLOT
                + QUEUE_SLOT
        }
    }
}

/// Keys are already 128-bit hashes: hashing them again would waste the hit path's time.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = (n as u64) ^ ((n >> 64) as u64);
    }
}

type Map = DashMap<u128, Slot, BuildHasherDefault<KeyHasher>>;

/// 32 bytes, so that a map bucket (`u128` key + slot) is 48 rather than 64.
struct Slot {
    record: Record,
    generation: u64,
    /// What the record is charged; a record over 4 GiB is never admitted.
    charge: u32,
    referenced: AtomicBool,
}

struct Inner {
    max_bytes: AtomicUsize,
    map: Map,
    /// (key hash, generation) in insertion order; items whose generation no longer matches the
    /// map are garbage, skipped when popped and compacted when they pile up.
    queue: Mutex<VecDeque<(u128, u64)>>,
    bytes: AtomicUsize,
    generation: AtomicU64,
    evictions: AtomicU64,
}

/// A bounded in-memory store. Cheap to clone: clones share one map.
///
/// ```
/// use cache_core::MemoryStore;
/// let store = MemoryStore::new().max_bytes(256 << 20);
/// assert_eq!(store.budget(), 256 << 20);
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("max_bytes", &self.budget())
            .field("bytes", &self.bytes())
            .field("entries", &self.inner.map.len())
            .finish()
    }
}

impl MemoryStore {
    /// An empty store with the default 64 MiB budget.
    pub fn new() -> MemoryStore {
        MemoryStore {
            inner: Arc::new(Inner {
                max_bytes: AtomicUsize::new(DEFAULT_MAX_BYTES),
                map: Map::default(),
                queue: Mutex::new(VecDeque::new()),
                bytes: AtomicUsize::new(0),
                generation: AtomicU64::new(0),
                evictions: AtomicU64::new(0),
            }),
        }
    }

    /// Sets the byte budget. A record larger than the whole budget is never stored.
    pub fn max_bytes(self, max_bytes: usize) -> MemoryStore {
        self.inner.max_bytes.store(max_bytes, Ordering::Relaxed);
        self
    }

    /// The byte budget.
    pub fn budget(&self) -> usize {
        self.inner.max_bytes.load(Ordering::Relaxed)
    }

    /// Bytes currently charged.
    pub fn bytes(&self) -> usize {
        self.inner.bytes.load(Ordering::Relaxed)
    }

    /// Number of records held.
    pub fn len(&self) -> usize {
        self.inner.map.len()
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.inner.map.is_empty()
    }

    fn queue(&self) -> MutexGuard<'_, VecDeque<(u128, u64)>> {
        // A panic while holding the lock cannot leave the queue inconsistent with the map in a
        // way that matters (garbage items are tolerated), so poisoning is ignored.
        self.inner
            .queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The record under `key`, without awaiting: the hit path of the L1.
    pub fn get_now(&self, key: &CacheKey) -> Option<Record> {
        let hash = key.hash();
        let (record, generation) = {
            let slot = self.inner.map.get(&hash)?;
            if slot.record.key() != key.as_bytes() {
                return None;
            }
            if !slot.referenced.load(Ordering::Relaxed) {
                slot.referenced.store(true, Ordering::Relaxed);
            }
            (slot.record.clone(), slot.generation)
        };
        if now_ms() >= record.expires_at_ms() {
            self.remove_generation(hash, generation);
            return None;
        }
        Some(record)
    }

    /// Stores `record` under `key`, evicting as needed to stay within the budget.
    pub fn put_now(&self, key: &CacheKey, record: Record) {
        let charge = charge(&record);
        let hash = key.hash();
        let Ok(slot_charge) = u32::try_from(charge) else {
            self.remove_now(key);
            return;
        };
        if charge > self.budget() || now_ms() >= record.expires_at_ms() {
            self.remove_now(key);
            return;
        }
        let mut queue = self.queue();
        let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed);
        let slot = Slot {
            record,
            generation,
            charge: slot_charge,
            referenced: AtomicBool::new(false),
        };
        if let Some(old) = self.inner.map.insert(hash, slot) {
            self.inner
                .bytes
                .fetch_sub(old.charge as usize, Ordering::Relaxed);
        }
        self.inner.bytes.fetch_add(charge, Ordering::Relaxed);
        queue.push_back((hash, generation));
        self.evict_over_budget(&mut queue);
        self.reclaim_front(&mut queue, 2);
        // Counting the map reads every shard under its lock; once in 64 stores is enough to
        // keep the queue within twice the map.
        if generation.is_multiple_of(64) && queue.len() > 2 * self.inner.map.len() + 64 {
            let map = &self.inner.map;
            queue.retain(|(h, g)| map.get(h).is_some_and(|s| s.generation == *g));
        }
    }

    /// Drops the record under `key`.
    pub fn remove_now(&self, key: &CacheKey) {
        if let Some((_, old)) = self.inner.map.remove(&key.hash()) {
            self.inner
                .bytes
                .fetch_sub(old.charge as usize, Ordering::Relaxed);
        }
    }

    /// Drops everything.
    pub fn clear_now(&self) {
        let mut queue = self.queue();
        self.inner.map.clear();
        queue.clear();
        self.inner.bytes.store(0, Ordering::Relaxed);
    }

    /// Sweeps the whole map for expired records; returns how many were dropped.
    pub fn reclaim_expired(&self) -> usize {
        let now = now_ms();
        let before = self.inner.map.len();
        let bytes = &self.inner.bytes;
        self.inner.map.retain(|_, slot| {
            let keep = now < slot.record.expires_at_ms();
            if !keep {
                bytes.fetch_sub(slot.charge as usize, Ordering::Relaxed);
            }
            keep
        });
        before.saturating_sub(self.inner.map.len())
    }

    fn remove_generation(&self, hash: u128, generation: u64) -> bool {
        match self
            .inner
            .map
            .remove_if(&hash, |_, slot| slot.generation == generation)
        {
            Some((_, old)) => {
                self.inner
                    .bytes
                    .fetch_sub(old.charge as usize, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    fn evict_over_budget(&self, queue: &mut VecDeque<(u128, u64)>) {
        let now = now_ms();
        while self.bytes() > self.budget() {
            let Some((hash, generation)) = queue.pop_front() else {
                break;
            };
            // Decide under the shard's read lock, act after releasing it (dashmap would deadlock
            // on a write while a read guard of the same shard is alive).
            let verdict = match self.inner.map.get(&hash) {
                Some(slot) if slot.generation == generation => {
                    if now < slot.record.expires_at_ms()
                        && slot.referenced.swap(false, Ordering::Relaxed)
                    {
                        Verdict::SecondChance
                    } else {
                        Verdict::Evict
                    }
                }
                _ => Verdict::Garbage,
            };
            match verdict {
                Verdict::SecondChance => queue.push_back((hash, generation)),
                Verdict::Evict => {
                    if self.remove_generation(hash, generation) {
                        self.inner.evictions.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Verdict::Garbage => {}
            }
        }
    }

    fn reclaim_front(&self, queue: &mut VecDeque<(u128, u64)>, max: usize) {
        let now = now_ms();
        for _ in 0..max {
            let Some(&(hash, generation)) = queue.front() else {
                return;
            };
            let expired = match self.inner.map.get(&hash) {
                Some(slot) if slot.generation == generation => now >= slot.record.expires_at_ms(),
                _ => true,
            };
            if !expired {
                return;
            }
            queue.pop_front();
            self.remove_generation(hash, generation);
        }
    }
}

enum Verdict {
    SecondChance,
    Evict,
    Garbage,
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &CacheKey) -> Result<Option<Record>, CacheError> {
        Ok(self.get_now(key))
    }

    async fn put(&self, key: &CacheKey, record: Record) -> Result<(), CacheError> {
        self.put_now(key, record);
        Ok(())
    }

    async fn remove(&self, key: &CacheKey) -> Result<(), CacheError> {
        self.remove_now(key);
        Ok(())
    }

    async fn clear(&self) -> Result<(), CacheError> {
        self.clear_now();
        Ok(())
    }

    fn stats(&self) -> TierStats {
        TierStats {
            entries: self.inner.map.len() as u64,
            bytes: self.bytes() as u64,
            evictions: self.inner.evictions.load(Ordering::Relaxed),
            ..TierStats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PrimaryKey;

    fn record(key: &CacheKey, body: usize) -> Record {
        let now = now_ms();
        Record::Response(Arc::new(Entry::new(
            key.bytes(),
            200,
            vec![],
            vec![b'x'; body].into(),
            now,
            now + 60_000,
        )))
    }

    fn key(i: usize) -> CacheKey {
        PrimaryKey::new("", b"h", format!("/{i}").as_bytes(), b"").cache_key()
    }

    #[test]
    fn never_exceeds_budget_and_counts_evictions() {
        let store = MemoryStore::new().max_bytes(64 * 1024);
        for i in 0..1000 {
            store.put_now(&key(i), record(&key(i), 1000));
            assert!(store.bytes() <= 64 * 1024);
        }
        assert!(store.len() < 64);
        assert!(store.stats().evictions > 900);
        assert!(store.get_now(&key(999)).is_some());
    }

    #[test]
    fn referenced_entries_get_a_second_chance() {
        let store = MemoryStore::new().max_bytes(10 * charge(&record(&key(0), 1000)) + 100);
        for i in 0..8 {
            store.put_now(&key(i), record(&key(i), 1000));
        }
        assert!(store.get_now(&key(0)).is_some());
        for i in 100..104 {
            store.put_now(&key(i), record(&key(i), 1000));
        }
        assert!(store.get_now(&key(0)).is_some(), "hot entry evicted");
        assert!(store.get_now(&key(1)).is_none(), "cold entry kept");
    }

    #[test]
    fn replacing_a_key_does_not_grow_the_queue_forever() {
        let store = MemoryStore::new();
        for _ in 0..10_000 {
            store.put_now(&key(1), record(&key(1), 10));
        }
        assert_eq!(store.len(), 1);
        assert!(store.queue().len() <= 2 * store.len() + 65);
        assert_eq!(
            store.bytes(),
            charge(&record(&key(1), 10)),
            "replacing must not accumulate charges"
        );
    }

    #[test]
    fn oversized_and_expired_records_are_not_kept() {
        let store = MemoryStore::new().max_bytes(4096);
        store.put_now(&key(1), record(&key(1), 8192));
        assert!(store.is_empty());
        let now = now_ms();
        let old = Record::Response(Arc::new(Entry::new(
            key(2).bytes(),
            200,
            vec![],
            "x".into(),
            now - 10,
            now - 5,
        )));
        store.put_now(&key(2), old);
        assert!(store.is_empty());
        assert_eq!(store.bytes(), 0);
    }
}

//! The [`Store`] trait every backend implements, and the records it holds.
//!
//! A store is a plain key-value map from [`CacheKey`] to [`Record`]. It need not be trusted:
//! the [`crate::Cache`] checks every record's full key and its tag clock after reading it, so a
//! store that returns a wrong or old record causes a miss, never a wrong answer.

pub mod memory;

use std::sync::Arc;

use async_trait::async_trait;

use crate::{CacheError, CacheKey, Entry, TierStats};

/// The list of headers a resource varies on, stored under its primary key so that a request can
/// compute its variant key before it knows the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variants {
    /// The primary key's full encoding.
    pub key: Arc<[u8]>,
    /// Lowercase header names, in the order the variant key adds them.
    pub vary: Arc<[String]>,
    /// After this instant (Unix ms) the list is useless: every variant has expired.
    pub expires_at_ms: u64,
}

/// What a store holds under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A response (under a primary key when it has no `Vary`, else under a variant key).
    Response(Arc<Entry>),
    /// The vary list of a resource, under its primary key.
    Variants(Arc<Variants>),
}

impl Record {
    /// The full key encoding the record was stored under.
    pub fn key(&self) -> &[u8] {
        match self {
            Record::Response(entry) => &entry.key,
            Record::Variants(variants) => &variants.key,
        }
    }

    /// After this instant (Unix ms) the record may be dropped.
    pub fn expires_at_ms(&self) -> u64 {
        match self {
            Record::Response(entry) => entry.expires_at_ms(),
            Record::Variants(variants) => variants.expires_at_ms,
        }
    }

    /// Approximate bytes of variable-size data, for budgets.
    pub fn payload_bytes(&self) -> usize {
        match self {
            Record::Response(entry) => entry.payload_bytes(),
            Record::Variants(variants) => {
                variants.key.len() + variants.vary.iter().map(String::len).sum::<usize>()
            }
        }
    }
}

/// A cache backend. Implement it to plug in another store; [`crate::MemoryStore`] is the
/// reference implementation.
///
/// Errors are reported, not hidden: the [`crate::Cache`] turns a failed `get` into a miss and a
/// failed `put` into a response that is simply not stored, and counts both.
///
/// ```
/// use std::{collections::HashMap, sync::{Arc, Mutex}};
/// use cache_core::{async_trait, CacheError, CacheKey, Record, Store, TierStats};
///
/// #[derive(Default)]
/// struct MapStore(Mutex<HashMap<u128, Record>>);
///
/// #[async_trait]
/// impl Store for MapStore {
///     async fn get(&self, key: &CacheKey) -> Result<Option<Record>, CacheError> {
///         Ok(self.0.lock().unwrap().get(&key.hash()).cloned())
///     }
///     async fn put(&self, key: &CacheKey, record: Record) -> Result<(), CacheError> {
///         self.0.lock().unwrap().insert(key.hash(), record);
///         Ok(())
///     }
///     async fn remove(&self, key: &CacheKey) -> Result<(), CacheError> {
///         self.0.lock().unwrap().remove(&key.hash());
///         Ok(())
///     }
///     async fn clear(&self) -> Result<(), CacheError> {
///         self.0.lock().unwrap().clear();
///         Ok(())
///     }
///     fn stats(&self) -> TierStats {
///         TierStats { entries: self.0.lock().unwrap().len() as u64, ..TierStats::default() }
///     }
/// }
/// let cache = cache_core::Cache::builder().store(MapStore::default()).build();
/// ```
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The record stored under `key`, if any.
    async fn get(&self, key: &CacheKey) -> Result<Option<Record>, CacheError>;
    /// Stores `record` under `key`, replacing what was there. It may be kept until
    /// `record.expires_at_ms()`, never longer.
    async fn put(&self, key: &CacheKey, record: Record) -> Result<(), CacheError>;
    /// Drops the record under `key`.
    async fn remove(&self, key: &CacheKey) -> Result<(), CacheError>;
    /// Drops everything this store holds for this cache.
    async fn clear(&self) -> Result<(), CacheError>;
    /// Entries, bytes and evictions as the store counts them.
    fn stats(&self) -> TierStats;
}

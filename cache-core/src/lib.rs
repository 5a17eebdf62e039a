//! Framework-free core of `cache-actix`.
//!
//! What lives here: cache keys ([`key`]), policies ([`policy`]), stored responses and their
//! freshness ([`entry`]), the [`Store`] trait and the bounded [`MemoryStore`], tag clocks
//! ([`tags`]), single-flight ([`flight`]), counters ([`stats`]) and the [`Cache`] handle that ties
//! them together. Nothing here knows about HTTP frameworks; the `actix` feature only adds the two
//! trait impls Rust's orphan rule forces to live beside their types.
//!
//! What must stay true: a lookup never returns an entry whose full key differs from the key
//! asked for, and never returns an entry stored under a tag before that tag's last completed
//! invalidation.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "actix")]
mod actix;
pub mod cache;
pub mod codec;
pub mod entry;
pub mod error;
pub mod flight;
pub mod key;
pub mod policy;
pub mod stats;
pub mod store;
pub mod tags;
pub mod time;

/// Re-exported so that a user-written [`Store`] can use `#[async_trait]` without adding the crate.
pub use async_trait::async_trait;
pub use cache::{Cache, CacheBuilder, Lookup};
pub use entry::{Entry, Freshness};
pub use error::CacheError;
pub use key::{CacheKey, PrimaryKey, VariantBuilder};
pub use policy::{parse_duration, CachePolicy, PolicyError, TagTemplate, Visibility};
pub use stats::Event;
pub use stats::{Stats, TierStats};
#[cfg(feature = "redis")]
pub use store::redis::RedisStore;
pub use store::{memory::MemoryStore, ClockLink, Record, Store, Variants};

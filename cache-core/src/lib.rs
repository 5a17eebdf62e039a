//! Framework-free core of `cache-actix`.
//!
//! What lives here: cache keys ([`key`]), policies ([`policy`]), stored responses and their
//! freshness ([`entry`]), their compressed copies ([`encoding`]), the [`Store`] trait a backend implements and [`ClockAuthority`] for one
//! that keeps the tag clocks of every process sharing it, the bounded [`MemoryStore`], the record
//! format of shared stores ([`codec`]), tag clocks ([`tags`]), model tags ([`CacheTags`]),
//! counters ([`stats`]) and the [`Cache`] handle that ties them together. Nothing here knows about HTTP frameworks; the
//! `actix` feature only adds the two trait impls Rust's orphan rule forces to live beside their
//! types.
//!
//! The public surface is what an application and a custom-store author need. What only the
//! `cache-actix` middleware uses (single-flight, the clock reading of a fill, lookups and stores,
//! event counting, the wall clock) is `#[doc(hidden)]`: public only because that middleware is
//! another crate, and not part of the API.
//!
//! What must stay true: a lookup never returns an entry whose full key differs from the key
//! asked for, and never returns an entry stored under a tag before that tag's last completed
//! invalidation.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "actix")]
mod actix;
mod cache;
pub mod codec;
pub mod encoding;
pub mod entry;
pub mod error;
// Hidden: the middleware's single-flight; public because cache-actix is another crate.
#[doc(hidden)]
pub mod flight;
pub mod key;
pub mod lease;
mod model_tags;
pub mod policy;
pub mod stats;
mod store;
pub mod tags;
// Hidden: the middleware's wall clock; public because cache-actix is another crate.
#[doc(hidden)]
pub mod time;

/// Re-exported so that a user-written [`Store`] can use `#[async_trait]` without adding the crate.
pub use async_trait::async_trait;
pub use cache::{Cache, CacheBuilder, Lookup};
pub use entry::{Entry, Freshness};
pub use error::CacheError;
pub use key::{CacheKey, PrimaryKey, VariantBuilder};
pub use lease::LeaseReply;
pub use model_tags::{check_tag_prefix, CacheTags};
pub use policy::{parse_duration, CachePolicy, PolicyError, TagTemplate, Visibility};
pub use stats::Event;
pub use stats::{Stats, TierStats};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use store::RedisStore;
pub use store::{ClockAuthority, ClockLink, MemoryStore, Record, Store, Variants};

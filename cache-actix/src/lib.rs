//! Response caching for actix-web.
//!
//! Annotate a handler, wrap a scope, invalidate by tag:
//!
//! ```
//! use actix_web::{get, post, web, App, Responder};
//! use cache_actix::{cached, Cache, CacheMiddleware};
//!
//! #[cached(ttl = 30, tags = ["products", "product:{id}"])]
//! #[get("/products/{id}")]
//! async fn get_product(id: web::Path<u32>) -> impl Responder {
//!     format!("product {id}")
//! }
//!
//! #[post("/products/{id}")]
//! async fn update_product(id: web::Path<u32>, cache: Cache) -> actix_web::Result<&'static str> {
//!     cache.invalidate_tag(format!("product:{id}")).await?;
//!     Ok("updated")
//! }
//!
//! let cache = Cache::memory();
//! let app = App::new()
//!     .app_data(web::Data::new(cache.clone()))
//!     .service(web::scope("/api").wrap(CacheMiddleware::new(cache.clone()))
//!         .service(get_product).service(update_product));
//! ```
//!
//! This crate is all a user depends on: it re-exports the attribute macro and every core type.
//! The request flow lives in `flow.rs`, top to bottom; ARCHITECTURE.md in the repository maps
//! every module.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod admin;
mod bypass;
mod coalesce;
mod compression;
mod config;
mod directives;
mod downstream;
mod flow;
mod headers;
mod http_date;
mod key_rules;
mod middleware;
mod prepared;
mod refresh;
mod render;
mod request_body;
mod request_key;
mod responder;
mod rules;
mod single_flight;

pub use bypass::BypassReason;
/// Compressed copies of stored responses: see [`CacheMiddleware::compress`].
pub use cache_core::encoding::{Coding, Compression};
/// Model tags: the trait (below) and `#[derive(CacheTags)]` (its documentation is that of
/// `cache_macros::CacheTags`) share the name, as serde's `Serialize` does.
///
/// ```
/// use cache_actix::CacheTags;
///
/// #[derive(CacheTags)]
/// #[cache_tags(prefix = "product")]
/// struct Product {
///     #[cache_tag]
///     id: u32,
///     #[cache_tag(prefix = "category")]
///     category_id: u32,
///     /// Tagged only when `Some`.
///     #[cache_tag(prefix = "brand")]
///     brand: Option<String>,
///     name: String,
/// }
///
/// let p = Product { id: 1, category_id: 7, brand: None, name: "Lamp".into() };
/// assert_eq!(p.cache_tags(), ["product:1", "category:7"]);
/// let q = Product { brand: Some("acme".into()), ..p };
/// assert_eq!(q.cache_tags(), ["product:1", "category:7", "brand:acme"]);
/// ```
pub use cache_core::CacheTags;

/// For a custom [`Store`] that keeps fill leases (coalescing across nodes): what
/// [`Store::acquire_lease`] answers.
pub use cache_core::LeaseReply;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use cache_core::RedisStore;
pub use cache_core::{
    async_trait, parse_duration, Cache, CacheBuilder, CacheError, CacheKey, CachePolicy, Entry,
    Event, Freshness, MemoryStore, PrimaryKey, Record, Stats, Store, TierStats, Variants,
    Visibility,
};
/// For a custom [`Store`]: the versioned binary form of records, and the clock authority a
/// store shared by several processes may take on.
pub use cache_core::{codec, ClockAuthority, ClockLink};
/// The `#[cached(...)]` attribute: see the crate README for every key.
pub use cache_macros::cached;
/// `#[derive(CacheTags)]`: see [`CacheTags`](trait@CacheTags).
pub use cache_macros::CacheTags;
pub use config::HttpOptions;
pub use downstream::TagHeader;
pub use headers::{CACHE_STATUS, CACHE_TAG, X_CACHE};
pub use middleware::{
    CacheMiddleware, CacheService, DEFAULT_LOCK_TIMEOUT, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_KEY_BYTES,
};
pub use responder::Cached;
pub use rules::http::OriginUnreachable;

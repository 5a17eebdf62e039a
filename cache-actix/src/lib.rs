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
//! The request flow lives in [`middleware`], top to bottom.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
mod bypass;
pub mod headers;
pub mod http_semantics;
pub mod middleware;
mod prepared;
mod request_body;
mod responder;

pub use bypass::BypassReason;
#[cfg(feature = "redis")]
pub use cache_core::RedisStore;
pub use cache_core::{
    async_trait, flight, key, parse_duration, policy, tags, time, Cache, CacheBuilder, CacheError,
    CacheKey, CachePolicy, Entry, Event, Freshness, MemoryStore, PrimaryKey, Record, Stats, Store,
    TierStats, Variants, Visibility,
};
pub use cache_core::{codec, ClockAuthority, ClockLink};
/// The `#[cached(...)]` attribute: see the crate README for every key.
pub use cache_macros::cached;
pub use http_semantics::{HttpOptions, OriginUnreachable};
pub use middleware::CacheMiddleware;
pub use responder::Cached;

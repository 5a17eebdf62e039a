//! Runnable apps for cache-actix. [`products`] is the product API the README walks through,
//! [`reverse_proxy`] a caching reverse proxy in front of any origin; both are library modules
//! so that the integration tests run the very same apps.
#![forbid(unsafe_code)]

pub mod products;
pub mod reverse_proxy;
pub mod server;

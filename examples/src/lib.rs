//! Runnable apps for cache-actix. [`products`] is the product API the README walks through;
//! it is a library module so that the integration tests run the very same app.
#![forbid(unsafe_code)]

pub mod products;
pub mod server;

//! Runnable apps for cache-actix. [`products`] is the product API the README walks through,
//! [`reverse_proxy`] a caching reverse proxy in front of any origin; both are library modules
//! so that the integration tests run the very same apps. [`bench_app`] is the app and the
//! helpers the in-process measurement binaries share.
#![forbid(unsafe_code)]

pub mod bench_app;
pub mod products;
pub mod reverse_proxy;
pub mod server;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`). A second call (tests run several
/// servers in one process) keeps the first subscriber.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .try_init();
}

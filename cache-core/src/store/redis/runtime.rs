//! The background Tokio runtime every `RedisStore` of the process shares (one thread): it
//! carries the invalidation subscriptions, and the calls made outside any Tokio runtime.
//!
//! What must stay true: it is started at most once and never dropped, so dropping a store
//! never blocks on a runtime shutting down; failing to start it is a configuration error, not a
//! panic.

use std::sync::OnceLock;

use crate::CacheError;

/// The runtime, started on first use.
pub(crate) fn background() -> Result<&'static tokio::runtime::Runtime, CacheError> {
    static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("cache-actix-redis")
                .enable_all()
                .build()
                .ok()
        })
        .as_ref()
        .ok_or_else(|| CacheError::Config("cannot start the Redis background runtime".into()))
}

//! The background Tokio runtime every `RedisStore` of the process shares: it carries the
//! invalidation subscriptions, each store's warm connection (opened when the store is attached
//! to its cache, driven here, used by a thread's first calls until its own connection is open),
//! and the calls made outside any Tokio runtime.
//!
//! Two worker threads, so that one store's work that runs long on a thread (say, emptying a
//! large L1 when its subscription is lost) leaves the other to every other store. Connection
//! attempts of TLS stores, whose setup is synchronous work in redis-rs, run on the runtime's
//! blocking threads instead (see `conn.rs`), and nothing here holds a lock across an await.
//!
//! What must stay true: it is started at most once and never dropped, so dropping a store
//! never blocks on a runtime shutting down; failing to start it is a configuration error, not a
//! panic; no store's work on it waits synchronously for Redis.

use std::sync::OnceLock;

use crate::CacheError;

static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();

/// The runtime, started on first use.
pub(crate) fn background() -> Result<&'static tokio::runtime::Runtime, CacheError> {
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("cache-actix-redis")
                .enable_all()
                .build()
                .ok()
        })
        .as_ref()
        .ok_or_else(|| CacheError::Config("cannot start the Redis background runtime".into()))
}

/// Whether the caller runs on the background runtime.
pub(crate) fn is_background() -> bool {
    let Ok(here) = tokio::runtime::Handle::try_current() else {
        return false;
    };
    RUNTIME
        .get()
        .and_then(Option::as_ref)
        .is_some_and(|runtime| runtime.handle().id() == here.id())
}

//! Connections to Redis for one `RedisStore`: one multiplexed connection kept per thread, made
//! through deadpool-redis, opened in the background, replaced when it breaks.
//!
//! Why per thread: an actix worker then talks to Redis from its own thread, with no hop to
//! another one. Why kept: each `Pool::get` costs deadpool's recycling `PING`, a second round
//! trip on every call. Why in the background: opening a connection (TCP, maybe TLS and AUTH)
//! can take longer than a call's 50 ms limit; the attempt is never cancelled by that limit, so
//! a slow-to-connect Redis is reached by a later call instead of never.
//!
//! What must stay true: a caller never waits longer than its own time limit; a dead connection
//! is dropped and the call tried once more on a new one; connections of a dropped store are
//! released by the next lookup on that thread; a Redis that refuses a call because it is at its
//! `maxmemory` is told apart ([`is_full`]) from one that fails.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Weak;
use std::time::Duration;

use deadpool_redis::redis::{aio::MultiplexedConnection, RedisError};
use deadpool_redis::Pool;
use futures_util::future::{BoxFuture, FutureExt, Shared};

use crate::CacheError;

/// Longest wait for a new connection (the attempt goes on after the caller gives up).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How the error of a call Redis refused for want of memory begins.
const FULL: &str = "Redis is full";

/// Whether `err` is Redis refusing a call because it is at its `maxmemory` (`-OOM`): Redis is
/// up and answering, so this is not a failure for the circuit breaker.
pub(crate) fn is_full(err: &CacheError) -> bool {
    matches!(err, CacheError::Backend(message) if message.starts_with(FULL))
}

/// Whether Redis refused a call for want of memory. A script passes on the code of the command
/// that failed in it (`OOM command not allowed when used memory > 'maxmemory'. script: …`).
fn out_of_memory(err: &RedisError) -> bool {
    err.code() == Some("OOM")
        || err
            .to_string()
            .contains("command not allowed when used memory")
}

type Opening = Shared<BoxFuture<'static, Result<MultiplexedConnection, String>>>;

thread_local! {
    /// This thread's connections: (store id, the store's liveness, the connection or its opening).
    static KEPT: RefCell<Vec<(u64, Weak<()>, Opening)>> = const { RefCell::new(Vec::new()) };
}

/// Makes and keeps one store's connections.
pub(crate) struct Connector {
    pool: Pool,
    id: u64,
    /// Held by the `RedisStore`: when it is dropped, its kept connections are released.
    alive: Weak<()>,
}

impl Connector {
    pub(crate) fn new(pool: Pool, id: u64, alive: Weak<()>) -> Connector {
        Connector { pool, id, alive }
    }

    /// This thread's connection, opening one if needed. `true` with it if it was kept from an
    /// earlier call (so a failure on it may only mean it went stale).
    async fn connection(&self) -> Result<(MultiplexedConnection, bool), CacheError> {
        let kept = KEPT.with(|kept| {
            let mut kept = kept.borrow_mut();
            kept.retain(|(_, alive, _)| alive.strong_count() > 0);
            kept.iter()
                .find(|(id, _, _)| *id == self.id)
                .map(|(_, _, opening)| opening.clone())
        });
        let (opening, was_kept) = match kept {
            Some(opening) => match opening.peek() {
                Some(Ok(conn)) => return Ok((conn.clone(), true)),
                Some(Err(_)) => (self.open(), false),
                None => (opening, false),
            },
            None => (self.open(), false),
        };
        match opening.await {
            Ok(conn) => Ok((conn, was_kept)),
            Err(err) => {
                self.forget();
                Err(CacheError::Backend(format!("Redis connection: {err}")))
            }
        }
    }

    /// Starts opening a connection for this thread and keeps the attempt.
    fn open(&self) -> Opening {
        let pool = self.pool.clone();
        let opening: Opening = async move {
            match tokio::time::timeout(CONNECT_TIMEOUT, pool.get()).await {
                Ok(Ok(pooled)) => Ok(deadpool_redis::Connection::take(pooled)),
                Ok(Err(err)) => Err(err.to_string()),
                Err(_) => Err("connecting timed out".to_string()),
            }
        }
        .boxed()
        .shared();
        // Driven to the end even if every caller stops waiting.
        tokio::spawn(opening.clone());
        let alive = self.alive.clone();
        let id = self.id;
        let kept_opening = opening.clone();
        KEPT.with(|kept| {
            let mut kept = kept.borrow_mut();
            kept.retain(|(other, _, _)| *other != id);
            kept.push((id, alive, kept_opening));
        });
        opening
    }

    /// Drops this thread's connection, so that the next call opens a new one.
    fn forget(&self) {
        KEPT.with(|kept| kept.borrow_mut().retain(|(id, _, _)| *id != self.id));
    }

    /// Runs `op` on this thread's connection. A kept connection that turns out dead (Redis
    /// restarted, or the runtime that drove it ended) is replaced and `op` tried once more.
    pub(crate) async fn with<T, F, Fut>(&self, op: F) -> Result<T, CacheError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        loop {
            let (conn, was_kept) = self.connection().await?;
            match op(conn).await {
                Ok(value) => return Ok(value),
                Err(err) => {
                    let broken = err.is_io_error()
                        || err.is_connection_dropped()
                        || err.is_unrecoverable_error();
                    if broken {
                        self.forget();
                    }
                    if !(broken && was_kept) {
                        return Err(if err.code() == Some("WRONGTYPE") {
                            CacheError::Corrupt(err.to_string())
                        } else if out_of_memory(&err) {
                            CacheError::Backend(format!("{FULL}: {err}"))
                        } else {
                            CacheError::Backend(format!("Redis: {err}"))
                        });
                    }
                }
            }
        }
    }
}

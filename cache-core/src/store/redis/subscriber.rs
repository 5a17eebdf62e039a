//! The subscription that carries invalidations from Redis to this process's clocks and L1.
//!
//! Loop: subscribe to the namespace's channel, read Redis's `maxmemory-policy`, tick the shared
//! counter (so that every fill this process began before is older than the tick), declare the L1
//! usable, apply every message, and read the policy again every few seconds; when the connection
//! ends, declare the L1 lost (it is emptied and unused) and try again after a growing pause
//! (100 ms, doubling, at most 1 s; each give or take half at random, so that stores that lost
//! Redis together do not all try again at the same instant).
//!
//! Cold start: it is started when the store is attached to its cache (with the store's warm
//! connection, which its calls use), and the first attempt's end, subscribed or failed, is
//! what a store's first reads wait for ([`Shared::settle`], up to the call limit): before it
//! the eviction policy is unknown and the mirror vouches for nothing. It runs on the shared
//! background runtime and never blocks it: every wait is an await under a time limit, and a
//! TLS store's connection attempts run on the runtime's blocking threads (`conn.rs`).
//!
//! What must stay true: the first attempt settles the store's first reads, whatever its end;
//! the L1 is used only while subscribed; every message is applied before
//! the next one, and a message we cannot read drops the L1 rather than being ignored; a policy
//! that may evict a clock, or one Redis will not tell, puts the store in its fail-safe reading
//! mode (and logs why), and leaving that mode purges what was stored while in it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use deadpool_redis::redis::{self, RedisError, Value};
use futures_util::StreamExt;

use super::keys::Keys;
use super::scripts::parse_pieces;
use super::shared::{Eviction, Shared};
use crate::store::ClockLink;

const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);
/// Longest quiet spell before the connection is checked with a `PING`.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How often `maxmemory-policy` is read again (an operator may change it at run time).
const POLICY_EVERY: Duration = Duration::from_secs(5);
/// Longest wait for one call the subscription makes.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs until the store is dropped (`alive` dies).
pub(crate) async fn run(shared: Arc<Shared>, keys: Keys, alive: Weak<()>) {
    let Some(link) = shared.link.get().cloned() else {
        shared.settle();
        return;
    };
    link.lost();
    let mut pause = FIRST_PAUSE;
    while alive.strong_count() > 0 {
        match session(&shared, &keys, &link, &alive).await {
            Ok(()) => pause = FIRST_PAUSE,
            Err(err) => {
                tracing::debug!(error = %err, "invalidation subscription unavailable");
            }
        }
        // A first attempt that failed: reads stop waiting for it.
        shared.settle();
        link.lost();
        tokio::time::sleep(jittered(pause)).await;
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// `pause` give or take half of it, at random: the stores of a process (and the processes of a
/// fleet) that lost Redis together then do not all try again at the same instant.
fn jittered(pause: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // Each `RandomState` has keys of its own: a random number without a dependency.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let spread = u64::try_from(pause.as_micros()).unwrap_or(u64::MAX).max(1);
    pause / 2 + Duration::from_micros(random % spread)
}

/// One subscription, from connecting to losing it (or the store being dropped). `Ok` if it was
/// established at all.
async fn session(
    shared: &Shared,
    keys: &Keys,
    link: &ClockLink,
    alive: &Weak<()>,
) -> Result<(), String> {
    let connect = Duration::from_secs(2);
    let mut pubsub = shared.conn.pubsub(connect).await?;
    tokio::time::timeout(connect, pubsub.subscribe(&keys.channel))
        .await
        .map_err(|_| "subscribe timed out".to_string())?
        .map_err(|e| e.to_string())?;
    // Before the tick: while Redis may evict the counter, ticks stay above the wall clock.
    check_eviction(shared, keys, link).await?;
    let mut policy_read = Instant::now();
    // Subscribed: every invalidation from now on reaches us. Tick so that fills begun earlier
    // (which may have missed one) are older than what the L1 accepts.
    resync(shared, keys, link).await?;
    // Reads waiting for the first attempt may go: the mirror is current, the policy known.
    shared.settle();
    tracing::debug!(channel = %keys.channel, "invalidation subscription established");
    let (mut sink, mut stream) = pubsub.split();
    while alive.strong_count() > 0 {
        if policy_read.elapsed() >= POLICY_EVERY {
            policy_read = Instant::now();
            if let Err(err) = check_eviction(shared, keys, link).await {
                tracing::debug!(error = %err, "could not read maxmemory-policy");
            }
        }
        tokio::select! {
            message = tokio::time::timeout(HEARTBEAT, stream.next()) => match message {
                Ok(Some(message)) => {
                    if !apply(link, message.get_payload_bytes()) {
                        tracing::warn!("unreadable invalidation message; dropping the L1");
                        resync(shared, keys, link).await?;
                    }
                }
                Ok(None) => return Ok(()),
                Err(_quiet) => {
                    // A hung server would otherwise look like a quiet one. In subscribed mode
                    // the reply is `["pong", ""]` (RESP2) or `PONG` (RESP3): any reply will do.
                    let ping = tokio::time::timeout(connect, sink.ping::<Value>()).await;
                    if !matches!(ping, Ok(Ok(_))) {
                        return Ok(());
                    }
                }
            },
            () = shared.resync.notified() => {
                // An invalidation from this process failed: its L1 was dropped and new fills are
                // refused until a tick newer than them is seen.
                if resync(shared, keys, link).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// Reads `maxmemory-policy` and acts on what it means for the clocks. Only records expire, so
/// `noeviction` and `volatile-*` never evict a clock. Under `allkeys-*`, a policy this code does
/// not know, or a Redis that refuses `CONFIG GET` with no policy assumed, a clock may be evicted
/// (reviving what it invalidated to a check in Redis): the store reads in its fail-safe mode, and
/// says so. Coming back to a safe policy, every record stored meanwhile is purged, since Redis
/// may have lost the clocks that would reject some of them. `Err` only when Redis could not be
/// asked (or the purge failed: the store then stays in its fail-safe mode).
async fn check_eviction(shared: &Shared, keys: &Keys, link: &ClockLink) -> Result<(), String> {
    let (policy, eviction) = match read_policy(shared).await? {
        Some(policy) => {
            let eviction = Eviction::under(&policy);
            (policy, eviction)
        }
        None => match shared.assumed_policy() {
            Some(assumed) => (
                format!("{assumed} (assumed: CONFIG GET refused)"),
                Eviction::under(assumed),
            ),
            None => ("unknown (CONFIG GET refused)".to_string(), Eviction::AtRisk),
        },
    };
    let before = shared.eviction();
    if eviction == before {
        return Ok(());
    }
    match (before, eviction) {
        (Eviction::AtRisk, Eviction::Safe) => {
            let tick = purge(shared, keys).await?;
            link.purged(tick);
            shared.set_eviction(Eviction::Safe);
            tracing::warn!(
                %policy,
                "Redis can no longer evict the cache's tag clocks; records stored while it could \
                 were purged, and reads are checked as usual again"
            );
        }
        (_, Eviction::AtRisk) => {
            shared.set_eviction(Eviction::AtRisk);
            tracing::warn!(
                %policy,
                "Redis may evict the cache's tag clocks, which would revive what they invalidated: \
                 records read from Redis are served only where this process's own clocks vouch \
                 for them (fewer hits, counted in stats().l2.unverified). \
                 Use maxmemory-policy volatile-lru for the cache's Redis"
            );
        }
        (_, eviction) => {
            shared.set_eviction(eviction);
            tracing::debug!(%policy, "Redis cannot evict the cache's tag clocks");
        }
    }
    Ok(())
}

/// `Some(policy)`; `None` when Redis refuses to say (a managed Redis may disable `CONFIG`);
/// `Err` when it cannot be asked.
async fn read_policy(shared: &Shared) -> Result<Option<String>, String> {
    let mut config_get = redis::cmd("CONFIG");
    config_get.arg("GET").arg("maxmemory-policy");
    let config_get = &config_get;
    // The reply, or Redis's refusal, inside; a connection failure outside, where `with` replaces
    // a connection that went stale.
    let ask = shared.conn.with(|mut conn| async move {
        match config_get.query_async::<Value>(&mut conn).await {
            Ok(value) => Ok(Ok(value)),
            Err(err) if connection_failure(&err) => Err(err),
            Err(refused) => Ok(Err(refused)),
        }
    });
    let reply = tokio::time::timeout(CALL_TIMEOUT, ask)
        .await
        .map_err(|_| "CONFIG GET timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let Ok(value) = reply else {
        return Ok(None);
    };
    let policy = match value {
        Value::Array(items) => items.into_iter().nth(1),
        Value::Map(pairs) => pairs.into_iter().next().map(|(_, v)| v),
        _ => None,
    };
    Ok(match policy {
        Some(Value::BulkString(bytes)) => String::from_utf8(bytes).ok(),
        Some(Value::SimpleString(text)) => Some(text),
        _ => None,
    })
}

/// Whether `err` is about the connection rather than an answer from Redis.
fn connection_failure(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_unrecoverable_error()
        || err.is_timeout()
}

/// Purges every record stored so far (as `purge_all` does) and returns the tick.
async fn purge(shared: &Shared, keys: &Keys) -> Result<u64, String> {
    let mut invocation = shared.scripts.purge.prepare_invoke();
    invocation
        .key(&keys.seq)
        .key(&keys.purged)
        .arg(&keys.channel)
        .arg(shared.floor());
    let tick = tokio::time::timeout(CALL_TIMEOUT, shared.conn.run(&invocation))
        .await
        .map_err(|_| "purge timed out".to_string())?
        .map_err(|e| e.to_string())?;
    match tick {
        Value::Int(tick) if tick > 0 => Ok(tick.unsigned_abs()),
        other => Err(format!("unexpected purge reply {other:?}")),
    }
}

/// Ticks the shared counter and resumes the L1 at that tick.
async fn resync(shared: &Shared, keys: &Keys, link: &ClockLink) -> Result<(), String> {
    let mut invocation = shared.scripts.tick.prepare_invoke();
    invocation.key(&keys.seq).arg(shared.floor());
    let tick = tokio::time::timeout(CALL_TIMEOUT, shared.conn.run(&invocation))
        .await
        .map_err(|_| "tick timed out".to_string())?
        .map_err(|e| e.to_string())?;
    match tick {
        Value::Int(tick) if tick > 0 => {
            // Records born before this tick may have been invalidated before the mirror heard
            // of it: reads check those in Redis.
            shared
                .synced_at
                .store(tick.unsigned_abs(), Ordering::Release);
            link.resumed(tick.unsigned_abs());
            Ok(())
        }
        other => Err(format!("unexpected tick reply {other:?}")),
    }
}

/// Applies one message: `i <tick> <len:tag...>`, `s <tick> <len:tag...>` (a soft
/// invalidation) or `p <tick>`. `false` if unreadable.
fn apply(link: &ClockLink, payload: &[u8]) -> bool {
    let mut parts = payload.splitn(3, |b| *b == b' ');
    let (Some(kind), Some(tick)) = (parts.next(), parts.next()) else {
        return false;
    };
    let Some(tick) = std::str::from_utf8(tick)
        .ok()
        .and_then(|t| t.parse::<u64>().ok())
    else {
        return false;
    };
    match kind {
        b"i" => match parse_pieces(parts.next().unwrap_or_default()) {
            Some(tags) => {
                link.invalidated(tick, tags);
                true
            }
            None => false,
        },
        b"s" => match parse_pieces(parts.next().unwrap_or_default()) {
            Some(tags) => {
                link.softened(tick, tags);
                true
            }
            None => false,
        },
        b"p" => {
            link.purged(tick);
            true
        }
        _ => false,
    }
}

//! The subscription that carries invalidations from Redis to this process's clocks and L1.
//!
//! Loop: subscribe to the namespace's channel, tick the shared counter (so that every fill this
//! process began before is older than the tick), declare the L1 usable, apply every message;
//! when the connection ends, declare the L1 lost (it is emptied and unused) and try again after
//! a growing pause (100 ms, doubling, at most 1 s).
//!
//! What must stay true: the L1 is used only while subscribed; every message is applied before
//! the next one, and a message we cannot read drops the L1 rather than being ignored.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use deadpool_redis::redis::{self, Value};
use futures_util::StreamExt;

use super::redis::{parse_pieces, Keys, Shared};
use super::ClockLink;

const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);
/// Longest quiet spell before the connection is checked with a `PING`.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Runs until the store is dropped (`alive` dies).
pub(crate) async fn run(shared: Arc<Shared>, keys: Keys, alive: Weak<()>) {
    let Some(link) = shared.link.get().cloned() else {
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
        link.lost();
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// One subscription, from connecting to losing it (or the store being dropped). `Ok` if it was
/// established at all.
async fn session(
    shared: &Shared,
    keys: &Keys,
    link: &ClockLink,
    alive: &Weak<()>,
) -> Result<(), String> {
    let client = redis::Client::open(shared.url.as_str()).map_err(|e| e.to_string())?;
    let connect = Duration::from_secs(2);
    let mut pubsub = tokio::time::timeout(connect, client.get_async_pubsub())
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(connect, pubsub.subscribe(&keys.channel))
        .await
        .map_err(|_| "subscribe timed out".to_string())?
        .map_err(|e| e.to_string())?;
    // Subscribed: every invalidation from now on reaches us. Tick so that fills begun earlier
    // (which may have missed one) are older than what the L1 accepts.
    resync(shared, keys, link).await?;
    tracing::debug!(channel = %keys.channel, "invalidation subscription established");
    warn_if_clocks_can_be_evicted(shared).await;
    let (mut sink, mut stream) = pubsub.split();
    while alive.strong_count() > 0 {
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

/// Tag clocks and the counter must never be evicted: a lost clock would make entries it
/// invalidated valid again. Under an `allkeys-*` or `volatile-*` policy Redis may evict them
/// (clocks carry a TTL); say so loudly. `CONFIG` may be refused (managed Redis): then say nothing.
async fn warn_if_clocks_can_be_evicted(shared: &Shared) {
    let mut config_get = redis::cmd("CONFIG");
    config_get.arg("GET").arg("maxmemory-policy");
    let reply = shared.query::<Vec<String>>(&config_get).await;
    if let Ok(reply) = reply {
        if let Some(policy) = reply.get(1).filter(|p| p.as_str() != "noeviction") {
            tracing::warn!(
                %policy,
                "Redis may evict keys: a lost tag clock can revive invalidated entries; \
                 use maxmemory-policy noeviction for the cache's Redis"
            );
        }
    }
}

/// Ticks the shared counter and resumes the L1 at that tick.
async fn resync(shared: &Shared, keys: &Keys, link: &ClockLink) -> Result<(), String> {
    let mut invocation = shared.tick.prepare_invoke();
    invocation.key(&keys.seq).arg(link.seq());
    let tick = tokio::time::timeout(Duration::from_secs(2), shared.run(&invocation))
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

/// Applies one message: `i <tick> <len:tag...>` or `p <tick>`. `false` if unreadable.
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
        b"p" => {
            link.purged(tick);
            true
        }
        _ => false,
    }
}

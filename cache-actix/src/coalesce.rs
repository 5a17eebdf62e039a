//! Coalescing across nodes: before the local leader of a fill runs the handler, it takes the
//! fill's lease in the L2, or waits for the node that holds it (the lease and its fencing are
//! `cache_core::lease`).
//!
//! - The lease granted: look in the L2 once more (the last holder may have stored and released
//!   since this request looked), then run the handler; the store is fenced by the lease's
//!   token, and the lease is released when the fill ends, however it ends (the guard is
//!   dropped with it).
//! - The lease held by another node: poll the L2 for its entry with a short backoff (2 ms,
//!   doubling to 20 ms), asking for the lease again after each look, so a holder that released
//!   without storing, or died and let the lease expire, is followed at once by one taker.
//! - No lease to be had (no L2, an L2 without leases, Redis away, the breaker open, any lease
//!   error): run the handler at once, as per-node single-flight did before leases.
//!
//! What must stay true: a waiter takes an entry found in the L2 only with the checks a local
//! waiter makes on its leader's entry (clocks valid, its own variant key, servable to it) and
//! only a fresh one (a stale one is what the fill replaces); no waiter waits past its lock
//! timeout (then it runs the handler, counted as a lock timeout); a lease error never costs a
//! wait; a memory-only cache never gets here further than one check that it has no L2.

use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServiceRequest;
use cache_core::{
    lease::{Lease, LeaseGrant},
    time::now_ms,
    Entry, Lookup, PrimaryKey,
};
use tokio::time::Instant;

use crate::config::Config;
use crate::request_key::variant_key;
use crate::rules::{self, servable, Reuse};

/// The first pause between two looks at the L2 while another node fills...
const FIRST_PAUSE: Duration = Duration::from_millis(2);
/// ...doubling up to this one.
const LONGEST_PAUSE: Duration = Duration::from_millis(20);

/// What the local leader of a flight does, having asked the L2 for its lease.
pub(crate) enum Across {
    /// Run the handler: with the lease when one was granted; `timed_out` after waiting for
    /// another node's fill until `deadline`.
    Run {
        lease: Option<Lease>,
        timed_out: bool,
    },
    /// Another node's fill answers this request.
    Shared(Arc<Entry>),
}

/// Takes the lease of `flight`, or waits for the node that holds it, until `deadline`.
pub(crate) async fn across_nodes(
    config: &Config,
    flight: u128,
    primary: &PrimaryKey,
    req: &ServiceRequest,
    deadline: Instant,
) -> Across {
    let cache = &config.cache;
    let time = config.lease_time();
    let mut pause = FIRST_PAUSE;
    loop {
        let remaining = match cache.lease(flight, time).await {
            LeaseGrant::Granted(lease) => {
                // The last holder may have stored and released between this request's look
                // and the grant: its entry spares a run (dropping the lease releases it).
                return match stored(config, primary, req).await {
                    Some(Across::Shared(entry)) => Across::Shared(entry),
                    _ => Across::Run {
                        lease: Some(lease),
                        timed_out: false,
                    },
                };
            }
            LeaseGrant::Unavailable => {
                return Across::Run {
                    lease: None,
                    timed_out: false,
                }
            }
            LeaseGrant::Held(remaining) => remaining,
        };
        let now = Instant::now();
        if now >= deadline {
            return Across::Run {
                lease: None,
                timed_out: true,
            };
        }
        // Never past the deadline, and no later than the lease's end (plus a millisecond, so
        // that the next ask finds it expired).
        let nap = pause
            .min(remaining + Duration::from_millis(1))
            .min(deadline - now);
        tokio::time::sleep(nap).await;
        pause = (pause * 2).min(LONGEST_PAUSE);
        if let Some(found) = stored(config, primary, req).await {
            return found;
        }
        // The look took its time too: never ask for the lease again past the deadline.
        if Instant::now() >= deadline {
            return Across::Run {
                lease: None,
                timed_out: true,
            };
        }
    }
}

/// What the L2 holds for this request now, if it settles the wait: its fresh entry
/// (`Shared`), or one it may not take (`Run`, alone: ours to fill, not to take). An entry the
/// request's own directives refuse (`no-cache`, `max-age=0`, ...: the reuse decision that sent
/// it here) never settles it: it fills, with the lease, once the lease is free.
async fn stored(config: &Config, primary: &PrimaryKey, req: &ServiceRequest) -> Option<Across> {
    let cache = &config.cache;
    let headers = req.headers();
    if rules::forces_refresh(config, headers) {
        return None;
    }
    let lookup = cache
        .lookup(primary, |vary| variant_key(primary, vary, headers))
        .await;
    let Lookup::Fresh(entry) = lookup else {
        return None;
    };
    // The same checks a local waiter makes on its leader's entry.
    let own = variant_key(primary, entry.vary(), headers);
    if !cache.is_valid(&entry) || entry.key() != own.as_bytes() {
        return None;
    }
    let softened = cache.softened_at(&entry);
    let http_mode = config.http.is_some();
    let reused = rules::reuse(
        Lookup::Fresh(entry.clone()),
        headers,
        http_mode,
        now_ms(),
        softened,
    );
    if !matches!(reused, Reuse::Fresh(_)) {
        return None;
    }
    if servable(&entry, headers) {
        return Some(Across::Shared(entry));
    }
    Some(Across::Run {
        lease: None,
        timed_out: false,
    })
}

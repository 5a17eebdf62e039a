//! The cache lock: one request per variant runs the handler while the others wait for its
//! answer (single-flight), and what happens when that request cannot or does not share.
//!
//! With an L2 that keeps leases, the leader first coalesces with the other nodes
//! (`coalesce.rs`): it runs the handler only with the fill's lease, or once no lease is to be
//! had, and otherwise answers (and its waiters with it) from the other node's entry.
//!
//! What must stay true: a waiter takes the leader's entry only if it may answer the waiter's
//! own request (same variant key, servable to it, still valid after any invalidation that
//! resolved meanwhile); no waiter waits forever (after `lock_timeout` one waiter takes the lead,
//! and after two more every waiter runs alone); and a leader that cannot share hands the lead
//! on rather than releasing a stampede, unless no other request would fare better.

use std::sync::Arc;

use actix_web::{
    dev::ServiceRequest,
    http::{header, Method},
};
use cache_core::{
    flight::{Ended, Join, Leader, Waiter},
    lease::Lease,
    Entry, PrimaryKey,
};

use crate::coalesce::{across_nodes, Across};
use crate::config::Config;
use crate::request_key::variant_key;
use crate::rules::servable;

/// Joins the single-flight of `flight`: leads it, or waits for its leader and takes what
/// the leader stored when it may answer this request.
///
/// - A leader that steps down (its own request could not give a shareable answer: a HEAD,
///   `Authorization` or `Cookie` the rule does not share) makes the waiters elect one new
///   leader among themselves, instead of all running the handler at once; waiters that are
///   themselves unfit to lead run alone.
/// - A leader that gives up (its response could not be stored for anyone) releases the
///   waiters to run the handler in parallel, as another leader would fare no better.
/// - A leader whose response the store refused (an invalidation or a newer fill while it ran,
///   or a node out of touch with Redis, which refuses every fill) hands it to the waiters that
///   joined before its fill began; later ones run the handler themselves.
/// - A leader fit to lead asks the other nodes first ([`across_nodes`]): it leads with the L2's
///   lease, takes another node's entry (and hands it to its own waiters), or leads without a
///   lease when none is to be had or its wait reached `lock_timeout` (`took_over`).
/// - After `lock_timeout`, one waiter takes the lead from the slow leader (`took_over`); the
///   others wait for whichever of the two shares first, at most two more `lock_timeout`s,
///   then run alone.
pub(crate) async fn elect(
    config: &Config,
    mut flight: u128,
    primary: &PrimaryKey,
    req: &ServiceRequest,
) -> Elected {
    let cache = &config.cache;
    let flights = cache.flights();
    let headers = req.headers();
    let fit = fit_to_lead(req);
    let mut deadline = tokio::time::Instant::now() + config.lock_timeout;
    // After another waiter took over: the slow leader, whose value is still welcome.
    let mut superseded = None;
    loop {
        let joined = std::time::Instant::now();
        let joined_ms = cache_core::time::now_ms();
        let mut waiter = match flights.join(flight) {
            // Only a request fit to lead asks the other nodes (an unfit one would step down).
            Join::Leader(leader) if fit => {
                return match across_nodes(config, flight, primary, req, deadline).await {
                    Across::Run { lease, timed_out } => Elected::Leader {
                        leader,
                        took_over: timed_out,
                        lease,
                    },
                    Across::Shared(entry) => {
                        // This node's waiters take it as from any leader of theirs.
                        leader.complete(entry.clone());
                        Elected::Shared(entry)
                    }
                };
            }
            Join::Leader(leader) => {
                return Elected::Leader {
                    leader,
                    took_over: false,
                    lease: None,
                }
            }
            Join::Waiter(waiter) => waiter,
        };
        let ended = tokio::time::timeout_at(deadline, async {
            match superseded.as_mut() {
                Some(slow) => {
                    let slow: &mut Waiter<Arc<Entry>> = slow;
                    tokio::select! {
                        biased;
                        ended = waiter.wait() => ended,
                        value = slow.value() => Ended::Done(value),
                    }
                }
                None => waiter.wait().await,
            }
        })
        .await;
        let entry = match ended {
            Err(_) if superseded.is_some() => return Elected::Alone { timed_out: true },
            Err(_) => {
                if let Some(leader) = flights.take_over(flight, &waiter) {
                    return Elected::Leader {
                        leader,
                        took_over: true,
                        lease: None,
                    };
                }
                // Another waiter took the lead: wait for it, or for the slow leader, which
                // is likely to finish first.
                superseded = Some(waiter);
                deadline += 2 * config.lock_timeout;
                continue;
            }
            Ok(Ended::Done(entry)) => {
                // Re-check the clocks: an invalidation may have resolved after the leader stored.
                // A soft purge before this request joined makes the result stale to it, never
                // a fresh answer: it joins the next fill.
                if !cache.is_valid(&entry)
                    || cache.softened_at(&entry).is_some_and(|at| at <= joined_ms)
                {
                    continue;
                }
                entry
            }
            // Not stored, but this request began before that fill did: no invalidation the
            // store refused it for can concern it (it did not come after the call returned).
            Ok(Ended::Unstored { value, since }) if joined < since => value,
            Ok(Ended::Unstored { .. }) => return Elected::Alone { timed_out: false },
            Ok(Ended::SteppedDown) if fit => continue,
            Ok(Ended::SteppedDown | Ended::GaveUp) => return Elected::Alone { timed_out: false },
        };
        let own = variant_key(primary, entry.vary(), headers);
        if entry.key() == own.as_bytes() {
            if servable(&entry, headers) {
                return Elected::Shared(entry);
            }
            // Ours to fill, not to take (`Authorization`, `Cookie`): alone, in parallel.
            return Elected::Alone { timed_out: false };
        }
        // Another variant of the resource: coalesce with the requests of our own.
        flight = own.hash();
        superseded = None;
    }
}

/// A request that runs the handler.
pub(crate) struct Runner {
    /// The flight it leads, if any.
    pub(crate) leader: Option<Leader<Arc<Entry>>>,
    /// It got there by a lock timeout.
    pub(crate) took_over: bool,
    /// The fill's lease in the L2, if it holds one (`coalesce.rs`): its store is fenced by it.
    pub(crate) lease: Option<Lease>,
}

/// What [`elect`] decided for one request.
pub(crate) enum Elected {
    /// Run the handler and hand the result to the waiters; `took_over` when the previous
    /// leader (here or, for the lease, on another node) was still running after
    /// `lock_timeout`; `lease` when this fill holds the L2's lease.
    Leader {
        leader: Leader<Arc<Entry>>,
        took_over: bool,
        lease: Option<Lease>,
    },
    /// Another request's fill answers this one.
    Shared(Arc<Entry>),
    /// Run the handler without leading anyone; `timed_out` after waiting out the lock twice.
    Alone { timed_out: bool },
}

impl Elected {
    /// The leader guard and whether this request is past the lock timeout, for a request that
    /// runs the handler; `Err` with the entry that answers it otherwise.
    pub(crate) fn into_runner(self) -> Result<Runner, Arc<Entry>> {
        match self {
            Elected::Leader {
                leader,
                took_over,
                lease,
            } => Ok(Runner {
                leader: Some(leader),
                took_over,
                lease,
            }),
            Elected::Alone { timed_out } => Ok(Runner {
                leader: None,
                took_over: timed_out,
                lease: None,
            }),
            Elected::Shared(entry) => Err(entry),
        }
    }
}

/// Whether a request can lead a fill whose answer others may take: a GET without credentials
/// or cookies. Others still lead when they come first; they then step down.
fn fit_to_lead(req: &ServiceRequest) -> bool {
    let headers = req.headers();
    req.method() == Method::GET
        && !headers.contains_key(header::AUTHORIZATION)
        && !headers.contains_key(header::COOKIE)
}

/// Ends a fill that stored nothing: a leader whose own request was the reason steps down so
/// that its waiters elect another; any other leader gives up and lets them run.
pub(crate) fn release(leader: Option<Leader<Arc<Entry>>>, request_was_the_reason: bool) {
    if let Some(leader) = leader {
        if request_was_the_reason {
            leader.step_down();
        }
    }
}

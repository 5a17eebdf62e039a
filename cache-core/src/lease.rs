//! Fill leases: of the concurrent misses for one key on different nodes sharing an L2, one
//! runs the handler and the others take what it stored.
//!
//! Single-flight ([`crate::flight`]) holds a fill to one run per key per node. Across nodes,
//! the local leader of a flight asks the L2 for the flight's lease ([`Store::acquire_lease`]):
//! a short, expiring claim carrying a fencing token. The holder runs the handler, stores its
//! entry with the token ([`Store::put_fenced`]) and releases the lease when its fill ends,
//! however it ends: the [`Lease`] guard releases it when dropped ([`Store::release_lease`],
//! which must not block: `RedisStore` sends it on its background runtime). A node whose leader
//! finds the lease held waits for the entry in the L2, or for the lease to expire (a holder
//! that died costs at most one lease time), then takes it.
//!
//! # Fencing
//!
//! A lease expires while its holder may still be running (a slow handler, a paused process).
//! Another fill then takes the lease and may store first; the late holder must not replace that
//! newer record with its own. So every grant carries a token that grows, and a fenced write
//! names its token:
//!
//! - a grant's token is above every token granted for the key before (a counter kept beside
//!   the lease), above the token of the record stored under the key, and at least the store's
//!   clock in microseconds, so that tokens still grow after the counter expired or was evicted,
//!   and tokens of different keys compare by the time they were granted;
//! - a fenced write is refused ([`crate::CacheError::Superseded`]) when the lease under the
//!   record's key is held with a higher token (a newer fill is running), or when the record
//!   already there was written with a higher token (a newer fill has stored). The record keeps
//!   the token it was written with.
//!
//! So of two fills of one key, the record left is the one of the fill that took its lease
//! last, whichever order their writes take. A write without a token (no lease: the store was
//! away when the fill began, or the fill took over after `lock_timeout`) is a plain `put`, as
//! before leases.
//!
//! What must stay true: a lease is only ever a way to save handler runs, never a condition of
//! serving: any lease error means "no lease" at once (the caller falls back to per-node
//! single-flight), a store without leases answers [`LeaseReply::Unsupported`] (the default),
//! and a released or expired lease never frees another holder's (release compares the token).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::store::Store;

/// What a store answered to a request for a flight's lease ([`Store::acquire_lease`]).
///
/// ```
/// use std::time::Duration;
/// use cache_core::lease::LeaseReply;
///
/// let reply = LeaseReply::Held { remaining: Duration::from_millis(120) };
/// assert!(matches!(reply, LeaseReply::Held { .. }));
/// assert_eq!(LeaseReply::default(), LeaseReply::Unsupported);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LeaseReply {
    /// This fill holds the lease until it expires or is released; its writes carry `token`.
    Granted {
        /// The fencing token: above every token granted for the key before.
        token: u64,
    },
    /// Another fill holds the lease for at most `remaining`.
    Held {
        /// Time left before the lease expires unless released sooner.
        remaining: Duration,
    },
    /// The store keeps no leases: every node fills on its own (per-node single-flight).
    #[default]
    Unsupported,
}

/// A held lease. Dropping it releases the lease in the store (without waiting for the store),
/// so that a fill that ends in any way (stored, refused, failed, panicked, cancelled) frees the
/// lease at once; a holder that dies without dropping it costs the others one lease time.
// Hidden: only the cache-actix middleware takes leases; public because that is another crate.
#[doc(hidden)]
pub struct Lease {
    store: Arc<dyn Store>,
    flight: u128,
    token: u64,
}

impl Lease {
    pub(crate) fn new(store: Arc<dyn Store>, flight: u128, token: u64) -> Lease {
        Lease {
            store,
            flight,
            token,
        }
    }

    /// The fencing token the holder's writes carry.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The flight (key hash) the lease was granted for.
    pub(crate) fn flight(&self) -> u128 {
        self.flight
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("flight", &format_args!("{:032x}", self.flight))
            .field("token", &self.token)
            .finish()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.store.release_lease(self.flight, self.token);
    }
}

/// What [`crate::Cache::lease`] got for a flight.
// Hidden: only the cache-actix middleware takes leases; public because that is another crate.
#[doc(hidden)]
#[derive(Debug)]
pub enum LeaseGrant {
    /// Run the handler; store with this lease.
    Granted(Lease),
    /// Another node's fill holds it for at most this long: wait for its entry.
    Held(Duration),
    /// No lease to be had: no L2, an L2 without leases, or one that failed (down, breaker
    /// open, timed out). Fill on this node alone.
    Unavailable,
}

//! Fill leases in Redis (the design is in [`crate::lease`]): taking a flight's lease, releasing
//! it, and the fencing counter beside it.
//!
//! A key's lease (`ca:<ns>:l:{<hash>}`), its fencing counter (`ca:<ns>:f:{<hash>}`) and its
//! record (`ca:<ns>:r:{<hash>}`) share the key's hash tag, so each lease script touches one slot
//! and declares every key in `KEYS`: the same scripts serve one node, a cluster and Sentinel.
//! The lease expires on its own after the lease time (`SET .. PX`), the counter after
//! [`FENCE_KEPT`] or ten lease times, whichever is longer; tokens are also at least Redis's clock
//! in µs, so a counter that expired (or was evicted) never lets a token go back.
//!
//! What must stay true: a lease call is one round trip under the store's breaker and time
//! limit, so a Redis that is away costs a fill at most one call limit before it fills alone;
//! a release never frees a lease another fill took (compare and delete on the token); and a
//! reply that is not what the script returns is an error (no lease), never a grant.

use std::time::Duration;

use deadpool_redis::redis::Value;

use super::runtime::background;
use super::scripts::int;
use super::{call_on, RedisStore};
use crate::{CacheError, LeaseReply};

/// Shortest time a key's fencing counter is kept after its last grant.
const FENCE_KEPT: Duration = Duration::from_secs(3600);

impl RedisStore {
    /// The `lease` script for `flight`'s key: granted with a token, or held with the time left.
    pub(super) async fn acquire(
        &self,
        flight: u128,
        time: Duration,
    ) -> Result<LeaseReply, CacheError> {
        let keys = self.keys()?;
        let lease_ms = u64::try_from(time.as_millis()).unwrap_or(u64::MAX).max(1);
        let kept_ms = u64::try_from(FENCE_KEPT.as_millis())
            .unwrap_or(u64::MAX)
            .max(lease_ms.saturating_mul(10));
        let (lease, fence, record) = (
            keys.lease(flight),
            keys.fence(flight),
            keys.record_of(flight),
        );
        let reply = self
            .call(move |shared| async move {
                let mut invocation = shared.scripts.lease.prepare_invoke();
                invocation
                    .key(&lease)
                    .key(&fence)
                    .key(&record)
                    .arg(lease_ms)
                    .arg(kept_ms);
                shared.conn.run(&invocation).await
            })
            .await?;
        let Value::Array(parts) = reply else {
            return Err(CacheError::Corrupt("unexpected lease reply".into()));
        };
        match (parts.first().and_then(int), parts.get(1).and_then(int)) {
            (Some(1), Some(token)) => Ok(LeaseReply::Granted { token }),
            (Some(0), Some(left_ms)) => Ok(LeaseReply::Held {
                remaining: Duration::from_millis(left_ms),
            }),
            _ => Err(CacheError::Corrupt("unexpected lease reply".into())),
        }
    }

    /// Sends the `release` script for `flight`'s lease held with `token`, on the background
    /// runtime (the caller is a `Drop`); a store not attached yet has no lease to release.
    pub(super) fn release(&self, flight: u128, token: u64) {
        let (Ok(keys), Ok(runtime)) = (self.keys(), background()) else {
            return;
        };
        let lease = keys.lease(flight);
        let shared = self.shared.clone();
        runtime.spawn(async move {
            let released = call_on(shared, move |shared| async move {
                let mut invocation = shared.scripts.release.prepare_invoke();
                invocation.key(&lease).arg(token);
                shared.conn.run(&invocation).await
            })
            .await;
            if let Err(err) = released {
                // It expires on its own: the others wait at most the lease time.
                tracing::debug!(error = %err, "could not release a fill lease");
            }
        });
    }
}

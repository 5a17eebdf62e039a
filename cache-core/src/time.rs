//! Wall-clock milliseconds since the Unix epoch: entries carry absolute times so that they mean
//! the same thing in every process sharing a store.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; a clock set before 1970 reads as 0 rather than panicking.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

//! The one error type of the cache. Request paths never see it as a 5xx: store failures become
//! misses. It reaches users only from explicit operations such as `invalidate_tag`.

use std::fmt;

/// An error from a cache operation.
///
/// Converting it into an `actix_web::Error` (feature `actix`) gives a plain 500 whose body says
/// nothing about the cause; the cause goes to the log.
///
/// ```
/// use cache_core::CacheError;
/// let err = CacheError::Backend("redis: connection refused".into());
/// assert!(err.to_string().contains("connection refused"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheError {
    /// A store (for example Redis) failed or could not be reached.
    Backend(String),
    /// A store did not answer within its time limit.
    Timeout,
    /// A configuration value is invalid (for example a malformed URL).
    Config(String),
    /// A stored value could not be decoded.
    Corrupt(String),
    /// A store that keeps tag clocks refused a fill: one of its tags was invalidated (or
    /// everything was purged) after the fill began.
    Invalidated,
    /// A store that keeps fill leases refused a fenced write: the lease it was made under had
    /// expired and a newer fill (a higher fencing token) took it, or stored its own record
    /// already (see [`crate::lease`]).
    Superseded,
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheError::Backend(msg) => write!(f, "cache backend error: {msg}"),
            CacheError::Timeout => f.write_str("cache backend timed out"),
            CacheError::Config(msg) => write!(f, "invalid cache configuration: {msg}"),
            CacheError::Corrupt(msg) => write!(f, "corrupt cache value: {msg}"),
            CacheError::Invalidated => f.write_str("invalidated while the response was computed"),
            CacheError::Superseded => f.write_str("a newer fill holds the lease or its record"),
        }
    }
}

impl std::error::Error for CacheError {}

impl From<CacheError> for std::io::Error {
    fn from(err: CacheError) -> Self {
        std::io::Error::other(err)
    }
}

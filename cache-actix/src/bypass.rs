//! Why the cache left a request or response alone. Every bypass has one of these reasons: it is
//! what the `cache-status` detail and the tracing event say, so it must stay a closed set.

use std::fmt;

/// The reason a response was passed through without being stored or served from the cache
/// (`x-cache: BYPASS`).
///
/// ```
/// use cache_actix::BypassReason;
/// assert_eq!(BypassReason::SetCookie.as_str(), "set-cookie");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BypassReason {
    /// The method is not GET or HEAD.
    Method,
    /// No `#[cached]` policy and no scope rule covers the route.
    NoPolicy,
    /// The status is not one the policy stores (by default 200..=299 except 206).
    Status,
    /// The response sets a cookie: it belongs to one client.
    SetCookie,
    /// The response says `Cache-Control: no-store`.
    NoStore,
    /// The response says `Cache-Control: private`: a shared cache must not keep it.
    Private,
    /// The request carries `Authorization` and the policy neither varies on it nor says `public`.
    Authorization,
    /// The body is larger than `max_body_bytes`.
    BodyTooLarge,
    /// The body is streamed with no known length; it is passed through without buffering.
    StreamingBody,
    /// The URL (or a varied header value) is larger than the key limit.
    KeyTooLarge,
    /// The handler's own `Vary` names a header the policy does not vary on (or is `*`): the key
    /// would not separate the variants, so the response cannot be shared.
    Vary,
    /// A GET or HEAD that carries a body (`Content-Length` above 0 or `Transfer-Encoding`): what
    /// the handler makes of it is not what a plain request would get.
    RequestBody,
    /// The request carries `Cookie` and the scope rule (or, in the HTTP mode, the response)
    /// neither varies on it nor says `public`: the page may belong to one session.
    Cookie,
    /// The request waited `lock_timeout` for another request's fill and then ran the handler
    /// itself, as the one new leader of the waiters.
    LockTimeout,
    /// HTTP semantics mode: the response has no explicit or heuristic freshness and no
    /// validator, so a stored copy could never be reused.
    NotReusable,
}

impl BypassReason {
    /// Whether the reason lies in the request rather than the response: another request for
    /// the same variant could be answered with a shareable response, so a fill this request led
    /// hands the lead on instead of releasing every waiter.
    pub(crate) fn is_the_requests(self) -> bool {
        matches!(
            self,
            BypassReason::Authorization | BypassReason::Cookie | BypassReason::RequestBody
        )
    }

    /// The token used in `cache-status` details and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            BypassReason::Method => "method",
            BypassReason::NoPolicy => "no-policy",
            BypassReason::Status => "status",
            BypassReason::SetCookie => "set-cookie",
            BypassReason::NoStore => "no-store",
            BypassReason::Private => "private",
            BypassReason::Authorization => "authorization",
            BypassReason::BodyTooLarge => "body-too-large",
            BypassReason::StreamingBody => "streaming-body",
            BypassReason::KeyTooLarge => "key-too-large",
            BypassReason::Vary => "vary",
            BypassReason::NotReusable => "not-reusable",
            BypassReason::RequestBody => "request-body",
            BypassReason::Cookie => "cookie",
            BypassReason::LockTimeout => "lock-timeout",
        }
    }
}

impl fmt::Display for BypassReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

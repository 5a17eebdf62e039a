//! A refresh nobody waits for: the request that finds a stale entry hands itself to the
//! refresh, and its client is answered from a stand-in with the same head.
//!
//! actix's router needs the only reference to a request while it routes it (it panics
//! otherwise), so the request cannot both be answered and be routed again to the handler. The
//! refresh takes the request itself, untouched (its extensions, app data and connection with
//! it), and the stale answer is built on a stand-in that copies its method, URI, version,
//! headers and peer address. What must stay true: the request is never cloned before the inner
//! service routes it; the refresh carries none of the client's conditional or range headers (its
//! answer goes to the cache, not to that client); and a refresh runs only where it can be spawned
//! on the current actix worker, otherwise the caller refreshes in the foreground.

use actix_web::{
    dev::ServiceRequest,
    http::header::{self, HeaderName},
    rt::System,
    test::TestRequest,
};

/// The request headers that shape one client's answer rather than what the cache stores.
const CLIENT_ONLY: [HeaderName; 6] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
    header::RANGE,
];

/// Whether a task can be spawned on this thread's actix runtime (`actix_web::rt::spawn`
/// panics outside one, as under a bare `#[tokio::test]`).
pub(crate) fn can_spawn() -> bool {
    System::try_current().is_some()
}

/// Splits `req` into the stand-in its client is answered from and the request itself, which
/// the refresh runs with its client's conditionals and range removed.
pub(crate) fn take_over(mut req: ServiceRequest) -> (ServiceRequest, ServiceRequest) {
    let mut stand_in = TestRequest::default().to_srv_request();
    {
        let head = stand_in.head_mut();
        head.method = req.method().clone();
        head.uri = req.uri().clone();
        head.version = req.version();
        head.headers = req.headers().clone();
        head.peer_addr = req.peer_addr();
    }
    let headers = req.headers_mut();
    for name in &CLIENT_ONLY {
        headers.remove(name);
    }
    (stand_in, req)
}

//! Helpers shared by the integration tests: free loopback ports and real servers.
//!
//! What must stay true: every server a test starts listens on 127.0.0.1 only and stops when its
//! handle is dropped.

pub mod checker;
pub mod cluster_shop;
pub mod redis;
pub mod redis_cluster;
mod redis_process;
pub mod redis_sentinel;
pub mod redis_tls;
pub mod resp;
pub mod shop;

use std::net::TcpListener;

/// A port on 127.0.0.1 that nothing listens on right now, and that no outgoing connection will
/// take before the test binds it.
///
/// Ports come from outside the kernel's ephemeral range (`ip_local_port_range`): a port the
/// kernel hands out with `bind(:0)` is an ephemeral one, and between our probe and the server's
/// bind, any client connection in the process (a cache's own Redis connections, say) may take it
/// as its local port. That made a cluster node fail with "Address already in use" in CI. A
/// process-wide cursor also keeps two tests of one binary from getting the same port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CURSOR: AtomicU32 = AtomicU32::new(u32::MAX);
    let (low, high) = non_ephemeral_range();
    let span = u32::from(high - low) + 1;
    // Start each process somewhere else, so that a lingering server of an earlier binary is
    // rarely even probed.
    let _ = CURSOR.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let offset = CURSOR.fetch_add(1, Ordering::Relaxed) % span;
        let port = low + offset as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {low}..={high}")
}

/// The widest stretch of ports the kernel never picks for an outgoing connection.
fn non_ephemeral_range() -> (u16, u16) {
    let (ephemeral_low, ephemeral_high) =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|text| {
                let mut parts = text.split_whitespace().map(|p| p.parse::<u16>().ok());
                Some((parts.next()??, parts.next()??))
            })
            .unwrap_or((32768, 60999));
    // Below 10000 live well-known services; leave them alone.
    let below = ephemeral_low.saturating_sub(10_000);
    let above = u16::MAX - ephemeral_high;
    if below >= above {
        (10_000, ephemeral_low - 1)
    } else {
        (ephemeral_high + 1, u16::MAX)
    }
}

/// A running actix-web server; stopped when dropped.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    handle: actix_web::dev::ServerHandle,
}

/// A loopback listener on a free port and its base URL.
pub fn listener() -> (TcpListener, String) {
    let listener =
        TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind loopback: {e}"));
    let port = listener
        .local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("local addr: {e}"));
    (listener, format!("http://127.0.0.1:{port}"))
}

impl Server {
    /// Runs an `HttpServer` already bound with [`listener`] (build it with `disable_signals()`).
    pub fn spawn(server: actix_web::dev::Server, base: String) -> Server {
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Server { base, handle }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let stop = self.handle.stop(false);
        actix_web::rt::spawn(stop);
    }
}

/// The `x-cache` header of any header map, as text ("" when absent or not text).
pub fn x_cache_of(headers: &actix_web::http::header::HeaderMap) -> String {
    headers
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// What a client got back from a service under test.
pub struct Reply {
    /// Status code.
    pub status: actix_web::http::StatusCode,
    /// Response headers.
    pub headers: actix_web::http::header::HeaderMap,
    /// The whole body.
    pub body: bytes::Bytes,
}

impl Reply {
    /// A header as text ("" when absent or not text).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The `x-cache` header.
    pub fn x_cache(&self) -> &str {
        self.header("x-cache")
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Status, `x-cache` and body text, for one-line assertions.
    pub fn summary(&self) -> (actix_web::http::StatusCode, String, String) {
        (self.status, self.x_cache().to_string(), self.text())
    }
}

/// A plain GET of `path` through an initialised service, body read.
pub async fn get_path<S, B>(app: &S, path: &str) -> Reply
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    send(app, actix_web::test::TestRequest::get().uri(path)).await
}

/// Sends `req` through an initialised service (`actix_web::test::init_service`) and reads the body.
pub async fn send<S, B>(app: &S, req: actix_web::test::TestRequest) -> Reply
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let res = app
        .call(req.to_request())
        .await
        .unwrap_or_else(|e| panic!("service error: {e}"));
    let status = res.status();
    let headers = res.headers().clone();
    let body = actix_web::test::read_body(res).await;
    Reply {
        status,
        headers,
        body,
    }
}

/// What an HTTP client got back as JSON from a real server.
pub struct JsonReply {
    /// Status code.
    pub status: u16,
    /// The `x-cache` header ("" when absent).
    pub x_cache: String,
    /// The body as JSON (`Null` when it is not JSON).
    pub body: serde_json::Value,
}

/// Sends `req` (with `body` as JSON, if any) and reads the answer.
pub async fn call(req: awc::ClientRequest, body: Option<serde_json::Value>) -> JsonReply {
    let mut res = match body {
        Some(json) => req.send_json(&json).await,
        None => req.send().await,
    }
    .unwrap_or_else(|e| panic!("request failed: {e}"));
    let x_cache = x_cache_of(res.headers());
    let bytes = res.body().await.unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    JsonReply {
        status: res.status().as_u16(),
        x_cache,
        body,
    }
}

/// The value of cookie `name` as `HttpRequest::cookie` reads it under actix-web's default
/// `cookies` feature (this workspace builds actix-web without it, so test handlers call this):
/// every `Cookie` line in order, split on `;`; each pair trimmed, its name and value trimmed,
/// one pair of quotes around the value dropped, both percent-decoded (a pair that does not
/// decode to UTF-8, or has an empty name, is skipped); the first pair with that name wins. A
/// `Cookie` line that is not UTF-8 makes actix read no cookies at all.
pub fn actix_cookie(headers: &actix_web::http::header::HeaderMap, name: &str) -> Option<String> {
    let mut lines = Vec::new();
    for line in headers.get_all(actix_web::http::header::COOKIE) {
        lines.push(std::str::from_utf8(line.as_bytes()).ok()?);
    }
    for line in lines {
        for pair in line.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some(eq) = pair.find('=') else { continue };
            let (n, v) = (pair[..eq].trim(), pair[eq + 1..].trim());
            let v = match v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
                true => v[1..v.len() - 1].trim(),
                false => v,
            };
            if n.is_empty() {
                continue;
            }
            let (Some(n), Some(v)) = (percent_decoded(n), percent_decoded(v)) else {
                continue;
            };
            if n == name {
                return Some(v);
            }
        }
    }
    None
}

/// `%XX` escapes decoded (a malformed one kept as it is), then UTF-8 or `None`.
fn percent_decoded(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = (bytes[i] == b'%')
            .then(|| Some((hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?)))
            .flatten();
        match escape {
            Some((hi, lo)) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

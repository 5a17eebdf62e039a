//! A caching reverse proxy: every request, whatever its method or path, is forwarded to one
//! upstream origin with reqwest, and the answer comes back through [`CacheMiddleware`] in its
//! RFC 9111 mode ([`CacheMiddleware::http_semantics`]), so the origin's own `Cache-Control`,
//! `Expires`, `Vary` and validators decide what is kept. The `reverse_proxy` binary is this.
//!
//! Environment: `UPSTREAM_URL` (required, e.g. `http://127.0.0.1:18080`), `LISTEN_ADDR`
//! (default `127.0.0.1:8081`), `REDIS_URL` (tiered: L1 memory + L2 Redis, namespace `proxy`;
//! in memory without it), `WORKERS`, `RUST_LOG`.
//!
//! What is forwarded, and why:
//! - the method (any, custom ones too), the path and query as the client wrote them, every
//!   end-to-end header (repeated ones repeated, in order) and the whole body;
//! - not the hop-by-hop headers (`Connection`, `Keep-Alive`, `Proxy-Connection`,
//!   `Proxy-Authenticate`, `Proxy-Authorization`, `TE`, `Trailer`, `Transfer-Encoding`,
//!   `Upgrade`) nor those the `Connection` header names (RFC 9110 §7.6.1): they describe one
//!   connection, and the proxy makes its own. `Host` is the upstream's, and the framing
//!   (`Content-Length`) is recomputed from the buffered body, both ways.
//! - the status as received, however unusual (299, 599), with its `Date`: actix only adds a
//!   `Date` when the response has none;
//! - no redirect is followed and nothing is decompressed: the client sees the origin's 3xx and
//!   its encoded bytes, as it would without the proxy. Interim 1xx answers are dropped
//!   (hyper skips them; awc would return them as the final response, hence reqwest).
//! - an upstream that refuses, breaks the connection or takes longer than 15 s gives a short
//!   plain-text 502.
//!
//! Two things the client's request does not get through unchanged, both from the `url` crate
//! and reqwest, which this example cannot avoid: the target is a WHATWG URL, so dot segments
//! (`/a/../b`) are resolved and a few characters the URL standard does not allow raw are
//! percent-encoded; and reqwest adds `Accept: */*` to a request that has no `Accept` (a
//! client default it has no switch for; RFC 9110 §12.5.1 gives both the same meaning).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;
use cache_actix::{
    Cache, CacheMiddleware, HttpOptions, MemoryStore, OriginUnreachable, RedisStore,
};

/// Headers that belong to one connection (RFC 9110 §7.6.1, plus the older `Keep-Alive`,
/// `Proxy-Connection` and the proxy authentication pair): never forwarded, either way.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Largest request body forwarded (64 MiB): actix's default of 256 KiB would turn ordinary
/// uploads into 413s the origin never sees.
pub const MAX_REQUEST_BODY: usize = 64 << 20;

/// The upstream origin and how long one exchange with it may take.
#[derive(Clone, Debug)]
pub struct Upstream {
    origin: String,
    timeout: Duration,
}

impl Upstream {
    /// How long a whole exchange (connect, send, wait, read the body) may take before the
    /// client gets a 502: long enough for a slow page, short enough not to pile up requests
    /// behind a hung origin.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

    /// Reads an origin URL such as `http://127.0.0.1:18080`. Only `http` (this example has no
    /// TLS), and no path, query, fragment or credentials: the client's path and query are
    /// what is appended, and anything else would silently change every request.
    pub fn parse(url: &str) -> std::io::Result<Upstream> {
        let bad = |why: &str| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("upstream URL `{url}`: {why} (expected e.g. http://127.0.0.1:18080)"),
            )
        };
        let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if parsed.scheme() != "http" {
            return Err(bad("must start with http:// (this proxy has no TLS)"));
        }
        if parsed.host_str().unwrap_or_default().is_empty() {
            return Err(bad("has no host"));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad("must not carry credentials"));
        }
        if parsed.path() != "/" || parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad(
                "must be scheme://host[:port] only, with no path or query",
            ));
        }
        Ok(Upstream {
            origin: parsed.origin().ascii_serialization(),
            timeout: Upstream::DEFAULT_TIMEOUT,
        })
    }

    /// The same upstream with another timeout (tests use a short one).
    pub fn timeout(mut self, timeout: Duration) -> Upstream {
        self.timeout = timeout;
        self
    }

    /// `http://host[:port]`, what every forwarded path and query is appended to.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// A client for this upstream. Each actix worker builds its own: a client's pooled
    /// connections are driven by tasks on the runtime that opened them, and each worker is a
    /// runtime of its own. No redirects followed, no proxy from the environment (the upstream
    /// is named explicitly), no decompression (reqwest's compression features are off).
    pub fn client(&self) -> reqwest::Result<reqwest::Client> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(self.timeout)
            .build()
    }
}

/// The whole proxy as an actix `App`: the cache middleware in HTTP mode around the forwarding
/// handler, which receives every path and method. Call it in the `HttpServer` factory, so
/// every worker gets its own upstream client; tests run this very app in front of their own
/// origin.
pub fn app(
    cache: Cache,
    upstream: Upstream,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let for_client = upstream.clone();
    App::new()
        .wrap(CacheMiddleware::new(cache.clone()).http_semantics_with(options()))
        .app_data(web::Data::new(cache))
        .app_data(web::Data::new(upstream))
        .app_data(web::PayloadConfig::new(MAX_REQUEST_BODY))
        // Runs once per worker, on that worker's runtime; a failure stops the worker.
        .data_factory(move || {
            let client = for_client.client();
            async move { client }
        })
        .default_service(web::to(forward))
}

/// The cache's HTTP options for a proxy: the defaults, plus `CDN-Cache-Control` (RFC 9213),
/// since a reverse proxy is exactly the cache that field targets. The two safety defaults stay:
/// no response that sets a cookie is stored, and none to a request with `Authorization` is
/// shared unless it varies on `Authorization` ([`HttpOptions`] says how to lift them).
pub fn options() -> HttpOptions {
    HttpOptions::default().cdn_cache_control(true)
}

/// Forwards one request to the upstream and returns its answer (see the module doc for what
/// passes and what does not); a 502 when the upstream cannot be reached, fails or is too slow.
pub async fn forward(
    req: HttpRequest,
    body: web::Bytes,
    client: web::Data<reqwest::Client>,
    upstream: web::Data<Upstream>,
) -> HttpResponse {
    // The raw request target, not the decoded path: `%2F` must stay `%2F`.
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let Ok(url) = reqwest::Url::parse(&format!("{}{target}", upstream.origin())) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "request target cannot be forwarded\n",
        );
    };
    let Ok(method) = reqwest::Method::from_bytes(req.method().as_str().as_bytes()) else {
        return plain(StatusCode::BAD_REQUEST, "method cannot be forwarded\n");
    };
    let request = upstream_request(&req, method, url, body);
    let response = match client.execute(request).await {
        Ok(response) => response,
        Err(error) => return bad_gateway(&req, &error),
    };
    // The code passes as is; the reason phrase is actix's (`<unknown status code>` for 299 or
    // 599): it needs a `&'static str`, and clients act on the code alone (RFC 9112 §4).
    let Ok(status) = StatusCode::from_u16(response.status().as_u16()) else {
        return plain(StatusCode::BAD_GATEWAY, "upstream status out of range\n");
    };
    let bodiless = req.method() == Method::HEAD || status == StatusCode::NOT_MODIFIED;
    let headers = response_headers(response.headers(), bodiless);
    // Buffered whole: a sized body is what the cache can store and what gets a Content-Length.
    let bytes = match response.bytes().await {
        Ok(bytes) => bytes,
        Err(error) => return bad_gateway(&req, &error),
    };
    let mut out = if req.method() != Method::HEAD {
        HttpResponse::with_body(status, bytes).map_into_boxed_body()
    } else if headers.contains_key(header::CONTENT_LENGTH) {
        // A sized body would make actix write its own length (0) over the upstream's; an
        // unsized, unchunked one makes it write the header it finds, and for HEAD it sends no
        // bytes either way.
        let mut out = HttpResponse::with_body(status, HeadBody).map_into_boxed_body();
        out.head_mut().no_chunking(true);
        out
    } else {
        HttpResponse::with_body(status, actix_web::body::None::new()).map_into_boxed_body()
    };
    *out.headers_mut() = headers;
    out
}

/// The request the upstream gets: same method and target, end-to-end headers only, and a
/// `Content-Length` exactly when the client's request had a body (even an empty one).
fn upstream_request(
    req: &HttpRequest,
    method: reqwest::Method,
    url: reqwest::Url,
    body: Bytes,
) -> reqwest::Request {
    use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH};
    let named = connection_named(
        req.headers()
            .get_all(header::CONNECTION)
            .map(|v| v.as_bytes()),
    );
    let mut headers = HeaderMap::with_capacity(req.headers().len());
    for (name, value) in req.headers() {
        let name = name.as_str();
        // Host: hyper writes the upstream's. Content-Length: set below from the body.
        if name == "host" || name == "content-length" || is_hop_by_hop(name, &named) {
            continue;
        }
        // Both conversions accept everything actix accepted (same grammar, other `http` major).
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            headers.append(name, value);
        }
    }
    let had_body = req.headers().contains_key(header::CONTENT_LENGTH)
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    if had_body || !body.is_empty() {
        // Left to hyper, an empty body would lose its `Content-Length: 0` and a chunked one
        // would be re-chunked; the buffered body's length is exact.
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    let mut request = reqwest::Request::new(method, url);
    *request.headers_mut() = headers;
    if !body.is_empty() {
        *request.body_mut() = Some(reqwest::Body::from(body));
    }
    request
}

/// The upstream's end-to-end response headers, repeated ones kept repeated and in order.
/// `Content-Length` only on answers without a body (HEAD, 304), where it describes the
/// representation rather than these bytes; otherwise actix computes it from the body.
fn response_headers(upstream: &reqwest::header::HeaderMap, bodiless: bool) -> header::HeaderMap {
    let named = connection_named(
        upstream
            .get_all(reqwest::header::CONNECTION)
            .iter()
            .map(|v| v.as_bytes()),
    );
    let mut headers = header::HeaderMap::with_capacity(upstream.len());
    for (name, value) in upstream {
        let name = name.as_str();
        if is_hop_by_hop(name, &named) || (name == "content-length" && !bodiless) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            header::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            headers.append(name, value);
        }
    }
    headers
}

/// The header names listed in `Connection` values, lower-cased.
fn connection_named<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    values
        .flat_map(|v| v.split(|b| *b == b','))
        .map(|token| String::from_utf8_lossy(token.trim_ascii()).to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect()
}

/// Whether a (lower-case) header name must not cross the proxy.
fn is_hop_by_hop(name: &str, connection_named: &[String]) -> bool {
    HOP_BY_HOP.contains(&name) || connection_named.iter().any(|n| n == name)
}

/// The 502 for an upstream that could not be reached, failed midway or was too slow.
fn bad_gateway(req: &HttpRequest, error: &reqwest::Error) -> HttpResponse {
    let mut causes = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        causes.push_str(": ");
        causes.push_str(&cause.to_string());
        source = cause.source();
    }
    tracing::warn!(method = %req.method(), uri = %req.uri(), error = %causes, "upstream failed");
    let text = if error.is_timeout() {
        "502 Bad Gateway: the upstream did not answer in time\n"
    } else {
        "502 Bad Gateway: the upstream could not be reached\n"
    };
    let mut response = plain(StatusCode::BAD_GATEWAY, text);
    // The cache is then "disconnected" (RFC 9111 4.2.4): it may answer with a stale entry
    // instead, unless the entry forbids that.
    response.extensions_mut().insert(OriginUnreachable);
    response
}

/// A short plain-text answer the proxy makes itself, which no cache may keep.
fn plain(status: StatusCode, text: &'static str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(text)
}

/// The body of a proxied answer to HEAD that carries the upstream's `Content-Length`: no
/// bytes, of unknown size, so that actix keeps that header (see [`forward`]).
struct HeadBody;

impl MessageBody for HeadBody {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Poll::Ready(None)
    }
}

/// Runs the proxy until it is stopped; what `main` of the `reverse_proxy` binary does.
pub fn run_from_env() -> std::io::Result<()> {
    actix_web::rt::System::new().block_on(serve_from_env())
}

/// The proxy, configured from the environment (see the module doc).
pub async fn serve_from_env() -> std::io::Result<()> {
    crate::init_tracing();
    let upstream =
        match std::env::var("UPSTREAM_URL") {
            Ok(url) if !url.is_empty() => Upstream::parse(&url)?,
            _ => return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "UPSTREAM_URL is required: the origin to forward to, e.g. http://127.0.0.1:18080",
            )),
        };
    // Every worker builds its own; failing here gives one clear error instead of one per worker.
    upstream.client().map_err(std::io::Error::other)?;
    let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:8081".to_string());
    let workers = std::env::var("WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let cache = build_cache()?;
    tracing::info!(%addr, upstream = upstream.origin(), "reverse proxy listening");
    HttpServer::new(move || app(cache.clone(), upstream.clone()))
        .workers(workers)
        .bind(&addr)?
        .run()
        .await
}

/// In memory, or with `REDIS_URL` an L1 in memory over a shared Redis L2, so that several
/// proxies serve one another's fills.
fn build_cache() -> std::io::Result<Cache> {
    match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => {
            // from_url does not connect: the proxy starts (and forwards) with Redis down.
            let l2 = RedisStore::from_url(&url)?;
            tracing::info!("tiered cache on Redis");
            Ok(Cache::builder()
                .l1(MemoryStore::new())
                .l2(l2)
                .namespace("proxy")
                .build())
        }
        _ => Ok(Cache::memory()),
    }
}

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
//!   end-to-end header (repeated ones repeated, in order) and the body, streamed (below);
//! - not the hop-by-hop headers (`Connection`, `Keep-Alive`, `Proxy-Connection`,
//!   `Proxy-Authenticate`, `Proxy-Authorization`, `TE`, `Trailer`, `Transfer-Encoding`,
//!   `Upgrade`) nor those the `Connection` header names (RFC 9110 §7.6.1): they describe one
//!   connection, and the proxy makes its own. `Host` is the upstream's, and the framing
//!   (`Content-Length` or chunked) is the proxy's own, both ways (below).
//! - not what a client could use to speak for the proxy: `Forwarded`, `X-Forwarded-For`,
//!   `X-Forwarded-Host`, `X-Forwarded-Proto`, `X-Forwarded-Port`, `X-Forwarded-Prefix` and
//!   `X-Real-IP` from the client are dropped, and the proxy sets `X-Forwarded-For` to the peer
//!   address of the TCP connection (never to a header: `realip_remote_addr` would read the
//!   client's), `X-Forwarded-Host` to the `Host` the client sent (the host the cache keys on)
//!   and `X-Forwarded-Proto: http` (the listener is plain HTTP). An origin that builds links or
//!   redirects from `X-Forwarded-Host` would otherwise let one request with
//!   `X-Forwarded-Host: evil.example` store a page pointing at evil.example under the real
//!   host's key, for everyone (cache poisoning); one that trusts `X-Forwarded-For` for access
//!   or rate limits would let anyone pick an address. `X-Original-URL`, `X-Rewrite-URL`,
//!   `X-HTTP-Method-Override`, `X-HTTP-Method` and `X-Method-Override` are dropped too:
//!   frameworks that honour them would run another path or method than the one the cache
//!   keyed and classified (an `/admin` page stored as `/`, a `GET` run as a `DELETE`).
//! - the status as received, however unusual (299, 599), with its `Date`: actix only adds a
//!   `Date` when the response has none;
//! - no redirect is followed and nothing is decompressed: the client sees the origin's 3xx and
//!   its encoded bytes, as it would without the proxy. Interim 1xx answers are dropped
//!   (hyper skips them; awc would return them as the final response, hence reqwest).
//! - an upstream that refuses, breaks the connection before its body is under way, or is too
//!   slow ([`Upstream::timeout`], 15 s) gives a short plain-text 502, marked
//!   [`OriginUnreachable`] so that the cache may answer stale instead where allowed.
//!
//! Bodies stream, both ways; nothing holds a whole one, and every buffer has a bound:
//! - the request body goes to the upstream as it arrives, through a small bounded channel
//!   (the client is slowed down, not buffered). With the client's `Content-Length` when it
//!   sent one; a chunked one is gathered up to [`GATHERED_REQUEST_BODY`] (64 KiB) and sent
//!   with its length if it ends there (some origins refuse chunked uploads), chunked
//!   otherwise. At most [`MAX_REQUEST_BODY`] (64 MiB): a larger `Content-Length` is a 413
//!   before the upstream is contacted, a chunked body that grows past it aborts the upstream
//!   request and is a 413. A request body that stops arriving for
//!   [`Upstream::body_idle_timeout`] (10 s) aborts the upstream request and is a **408**
//!   (the client's fault, so neither a 502 nor a reason to answer stale); since a `GET` with
//!   a body may be the request filling the cache for its URL, that is also the longest a stalled
//!   client keeps the requests waiting for that fill. An aborted body never reaches the
//!   upstream as a complete one: the upstream connection is broken, no final chunk is sent.
//! - the response body: up to [`BUFFERED_RESPONSE_BODY`] (1 MiB, the cache's default
//!   `max_body_bytes`) is read before answering. A body that ends within it is answered
//!   whole, with its length, so the cache can store it (chunked or not) and an upstream that
//!   fails midway is still a 502. A longer one streams: with the upstream's `Content-Length`
//!   when it sent one (the cache passes it on unstored: larger than it keeps), in which case an
//!   upstream that sends fewer bytes breaks the client's connection instead of ending a short
//!   body; chunked when it did not.
//! - [`Upstream::timeout`] bounds connecting, handing each piece of the request body to the
//!   upstream, the wait for the response head once the request body is sent, and every gap
//!   in the response body; not a long transfer that keeps moving. A response body that stalls
//!   once the answer is under way breaks the client's connection.
//!
//! Two things the client's request does not get through unchanged, both from the `url` crate
//! and reqwest, which this example cannot avoid: the target is a WHATWG URL, so dot segments
//! (`/a/../b`) are resolved and a few characters the URL standard does not allow raw are
//! percent-encoded; and reqwest adds `Accept: */*` to a request that has no `Accept` (a
//! client default it has no switch for; RFC 9110 §12.5.1 gives both the same meaning).

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::{Bytes, BytesMut};
use cache_actix::{
    Cache, CacheMiddleware, HttpOptions, MemoryStore, OriginUnreachable, RedisStore,
};
use futures_util::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep, Instant, Sleep};

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

/// Request headers a client must not set for the proxy (see the module doc): who it is, which
/// host and scheme it reached, and another path or method for the origin to run. The first
/// three are set by the proxy itself.
const NOT_FROM_THE_CLIENT: [&str; 12] = [
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "forwarded",
    "x-real-ip",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Largest request body forwarded (64 MiB), counted as it streams: never held whole.
pub const MAX_REQUEST_BODY: u64 = 64 << 20;

/// Largest chunked request body gathered to be sent with a `Content-Length` (64 KiB); a longer
/// one goes on chunked.
pub const GATHERED_REQUEST_BODY: usize = 64 << 10;

/// Largest response body read whole before answering (1 MiB, the cache middleware's default
/// `max_body_bytes`): within it the answer is sized and storable; beyond, it streams.
pub const BUFFERED_RESPONSE_BODY: usize = 1 << 20;

/// Request body pieces in flight between the client and the upstream connection.
const BODY_CHANNEL: usize = 4;

/// The upstream origin and the proxy's time limits.
#[derive(Clone, Debug)]
pub struct Upstream {
    origin: String,
    timeout: Duration,
    body_idle_timeout: Duration,
}

impl Upstream {
    /// How long the upstream may take to connect, to take each piece of the request body, to
    /// send its response head once the request body is sent, and between two pieces of its
    /// response body, before the client gets a 502 (or, once the answer is under way, a broken
    /// connection): long enough for a slow page, short enough not to pile up requests behind a
    /// hung origin.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

    /// How long the client may send nothing while its request body is incomplete before the
    /// upstream request is aborted and the client gets a 408.
    pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

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
            body_idle_timeout: Upstream::DEFAULT_BODY_IDLE_TIMEOUT,
        })
    }

    /// The same upstream with another timeout (tests use a short one).
    pub fn timeout(mut self, timeout: Duration) -> Upstream {
        self.timeout = timeout;
        self
    }

    /// The same upstream with another request body idle timeout (tests use a short one).
    pub fn body_idle_timeout(mut self, timeout: Duration) -> Upstream {
        self.body_idle_timeout = timeout;
        self
    }

    /// `http://host[:port]`, what every forwarded path and query is appended to.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// A client for this upstream. Each actix worker builds its own: a client's pooled
    /// connections are driven by tasks on the runtime that opened them, and each worker is a
    /// runtime of its own. No redirects followed, no proxy from the environment (the upstream
    /// is named explicitly), no decompression (reqwest's compression features are off), and
    /// no overall deadline: [`forward`] applies [`Upstream::timeout`] phase by phase, so that
    /// a long transfer that keeps moving is not cut.
    pub fn client(&self) -> reqwest::Result<reqwest::Client> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(self.timeout)
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
/// passes, what does not, and the answers the proxy makes itself: 400, 408, 413, 502).
pub async fn forward(
    req: HttpRequest,
    payload: web::Payload,
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
    let body = match request_body(&req, payload, upstream.body_idle_timeout).await {
        Ok(body) => body,
        Err((failure, rest)) => return failure.answer(&req, rest),
    };
    let (request, body_end) = upstream_request(&req, method, url, body, &upstream);
    let response = match exchange(&req, &client, request, body_end, upstream.timeout).await {
        Ok(response) => response,
        Err(answer) => return answer,
    };
    // The code passes as is; the reason phrase is actix's (`<unknown status code>` for 299 or
    // 599): it needs a `&'static str`, and clients act on the code alone (RFC 9112 §4).
    let Ok(status) = StatusCode::from_u16(response.status().as_u16()) else {
        return plain(StatusCode::BAD_GATEWAY, "upstream status out of range\n");
    };
    let bodiless = req.method() == Method::HEAD || status == StatusCode::NOT_MODIFIED;
    let headers = response_headers(response.headers(), bodiless);
    let mut out = if req.method() == Method::HEAD {
        if headers.contains_key(header::CONTENT_LENGTH) {
            // A sized body would make actix write its own length (0) over the upstream's; an
            // unsized, unchunked one makes it write the header it finds, and for HEAD it sends
            // no bytes either way.
            let mut out = HttpResponse::with_body(status, HeadBody).map_into_boxed_body();
            out.head_mut().no_chunking(true);
            out
        } else {
            HttpResponse::with_body(status, actix_web::body::None::new()).map_into_boxed_body()
        }
    } else if status == StatusCode::NOT_MODIFIED {
        // No body by definition (hyper reads none); its `Content-Length` passes as a header.
        HttpResponse::with_body(status, Bytes::new()).map_into_boxed_body()
    } else {
        match response_body(response, upstream.timeout).await {
            Ok(body) => HttpResponse::with_body(status, body),
            Err(error) => return bad_gateway(&req, &error),
        }
    };
    *out.headers_mut() = headers;
    out
}

/// The client's request body, as far as the proxy reads it before the upstream request starts.
enum RequestBody {
    /// The request has none: neither `Content-Length` nor `Transfer-Encoding`.
    Absent,
    /// Read whole (empty, or a chunked one within [`GATHERED_REQUEST_BODY`]): sent sized.
    Whole(Bytes),
    /// Still arriving: `read` is what came already, `length` the client's `Content-Length`.
    Streaming {
        length: Option<u64>,
        read: Bytes,
        payload: web::Payload,
    },
}

/// Why a request body could not be forwarded whole; each is an answer of the proxy's own.
enum BodyFailure {
    /// Nothing arrived for the body idle timeout.
    Idle,
    /// Longer than [`MAX_REQUEST_BODY`].
    TooLarge,
    /// The client's framing broke or its connection went away.
    Client(String),
    /// The upstream did not take a piece of the body within [`Upstream::timeout`].
    UpstreamStalled,
}

impl BodyFailure {
    /// The proxy's answer. `rest` is the client's unread body, if it is still there: kept until
    /// the answer is sent, so that actix then closes the connection rather than wait to read
    /// (drain) the rest of a chunked body from a client that has stopped sending it.
    fn answer(&self, req: &HttpRequest, rest: Option<web::Payload>) -> HttpResponse {
        let (status, text, why) = match self {
            BodyFailure::Idle => (
                StatusCode::REQUEST_TIMEOUT,
                "408 Request Timeout: the request body stopped arriving\n",
                "idle",
            ),
            BodyFailure::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "413 Content Too Large: the request body is over 64 MiB\n",
                "too large",
            ),
            BodyFailure::Client(error) => (
                StatusCode::BAD_REQUEST,
                "400 Bad Request: the request body could not be read\n",
                error.as_str(),
            ),
            BodyFailure::UpstreamStalled => {
                tracing::warn!(method = %req.method(), uri = %req.uri(), "upstream stopped taking the request body");
                return gateway_failure(true);
            }
        };
        tracing::info!(method = %req.method(), uri = %req.uri(), why, "request body not forwarded");
        let mut answer = HttpResponse::build(status)
            .content_type("text/plain; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(AnswerBeforeBody {
                text: Some(Bytes::from_static(text.as_bytes())),
                len: text.len() as u64,
                _rest: rest,
            });
        answer
            .head_mut()
            .set_connection_type(actix_web::http::ConnectionType::Close);
        answer
    }
}

/// The body of an answer sent before the client's request body was read: the text, and the
/// unread request body held until the text is out (see [`BodyFailure::answer`]).
struct AnswerBeforeBody {
    text: Option<Bytes>,
    len: u64,
    _rest: Option<web::Payload>,
}

impl MessageBody for AnswerBeforeBody {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.len)
    }

    fn poll_next(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Poll::Ready(self.get_mut().text.take().map(Ok))
    }
}

/// How the request body pump ended.
enum BodyEnd {
    /// Every byte was handed to the upstream connection, or that connection no longer wanted
    /// them (the exchange is over either way, and its own result tells how).
    Done,
    /// With what is left of the client's body.
    Failed(BodyFailure, web::Payload),
}

/// Reads as much of the client's body as decides how it is sent: nothing for a body with a
/// `Content-Length` (which is checked against [`MAX_REQUEST_BODY`]), up to
/// [`GATHERED_REQUEST_BODY`] of a chunked one.
async fn request_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    idle: Duration,
) -> Result<RequestBody, (BodyFailure, Option<web::Payload>)> {
    let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
    let length = match req.headers().get(header::CONTENT_LENGTH) {
        // actix has parsed it already (and refused a request with both framings).
        Some(value) => match value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            Some(length) => Some(length),
            None => return Err((BodyFailure::Client("bad Content-Length".into()), None)),
        },
        None => None,
    };
    match (length, chunked) {
        (None, false) => return Ok(RequestBody::Absent),
        (Some(length), false) if length > MAX_REQUEST_BODY => {
            return Err((BodyFailure::TooLarge, None))
        }
        (Some(0), false) => return Ok(RequestBody::Whole(Bytes::new())),
        (Some(length), false) => {
            return Ok(RequestBody::Streaming {
                length: Some(length),
                read: Bytes::new(),
                payload,
            })
        }
        _ => {}
    }
    let mut gathered = BytesMut::new();
    loop {
        let chunk = match next_piece(&mut payload, idle).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(failure) => return Err((failure, Some(payload))),
        };
        gathered.extend_from_slice(&chunk);
        if gathered.len() > GATHERED_REQUEST_BODY {
            return Ok(RequestBody::Streaming {
                length: None,
                read: gathered.freeze(),
                payload,
            });
        }
    }
    Ok(RequestBody::Whole(gathered.freeze()))
}

/// The next piece of the client's body, `None` at its end.
async fn next_piece(
    payload: &mut web::Payload,
    idle: Duration,
) -> Result<Option<Bytes>, BodyFailure> {
    match tokio::time::timeout(idle, payload.next()).await {
        Err(_) => Err(BodyFailure::Idle),
        Ok(None) => Ok(None),
        Ok(Some(Err(error))) => Err(BodyFailure::Client(error.to_string())),
        Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
    }
}

/// The request the upstream gets: same method and target, end-to-end headers only plus the
/// proxy's own `X-Forwarded-*`, and a `Content-Length` exactly when the client's request had
/// a body of known length (even an empty one). A streaming body is pumped by a local task;
/// the receiver tells how that ended.
fn upstream_request(
    req: &HttpRequest,
    method: reqwest::Method,
    url: reqwest::Url,
    body: RequestBody,
    upstream: &Upstream,
) -> (reqwest::Request, Option<oneshot::Receiver<BodyEnd>>) {
    use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH};
    let named = connection_named(
        req.headers()
            .get_all(header::CONNECTION)
            .map(|v| v.as_bytes()),
    );
    let mut headers = HeaderMap::with_capacity(req.headers().len() + 3);
    for (name, value) in req.headers() {
        let name = name.as_str();
        // Host: hyper writes the upstream's. Content-Length: set below from the body.
        if name == "host"
            || name == "content-length"
            || NOT_FROM_THE_CLIENT.contains(&name)
            || is_hop_by_hop(name, &named)
        {
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
    // The TCP peer, not `connection_info().realip_remote_addr()`, which reads client headers.
    // None only for requests that came over no socket (actix's test requests).
    if let Some(peer) = req.peer_addr() {
        if let Ok(ip) = HeaderValue::from_str(&peer.ip().to_string()) {
            headers.insert(HeaderName::from_static("x-forwarded-for"), ip);
        }
    }
    // The host the client asked for, the one the cache keys on (as the middleware reads it).
    let host = req
        .headers()
        .get(header::HOST)
        .map(|v| v.as_bytes())
        .or_else(|| req.uri().authority().map(|a| a.as_str().as_bytes()));
    if let Some(Ok(host)) = host.map(HeaderValue::from_bytes) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    let mut request = reqwest::Request::new(method, url);
    let mut body_end = None;
    match body {
        RequestBody::Absent => {}
        RequestBody::Whole(bytes) => {
            // Left to hyper, an empty body would lose its `Content-Length: 0`.
            headers.insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            if !bytes.is_empty() {
                *request.body_mut() = Some(reqwest::Body::from(bytes));
            }
        }
        RequestBody::Streaming {
            length,
            read,
            payload,
        } => {
            // hyper keeps a `Content-Length` it is given, and fails the request if the body
            // ends short of it; without one it sends the body chunked.
            if let Some(length) = length {
                headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
            }
            let (pieces, receiver) = mpsc::channel(BODY_CHANNEL);
            let (end, ended) = oneshot::channel();
            let pump = pump(payload, read, pieces, upstream.clone());
            // actix's payload is !Send; reqwest wants a Send stream: the pump runs on this
            // worker and hands pieces over a bounded channel.
            actix_web::rt::spawn(async move {
                let _ = end.send(pump.await);
            });
            *request.body_mut() = Some(reqwest::Body::wrap_stream(BodyPieces {
                receiver,
                ended: false,
            }));
            body_end = Some(ended);
        }
    }
    *request.headers_mut() = headers;
    (request, body_end)
}

/// Moves the client's body to the upstream connection, `read` first, piece by piece: each
/// piece must come within the idle timeout and be taken within the upstream timeout, and the
/// whole may not pass [`MAX_REQUEST_BODY`]. Returning early drops `pieces` without the end
/// mark, which the upstream connection sees as a failed body.
async fn pump(
    mut payload: web::Payload,
    read: Bytes,
    pieces: mpsc::Sender<Option<Bytes>>,
    upstream: Upstream,
) -> BodyEnd {
    let mut total = 0;
    let mut next = (!read.is_empty()).then_some(read);
    loop {
        let piece = match next.take() {
            Some(piece) => Some(piece),
            None => {
                let piece = tokio::select! {
                    biased;
                    // The exchange is over (answered, failed or dropped): stop reading.
                    () = pieces.closed() => return BodyEnd::Done,
                    piece = next_piece(&mut payload, upstream.body_idle_timeout) => piece,
                };
                match piece {
                    Ok(piece) => piece,
                    Err(failure) => return BodyEnd::Failed(failure, payload),
                }
            }
        };
        if let Some(piece) = &piece {
            total += piece.len() as u64;
            if total > MAX_REQUEST_BODY {
                return BodyEnd::Failed(BodyFailure::TooLarge, payload);
            }
        }
        let last = piece.is_none();
        match tokio::time::timeout(upstream.timeout, pieces.send(piece)).await {
            Err(_) => return BodyEnd::Failed(BodyFailure::UpstreamStalled, payload),
            Ok(Err(_)) => return BodyEnd::Done,
            Ok(Ok(())) if last => return BodyEnd::Done,
            Ok(Ok(())) => {}
        }
    }
}

/// The request body as reqwest reads it: the pump's pieces, then `None` (the end mark) for a
/// clean end. A channel closed without the end mark is an error, so that hyper breaks the
/// upstream connection rather than end a chunked body early or send a short one.
struct BodyPieces {
    receiver: mpsc::Receiver<Option<Bytes>>,
    ended: bool,
}

impl Stream for BodyPieces {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        match this.receiver.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Some(piece))) => Poll::Ready(Some(Ok(piece))),
            Poll::Ready(Some(None)) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client's request body was not forwarded whole",
                ))))
            }
        }
    }
}

/// Sends the request and waits for the response head: while the body is being sent, for as
/// long as the body keeps moving (the pump's own limits); after, for [`Upstream::timeout`].
/// A failed body wins over the upstream error it causes.
async fn exchange(
    req: &HttpRequest,
    client: &reqwest::Client,
    request: reqwest::Request,
    mut body_end: Option<oneshot::Receiver<BodyEnd>>,
    timeout: Duration,
) -> Result<reqwest::Response, HttpResponse> {
    let execute = client.execute(request);
    tokio::pin!(execute);
    let deadline = sleep(timeout);
    tokio::pin!(deadline);
    loop {
        let sending = body_end.is_some();
        tokio::select! {
            biased;
            end = async {
                match body_end.as_mut() {
                    Some(ended) => ended.await.ok(),
                    None => None,
                }
            }, if sending => {
                body_end = None;
                if let Some(BodyEnd::Failed(failure, rest)) = end {
                    return Err(failure.answer(req, Some(rest)));
                }
                deadline.as_mut().reset(Instant::now() + timeout);
            }
            result = &mut execute => return result.map_err(|error| bad_gateway(req, &error)),
            () = &mut deadline, if !sending => {
                tracing::warn!(method = %req.method(), uri = %req.uri(), "upstream did not answer in time");
                return Err(gateway_failure(true));
            }
        }
    }
}

/// The body of a proxied answer: whole when it ends within [`BUFFERED_RESPONSE_BODY`], else
/// what was read followed by the rest, streamed (sized when the upstream gave a length).
async fn response_body(response: reqwest::Response, gap: Duration) -> io::Result<BoxBody> {
    let length = response.content_length();
    let mut body = UpstreamBody {
        read: None,
        stream: Box::pin(response.bytes_stream()),
        size: length.map_or(BodySize::Stream, BodySize::Sized),
        remaining: length,
        gap,
        timer: Box::pin(sleep(gap)),
        waiting: false,
        done: false,
    };
    let limit = BUFFERED_RESPONSE_BODY as u64;
    if length.is_some_and(|length| length > limit) {
        return Ok(BoxBody::new(body));
    }
    // At most the announced length, which is within the limit.
    let mut gathered = BytesMut::with_capacity(length.unwrap_or(0) as usize);
    while let Some(piece) = poll_fn(|cx| Pin::new(&mut body).poll_next(cx)).await {
        gathered.extend_from_slice(&piece?);
        if gathered.len() as u64 > limit {
            body.read = Some(gathered.freeze());
            return Ok(BoxBody::new(body));
        }
    }
    Ok(BoxBody::new(gathered.freeze()))
}

/// The upstream's response body as actix sends it on: `read` first, then the rest of the
/// stream. With a length, an upstream that sends less or more is an error (actix then breaks
/// the connection: never a short body); so is a gap longer than `gap` between two pieces.
struct UpstreamBody {
    read: Option<Bytes>,
    stream: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>>>>,
    size: BodySize,
    /// Bytes still due under the upstream's `Content-Length`.
    remaining: Option<u64>,
    gap: Duration,
    timer: Pin<Box<Sleep>>,
    /// Whether the timer runs: set when the stream is first found empty, so that time the
    /// client spends not reading is not charged to the upstream.
    waiting: bool,
    done: bool,
}

impl UpstreamBody {
    fn fail(
        &mut self,
        kind: io::ErrorKind,
        error: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Poll<Option<io::Result<Bytes>>> {
        self.done = true;
        Poll::Ready(Some(Err(io::Error::new(kind, error))))
    }
}

impl MessageBody for UpstreamBody {
    type Error = io::Error;

    fn size(&self) -> BodySize {
        self.size
    }

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(read) = this.read.take().filter(|read| !read.is_empty()) {
            return Poll::Ready(Some(Ok(read)));
        }
        loop {
            match this.stream.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(piece))) => {
                    this.waiting = false;
                    // An empty piece would end a chunked body early (actix writes `0\r\n\r\n`).
                    if piece.is_empty() {
                        continue;
                    }
                    if let Some(remaining) = this.remaining.as_mut() {
                        let Some(left) = remaining.checked_sub(piece.len() as u64) else {
                            return this.fail(
                                io::ErrorKind::InvalidData,
                                "the upstream sent more than its Content-Length",
                            );
                        };
                        *remaining = left;
                    }
                    return Poll::Ready(Some(Ok(piece)));
                }
                Poll::Ready(Some(Err(error))) => {
                    let kind = if error.is_timeout() {
                        io::ErrorKind::TimedOut
                    } else {
                        io::ErrorKind::Other
                    };
                    return this.fail(kind, error);
                }
                Poll::Ready(None) if this.remaining.is_some_and(|r| r > 0) => {
                    return this.fail(
                        io::ErrorKind::UnexpectedEof,
                        "the upstream body ended before its Content-Length",
                    );
                }
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    if !this.waiting {
                        this.waiting = true;
                        let at = Instant::now() + this.gap;
                        this.timer.as_mut().reset(at);
                    }
                    if this.timer.as_mut().poll(cx).is_ready() {
                        return this.fail(io::ErrorKind::TimedOut, "the upstream body stalled");
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// The upstream's end-to-end response headers, repeated ones kept repeated and in order.
/// `Content-Length` only on answers without a body (HEAD, 304), where it describes the
/// representation rather than these bytes; otherwise actix writes the body's own.
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

/// The 502 for an upstream that could not be reached, failed before its body was under way or
/// was too slow; logged with the whole chain of causes.
fn bad_gateway(req: &HttpRequest, error: &(dyn std::error::Error + 'static)) -> HttpResponse {
    let mut causes = error.to_string();
    let mut timed_out = is_timeout(error);
    let mut source = error.source();
    while let Some(cause) = source {
        causes.push_str(": ");
        causes.push_str(&cause.to_string());
        timed_out |= is_timeout(cause);
        source = cause.source();
    }
    tracing::warn!(method = %req.method(), uri = %req.uri(), error = %causes, "upstream failed");
    gateway_failure(timed_out)
}

/// Whether one error of a chain is a timeout (reqwest's, or one of the proxy's own).
fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    error
        .downcast_ref::<reqwest::Error>()
        .is_some_and(reqwest::Error::is_timeout)
        || error
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::TimedOut)
}

/// The 502 itself, marked for the cache.
fn gateway_failure(timed_out: bool) -> HttpResponse {
    let text = if timed_out {
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

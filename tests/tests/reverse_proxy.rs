//! The reverse proxy example on real servers: an origin inside the test (an actix app that
//! records every request it gets, or a raw TCP one where actix cannot produce the bytes: its
//! own `Connection` header, interim 1xx answers), the example's very app in front of it, and a
//! raw HTTP/1.1 client, so that each assertion is on what goes over the wire.
//!
//! Every answer of the recording origin is `Cache-Control: no-store` or on its own path: those
//! tests are about forwarding, not caching. A second, streaming origin (bodies read and
//! generated piece by piece, hashed, never held) serves the tests of hostile and large bodies;
//! some of its answers are cacheable, to show that streaming leaves storable answers stored.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use cache_actix::Cache;
use cache_actix_examples::reverse_proxy::{app, Upstream, MAX_REQUEST_BODY};
use cache_actix_tests::{free_port, listener, Server};

/// The `Date` the origin sets, far from now so that a fresh one cannot pass for it.
const ORIGIN_DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
/// Bytes labelled `Content-Encoding: gzip`; not valid gzip, so a proxy that tried to
/// decompress them would fail rather than pass them on.
const ENCODED: &[u8] = b"\x1f\x8b\x08\x00not really gzip\xff\xfe";

/// Every value of header `name` in `headers`, in the order received.
fn values_of<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// One request as the origin saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: bytes::Bytes,
}

impl Seen {
    /// Every value of a header, in the order received.
    fn all(&self, name: &str) -> Vec<&str> {
        values_of(&self.headers, name)
    }

    /// The distinct header names, sorted.
    fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

type Log = web::Data<Mutex<Vec<Seen>>>;

/// The actix origin: records the request, then answers according to the path.
async fn origin(req: HttpRequest, body: web::Bytes, log: Log) -> HttpResponse {
    let seen = Seen {
        method: req.method().to_string(),
        target: req
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string(),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| {
                let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (n.as_str().to_string(), value)
            })
            .collect(),
        body: body.clone(),
    };
    log.lock()
        .unwrap_or_else(|e| panic!("origin log poisoned: {e}"))
        .push(seen);
    let mut res = HttpResponse::Ok();
    res.insert_header(("cache-control", "no-store"));
    let path = req.path();
    if let Some(code) = path.strip_prefix("/status/") {
        let code = code.parse().unwrap_or(400);
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
        res.status(status);
        return match code {
            204 | 304 => res.finish(),
            _ => res.body(format!("status {code}")),
        };
    }
    match path {
        "/redirect" => res
            .status(StatusCode::FOUND)
            .insert_header(("location", "/elsewhere"))
            .body("moved"),
        "/headers" => res
            .append_header(("set-cookie", "a=1"))
            .append_header(("set-cookie", "b=2"))
            .append_header(("x-multi", "one"))
            .append_header(("set-cookie", "c=3"))
            .append_header(("x-multi", "two"))
            .insert_header(("date", ORIGIN_DATE))
            .body("headers"),
        "/gzip" => res
            .insert_header(("content-encoding", "gzip"))
            .insert_header(("vary", "accept-encoding"))
            .body(ENCODED),
        "/echo" => res.body(body),
        "/head" => res.body("hello world"),
        "/slow" => {
            actix_web::rt::time::sleep(Duration::from_secs(5)).await;
            res.body("too late")
        }
        _ => res.body("ok"),
    }
}

/// An actix origin and what it has seen.
struct Origin {
    server: Server,
    log: Log,
}

impl Origin {
    fn start() -> Origin {
        let log: Log = web::Data::new(Mutex::new(Vec::new()));
        let (l, base) = listener();
        let for_app = log.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(for_app.clone())
                .app_data(web::PayloadConfig::new(16 << 20))
                .default_service(web::to(origin))
        })
        .workers(1)
        .disable_signals()
        .listen(l)
        .unwrap_or_else(|e| panic!("listen: {e}"))
        .run();
        Origin {
            server: Server::spawn(server, base),
            log,
        }
    }

    fn upstream(&self) -> Upstream {
        Upstream::parse(&self.server.base).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The `host:port` the origin listens on.
    fn authority(&self) -> &str {
        self.server.base.trim_start_matches("http://")
    }

    /// The requests seen for `target`, oldest first.
    fn seen(&self, target: &str) -> Vec<Seen> {
        self.log
            .lock()
            .unwrap_or_else(|e| panic!("origin log poisoned: {e}"))
            .iter()
            .filter(|s| s.target == target)
            .cloned()
            .collect()
    }

    /// The only request seen for `target`.
    fn one(&self, target: &str) -> Seen {
        let mut seen = self.seen(target);
        assert_eq!(seen.len(), 1, "requests the origin saw for {target}");
        seen.remove(0)
    }
}

/// The example's app, one worker, in front of `upstream`.
fn start_proxy(upstream: Upstream) -> Server {
    let cache = Cache::memory();
    let (l, base) = listener();
    let server = HttpServer::new(move || app(cache.clone(), upstream.clone()))
        .workers(1)
        .disable_signals()
        .listen(l)
        .unwrap_or_else(|e| panic!("listen: {e}"))
        .run();
    Server::spawn(server, base)
}

/// A raw origin that accepts one connection, reads the request head (these requests have no
/// body), sends it to the test, answers with `response` verbatim and closes.
fn raw_origin(response: &'static [u8]) -> (Upstream, mpsc::Receiver<String>) {
    let (listener, base) = listener();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
        let _ = stream.write_all(response);
        let _ = stream.flush();
        let _ = stream.shutdown(Shutdown::Write);
    });
    let upstream = Upstream::parse(&base).unwrap_or_else(|e| panic!("{e}"));
    (upstream, rx)
}

/// What the raw client got back.
#[derive(Debug)]
struct RawReply {
    /// Everything received, as (lossy) text.
    raw: String,
    status: u16,
    /// Names lower-cased, in the order received.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawReply {
    fn parse(bytes: Vec<u8>) -> RawReply {
        let raw = String::from_utf8_lossy(&bytes).into_owned();
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no end of head in {raw:?}"));
        let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {raw:?}"));
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        RawReply {
            raw,
            status,
            headers,
            body: bytes[end + 4..].to_vec(),
        }
    }

    /// Every value of a header, in the order received.
    fn all(&self, name: &str) -> Vec<&str> {
        values_of(&self.headers, name)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `request` (which must ask for `Connection: close`) to `server` over a fresh TCP
/// connection and reads everything until the server closes it.
async fn raw(server: &Server, request: impl Into<Vec<u8>>) -> RawReply {
    let addr = server.base.trim_start_matches("http://").to_string();
    let request = request.into();
    actix_web::rt::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(&addr).unwrap_or_else(|e| panic!("connect: {e}"));
        let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
        stream
            .write_all(&request)
            .unwrap_or_else(|e| panic!("write: {e}"));
        let mut bytes = Vec::new();
        stream
            .read_to_end(&mut bytes)
            .unwrap_or_else(|e| panic!("read: {e}"));
        RawReply::parse(bytes)
    })
    .await
    .unwrap_or_else(|e| panic!("client thread: {e}"))
}

/// A plain `GET` that closes the connection after the answer.
fn get(target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: proxy.test\r\nConnection: close\r\n\r\n")
}

#[actix_web::test]
async fn method_target_headers_and_body_reach_the_origin_as_sent() {
    let origin = Origin::start();
    let proxy = start_proxy(origin.upstream());
    let target = "/a%2Fb/c%20d;p=1?x=1&x=2&y=%E2%9C%93&empty=&plus=a+b&q=%3F%26";
    let mut request = format!(
        "PURGE {target} HTTP/1.1\r\nHost: proxy.test\r\nUser-Agent: raw-test/1\r\n\
         X-Multi: one\r\nX-Other: 1\r\nX-Multi: two\r\nX-Multi: three\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    request.extend_from_slice(b"\x00\xff\x10ab");
    let reply = raw(&proxy, request).await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "ok"));

    let seen = origin.one(target);
    assert_eq!(seen.method, "PURGE", "custom methods pass as they are");
    assert_eq!(
        seen.all("x-multi"),
        ["one", "two", "three"],
        "repeated, in order"
    );
    assert_eq!(seen.body.as_ref(), b"\x00\xff\x10ab");
    assert_eq!(seen.all("content-length"), ["5"]);
    assert_eq!(
        seen.all("host"),
        [origin.authority()],
        "the upstream's own host, not the proxy's"
    );
    assert_eq!(seen.all("user-agent"), ["raw-test/1"]);
    // reqwest adds `Accept: */*` to a request without one and has no switch to stop it; the
    // meaning is the same (RFC 9110 §12.5.1). It is the only header the proxy adds besides its
    // own `X-Forwarded-*` (see `the_client_cannot_speak_for_the_proxy`).
    assert_eq!(seen.all("accept"), ["*/*"]);
    assert_eq!(
        seen.names(),
        [
            "accept",
            "content-length",
            "content-type",
            "host",
            "user-agent",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-multi",
            "x-other"
        ]
    );

    let accepting = "GET /accept HTTP/1.1\r\nHost: proxy.test\r\nAccept: text/html\r\n\
                     Accept: application/json;q=0.5\r\nConnection: close\r\n\r\n";
    raw(&proxy, accepting).await;
    assert_eq!(
        origin.one("/accept").all("accept"),
        ["text/html", "application/json;q=0.5"],
        "a client's own Accept is left alone"
    );
}

#[actix_web::test]
async fn request_framing_follows_the_clients_body() {
    let origin = Origin::start();
    let proxy = start_proxy(origin.upstream());

    raw(&proxy, get("/no-body")).await;
    let seen = origin.one("/no-body");
    assert_eq!(
        (seen.all("content-length"), seen.all("transfer-encoding")),
        (vec![], vec![]),
        "a request without a body gets none"
    );

    let empty = "POST /empty HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 0\r\n\
                 Connection: close\r\n\r\n";
    assert_eq!(raw(&proxy, empty).await.status, 200);
    let seen = origin.one("/empty");
    assert_eq!(
        (seen.method.as_str(), seen.all("content-length")),
        ("POST", vec!["0"])
    );

    let chunked = "POST /chunked HTTP/1.1\r\nHost: proxy.test\r\nTransfer-Encoding: chunked\r\n\
                   Connection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    assert_eq!(raw(&proxy, chunked).await.status, 200);
    let seen = origin.one("/chunked");
    assert_eq!(seen.body.as_ref(), b"hello world");
    assert_eq!(
        (seen.all("content-length"), seen.all("transfer-encoding")),
        (vec!["11"], vec![]),
        "the buffered body is sent with its length"
    );
}

#[actix_web::test]
async fn hop_by_hop_request_headers_stay_at_the_proxy() {
    let origin = Origin::start();
    let proxy = start_proxy(origin.upstream());
    let request = "GET /hops HTTP/1.1\r\nHost: proxy.test\r\n\
                   Connection: close, X-Hop-One\r\nConnection: x-hop-two\r\n\
                   X-Hop-One: a\r\nX-Hop-Two: b\r\nKeep-Alive: timeout=5\r\n\
                   Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\n\
                   TE: trailers\r\nTrailer: X-Checksum\r\nUpgrade: h2c\r\n\
                   Accept: */*\r\nX-End: kept\r\n\r\n";
    assert_eq!(raw(&proxy, request).await.status, 200);
    let seen = origin.one("/hops");
    assert_eq!(
        seen.names(),
        [
            "accept",
            "host",
            "x-end",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto"
        ],
        "only end-to-end headers reach the origin, and the proxy's own X-Forwarded-*"
    );
    assert_eq!(seen.all("x-end"), ["kept"]);
}

#[actix_web::test]
async fn hop_by_hop_response_headers_stay_at_the_proxy() {
    let (upstream, requests) = raw_origin(
        b"HTTP/1.1 200 OK\r\nConnection: close, X-Resp-Hop\r\nX-Resp-Hop: 1\r\n\
          Keep-Alive: timeout=5\r\nProxy-Authenticate: Basic realm=\"x\"\r\n\
          Trailer: X-Checksum\r\nUpgrade: websocket\r\nX-End: kept\r\n\
          Cache-Control: no-store\r\nContent-Length: 2\r\n\r\nok",
    );
    let proxy = start_proxy(upstream);
    let reply = raw(&proxy, get("/resp-hops")).await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "ok"));
    assert_eq!(reply.all("x-end"), ["kept"]);
    for name in [
        "x-resp-hop",
        "keep-alive",
        "proxy-authenticate",
        "trailer",
        "upgrade",
    ] {
        assert_eq!(reply.all(name), Vec::<&str>::new(), "{name} must not pass");
    }
    // The proxy's own answer to the client's `Connection: close`, not the upstream's list (an
    // `Upgrade` passed on would also have made actix announce `connection: upgrade`).
    assert_eq!(reply.all("connection"), ["close"]);
    assert_eq!(reply.all("content-length"), ["2"]);
    let seen = requests
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("the origin saw no request: {e}"));
    assert!(seen.starts_with("GET /resp-hops HTTP/1.1\r\n"), "{seen}");
}

#[actix_web::test]
async fn any_status_passes_and_redirects_are_not_followed() {
    let origin = Origin::start();
    let proxy = start_proxy(origin.upstream());
    for code in [200, 201, 204, 299, 304, 404, 418, 500, 503, 599] {
        let reply = raw(&proxy, get(&format!("/status/{code}"))).await;
        let body = match code {
            204 | 304 => String::new(),
            _ => format!("status {code}"),
        };
        assert_eq!((reply.status, reply.text()), (code, body), "{}", reply.raw);
    }

    let reply = raw(&proxy, get("/redirect")).await;
    assert_eq!(
        (reply.status, reply.all("location"), reply.text().as_str()),
        (302, vec!["/elsewhere"], "moved")
    );
    assert!(
        origin.seen("/elsewhere").is_empty(),
        "the proxy must not follow"
    );
}

#[actix_web::test]
async fn repeated_response_headers_and_the_origins_date_arrive_unchanged() {
    let origin = Origin::start();
    let proxy = start_proxy(origin.upstream());
    let reply = raw(&proxy, get("/headers")).await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "headers"));
    assert_eq!(reply.all("set-cookie"), ["a=1", "b=2", "c=3"]);
    assert_eq!(reply.all("x-multi"), ["one", "two"]);
    assert_eq!(
        reply.all("date"),
        [ORIGIN_DATE],
        "one Date, the origin's: actix adds its own only when there is none"
    );

    let (upstream, _) = raw_origin(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let undated = raw(&start_proxy(upstream), get("/undated")).await;
    assert_eq!(
        undated.all("date").len(),
        1,
        "an origin without a Date still gets one: {}",
        undated.raw
    );
}

#[actix_web::test]
async fn head_keeps_the_upstreams_content_length() {
    let origin = Origin::start();
    let proxy = start_proxy(origin.upstream());
    let head = "HEAD /head HTTP/1.1\r\nHost: proxy.test\r\nConnection: close\r\n\r\n";
    let reply = raw(&proxy, head).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.all("content-length"),
        ["11"],
        "the length a GET would have: {}",
        reply.raw
    );
    assert!(
        reply.body.is_empty(),
        "no body after HEAD: {:?}",
        reply.text()
    );
    assert_eq!(reply.all("transfer-encoding"), Vec::<&str>::new());
    assert_eq!(origin.one("/head").method, "HEAD", "forwarded as HEAD");

    let get = raw(&proxy, get("/head")).await;
    assert_eq!(
        (get.all("content-length"), get.text().as_str()),
        (vec!["11"], "hello world")
    );
}

#[actix_web::test]
async fn interim_responses_are_skipped() {
    let (upstream, requests) = raw_origin(
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
          HTTP/1.1 100 Continue\r\n\r\n\
          HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nX-Final: yes\r\n\
          Content-Length: 5\r\n\r\nfinal",
    );
    let proxy = start_proxy(upstream);
    let reply = raw(&proxy, get("/interim")).await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, "final"),
        "{}",
        reply.raw
    );
    assert_eq!(reply.all("x-final"), ["yes"]);
    assert_eq!(
        reply.all("link"),
        Vec::<&str>::new(),
        "the 103's headers are not the final answer's"
    );
    assert_eq!(
        reply.raw.matches("HTTP/1.1 ").count(),
        1,
        "one status line: {}",
        reply.raw
    );
    assert!(requests.recv_timeout(Duration::from_secs(5)).is_ok());
}

#[actix_web::test]
async fn content_encoding_passes_untouched_both_ways() {
    let origin = Origin::start();
    let proxy = start_proxy(origin.upstream());
    let reply = raw(&proxy, get("/gzip")).await;
    assert_eq!(reply.status, 200, "{}", reply.raw);
    assert_eq!(reply.all("content-encoding"), ["gzip"]);
    assert_eq!(reply.body, ENCODED, "the encoded bytes, not decoded ones");
    assert_eq!(
        origin.one("/gzip").all("accept-encoding"),
        Vec::<&str>::new(),
        "the proxy asks for no encoding the client did not"
    );

    let asking = "GET /gzip?asking HTTP/1.1\r\nHost: proxy.test\r\n\
                  Accept-Encoding: gzip, br\r\nConnection: close\r\n\r\n";
    let reply = raw(&proxy, asking).await;
    assert_eq!(reply.body, ENCODED);
    assert_eq!(
        origin.one("/gzip?asking").all("accept-encoding"),
        ["gzip, br"]
    );
}

#[actix_web::test]
async fn large_bodies_pass_both_ways() {
    let origin = Origin::start();
    let proxy = start_proxy(origin.upstream());
    // Above actix's default 256 KiB payload limit and the cache's 1 MiB body limit.
    let body: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let mut request = format!(
        "PUT /echo HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let reply = raw(&proxy, request).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.all("content-length"),
        [body.len().to_string().as_str()]
    );
    assert!(reply.body == body, "the echoed body differs");
    assert!(
        origin.one("/echo").body == body,
        "the origin got another body"
    );
}

#[actix_web::test]
async fn an_unreachable_upstream_is_a_502() {
    let upstream = Upstream::parse(&format!("http://127.0.0.1:{}", free_port()))
        .unwrap_or_else(|e| panic!("{e}"));
    let proxy = start_proxy(upstream);
    let reply = raw(&proxy, get("/anything")).await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.all("content-type"), ["text/plain; charset=utf-8"]);
    assert!(
        reply.text().contains("could not be reached"),
        "{}",
        reply.raw
    );
}

#[actix_web::test]
async fn a_slow_upstream_is_a_502_after_the_timeout() {
    let origin = Origin::start();
    let upstream = origin.upstream().timeout(Duration::from_millis(300));
    let proxy = start_proxy(upstream);
    let started = Instant::now();
    let reply = raw(&proxy, get("/slow")).await;
    let took = started.elapsed();
    assert_eq!(reply.status, 502);
    assert!(reply.text().contains("in time"), "{}", reply.raw);
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "took {took:?}"
    );
}

#[test]
fn the_upstream_url_must_be_a_plain_http_origin() {
    let ok = Upstream::parse("http://localhost:18080/").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.origin(), "http://localhost:18080");
    for bad in [
        "",
        "127.0.0.1:18080",
        "https://127.0.0.1:18080",
        "http://127.0.0.1:18080/prefix",
        "http://127.0.0.1:18080/?q=1",
        "http://user:pw@127.0.0.1:18080",
    ] {
        let error = Upstream::parse(bad).err().map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains(&format!("`{bad}`"))),
            "{bad:?} must be refused with a message naming it, got {error:?}"
        );
    }
}

#[actix_web::test]
async fn the_client_cannot_speak_for_the_proxy() {
    let origin = Origin::start();
    let proxy = start_proxy(origin.upstream());
    let request = "GET /forwarded HTTP/1.1\r\nHost: proxy.test\r\n\
                   X-Forwarded-Host: evil.example\r\nX-Forwarded-For: 6.6.6.6\r\n\
                   X-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\n\
                   X-Forwarded-Prefix: /evil\r\nForwarded: for=6.6.6.6;host=evil.example\r\n\
                   X-Real-IP: 6.6.6.6\r\nX-Original-URL: /admin\r\nX-Rewrite-URL: /admin\r\n\
                   X-HTTP-Method-Override: DELETE\r\nX-HTTP-Method: DELETE\r\n\
                   X-Method-Override: DELETE\r\nConnection: close\r\n\r\n";
    assert_eq!(raw(&proxy, request).await.status, 200);
    let seen = origin.one("/forwarded");
    assert_eq!(seen.method, "GET");
    assert_eq!(
        seen.names(),
        [
            "accept",
            "host",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto"
        ],
        "none of the client's forwarding or override headers arrive"
    );
    assert_eq!(
        seen.all("x-forwarded-for"),
        ["127.0.0.1"],
        "the TCP peer, not a header"
    );
    assert_eq!(
        seen.all("x-forwarded-host"),
        ["proxy.test"],
        "the Host the cache keys on"
    );
    assert_eq!(seen.all("x-forwarded-proto"), ["http"]);
    for (name, value) in &seen.headers {
        for planted in ["evil", "6.6.6.6", "/admin", "DELETE", "443"] {
            assert!(!value.contains(planted), "{name}: {value}");
        }
    }
}

#[actix_web::test]
async fn a_planted_forwarded_host_cannot_poison_the_cached_page() {
    let origin = StreamOrigin::start();
    let proxy = start_proxy(origin.upstream());
    let link = "<a href=\"http://proxy.test/next\">next</a>";
    let attack = "GET /link HTTP/1.1\r\nHost: proxy.test\r\nX-Forwarded-Host: evil.example\r\n\
                  Forwarded: host=evil.example\r\nConnection: close\r\n\r\n";
    let first = raw(&proxy, attack).await;
    assert_eq!(
        (first.status, first.text().as_str()),
        (200, link),
        "the origin built the page for the host the client reached"
    );
    // Whether or not the cache keys the attacker's request apart, the page everyone else
    // gets links to the real host.
    for _ in 0..2 {
        let victim = raw(&proxy, get("/link")).await;
        assert_eq!(
            (victim.status, victim.text().as_str()),
            (200, link),
            "{}",
            victim.raw
        );
    }
}

#[actix_web::test]
async fn a_stalled_request_body_is_a_408_and_holds_up_no_one() {
    let origin = StreamOrigin::start();
    let idle = Duration::from_millis(500);
    let proxy = start_proxy(origin.upstream().body_idle_timeout(idle));
    let addr = proxy.base.trim_start_matches("http://").to_string();
    // A GET of a cacheable URL, with a body: if the cache lets it lead the fill for /fill,
    // the idle timeout is what frees the requests waiting for that fill; if the cache passes
    // it by, they never wait. Either way a plain GET must be answered long before the cache's
    // 10 s lock timeout.
    let stalled = actix_web::rt::task::spawn_blocking(move || {
        stalled_client(
            &addr,
            b"GET /fill HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 1000\r\n\
              Connection: close\r\n\r\n0123456789",
        )
    });
    assert!(
        wait_for(|| origin.hits("/fill") == 1).await,
        "the stalled request never reached the origin"
    );

    let asked = Instant::now();
    let waiter = raw(&proxy, get("/fill")).await;
    let waited = asked.elapsed();
    assert_eq!(
        (waiter.status, waiter.text().as_str()),
        (200, "fill #2"),
        "{}",
        waiter.raw
    );
    assert!(
        waited < Duration::from_secs(3),
        "the concurrent GET waited {waited:?} behind the stalled body"
    );

    let (reply, took) = stalled
        .await
        .unwrap_or_else(|e| panic!("client thread: {e}"));
    let reply = reply.unwrap_or_else(|e| panic!("the stalled client got nothing: {e}"));
    assert_eq!(reply.status, 408, "{}", reply.raw);
    assert!(
        took < Duration::from_secs(3),
        "the stalled client was answered and let go after {took:?}"
    );
    assert!(
        wait_for(|| !origin.sunk("/fill").is_empty()).await,
        "the origin's read of the stalled body never ended"
    );
    let sunk = origin.sunk("/fill");
    assert!(
        sunk[0].outcome.is_err(),
        "the origin took the 10 bytes of a 1000-byte body as whole: {sunk:?}"
    );

    let again = raw(&proxy, get("/fill")).await;
    assert_eq!(
        (again.all("x-cache"), again.text().as_str()),
        (vec!["HIT"], "fill #2"),
        "the cache holds the good answer, not the 408"
    );
}

#[actix_web::test]
async fn a_stalled_chunked_body_never_reaches_the_origin_as_a_whole_one() {
    let origin = StreamOrigin::start();
    let proxy = start_proxy(
        origin
            .upstream()
            .body_idle_timeout(Duration::from_millis(500)),
    );
    let addr = proxy.base.trim_start_matches("http://").to_string();
    // More than the proxy gathers before sending, so the origin sees it streamed.
    let piece = pattern(0, 70 << 10);
    let mut request = format!(
        "POST /sink HTTP/1.1\r\nHost: proxy.test\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n{:x}\r\n",
        piece.len()
    )
    .into_bytes();
    request.extend_from_slice(&piece);
    request.extend_from_slice(b"\r\n");
    let (reply, took) =
        actix_web::rt::task::spawn_blocking(move || stalled_client(&addr, &request))
            .await
            .unwrap_or_else(|e| panic!("client thread: {e}"));
    let reply = reply.unwrap_or_else(|e| panic!("the stalled client got nothing: {e}"));
    assert_eq!(reply.status, 408, "{}", reply.raw);
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    assert!(wait_for(|| !origin.sunk("/sink").is_empty()).await);
    let sunk = origin.sunk("/sink");
    assert!(sunk[0].chunked, "{sunk:?}");
    assert!(
        sunk[0].outcome.is_err(),
        "the origin took a cut-off chunked body as whole: {sunk:?}"
    );
}

#[actix_web::test]
async fn a_body_announced_over_the_limit_is_a_413_the_origin_never_sees() {
    let origin = StreamOrigin::start();
    let proxy = start_proxy(origin.upstream());
    let request = format!(
        "POST /sink HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        MAX_REQUEST_BODY + 1
    );
    let started = Instant::now();
    let reply = raw(&proxy, request).await;
    assert_eq!(reply.status, 413, "{}", reply.raw);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(origin.hits("/sink"), 0);
}

#[actix_web::test]
async fn a_chunked_request_body_past_the_gathered_size_streams_on_chunked() {
    let origin = StreamOrigin::start();
    let proxy = start_proxy(origin.upstream());
    let len = 3 << 20;
    let reply = transfer_to(
        &proxy,
        "POST /sink HTTP/1.1\r\nHost: proxy.test\r\nConnection: close\r\n",
        Some(Upload::Chunked(len)),
    )
    .await;
    assert_eq!(reply.status, 200);
    let sunk = origin.sunk("/sink");
    assert_eq!(sunk.len(), 1);
    assert_eq!(sunk[0].outcome, Ok((len, expected_hash(len))), "{sunk:?}");
    assert!(
        sunk[0].chunked && sunk[0].content_length.is_none(),
        "{sunk:?}"
    );
}

#[actix_web::test]
async fn an_8_mib_chunked_response_arrives_whole_and_is_not_stored() {
    let origin = StreamOrigin::start();
    let proxy = start_proxy(origin.upstream());
    let len = 8 << 20;
    for round in 1..=2 {
        let reply = transfer_to(
            &proxy,
            &format!(
                "GET /bytes/{len}?chunked HTTP/1.1\r\nHost: proxy.test\r\nConnection: close\r\n"
            ),
            None,
        )
        .await;
        assert_eq!(reply.status, 200, "round {round}");
        assert_eq!(reply.all("transfer-encoding"), ["chunked"]);
        assert_eq!(reply.all("content-length"), Vec::<&str>::new());
        assert!(reply.complete, "round {round}: the body ended early");
        assert_eq!((reply.len, reply.hash), (len, expected_hash(len)));
        assert_eq!(origin.hits(&format!("/bytes/{len}")), round);
    }
}

#[actix_web::test]
async fn small_responses_are_still_cached_sized_or_chunked() {
    let origin = StreamOrigin::start();
    let proxy = start_proxy(origin.upstream());
    for path in ["/small-sized", "/small-chunked"] {
        let first = raw(&proxy, get(path)).await;
        let second = raw(&proxy, get(path)).await;
        assert_eq!(first.status, 200, "{}", first.raw);
        assert_eq!(first.body.len(), SMALL, "{path}");
        assert_eq!(
            first.all("content-length"),
            [SMALL.to_string().as_str()],
            "{path}: answered sized"
        );
        assert_eq!(
            (first.all("x-cache"), second.all("x-cache")),
            (vec!["MISS"], vec!["HIT"]),
            "{path}"
        );
        assert!(second.body == first.body, "{path}: the stored body differs");
        assert_eq!(origin.hits(path), 1, "{path}");
    }
}

#[actix_web::test]
async fn an_upstream_body_short_of_its_content_length_is_never_a_short_answer() {
    // Within the buffered size: the whole answer fails, as a 502.
    let (upstream, _) = raw_origin(
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 1000\r\n\r\n0123456789",
    );
    let reply = raw(&start_proxy(upstream), get("/short")).await;
    assert_eq!(reply.status, 502, "{}", reply.raw);
    assert!(
        reply.text().contains("could not be reached"),
        "{}",
        reply.raw
    );

    // Streamed: the client gets the announced length, fewer bytes and a closed connection.
    let announced = 2 << 20;
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: {announced}\r\n\r\n"
    )
    .into_bytes();
    response.extend_from_slice(&pattern(0, 1536 << 10));
    let upstream = stalling_origin(response, Duration::ZERO);
    let reply = transfer_to(&start_proxy(upstream), &get_head("/short-large"), None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.all("content-length"),
        [announced.to_string().as_str()]
    );
    assert!(
        !reply.complete && reply.len < announced,
        "{} of {announced} bytes, complete: {}",
        reply.len,
        reply.complete
    );
}

#[actix_web::test]
async fn an_upstream_body_that_stalls_is_cut_after_the_timeout() {
    let timeout = Duration::from_millis(300);
    // Before the answer is under way (a chunked body still being gathered): a 502.
    let upstream = stalling_origin(
        b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nTransfer-Encoding: chunked\r\n\r\n\
          a\r\n0123456789\r\n"
            .to_vec(),
        Duration::from_secs(5),
    );
    let started = Instant::now();
    let reply = raw(&start_proxy(upstream.timeout(timeout)), get("/stall")).await;
    assert_eq!(reply.status, 502, "{}", reply.raw);
    assert!(reply.text().contains("in time"), "{}", reply.raw);
    assert!(started.elapsed() < Duration::from_secs(3));

    // Once streaming: the connection breaks, the body short of its length.
    let announced = 2 << 20;
    let mut head = format!(
        "HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: {announced}\r\n\r\n"
    )
    .into_bytes();
    head.extend_from_slice(&pattern(0, 1536 << 10));
    let upstream = stalling_origin(head, Duration::from_secs(5));
    let started = Instant::now();
    let reply = transfer_to(
        &start_proxy(upstream.timeout(timeout)),
        &get_head("/stall-large"),
        None,
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(!reply.complete && reply.len < announced, "{}", reply.len);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// Runs itself in a child process (this test alone), so that the process's peak memory is this
/// test's: 64 MiB up (sized and chunked) and 64 MiB down (sized and chunked) through the proxy,
/// each checked whole at the other end, with the process's peak RSS growing by far less.
#[test]
fn large_bodies_stream_through_the_proxy_in_bounded_memory() {
    const NAME: &str = "large_bodies_stream_through_the_proxy_in_bounded_memory";
    if std::env::var_os(MEMORY_CHILD).is_some() {
        actix_web::rt::System::new().block_on(measure_large_bodies());
        return;
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("test binary: {e}"));
    let child = std::process::Command::new(exe)
        .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(MEMORY_CHILD, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn the child test: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(output) => output.unwrap_or_else(|e| panic!("child test: {e}")),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
            panic!("the child test did not finish in 120 s");
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // libtest prints the test's name without a newline: a figure may follow it on its line.
    for line in stdout
        .lines()
        .filter_map(|l| l.find("peak RSS growth").map(|at| &l[at..]))
    {
        println!("{line}");
    }
    assert!(
        output.status.success(),
        "child test failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(
        stdout.matches("peak RSS growth").count(),
        4,
        "the child ran no measurement:\n{stdout}"
    );
}

/// Set in the child process of `large_bodies_stream_through_the_proxy_in_bounded_memory`.
const MEMORY_CHILD: &str = "REVERSE_PROXY_MEMORY_CHILD";

/// What the whole process (client, proxy and origin) may grow by while 64 MiB pass: a proxy
/// that held the body would need at least 64 MiB.
const MEMORY_BOUND: u64 = 16 << 20;

async fn measure_large_bodies() {
    let origin = StreamOrigin::start();
    let proxy = start_proxy(origin.upstream());
    let len: u64 = 64 << 20;
    // Warm up every path once, so that lazy setup is not counted.
    let warm = transfer_to(
        &proxy,
        "POST /sink HTTP/1.1\r\nHost: proxy.test\r\nConnection: close\r\n",
        Some(Upload::Sized(1 << 20)),
    )
    .await;
    assert_eq!(warm.status, 200);
    transfer_to(&proxy, &get_head("/bytes/2097152"), None).await;

    for (name, upload) in [
        ("sized upload", Upload::Sized(len)),
        ("chunked upload", Upload::Chunked(len)),
    ] {
        let before = origin.sunk("/sink").len();
        let (reply, growth) = peak_growth(transfer_to(
            &proxy,
            "POST /sink HTTP/1.1\r\nHost: proxy.test\r\nConnection: close\r\n",
            Some(upload),
        ))
        .await;
        println!("peak RSS growth, {name} of {len} bytes: {growth} bytes");
        assert_eq!(reply.status, 200, "{name}");
        let sunk = origin.sunk("/sink");
        assert_eq!(sunk.len(), before + 1, "{name}");
        assert_eq!(
            sunk[before].outcome,
            Ok((len, expected_hash(len))),
            "{name}: the origin got another body"
        );
        assert!(growth < MEMORY_BOUND, "{name}: grew by {growth} bytes");
    }
    for (name, query) in [("sized download", ""), ("chunked download", "?chunked")] {
        let (reply, growth) = peak_growth(transfer_to(
            &proxy,
            &get_head(&format!("/bytes/{len}{query}")),
            None,
        ))
        .await;
        println!("peak RSS growth, {name} of {len} bytes: {growth} bytes");
        assert_eq!(reply.status, 200, "{name}");
        assert!(reply.complete, "{name}: ended early");
        assert_eq!((reply.len, reply.hash), (len, expected_hash(len)), "{name}");
        assert!(growth < MEMORY_BOUND, "{name}: grew by {growth} bytes");
    }
}

/// Runs `work` and returns its output with how far the process's peak RSS rose above the RSS
/// before it. The peak is reset first where the kernel allows it (`/proc/self/clear_refs`);
/// where it does not, the figure is an upper bound.
async fn peak_growth<T>(work: impl std::future::Future<Output = T>) -> (T, u64) {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = status_kib("VmRSS:");
    let out = work.await;
    let peak = status_kib("VmHWM:");
    (out, peak.saturating_sub(before) * 1024)
}

/// A `/proc/self/status` figure in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_else(|e| panic!("/proc/self/status: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// The body bytes every large transfer uses: byte `i` of a body is `i % 251`.
fn pattern(start: u64, len: usize) -> Vec<u8> {
    (start..start + len as u64)
        .map(|i| (i % 251) as u8)
        .collect()
}

/// FNV-1a, 64 bits: the same whatever the pieces a body arrives in.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The hash of the first `len` bytes of the pattern.
fn expected_hash(len: u64) -> u64 {
    let mut fnv = Fnv::new();
    let mut at = 0;
    while at < len {
        let n = (len - at).min(PIECE as u64);
        fnv.write(&pattern(at, n as usize));
        at += n;
    }
    fnv.0
}

/// Size of the pieces large bodies are written in.
const PIECE: usize = 64 << 10;
/// Size of the small cacheable responses.
const SMALL: usize = 2048;

/// What the streaming origin made of one request body.
#[derive(Clone, Debug)]
struct Sunk {
    target: String,
    content_length: Option<String>,
    chunked: bool,
    /// Length and hash of the whole body, or why it could not be read whole.
    outcome: Result<(u64, u64), String>,
}

#[derive(Default)]
struct Tally {
    hits: Vec<String>,
    sunk: Vec<Sunk>,
}

type SharedTally = web::Data<Mutex<Tally>>;

/// The streaming origin: counts requests per path, reads every request body as it comes
/// (hashing, never holding it), and answers by path with bodies it generates piece by piece.
async fn stream_origin(
    req: HttpRequest,
    mut payload: web::Payload,
    tally: SharedTally,
) -> HttpResponse {
    use futures_util::StreamExt;
    let path = req.path().to_string();
    let n = {
        let mut tally = tally
            .lock()
            .unwrap_or_else(|e| panic!("origin tally poisoned: {e}"));
        tally.hits.push(path.clone());
        tally.hits.iter().filter(|p| **p == path).count()
    };
    let content_length = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let chunked = req.headers().contains_key("transfer-encoding");
    if content_length.is_some() || chunked {
        let mut fnv = Fnv::new();
        let mut len = 0u64;
        let mut outcome = None;
        while let Some(piece) = payload.next().await {
            match piece {
                Ok(piece) => {
                    fnv.write(&piece);
                    len += piece.len() as u64;
                }
                Err(error) => {
                    outcome = Some(Err(error.to_string()));
                    break;
                }
            }
        }
        let outcome = outcome.unwrap_or(Ok((len, fnv.0)));
        let failed = outcome.is_err();
        tally
            .lock()
            .unwrap_or_else(|e| panic!("origin tally poisoned: {e}"))
            .sunk
            .push(Sunk {
                target: req.uri().to_string(),
                content_length,
                chunked,
                outcome,
            });
        if failed {
            return HttpResponse::BadRequest().finish();
        }
    }
    let cacheable = ("cache-control", "max-age=60");
    if let Some(len) = path.strip_prefix("/bytes/") {
        let len: u64 = len.parse().unwrap_or(0);
        let pieces = futures_util::stream::iter((0..len).step_by(PIECE).map(move |at| {
            let n = (len - at).min(PIECE as u64) as usize;
            Ok::<_, std::io::Error>(bytes::Bytes::from(pattern(at, n)))
        }));
        let mut res = HttpResponse::Ok();
        res.insert_header(cacheable);
        return if req.query_string() == "chunked" {
            res.streaming(pieces)
        } else {
            res.body(actix_web::body::SizedStream::new(len, pieces))
        };
    }
    match path.as_str() {
        "/fill" => HttpResponse::Ok()
            .insert_header(cacheable)
            .body(format!("fill #{n}")),
        "/link" => {
            let host = req
                .headers()
                .get("x-forwarded-host")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?");
            HttpResponse::Ok()
                .insert_header(cacheable)
                .body(format!("<a href=\"http://{host}/next\">next</a>"))
        }
        "/small-sized" => HttpResponse::Ok()
            .insert_header(cacheable)
            .body(pattern(n as u64, SMALL)),
        "/small-chunked" => {
            let body = bytes::Bytes::from(pattern(n as u64, SMALL));
            let pieces = [body.slice(..1000), body.slice(1000..)];
            HttpResponse::Ok()
                .insert_header(cacheable)
                .streaming(futures_util::stream::iter(
                    pieces.map(Ok::<_, std::io::Error>),
                ))
        }
        _ => HttpResponse::Ok()
            .insert_header(("cache-control", "no-store"))
            .body("ok"),
    }
}

/// The streaming origin on a real server, and what it has seen.
struct StreamOrigin {
    server: Server,
    tally: SharedTally,
}

impl StreamOrigin {
    fn start() -> StreamOrigin {
        let tally: SharedTally = web::Data::new(Mutex::new(Tally::default()));
        let (l, base) = listener();
        let for_app = tally.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(for_app.clone())
                .default_service(web::to(stream_origin))
        })
        .workers(1)
        .disable_signals()
        .listen(l)
        .unwrap_or_else(|e| panic!("listen: {e}"))
        .run();
        StreamOrigin {
            server: Server::spawn(server, base),
            tally,
        }
    }

    fn upstream(&self) -> Upstream {
        Upstream::parse(&self.server.base).unwrap_or_else(|e| panic!("{e}"))
    }

    /// How many requests for `path` reached the origin.
    fn hits(&self, path: &str) -> usize {
        self.tally
            .lock()
            .unwrap_or_else(|e| panic!("origin tally poisoned: {e}"))
            .hits
            .iter()
            .filter(|p| *p == path)
            .count()
    }

    /// The bodies the origin finished reading (or failed to) for requests to `path`.
    fn sunk(&self, path: &str) -> Vec<Sunk> {
        self.tally
            .lock()
            .unwrap_or_else(|e| panic!("origin tally poisoned: {e}"))
            .sunk
            .iter()
            .filter(|s| s.target.split('?').next() == Some(path))
            .cloned()
            .collect()
    }
}

/// Polls `done` for up to 5 s.
async fn wait_for(done: impl Fn() -> bool) -> bool {
    for _ in 0..500 {
        if done() {
            return true;
        }
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

/// Sends `request` (a head and the start of a body that never ends) and waits, up to 10 s,
/// for the proxy to answer and close; returns the reply and how long after sending it came.
fn stalled_client(addr: &str, request: &[u8]) -> (std::io::Result<RawReply>, Duration) {
    let started = Instant::now();
    let result = (|| {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(request)?;
        let mut bytes = Vec::new();
        // A reset after the answer is fine: what counts is what arrived, and when.
        let _ = stream.read_to_end(&mut bytes);
        if bytes.is_empty() {
            return Err(std::io::Error::other("closed without an answer"));
        }
        Ok(RawReply::parse(bytes))
    })();
    (result, started.elapsed())
}

/// An origin that accepts one connection, reads the request head, sends `response`, then
/// neither sends nor closes for `hold`, and closes.
fn stalling_origin(response: Vec<u8>, hold: Duration) -> Upstream {
    let (listener, base) = listener();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = stream.write_all(&response);
        let _ = stream.flush();
        std::thread::sleep(hold);
    });
    Upstream::parse(&base).unwrap_or_else(|e| panic!("{e}"))
}

/// The head of a `GET` that closes the connection after the answer, without its blank line.
fn get_head(target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: proxy.test\r\nConnection: close\r\n")
}

/// A request body of the pattern, written piece by piece.
#[derive(Clone, Copy)]
enum Upload {
    /// With `Content-Length`.
    Sized(u64),
    /// `Transfer-Encoding: chunked`, one chunk per piece.
    Chunked(u64),
}

/// What the streaming client got: the head, and the body counted and hashed as it arrived.
#[derive(Debug)]
struct Transfer {
    status: u16,
    headers: Vec<(String, String)>,
    len: u64,
    hash: u64,
    /// Whether the body ended as its framing said (all of its length, or the last chunk).
    complete: bool,
}

impl Transfer {
    fn all(&self, name: &str) -> Vec<&str> {
        values_of(&self.headers, name)
    }
}

/// Sends `head` (request line and headers, no blank line) and `upload` to `server` over a new
/// connection, and reads the answer without keeping its body; all on a blocking thread.
async fn transfer_to(server: &Server, head: &str, upload: Option<Upload>) -> Transfer {
    let addr = server.base.trim_start_matches("http://").to_string();
    let head = head.to_string();
    actix_web::rt::task::spawn_blocking(move || {
        transfer(&addr, &head, upload).unwrap_or_else(|e| panic!("transfer: {e}"))
    })
    .await
    .unwrap_or_else(|e| panic!("client thread: {e}"))
}

fn transfer(addr: &str, head: &str, upload: Option<Upload>) -> std::io::Result<Transfer> {
    use std::io::{BufRead, BufReader};
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    stream.set_write_timeout(Some(Duration::from_secs(20)))?;
    let mut request = head.to_string();
    match upload {
        Some(Upload::Sized(len)) => request.push_str(&format!("Content-Length: {len}\r\n")),
        Some(Upload::Chunked(_)) => request.push_str("Transfer-Encoding: chunked\r\n"),
        None => {}
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    if let Some(Upload::Sized(len) | Upload::Chunked(len)) = upload {
        let chunked = matches!(upload, Some(Upload::Chunked(_)));
        let mut at = 0;
        while at < len {
            let n = (len - at).min(PIECE as u64);
            let piece = pattern(at, n as usize);
            if chunked {
                stream.write_all(format!("{n:x}\r\n").as_bytes())?;
                stream.write_all(&piece)?;
                stream.write_all(b"\r\n")?;
            } else {
                stream.write_all(&piece)?;
            }
            at += n;
        }
        if chunked {
            stream.write_all(b"0\r\n\r\n")?;
        }
    }
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line: {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("the head did not end"));
        }
        let Some((name, value)) = line.trim_end().split_once(':') else {
            break;
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut fnv = Fnv::new();
    let mut len = 0u64;
    let mut buf = vec![0u8; PIECE];
    // Reads up to `n` bytes into the hash; how many came.
    let mut take = |reader: &mut BufReader<TcpStream>, n: u64, len: &mut u64| -> u64 {
        let mut got = 0;
        while got < n {
            let want = (n - got).min(buf.len() as u64) as usize;
            match reader.read(&mut buf[..want]) {
                Ok(0) | Err(_) => break,
                Ok(k) => {
                    fnv.write(&buf[..k]);
                    got += k as u64;
                }
            }
        }
        *len += got;
        got
    };
    let chunked = values_of(&headers, "transfer-encoding") == ["chunked"];
    let length = values_of(&headers, "content-length")
        .first()
        .and_then(|v| v.parse::<u64>().ok());
    let complete = if chunked {
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break false;
            }
            let Ok(size) = u64::from_str_radix(line.trim_end(), 16) else {
                break false;
            };
            if size == 0 {
                line.clear();
                break reader.read_line(&mut line).unwrap_or(0) > 0 && line == "\r\n";
            }
            if take(&mut reader, size, &mut len) < size {
                break false;
            }
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line != "\r\n" {
                break false;
            }
        }
    } else if let Some(length) = length {
        take(&mut reader, length, &mut len) == length
    } else {
        take(&mut reader, u64::MAX, &mut len);
        true
    };
    Ok(Transfer {
        status,
        headers,
        len,
        hash: fnv.0,
        complete,
    })
}

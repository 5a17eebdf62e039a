//! The reverse proxy example on real servers: an origin inside the test (an actix app that
//! records every request it gets, or a raw TCP one where actix cannot produce the bytes: its
//! own `Connection` header, interim 1xx answers), the example's very app in front of it, and a
//! raw HTTP/1.1 client, so that each assertion is on what goes over the wire.
//!
//! Every origin answer is `Cache-Control: no-store` or on its own path: these tests are about
//! forwarding, not caching.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use cache_actix::Cache;
use cache_actix_examples::reverse_proxy::{app, Upstream};
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
    // meaning is the same (RFC 9110 §12.5.1). It is the only header the proxy adds.
    assert_eq!(seen.all("accept"), ["*/*"]);
    assert_eq!(
        seen.names(),
        [
            "accept",
            "content-length",
            "content-type",
            "host",
            "user-agent",
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
        ["accept", "host", "x-end"],
        "only end-to-end headers reach the origin"
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

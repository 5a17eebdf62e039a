//! HTTP semantics mode (RFC 9111 shared cache), one test per rule: the example reverse proxy in
//! front of a small scripted origin started by each test, on a real loopback port.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::{test, web, App, HttpRequest, HttpResponse, HttpServer};
use cache_actix::{Cache, CacheMiddleware, HttpOptions};
use cache_actix_examples::reverse_proxy::{app, Upstream};
use cache_actix_tests::{listener, send, Reply, Server};

/// One scripted answer: status and header lines (in order, repeats allowed).
#[derive(Clone)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
}

fn answer(status: u16, headers: &[(&str, &str)]) -> Answer {
    Answer {
        status,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
    }
}

fn ok(headers: &[(&str, &str)]) -> Answer {
    answer(200, headers)
}

/// The origin: per path, the answers to its 1st, 2nd, ... request (the last one repeats),
/// with the body `"<path> #<n>"` and `x-origin-count: n`; it records what reached it.
#[derive(Clone, Default)]
struct Origin {
    script: Arc<Mutex<HashMap<String, Vec<Answer>>>>,
    seen: Arc<Mutex<Vec<(String, String, HeaderMap)>>>,
}

impl Origin {
    fn script(&self, path: &str, answers: Vec<Answer>) {
        self.script
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.to_string(), answers);
    }

    /// How many requests for `path` reached the origin.
    fn hits(&self, path: &str) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, p, _)| p == path)
            .count()
    }

    /// The headers of the last request for `path` that reached the origin.
    fn last_request(&self, path: &str) -> HeaderMap {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .rev()
            .find(|(_, p, _)| p == path)
            .map(|(_, _, h)| h.clone())
            .unwrap_or_default()
    }

    fn respond(&self, req: &HttpRequest) -> HttpResponse {
        let path = req.path().to_string();
        let n = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.push((
                req.method().to_string(),
                path.clone(),
                req.headers().clone(),
            ));
            seen.iter().filter(|(_, p, _)| *p == path).count()
        };
        let script = self.script.lock().unwrap_or_else(|p| p.into_inner());
        let Some(answers) = script.get(&path) else {
            return HttpResponse::NotFound().finish();
        };
        let Some(a) = answers.get(n - 1).or(answers.last()) else {
            return HttpResponse::NotFound().finish();
        };
        let status = actix_web::http::StatusCode::from_u16(a.status)
            .unwrap_or(actix_web::http::StatusCode::OK);
        let mut res = HttpResponse::build(status);
        for (name, value) in &a.headers {
            res.append_header((name.as_str(), value.as_str()));
        }
        res.append_header(("x-origin-count", n.to_string()));
        if a.status == 304 {
            res.finish()
        } else {
            res.body(format!("{path} #{n}"))
        }
    }
}

fn start_origin() -> (Server, Origin) {
    let origin = Origin::default();
    let (l, base) = listener();
    let o = origin.clone();
    let server = HttpServer::new(move || {
        let o = o.clone();
        App::new().default_service(web::to(move |req: HttpRequest| {
            let o = o.clone();
            async move { o.respond(&req) }
        }))
    })
    .workers(1)
    .disable_signals()
    .listen(l)
    .unwrap_or_else(|e| panic!("listen: {e}"))
    .run();
    (Server::spawn(server, base), origin)
}

/// The reverse proxy in front of a fresh origin.
macro_rules! proxy {
    () => {{
        let (server, origin) = start_origin();
        let upstream = Upstream::parse(&server.base).unwrap_or_else(|e| panic!("{e}"));
        let proxy = test::init_service(app(Cache::memory(), upstream)).await;
        (proxy, origin, server)
    }};
}

fn get(path: &str) -> test::TestRequest {
    test::TestRequest::get().uri(path)
}

fn http_date(offset_secs: i64) -> String {
    let now = SystemTime::now();
    let at = if offset_secs >= 0 {
        now + Duration::from_secs(offset_secs as u64)
    } else {
        now - Duration::from_secs(offset_secs.unsigned_abs())
    };
    httpdate::fmt_http_date(at)
}

/// For each `(path, reused)`: a first request fills, and a second is a `HIT` exactly when
/// `reused`.
async fn assert_reuse<S, B>(proxy: &S, cases: &[(&str, bool)])
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    for &(path, reused) in cases {
        send(proxy, get(path)).await;
        let again = send(proxy, get(path)).await;
        assert_eq!(again.x_cache() == "HIT", reused, "{path}");
    }
}

fn values(reply: &Reply, name: &str) -> Vec<String> {
    reply
        .headers
        .get_all(name)
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect()
}

#[actix_web::test]
async fn fresh_responses_are_reused_with_their_fields_as_received() {
    let (proxy, origin, _server) = proxy!();
    let date = http_date(-1);
    origin.script(
        "/r",
        vec![ok(&[
            ("cache-control", "max-age=60"),
            ("date", &date),
            ("x-multi", "a"),
            ("x-multi", "b, c"),
            ("expires", "not a date"),
        ])],
    );
    let first = send(&proxy, get("/r")).await;
    let second = send(&proxy, get("/r")).await;
    assert_eq!(first.x_cache(), "MISS");
    assert_eq!(second.summary(), first.summary_as("HIT"));
    assert_eq!(origin.hits("/r"), 1);
    assert_eq!(values(&second, "x-multi"), ["a", "b, c"]);
    assert_eq!(values(&second, "expires"), ["not a date"]);
    assert_eq!(values(&second, "date"), [date.as_str()]);
    let age: u64 = second.header("age").parse().unwrap_or(999);
    assert!((1..=3).contains(&age), "age {age}: one second since Date");
}

trait SummaryAs {
    fn summary_as(&self, x_cache: &str) -> (actix_web::http::StatusCode, String, String);
}

impl SummaryAs for Reply {
    fn summary_as(&self, x_cache: &str) -> (actix_web::http::StatusCode, String, String) {
        (self.status, x_cache.to_string(), self.text())
    }
}

#[actix_web::test]
async fn age_counts_the_origins_age_and_time_in_the_cache() {
    let (proxy, origin, _server) = proxy!();
    origin.script(
        "/a",
        vec![ok(&[("cache-control", "max-age=60"), ("age", "10")])],
    );
    let first = send(&proxy, get("/a")).await;
    assert_eq!(values(&first, "age"), ["10"], "a miss passes Age through");
    let hit = send(&proxy, get("/a")).await;
    assert_eq!(values(&hit, "age"), ["10"]);
    actix_web::rt::time::sleep(Duration::from_millis(1100)).await;
    let later = send(&proxy, get("/a")).await;
    assert_eq!(values(&later, "age"), ["11"]);
    // An Age past max-age makes the response stale on arrival.
    origin.script(
        "/old",
        vec![ok(&[("cache-control", "max-age=60"), ("age", "61")])],
    );
    send(&proxy, get("/old")).await;
    assert_eq!(send(&proxy, get("/old")).await.x_cache(), "MISS");
    assert_eq!(origin.hits("/old"), 2);
}

#[actix_web::test]
async fn freshness_comes_from_s_maxage_then_max_age_then_expires() {
    let (proxy, origin, _server) = proxy!();
    origin.script(
        "/s",
        vec![ok(&[("cache-control", "max-age=0, s-maxage=60")])],
    );
    origin.script("/m", vec![ok(&[("cache-control", "max-age=0")])]);
    let (past, soon) = (http_date(-30), http_date(30));
    origin.script("/e", vec![ok(&[("date", &past), ("expires", &soon)])]);
    origin.script("/bad", vec![ok(&[("expires", "0")])]);
    for (path, reused) in [("/s", true), ("/m", false), ("/e", true), ("/bad", false)] {
        send(&proxy, get(path)).await;
        let again = send(&proxy, get(path)).await;
        assert_eq!(again.x_cache() == "HIT", reused, "{path}");
        assert_eq!(origin.hits(path), if reused { 1 } else { 2 }, "{path}");
    }
}

#[actix_web::test]
async fn heuristic_freshness_only_where_the_rfc_allows_it() {
    let (proxy, origin, _server) = proxy!();
    let modified = http_date(-10 * 86_400);
    origin.script("/lm", vec![ok(&[("last-modified", &modified)])]);
    origin.script("/none", vec![ok(&[])]);
    origin.script(
        "/created",
        vec![answer(201, &[("last-modified", &modified)])],
    );
    assert_reuse(
        &proxy,
        &[("/lm", true), ("/none", false), ("/created", false)],
    )
    .await;
}

#[actix_web::test]
async fn no_store_and_private_are_never_stored_and_unknown_directives_are_ignored() {
    let (proxy, origin, _server) = proxy!();
    origin.script(
        "/ns",
        vec![ok(&[("cache-control", "max-age=60, no-store")])],
    );
    origin.script("/p", vec![ok(&[("cache-control", "max-age=60, private")])]);
    origin.script(
        "/x",
        vec![ok(&[(
            "cache-control",
            "foo=\"bar, no-store\", max-age=60, baz",
        )])],
    );
    assert_reuse(&proxy, &[("/ns", false), ("/p", false), ("/x", true)]).await;
}

#[actix_web::test]
async fn no_cache_responses_are_revalidated_before_every_use() {
    let (proxy, origin, _server) = proxy!();
    origin.script(
        "/nc",
        vec![
            ok(&[("cache-control", "no-cache"), ("etag", "\"v1\"")]),
            answer(304, &[("etag", "\"v1\"")]),
        ],
    );
    let first = send(&proxy, get("/nc")).await;
    let second = send(&proxy, get("/nc")).await;
    assert_eq!(origin.hits("/nc"), 2);
    assert_eq!(
        origin.last_request("/nc").get("if-none-match").unwrap(),
        "\"v1\""
    );
    assert_eq!(second.status, 200);
    assert_eq!(
        second.text(),
        first.text(),
        "the stored body, confirmed by a 304"
    );
    assert_eq!(second.x_cache(), "HIT");
}

#[actix_web::test]
async fn a_304_updates_the_stored_fields_and_freshness() {
    let (proxy, origin, _server) = proxy!();
    let modified = http_date(-3600);
    origin.script(
        "/u",
        vec![
            ok(&[
                ("cache-control", "max-age=1"),
                ("age", "5"),
                ("etag", "\"v1\""),
                ("last-modified", &modified),
                ("x-version", "1"),
                ("content-type", "text/plain"),
            ]),
            answer(
                304,
                &[
                    ("cache-control", "max-age=60"),
                    ("etag", "\"v1\""),
                    ("x-version", "2"),
                ],
            ),
        ],
    );
    let first = send(&proxy, get("/u")).await;
    let second = send(&proxy, get("/u")).await;
    let seen = origin.last_request("/u");
    assert_eq!(seen.get("if-none-match").unwrap(), "\"v1\"");
    assert_eq!(seen.get("if-modified-since").unwrap(), modified.as_str());
    assert_eq!((second.status.as_u16(), second.text()), (200, first.text()));
    assert_eq!(values(&second, "x-version"), ["2"]);
    assert_eq!(values(&second, "content-type"), ["text/plain"]);
    let third = send(&proxy, get("/u")).await;
    assert_eq!((third.x_cache(), origin.hits("/u")), ("HIT", 2));
    assert_eq!(values(&third, "x-version"), ["2"]);
}

#[actix_web::test]
async fn client_conditionals_are_answered_from_the_cache() {
    let (proxy, origin, _server) = proxy!();
    let modified = http_date(-3600);
    origin.script(
        "/c",
        vec![ok(&[
            ("cache-control", "max-age=60"),
            ("etag", "W/\"v1\""),
            ("last-modified", &modified),
        ])],
    );
    send(&proxy, get("/c")).await;
    let inm = send(
        &proxy,
        get("/c").insert_header(("if-none-match", "\"x\", \"v1\"")),
    )
    .await;
    assert_eq!(inm.status.as_u16(), 304);
    assert_eq!(values(&inm, "etag"), ["W/\"v1\""]);
    assert!(inm.body.is_empty());
    let ims = send(
        &proxy,
        get("/c").insert_header(("if-modified-since", http_date(-60))),
    )
    .await;
    assert_eq!(ims.status.as_u16(), 304);
    let other = send(&proxy, get("/c").insert_header(("if-none-match", "\"v2\""))).await;
    assert_eq!(other.status.as_u16(), 200);
    assert_eq!(origin.hits("/c"), 1);
}

#[actix_web::test]
async fn vary_keeps_variants_apart_and_star_is_never_reused() {
    let (proxy, origin, _server) = proxy!();
    origin.script(
        "/v",
        vec![ok(&[
            ("cache-control", "max-age=60"),
            ("vary", "Accept-Language"),
        ])],
    );
    origin.script(
        "/star",
        vec![ok(&[("cache-control", "max-age=60"), ("vary", "*")])],
    );
    let en = send(&proxy, get("/v").insert_header(("accept-language", "en"))).await;
    let fr = send(&proxy, get("/v").insert_header(("accept-language", "fr"))).await;
    assert_ne!(en.text(), fr.text());
    let en_again = send(&proxy, get("/v").insert_header(("accept-language", "en"))).await;
    assert_eq!((en_again.x_cache(), en_again.text()), ("HIT", en.text()));
    send(&proxy, get("/star")).await;
    assert_eq!(send(&proxy, get("/star")).await.x_cache(), "BYPASS");
    assert_eq!(origin.hits("/star"), 2);
}

#[actix_web::test]
async fn unsafe_methods_invalidate_the_target_and_its_location_targets() {
    let (proxy, origin, _server) = proxy!();
    let cached = ok(&[("cache-control", "max-age=60")]);
    let created = answer(
        201,
        &[
            ("location", "/loc"),
            ("content-location", "http://localhost:8080/cloc"),
        ],
    );
    // The origin counts requests per path whatever the method: GET, then the POST, then GET.
    origin.script("/t", vec![cached.clone(), created, cached.clone()]);
    let host = ("host", "localhost:8080");
    for path in ["/loc", "/cloc", "/kept"] {
        origin.script(path, vec![cached.clone()]);
    }
    for path in ["/t", "/loc", "/cloc", "/kept"] {
        send(&proxy, get(path).insert_header(host)).await;
        assert_eq!(
            send(&proxy, get(path).insert_header(host)).await.x_cache(),
            "HIT",
            "{path}"
        );
    }
    let post = send(
        &proxy,
        test::TestRequest::post().uri("/t").insert_header(host),
    )
    .await;
    assert_eq!(post.status.as_u16(), 201);
    for (path, purged) in [
        ("/t", true),
        ("/loc", true),
        ("/cloc", true),
        ("/kept", false),
    ] {
        let again = send(&proxy, get(path).insert_header(host)).await;
        assert_eq!(again.x_cache() == "HIT", !purged, "{path}");
    }
}

#[actix_web::test]
async fn stale_while_revalidate_answers_stale_inside_its_window() {
    let (proxy, origin, _server) = proxy!();
    origin.script(
        "/swr",
        vec![ok(&[
            ("cache-control", "max-age=1, stale-while-revalidate=60"),
            ("age", "2"),
        ])],
    );
    let first = send(&proxy, get("/swr")).await;
    let stale = send(&proxy, get("/swr")).await;
    assert_eq!((stale.x_cache(), stale.text()), ("STALE", first.text()));
    // The origin is asked again in the background, once, and nobody waits for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while origin.hits("/swr") < 2 && std::time::Instant::now() < deadline {
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(origin.hits("/swr"), 2, "one background revalidation");
}

#[actix_web::test]
async fn stale_if_error_answers_stale_when_the_origin_fails_unless_must_revalidate() {
    let (proxy, origin, _server) = proxy!();
    let fails = |cc: &str| {
        vec![
            ok(&[("cache-control", cc), ("age", "2"), ("etag", "\"e\"")]),
            answer(500, &[]),
        ]
    };
    origin.script("/sie", fails("max-age=1, stale-if-error=60"));
    origin.script(
        "/mr",
        fails("max-age=1, stale-if-error=60, must-revalidate"),
    );
    origin.script("/plain", fails("max-age=1"));
    for (path, stale) in [("/sie", true), ("/mr", false), ("/plain", false)] {
        let first = send(&proxy, get(path)).await;
        let second = send(&proxy, get(path)).await;
        if stale {
            assert_eq!((second.status.as_u16(), second.text()), (200, first.text()));
            assert_eq!(second.x_cache(), "STALE");
        } else {
            assert_eq!(second.status.as_u16(), 500, "{path}");
        }
    }
}

#[actix_web::test]
async fn an_unreachable_origin_gets_stale_answers_unless_the_entry_forbids_them() {
    let (proxy, origin, server) = proxy!();
    origin.script(
        "/ok",
        vec![ok(&[("cache-control", "max-age=1"), ("age", "2")])],
    );
    origin.script(
        "/strict",
        vec![ok(&[
            ("cache-control", "max-age=1, must-revalidate"),
            ("age", "2"),
        ])],
    );
    send(&proxy, get("/ok")).await;
    send(&proxy, get("/strict")).await;
    drop(server);
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let ok = send(&proxy, get("/ok")).await;
    assert_eq!((ok.status.as_u16(), ok.x_cache()), (200, "STALE"));
    let strict = send(&proxy, get("/strict")).await;
    assert_eq!(strict.status.as_u16(), 502);
}

#[actix_web::test]
async fn request_directives_are_honoured() {
    let (proxy, origin, _server) = proxy!();
    origin.script(
        "/q",
        vec![ok(&[("cache-control", "max-age=60"), ("age", "10")])],
    );
    send(&proxy, get("/q")).await;
    let young = send(
        &proxy,
        get("/q").insert_header(("cache-control", "max-age=5")),
    )
    .await;
    assert_eq!((young.x_cache(), origin.hits("/q")), ("MISS", 2));
    let fresh = send(
        &proxy,
        get("/q").insert_header(("cache-control", "min-fresh=3600")),
    )
    .await;
    assert_eq!((fresh.x_cache(), origin.hits("/q")), ("MISS", 3));
    let hit = send(&proxy, get("/q")).await;
    assert_eq!(hit.x_cache(), "HIT");
    let missing = send(
        &proxy,
        get("/nothing").insert_header(("cache-control", "only-if-cached")),
    )
    .await;
    assert_eq!(missing.status.as_u16(), 504);
    assert_eq!(origin.hits("/nothing"), 0);
    origin.script(
        "/st",
        vec![ok(&[("cache-control", "max-age=1"), ("age", "5")])],
    );
    send(&proxy, get("/st")).await;
    let stale = send(
        &proxy,
        get("/st").insert_header(("cache-control", "max-stale=60")),
    )
    .await;
    assert_eq!((stale.x_cache(), origin.hits("/st")), ("STALE", 1));
    origin.script("/ns", vec![ok(&[("cache-control", "max-age=60")])]);
    send(
        &proxy,
        get("/ns").insert_header(("cache-control", "no-store")),
    )
    .await;
    assert_eq!(send(&proxy, get("/ns")).await.x_cache(), "MISS");
}

#[actix_web::test]
async fn head_is_answered_from_a_stored_get() {
    let (proxy, origin, _server) = proxy!();
    origin.script("/h", vec![ok(&[("cache-control", "max-age=60")])]);
    send(&proxy, get("/h")).await;
    let head = send(
        &proxy,
        test::TestRequest::default()
            .method(actix_web::http::Method::HEAD)
            .uri("/h"),
    )
    .await;
    assert_eq!((head.status.as_u16(), head.x_cache()), (200, "HIT"));
    assert_eq!(origin.hits("/h"), 1);
}

/// The options, on the middleware directly around an in-process origin handler.
async fn with_options(
    options: HttpOptions,
    headers: &'static [(&'static str, &'static str)],
) -> impl actix_web::dev::Service<
    actix_http::Request,
    Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
    Error = actix_web::Error,
> {
    let count = Arc::new(Mutex::new(0u32));
    test::init_service(
        App::new()
            .wrap(CacheMiddleware::new(Cache::memory()).http_semantics_with(options))
            .default_service(web::to(move || {
                let count = count.clone();
                async move {
                    let n = {
                        let mut c = count.lock().unwrap_or_else(|p| p.into_inner());
                        *c += 1;
                        *c
                    };
                    let mut res = HttpResponse::Ok();
                    for (name, value) in headers {
                        res.append_header((
                            HeaderName::from_static(name),
                            HeaderValue::from_static(value),
                        ));
                    }
                    res.body(format!("#{n}"))
                }
            })),
    )
    .await
}

#[actix_web::test]
async fn cdn_cache_control_decides_when_enabled() {
    const H: &[(&str, &str)] = &[
        ("cache-control", "no-store"),
        ("cdn-cache-control", "max-age=60"),
    ];
    let off = with_options(HttpOptions::default(), H).await;
    send(&off, get("/")).await;
    assert_eq!(send(&off, get("/")).await.x_cache(), "BYPASS");
    let on = with_options(HttpOptions::default().cdn_cache_control(true), H).await;
    send(&on, get("/")).await;
    assert_eq!(send(&on, get("/")).await.x_cache(), "HIT");
}

#[actix_web::test]
async fn set_cookie_and_authorization_stay_private_unless_an_option_lifts_it() {
    const COOKIE: &[(&str, &str)] = &[("cache-control", "max-age=60"), ("set-cookie", "a=b")];
    let strict = with_options(HttpOptions::default(), COOKIE).await;
    send(&strict, get("/")).await;
    assert_eq!(send(&strict, get("/")).await.x_cache(), "BYPASS");
    let lifted = with_options(HttpOptions::default().store_set_cookie(true), COOKIE).await;
    send(&lifted, get("/")).await;
    let hit = send(&lifted, get("/")).await;
    assert_eq!((hit.x_cache(), hit.header("set-cookie")), ("HIT", "a=b"));

    const PUBLIC: &[(&str, &str)] = &[("cache-control", "public, max-age=60")];
    let auth = || get("/").insert_header(("authorization", "Bearer alice"));
    let strict = with_options(HttpOptions::default(), PUBLIC).await;
    send(&strict, auth()).await;
    assert_eq!(send(&strict, auth()).await.x_cache(), "BYPASS");
    send(&strict, get("/")).await;
    assert_ne!(
        send(&strict, auth()).await.x_cache(),
        "HIT",
        "an entry not varied on Authorization is not served to an authorized request"
    );
    let lifted = with_options(HttpOptions::default().share_authorized(true), PUBLIC).await;
    send(&lifted, auth()).await;
    assert_eq!(send(&lifted, auth()).await.x_cache(), "HIT");
}

/// A proxy node tiered over `redis`: L1 memory in front of the shared L2.
async fn tiered_proxy(
    redis: &cache_actix_tests::redis::RedisServer,
    origin: &Server,
) -> (
    impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
    >,
    Cache,
) {
    let store = cache_actix::RedisStore::from_url(&redis.url()).unwrap_or_else(|e| panic!("{e}"));
    let cache = Cache::builder()
        .l1(cache_actix::MemoryStore::new())
        .l2(store)
        .namespace("proxy")
        .build();
    cache_actix_tests::redis::wait_in_sync(&cache).await;
    let upstream = Upstream::parse(&origin.base).unwrap_or_else(|e| panic!("{e}"));
    (
        test::init_service(app(cache.clone(), upstream)).await,
        cache,
    )
}

#[actix_web::test]
async fn tiered_proxies_share_entries_and_their_revalidation_through_redis() {
    let redis = cache_actix_tests::redis::RedisServer::start();
    let (server, origin) = start_origin();
    origin.script(
        "/shared",
        vec![
            ok(&[
                ("cache-control", "max-age=1"),
                ("etag", "\"v1\""),
                ("x-version", "1"),
            ]),
            answer(
                304,
                &[
                    ("cache-control", "max-age=60"),
                    ("etag", "\"v1\""),
                    ("x-version", "2"),
                ],
            ),
        ],
    );
    let (a, _) = tiered_proxy(&redis, &server).await;
    let (b, _) = tiered_proxy(&redis, &server).await;
    let first = send(&a, get("/shared")).await;
    let on_b = send(&b, get("/shared")).await;
    assert_eq!((on_b.x_cache(), on_b.text()), ("HIT", first.text()));
    assert_eq!(origin.hits("/shared"), 1);
    actix_web::rt::time::sleep(Duration::from_millis(1100)).await;
    let revalidated = send(&a, get("/shared")).await;
    assert_eq!(
        (revalidated.x_cache(), values(&revalidated, "x-version")),
        ("HIT", vec!["2".to_string()])
    );
    assert_eq!(origin.hits("/shared"), 2);
    // Node B's L1 copy is stale; the refreshed record in Redis answers it.
    let b_after = send(&b, get("/shared")).await;
    assert_eq!(values(&b_after, "x-version"), ["2"]);
    assert_eq!(origin.hits("/shared"), 2, "no second revalidation");
}

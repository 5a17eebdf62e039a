//! A randomized attacker: several users, each with a secret marker in their credentials, session
//! cookie, forwarded host and bodies, send well over 100,000 requests with random cookies (their
//! session, junk, duplicates, other users' cookie names), credentials, forwarded headers,
//! languages, bodies on GET, query spellings and methods, to handlers that echo every input
//! they read. No response may ever carry another user's marker, and (where the cache is allowed
//! no latitude) every answer must be exactly what the handler would say to this very request,
//! computed by the same function on the request as actix parses it.
//!
//! The seed is printed; `ATTACKER_SEED=<n>` replays a run. `ATTACKER_REQUESTS=<n>` changes the
//! in-memory request count.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::{AcceptLanguage, Header, HeaderValue};
use actix_web::http::Method;
use actix_web::{get, test, web, App, HttpRequest, HttpResponse, Responder};
use cache_actix::{cached, Cache, CacheMiddleware, MemoryStore, RedisStore};
use cache_actix_tests::{actix_cookie, redis::RedisServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const HOST: &str = "shop.example";
const USERS: usize = 8;

/// Which inputs a handler reads (besides host, scheme, query and body, which all read).
#[derive(Clone, Copy, Default)]
struct Reads {
    auth: bool,
    sid: bool,
    cookie_header: bool,
    lang: bool,
    raw_query: bool,
}

/// What a handler answers: one line per input it read.
fn render(label: &str, req: &HttpRequest, body: &[u8], reads: Reads) -> String {
    let info = req.connection_info();
    let mut out = format!(
        "handler={label}\nhost={}\nscheme={}\n",
        info.host(),
        info.scheme()
    );
    if reads.raw_query {
        out.push_str(&format!("query={}\n", req.query_string()));
    } else {
        let query = web::Query::<HashMap<String, String>>::from_query(req.query_string())
            .map(|q| {
                format!(
                    "{:?}",
                    q.into_inner().into_iter().collect::<BTreeMap<_, _>>()
                )
            })
            .unwrap_or_else(|_| "unreadable".into());
        out.push_str(&format!("query={query}\n"));
    }
    if reads.auth {
        let auth = req
            .headers()
            .get("authorization")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        out.push_str(&format!("auth={}\n", auth.unwrap_or_else(|| "none".into())));
    }
    if reads.sid {
        let sid = actix_cookie(req.headers(), "sid");
        out.push_str(&format!("sid={}\n", sid.unwrap_or_else(|| "none".into())));
    }
    if reads.cookie_header {
        let lines: Vec<String> = req
            .headers()
            .get_all("cookie")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        out.push_str(&format!("cookie={}\n", lines.join(" | ")));
    }
    if reads.lang {
        let lang = AcceptLanguage::parse(req)
            .map(|l| l.preference().to_string().to_ascii_lowercase())
            .unwrap_or_else(|_| "unreadable".into());
        out.push_str(&format!("lang={lang}\n"));
    }
    out.push_str(&format!("body={}\n", String::from_utf8_lossy(body)));
    out
}

const ME: Reads = Reads {
    auth: true,
    sid: false,
    cookie_header: false,
    lang: false,
    raw_query: false,
};
const PROFILE: Reads = Reads {
    auth: false,
    sid: true,
    cookie_header: false,
    lang: false,
    raw_query: false,
};
const LANG: Reads = Reads {
    auth: false,
    sid: false,
    cookie_header: false,
    lang: true,
    raw_query: false,
};
const SCOPE: Reads = Reads {
    auth: true,
    sid: true,
    cookie_header: true,
    lang: false,
    raw_query: false,
};
const HTTP: Reads = Reads {
    auth: true,
    sid: true,
    cookie_header: false,
    lang: true,
    raw_query: true,
};

#[cached(ttl = 60, vary = "Authorization")]
#[get("/me")]
async fn me_page(req: HttpRequest, body: web::Bytes) -> impl Responder {
    render("me", &req, &body, ME)
}

#[cached(ttl = 60, vary_cookie = "sid")]
#[get("/profile")]
async fn profile_page(req: HttpRequest, body: web::Bytes) -> impl Responder {
    render("profile", &req, &body, PROFILE)
}

#[cached(ttl = 60, vary = "Accept-Language")]
#[get("/lang")]
async fn lang_page(req: HttpRequest, body: web::Bytes) -> impl Responder {
    render("lang", &req, &body, LANG)
}

/// Under the scope rule (no policy of its own).
async fn scope_page(req: HttpRequest, body: web::Bytes) -> HttpResponse {
    HttpResponse::Ok().body(render("scope", &req, &body, SCOPE))
}

/// Behind the HTTP mode: the response's own headers decide.
async fn http_page(req: HttpRequest, body: web::Bytes) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("cache-control", "max-age=60"))
        .insert_header(("vary", "Accept-Language"))
        .body(render("http", &req, &body, HTTP))
}

async fn posted(req: HttpRequest, body: web::Bytes) -> HttpResponse {
    HttpResponse::Ok().body(render("post", &req, &body, Reads::default()))
}

async fn node(
    cache: Cache,
) -> impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl actix_web::body::MessageBody>,
    Error = actix_web::Error,
> {
    test::init_service(
        App::new()
            .service(
                web::scope("/p")
                    .wrap(CacheMiddleware::new(cache.clone()))
                    .service(me_page)
                    .service(profile_page)
                    .service(lang_page)
                    .route("/{tail:.*}", web::post().to(posted)),
            )
            .service(
                web::scope("/s")
                    .wrap(CacheMiddleware::new(cache.clone()).default_ttl(Duration::from_secs(60)))
                    .route("/page", web::get().to(scope_page))
                    .route("/{tail:.*}", web::post().to(posted)),
            )
            .service(
                web::scope("/h")
                    .wrap(CacheMiddleware::new(cache).http_semantics())
                    .default_service(web::to(http_page)),
            ),
    )
    .await
}

/// One simulated user: their marker is in everything that is theirs.
struct User {
    marker: String,
}

impl User {
    fn token(&self) -> String {
        format!("Bearer tok.{}", self.marker)
    }
    fn sid(&self) -> String {
        format!("sess.{}", self.marker)
    }
    fn host(&self) -> String {
        format!("{}.evil.example", self.marker)
    }
}

/// One request, as data, so that it can be sent and also rebuilt for the oracle.
#[derive(Debug, Clone)]
struct Req {
    user: usize,
    method: Method,
    target: String,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: Option<Vec<u8>>,
}

impl Req {
    fn build(&self) -> test::TestRequest {
        let mut req = test::TestRequest::default()
            .method(self.method.clone())
            .uri(&self.target);
        for (name, value) in &self.headers {
            let value = HeaderValue::from_bytes(value).unwrap_or_else(|e| panic!("{e}"));
            req = req.append_header((*name, value));
        }
        if let Some(body) = &self.body {
            req = req.set_payload(body.clone());
        }
        req
    }

    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

const PATHS: &[&str] = &["/p/me", "/p/profile", "/p/lang", "/s/page", "/h/page"];
const QUERIES: &[&str] = &[
    "",
    "?a=1",
    "?a=1&b=2",
    "?b=2&a=1",
    "?a=1&%61=2",
    "?%61=2&a=1",
    "?a=1&a=2",
    "?a=2&a=1",
    "?a+b=1&a%20b=2",
    "?a%20b=2&a+b=1",
];
/// Names `web::Query` decodes alike (lossily, to U+FFFD) in both orders: see `poison.rs`.
const LOSSY_QUERIES: &[&str] = &["?%FF=1&%FE=2", "?%FE=2&%FF=1"];
const LANGUAGES: &[&str] = &[
    "en",
    "fr",
    "en, fr",
    "fr, en",
    "en,fr",
    "fr;q=0.9, en",
    "en, fr;q=0.9",
    "de;q=0.5, fr;q=0.8",
    "EN, fr",
];
const JUNK_NAMES: &[&str] = &["_ga", "theme", "lang", "sid_legacy", "csrftoken"];
const JUNK_VALUES: &[&str] = &["1", "dark", "GA1.2.3", "x", "fr"];

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.gen_range(0..items.len())]
}

/// A random request by `user`.
fn random_request(rng: &mut StdRng, users: &[User], user: usize) -> Req {
    let me = &users[user];
    let roll: f64 = rng.gen();
    let method = if roll < 0.08 {
        Method::POST
    } else if roll < 0.15 {
        Method::HEAD
    } else {
        Method::GET
    };
    let mut target = pick(rng, PATHS).to_string();
    if rng.gen_bool(0.03) {
        target.push_str(&format!("?q={}", me.marker));
    } else if rng.gen_bool(0.05) {
        target.push_str(pick::<&str>(rng, LOSSY_QUERIES));
    } else {
        target.push_str(pick::<&str>(rng, QUERIES));
    }
    let mut headers: Vec<(&'static str, Vec<u8>)> = vec![("host", HOST.into())];
    if rng.gen_bool(0.3) {
        headers.push(("authorization", me.token().into_bytes()));
    }
    // Forwarded headers: the user's own marked host, or shared values.
    match rng.gen_range(0..20) {
        0 => headers.push(("x-forwarded-host", me.host().into_bytes())),
        1 => headers.push(("x-forwarded-proto", b"https".to_vec())),
        2 => headers.push((
            "forwarded",
            format!("host={};proto=https", me.host()).into_bytes(),
        )),
        3 => headers.push(("forwarded", b"proto=https".to_vec())),
        4 => headers.push(("x-forwarded-host", b"static.example".to_vec())),
        _ => {}
    }
    if rng.gen_bool(0.8) {
        headers.push(("accept-language", pick(rng, LANGUAGES).as_bytes().to_vec()));
    }
    // Cookies: the session, junk, duplicates of `sid`, other users' cookie names.
    let mut pairs: Vec<String> = Vec::new();
    if rng.gen_bool(0.5) {
        pairs.push(format!("sid={}", me.sid()));
    }
    for _ in 0..rng.gen_range(0..3) {
        let name = match rng.gen_range(0..4) {
            0 => format!("pref{}", rng.gen_range(0..USERS)),
            _ => pick(rng, JUNK_NAMES).to_string(),
        };
        let at = rng.gen_range(0..=pairs.len());
        pairs.insert(at, format!("{name}={}", pick(rng, JUNK_VALUES)));
    }
    if rng.gen_bool(0.05) {
        let at = rng.gen_range(0..=pairs.len());
        pairs.insert(at, format!("sid=junk{}", rng.gen_range(0..3)));
    }
    if rng.gen_bool(0.03) {
        // Spellings actix reads as `sid`: a space before `=`, an escaped name.
        let spelled = match rng.gen_range(0..2) {
            0 => format!("sid ={}", me.sid()),
            _ => format!("s%69d={}", me.sid()),
        };
        pairs.push(spelled);
    }
    if !pairs.is_empty() {
        if rng.gen_bool(0.2) && pairs.len() > 1 {
            for pair in pairs {
                headers.push(("cookie", pair.into_bytes()));
            }
        } else {
            headers.push(("cookie", pairs.join("; ").into_bytes()));
        }
    }
    let body = if method == Method::POST || rng.gen_bool(0.04) {
        Some(format!("body.{}", me.marker).into_bytes())
    } else {
        None
    };
    Req {
        user,
        method,
        target,
        headers,
        body,
    }
}

/// What the handler would answer to `req`, or `None` where no answer is defined (HEAD misses
/// on GET routes, 404s).
fn oracle(req: &Req) -> (String, Reads) {
    let http_req = req.build().to_http_request();
    let body = req.body.clone().unwrap_or_default();
    let (label, reads) = if req.method == Method::POST && !req.path().starts_with("/h/") {
        ("post", Reads::default())
    } else {
        match req.path() {
            "/p/me" => ("me", ME),
            "/p/profile" => ("profile", PROFILE),
            "/p/lang" => ("lang", LANG),
            "/s/page" => ("scope", SCOPE),
            _ => ("http", HTTP),
        }
    };
    (render(label, &http_req, &body, reads), reads)
}

#[derive(Default)]
struct Tally {
    sent: usize,
    by_x_cache: BTreeMap<String, usize>,
}

/// Sends `count` random requests spread over `nodes` and checks every answer.
async fn attack<S, B>(nodes: &[S], count: usize, seed: u64) -> Tally
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: actix_web::body::MessageBody,
{
    let mut rng = StdRng::seed_from_u64(seed);
    let users: Vec<User> = (0..USERS)
        .map(|u| User {
            marker: format!("mk{u}q{:08x}z", rng.gen::<u32>()),
        })
        .collect();
    let mut tally = Tally::default();
    for i in 0..count {
        let user = rng.gen_range(0..USERS);
        let req = random_request(&mut rng, &users, user);
        let node = &nodes[rng.gen_range(0..nodes.len())];
        let res = node
            .call(req.build().to_request())
            .await
            .unwrap_or_else(|e| panic!("seed {seed}, request {i}: service error: {e}"));
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let x_cache = cache_actix_tests::x_cache_of(&headers);
        let body = test::read_body(res).await;
        let text = String::from_utf8_lossy(&body).into_owned();
        let context = || {
            format!(
                "seed {seed}, request {i} by user {} ({x_cache}, {status}): {} {} {:?} \
                 body {:?}\n--- answer ---\n{text}",
                req.user,
                req.method,
                req.target,
                req.headers
                    .iter()
                    .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v)))
                    .collect::<Vec<_>>(),
                req.body
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned()),
            )
        };
        for (other, them) in users.iter().enumerate().filter(|(u, _)| *u != user) {
            let leaked = text.contains(&them.marker)
                || headers
                    .iter()
                    .map(|(_, v)| v)
                    .any(|v| String::from_utf8_lossy(v.as_bytes()).contains(&them.marker));
            assert!(!leaked, "user {other}'s marker leaked to {}", context());
        }
        let defined = status == 200 && (req.method != Method::HEAD || x_cache == "HIT");
        if defined {
            let (expected, reads) = oracle(&req);
            if reads.raw_query {
                // The HTTP mode may answer a cookie request from a cookie-less entry (RFC 9111),
                // and normalises Accept-Language the RFC's way (sorted), by design.
                for (got, want) in text.lines().zip(expected.lines()) {
                    let lax = (want.starts_with("sid=") && got == "sid=none")
                        || (want.starts_with("lang=") && got.starts_with("lang="));
                    assert!(
                        got == want || (lax && x_cache == "HIT"),
                        "expected line {want:?}, got {got:?} for {}",
                        context()
                    );
                }
                assert_eq!(
                    text.lines().count(),
                    expected.lines().count(),
                    "{}",
                    context()
                );
            } else {
                assert!(text == expected, "expected\n{expected}for {}", context());
            }
        }
        tally.sent += 1;
        *tally.by_x_cache.entry(x_cache).or_default() += 1;
    }
    tally
}

fn seed() -> u64 {
    std::env::var("ATTACKER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        })
}

fn report(label: &str, seed: u64, tally: &Tally, elapsed: Duration) {
    let hits = tally.by_x_cache.get("HIT").copied().unwrap_or(0);
    println!(
        "{label}: seed {seed}, {} requests in {elapsed:?}, {:?}",
        tally.sent, tally.by_x_cache
    );
    assert!(
        hits * 5 > tally.sent,
        "{label} (seed {seed}): only {hits} of {} answers were HITs; the cache must be working \
         for this test to mean anything",
        tally.sent
    );
}

#[actix_web::test]
async fn a_randomized_attacker_never_sees_another_users_data_in_memory() {
    let seed = seed();
    println!("ATTACKER_SEED={seed}");
    let count = std::env::var("ATTACKER_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120_000);
    let nodes = [node(Cache::memory()).await];
    let started = Instant::now();
    let tally = attack(&nodes, count, seed).await;
    report("memory", seed, &tally, started.elapsed());
}

#[actix_web::test]
async fn a_randomized_attacker_never_sees_another_users_data_tiered_over_redis() {
    let seed = seed();
    println!("ATTACKER_SEED={seed}");
    let redis = RedisServer::start();
    let tiered = || {
        let store = RedisStore::from_url(&redis.url()).unwrap_or_else(|e| panic!("{e}"));
        Cache::builder()
            .l1(MemoryStore::new())
            .l2(store)
            .namespace("attacker")
            .build()
    };
    let (a, b) = (tiered(), tiered());
    for cache in [&a, &b] {
        cache_actix_tests::redis::wait_in_sync(cache).await;
    }
    // Two nodes sharing one Redis, each request to either: fills on one answer the other.
    let nodes = [node(a).await, node(b).await];
    let started = Instant::now();
    let tally = attack(&nodes, 40_000, seed).await;
    report("tiered", seed, &tally, started.elapsed());
}

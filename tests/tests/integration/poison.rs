//! Cache poisoning, one rule at a time, as an attacker and then a victim see it: the attacker's
//! request comes first, the victim's plain request second, and the assertion is on what the
//! victim gets. Next to each, a control request that must be a `HIT`, so that a cache that
//! stores nothing cannot pass. Handlers echo what they read (host, scheme, body, cookies,
//! languages, query), so that a poisoned entry shows in the victim's body.
//!
//! Rules (numbered as in the issue): 1 revalidation re-checks storability; 2 forwarded host and
//! scheme are keyed; 3 requests with a body bypass; 4 cookies; 5 keys agree with the app;
//! 6 key hashes are secret and URL purges are per URL; 7 the admin scope refuses before it
//! parses; 8 stampedes stay coalesced.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::AcceptLanguage;
use actix_web::http::Method;
use actix_web::{dev::Service, get, test, web, App, HttpRequest, HttpResponse, Responder};
use cache_actix::{
    admin, cached, Cache, CacheMiddleware, CachePolicy, Cached, HttpOptions, MemoryStore,
    RedisStore,
};
use cache_actix_tests::{redis::RedisServer, send, Reply};

/// The host every request names (the key and the echoes use it).
const HOST: &str = "shop.example";

fn get(path: &str) -> test::TestRequest {
    test::TestRequest::get()
        .uri(path)
        .insert_header(("host", HOST))
}

fn head(path: &str) -> test::TestRequest {
    get(path).method(Method::HEAD)
}

fn policy() -> CachePolicy {
    CachePolicy::new(Duration::from_secs(60))
}

/// Sends an already built request (for requests `TestRequest` cannot spell, such as a chunked
/// body without `Content-Length`).
async fn send_request<S, B>(app: &S, req: actix_http::Request) -> Reply
where
    S: Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let res = app
        .call(req)
        .await
        .unwrap_or_else(|e| panic!("service error: {e}"));
    let status = res.status();
    let headers = res.headers().clone();
    let body = test::read_body(res).await;
    Reply {
        status,
        headers,
        body,
    }
}

/// A cookie as `HttpRequest::cookie` reads it (with actix-web's default `cookies` feature).
fn cookie(req: &HttpRequest, name: &str) -> Option<String> {
    cache_actix_tests::actix_cookie(req.headers(), name)
}

/// Asserts a bypass with `reason` as the `cache-status` detail (the form
/// `cache-actix; fwd=bypass; detail=<reason>` of every other bypass).
fn assert_bypass(reply: &Reply, reason: &str, context: &str) {
    assert_eq!(
        reply.x_cache(),
        "BYPASS",
        "{context}: expected a bypass ({reason}), body {:?}",
        reply.text()
    );
    assert!(
        reply
            .header("cache-status")
            .contains(&format!("fwd=bypass; detail={reason}")),
        "{context}: cache-status {:?} should name `{reason}`",
        reply.header("cache-status")
    );
}

fn set_cookies(reply: &Reply) -> Vec<String> {
    reply
        .headers
        .get_all("set-cookie")
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect()
}

/// An app in HTTP semantics mode (no policy: the response's own headers decide) around one
/// origin handler `respond(n, &req, body)`, `n` counting the requests that reached it.
macro_rules! http_mode {
    ($options:expr, $respond:expr) => {{
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let respond = $respond;
        let app = test::init_service(
            App::new()
                .wrap(CacheMiddleware::new(Cache::memory()).http_semantics_with($options))
                .default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                    let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                    let res: HttpResponse = respond(n, &req, body);
                    async move { res }
                })),
        )
        .await;
        (app, calls)
    }};
}

// ---------------------------------------------------------------------------------------------
// Rule 1: a revalidation re-checks storability.
// ---------------------------------------------------------------------------------------------

/// The origin of the revalidation tests: a stale-on-arrival page with a validator first, then
/// `on_304` as the answer to the conditional request, then fresh pages `page #n`.
fn revalidated_by(
    on_304: &'static [(&'static str, &'static str)],
) -> impl Fn(usize, &HttpRequest, web::Bytes) -> HttpResponse + Clone {
    move |n, req, _| match n {
        1 => HttpResponse::Ok()
            .insert_header(("cache-control", "max-age=0"))
            .insert_header(("etag", "\"v1\""))
            .body("page #1"),
        2 if req.headers().get("if-none-match").is_some() => {
            let mut res = HttpResponse::NotModified();
            res.insert_header(("etag", "\"v1\""));
            for (name, value) in on_304 {
                res.append_header((*name, *value));
            }
            res.finish()
        }
        n => HttpResponse::Ok()
            .insert_header(("cache-control", "max-age=60"))
            .body(format!("page #{n}")),
    }
}

#[actix_web::test]
async fn rule1_a_set_cookie_on_a_304_never_reaches_later_clients() {
    const ON_304: &[(&str, &str)] = &[
        ("cache-control", "max-age=60"),
        ("set-cookie", "sid=VICTIM; Path=/"),
    ];
    let (app, calls) = http_mode!(HttpOptions::default(), revalidated_by(ON_304));
    send(&app, get("/r")).await;
    // The attacker's request is the one whose revalidation the origin answers with a cookie.
    let trigger = send(&app, get("/r")).await;
    assert_eq!(
        (trigger.status.as_u16(), trigger.text().as_str()),
        (200, "page #1")
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the second request revalidated"
    );
    let victim = send(&app, get("/r")).await;
    assert!(
        set_cookies(&victim).is_empty() && !victim.text().contains("VICTIM"),
        "the 304's cookie was replayed to a later client: {:?} ({})",
        set_cookies(&victim),
        victim.x_cache()
    );
    let control = send(&app, get("/r")).await;
    assert_eq!(control.x_cache(), "HIT", "control: the page is cached");
    assert!(
        set_cookies(&control).is_empty(),
        "{:?}",
        set_cookies(&control)
    );
}

#[actix_web::test]
async fn rule1_store_set_cookie_lets_a_304_with_a_cookie_refresh_the_entry() {
    const ON_304: &[(&str, &str)] = &[
        ("cache-control", "max-age=60"),
        ("set-cookie", "theme=dark; Path=/"),
    ];
    let (app, calls) = http_mode!(
        HttpOptions::default().store_set_cookie(true),
        revalidated_by(ON_304)
    );
    send(&app, get("/r")).await;
    send(&app, get("/r")).await;
    let later = send(&app, get("/r")).await;
    assert_eq!(
        (later.x_cache(), later.text().as_str()),
        ("HIT", "page #1"),
        "with store_set_cookie the refreshed entry is stored"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[actix_web::test]
async fn rule1_a_304_that_says_private_or_no_store_stops_the_entry_being_reused() {
    const PRIVATE: &[(&str, &str)] = &[("cache-control", "private, max-age=60")];
    const NO_STORE: &[(&str, &str)] = &[("cache-control", "no-store, max-age=60")];
    for (name, on_304) in [("private", PRIVATE), ("no-store", NO_STORE)] {
        let (app, calls) = http_mode!(HttpOptions::default(), revalidated_by(on_304));
        send(&app, get("/r")).await;
        let trigger = send(&app, get("/r")).await;
        assert_eq!(trigger.status.as_u16(), 200, "{name}");
        assert_eq!(calls.load(Ordering::SeqCst), 2, "{name}: revalidated");
        let victim = send(&app, get("/r")).await;
        assert_eq!(
            (victim.text().as_str(), calls.load(Ordering::SeqCst)),
            ("page #3", 3),
            "{name}: a 304 saying `{name}` was stored and served ({})",
            victim.x_cache()
        );
        assert_ne!(victim.x_cache(), "HIT", "{name}");
        let control = send(&app, get("/r")).await;
        assert_eq!(
            (control.x_cache(), control.text().as_str()),
            ("HIT", "page #3"),
            "{name}: control"
        );
    }
}

#[actix_web::test]
async fn rule1_control_a_plain_304_refreshes_the_entry() {
    const ON_304: &[(&str, &str)] = &[("cache-control", "max-age=60"), ("x-version", "2")];
    let (app, calls) = http_mode!(HttpOptions::default(), revalidated_by(ON_304));
    send(&app, get("/r")).await;
    send(&app, get("/r")).await;
    let hit = send(&app, get("/r")).await;
    assert_eq!((hit.x_cache(), hit.text().as_str()), ("HIT", "page #1"));
    assert_eq!(hit.header("x-version"), "2");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------------------------------------
// Rule 2: the host and scheme the app sees (ConnectionInfo) are in the key.
// ---------------------------------------------------------------------------------------------

#[cached(ttl = 60)]
#[get("/link")]
async fn link(req: HttpRequest) -> impl Responder {
    let info = req.connection_info();
    format!("{}://{}/link", info.scheme(), info.host())
}

#[cached(ttl = 60)]
#[get("/canonical", name = "canonical")]
async fn canonical(req: HttpRequest) -> impl Responder {
    req.url_for_static("canonical")
        .map(|url| url.to_string())
        .unwrap_or_else(|e| format!("no url: {e}"))
}

#[actix_web::test]
async fn rule2_forwarded_host_and_scheme_never_reach_a_plain_client() {
    let attacks: &[&[(&str, &str)]] = &[
        &[("x-forwarded-host", "evil.example")],
        &[("x-forwarded-proto", "https")],
        &[("forwarded", "host=evil.example;proto=https")],
        &[("forwarded", "proto=https")],
        &[
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
        ],
    ];
    for path in ["/link", "/canonical"] {
        for attack in attacks {
            let app = test::init_service(
                App::new()
                    .wrap(CacheMiddleware::new(Cache::memory()))
                    .service(link)
                    .service(canonical),
            )
            .await;
            let mut req = get(path);
            for header in attack.iter() {
                req = req.insert_header(*header);
            }
            let attacker = send(&app, req).await;
            let poisoned = attacker.text();
            assert!(
                poisoned.contains("evil.example") || poisoned.starts_with("https:"),
                "{path} {attack:?}: the handler should see the forwarded value: {poisoned}"
            );
            let victim = send(&app, get(path)).await;
            let expected = format!("http://{HOST}{path}");
            assert_eq!(
                victim.text(),
                expected,
                "{path} {attack:?}: the victim got the attacker's {} page",
                victim.x_cache()
            );
            let control = send(&app, get(path)).await;
            assert_eq!(
                (control.x_cache(), control.text()),
                ("HIT", expected),
                "{path} {attack:?}: control"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rule 3: a GET or HEAD with a body is neither answered from the cache nor stored.
// ---------------------------------------------------------------------------------------------

#[cached(ttl = 60)]
#[get("/search")]
async fn search(q: web::Query<HashMap<String, String>>, body: web::Bytes) -> impl Responder {
    format!(
        "q={} body={}",
        q.get("q").map(String::as_str).unwrap_or(""),
        String::from_utf8_lossy(&body)
    )
}

async fn echo_body(body: web::Bytes) -> Cached<HttpResponse> {
    Cached::new(
        HttpResponse::Ok().body(format!("body={}", String::from_utf8_lossy(&body))),
        policy(),
    )
}

macro_rules! body_app {
    () => {
        test::init_service(
            App::new()
                .wrap(CacheMiddleware::new(Cache::memory()))
                .service(search)
                .route("/any", web::route().to(echo_body)),
        )
        .await
    };
}

#[actix_web::test]
async fn rule3_a_get_with_a_body_is_not_stored() {
    let app = body_app!();
    let attacker = send(&app, get("/search?q=1").set_payload("EVIL")).await;
    assert_bypass(&attacker, "request-body", "GET with Content-Length");
    assert!(
        attacker.text().contains("EVIL"),
        "the handler reads the body"
    );
    let victim = send(&app, get("/search?q=1")).await;
    assert_eq!(
        victim.text(),
        "q=1 body=",
        "the victim got the attacker's body ({})",
        victim.x_cache()
    );
    let control = send(&app, get("/search?q=1")).await;
    assert_eq!(
        (control.x_cache(), control.text().as_str()),
        ("HIT", "q=1 body=")
    );
}

#[actix_web::test]
async fn rule3_a_chunked_get_is_not_stored() {
    let app = body_app!();
    let mut req = get("/search?q=2").set_payload("EVIL").to_request();
    req.headers_mut().remove("content-length");
    req.headers_mut().insert(
        actix_web::http::header::TRANSFER_ENCODING,
        actix_web::http::header::HeaderValue::from_static("chunked"),
    );
    let attacker = send_request(&app, req).await;
    assert_bypass(
        &attacker,
        "request-body",
        "GET with Transfer-Encoding: chunked",
    );
    let victim = send(&app, get("/search?q=2")).await;
    assert_eq!(victim.text(), "q=2 body=", "{}", victim.x_cache());
    let control = send(&app, get("/search?q=2")).await;
    assert_eq!(control.x_cache(), "HIT");
}

#[actix_web::test]
async fn rule3_a_fresh_entry_is_not_served_to_a_get_or_head_with_a_body() {
    let app = body_app!();
    send(&app, get("/search?q=3")).await;
    assert_eq!(send(&app, get("/search?q=3")).await.x_cache(), "HIT");
    let with_body = send(&app, get("/search?q=3").set_payload("MINE")).await;
    assert_bypass(&with_body, "request-body", "GET with a body, entry stored");
    assert_eq!(
        with_body.text(),
        "q=3 body=MINE",
        "the handler answers a request with a body"
    );
    send(&app, get("/any")).await;
    let head_with_body = send(&app, head("/any").set_payload("EVIL")).await;
    assert_bypass(&head_with_body, "request-body", "HEAD with a body");
    let cold_head = send(&app, head("/any?cold").set_payload("EVIL")).await;
    assert_bypass(&cold_head, "request-body", "cold HEAD with a body");
    // Control: the stored entries are intact and still answer plain requests.
    let plain = send(&app, get("/search?q=3")).await;
    assert_eq!(
        (plain.x_cache(), plain.text().as_str()),
        ("HIT", "q=3 body=")
    );
    let plain = send(&app, get("/any")).await;
    assert_eq!((plain.x_cache(), plain.text().as_str()), ("HIT", "body="));
}

#[actix_web::test]
async fn rule3_content_length_zero_is_an_ordinary_get() {
    let app = body_app!();
    let empty = send(
        &app,
        get("/search?q=4").insert_header(("content-length", "0")),
    )
    .await;
    assert_ne!(
        empty.x_cache(),
        "BYPASS",
        "Content-Length: 0 carries no body"
    );
    let control = send(&app, get("/search?q=4")).await;
    assert_eq!(control.x_cache(), "HIT");
}

#[actix_web::test]
async fn rule3_http_mode_a_get_with_a_body_is_not_stored() {
    let (app, _calls) = http_mode!(
        HttpOptions::default(),
        |_n, _req: &HttpRequest, body: web::Bytes| {
            HttpResponse::Ok()
                .insert_header(("cache-control", "max-age=60"))
                .body(format!("body={}", String::from_utf8_lossy(&body)))
        }
    );
    let attacker = send(&app, get("/h").set_payload("EVIL")).await;
    assert_bypass(&attacker, "request-body", "HTTP mode, GET with a body");
    let victim = send(&app, get("/h")).await;
    assert_eq!(victim.text(), "body=", "{}", victim.x_cache());
    let control = send(&app, get("/h")).await;
    assert_eq!(
        (control.x_cache(), control.text().as_str()),
        ("HIT", "body=")
    );
    let with_body = send(&app, get("/h").set_payload("MINE")).await;
    assert_bypass(&with_body, "request-body", "HTTP mode, entry stored");
    assert_eq!(with_body.text(), "body=MINE");
}

// ---------------------------------------------------------------------------------------------
// Rule 4: cookies.
// ---------------------------------------------------------------------------------------------

async fn echo_sid(req: HttpRequest) -> HttpResponse {
    HttpResponse::Ok().body(format!(
        "sid={}",
        cookie(&req, "sid").unwrap_or_else(|| "none".into())
    ))
}

async fn public_page() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("cache-control", "public"))
        .body("the same for everyone")
}

#[actix_web::test]
async fn rule4_a_scope_rule_neither_stores_nor_serves_cookie_requests() {
    let app = test::init_service(
        App::new().service(
            web::scope("/s")
                .wrap(CacheMiddleware::new(Cache::memory()).default_ttl(Duration::from_secs(60)))
                .route("/page", web::get().to(echo_sid))
                .route("/public", web::get().to(public_page)),
        ),
    )
    .await;
    let attacker = send(
        &app,
        get("/s/page").insert_header(("cookie", "sid=ATTACKER")),
    )
    .await;
    assert_bypass(&attacker, "cookie", "scope rule, request with Cookie");
    assert_eq!(attacker.text(), "sid=ATTACKER");
    let victim = send(&app, get("/s/page")).await;
    assert_eq!(
        victim.text(),
        "sid=none",
        "the attacker's page was stored ({})",
        victim.x_cache()
    );
    let control = send(&app, get("/s/page")).await;
    assert_eq!(
        (control.x_cache(), control.text().as_str()),
        ("HIT", "sid=none")
    );
    // The shared entry exists now; a cookie-bearing request must not be answered from it.
    let bob = send(&app, get("/s/page").insert_header(("cookie", "sid=BOB"))).await;
    assert_bypass(
        &bob,
        "cookie",
        "scope rule, cookie request, shared entry stored",
    );
    assert_eq!(bob.text(), "sid=BOB");

    // An explicit `Cache-Control: public` from the handler is stored even for a cookie request.
    let first = send(
        &app,
        get("/s/public").insert_header(("cookie", "sid=ALICE")),
    )
    .await;
    assert_eq!(
        first.x_cache(),
        "MISS",
        "public is stored for a cookie request"
    );
    let plain = send(&app, get("/s/public")).await;
    assert_eq!(
        (plain.x_cache(), plain.text().as_str()),
        ("HIT", "the same for everyone")
    );
}

#[actix_web::test]
async fn rule4_a_default_policy_varied_on_a_cookie_keys_on_its_value_only() {
    let app = test::init_service(
        App::new().service(
            web::scope("/s")
                .wrap(
                    CacheMiddleware::new(Cache::memory())
                        .default_policy(policy().vary_cookie("sid")),
                )
                .route("/page", web::get().to(echo_sid)),
        ),
    )
    .await;
    let with = |cookies: &str| get("/s/page").insert_header(("cookie", cookies.to_string()));
    // Attackers first: a duplicate `sid` (the app reads the first one) in one line and in two.
    let dup = send(&app, with("sid=EVIL; sid=alice")).await;
    assert_eq!(dup.text(), "sid=EVIL", "the app reads the first sid");
    let lines = send(
        &app,
        get("/s/page")
            .append_header(("cookie", "sid=EVIL2"))
            .append_header(("cookie", "sid=alice")),
    )
    .await;
    assert_eq!(lines.text(), "sid=EVIL2");

    let alice = send(&app, with("sid=alice")).await;
    assert_eq!(
        alice.text(),
        "sid=alice",
        "alice got a page keyed on another occurrence of sid ({})",
        alice.x_cache()
    );
    let bob = send(&app, with("sid=bob")).await;
    assert_eq!(bob.text(), "sid=bob", "{}", bob.x_cache());
    let alice_ga = send(&app, with("_ga=GA1.2.345; sid=alice")).await;
    assert_eq!(
        (alice_ga.x_cache(), alice_ga.text().as_str()),
        ("HIT", "sid=alice"),
        "another cookie does not split alice's entry"
    );
    let bob_again = send(&app, with("sid=bob; theme=dark")).await;
    assert_eq!(
        (bob_again.x_cache(), bob_again.text().as_str()),
        ("HIT", "sid=bob")
    );
    let anonymous = send(&app, get("/s/page")).await;
    assert_eq!(anonymous.text(), "sid=none", "{}", anonymous.x_cache());
    let anonymous = send(&app, with("_ga=1")).await;
    assert_eq!(
        (anonymous.x_cache(), anonymous.text().as_str()),
        ("HIT", "sid=none")
    );
}

#[cached(ttl = 60, vary_cookie = "sid")]
#[get("/me")]
async fn me_by_cookie(req: HttpRequest) -> impl Responder {
    format!(
        "sid={}",
        cookie(&req, "sid").unwrap_or_else(|| "none".into())
    )
}

#[cached(ttl = 60, vary_cookie = ["sid", "lang"])]
#[get("/prefs")]
async fn prefs_by_cookies(req: HttpRequest) -> impl Responder {
    format!(
        "sid={} lang={}",
        cookie(&req, "sid").unwrap_or_else(|| "none".into()),
        cookie(&req, "lang").unwrap_or_else(|| "none".into())
    )
}

async fn me_by_policy(req: HttpRequest) -> Cached<HttpResponse> {
    let sid = cookie(&req, "sid").unwrap_or_else(|| "none".into());
    Cached::new(
        HttpResponse::Ok().body(format!("sid={sid}")),
        policy().vary_cookie("sid"),
    )
}

#[actix_web::test]
async fn rule4_vary_cookie_in_the_attribute_and_the_policy_keys_on_one_cookie() {
    let app = test::init_service(
        App::new()
            .wrap(CacheMiddleware::new(Cache::memory()))
            .service(me_by_cookie)
            .service(prefs_by_cookies)
            .route("/me-policy", web::get().to(me_by_policy)),
    )
    .await;
    for path in ["/me", "/me-policy"] {
        let with = |cookies: &str| get(path).insert_header(("cookie", cookies.to_string()));
        send(&app, with("sid=EVIL; sid=alice")).await;
        let alice = send(&app, with("sid=alice")).await;
        assert_eq!(alice.text(), "sid=alice", "{path} ({})", alice.x_cache());
        let bob = send(&app, with("sid=bob")).await;
        assert_eq!(bob.text(), "sid=bob", "{path} ({})", bob.x_cache());
        let again = send(&app, with("lang=fr; sid=alice; _ga=x")).await;
        assert_eq!(
            (again.x_cache(), again.text().as_str()),
            ("HIT", "sid=alice"),
            "{path}: control"
        );
        let anonymous = send(&app, get(path)).await;
        assert_eq!(
            anonymous.text(),
            "sid=none",
            "{path} ({})",
            anonymous.x_cache()
        );
    }
    let with = |cookies: &str| get("/prefs").insert_header(("cookie", cookies.to_string()));
    // `lang` is no secret: an attacker can aim a duplicate at every French-speaking user.
    let attacker = send(&app, with("sid=alice; lang=EVIL; lang=fr")).await;
    assert_eq!(attacker.text(), "sid=alice lang=EVIL");
    let fr = send(&app, with("sid=alice; lang=fr")).await;
    assert_eq!(fr.text(), "sid=alice lang=fr", "{}", fr.x_cache());
    let en = send(&app, with("sid=alice; lang=en")).await;
    assert_eq!(en.text(), "sid=alice lang=en", "{}", en.x_cache());
    let other_sid = send(&app, with("sid=bob; lang=fr")).await;
    assert_eq!(
        other_sid.text(),
        "sid=bob lang=fr",
        "{}",
        other_sid.x_cache()
    );
    let again = send(&app, with("lang=fr; _ga=1; sid=alice")).await;
    assert_eq!(
        (again.x_cache(), again.text().as_str()),
        ("HIT", "sid=alice lang=fr"),
        "control"
    );
}

#[actix_web::test]
async fn rule4_vary_cookie_reads_the_cookie_as_actix_does() {
    // Spellings under which actix's `HttpRequest::cookie("sid")` finds `sid=EVIL` (it trims
    // names, drops quotes, percent-decodes) while a byte-wise reading finds no `sid` at all:
    // the page made for the attacker's session would then be stored as the page for
    // requests without a session.
    let attacks: &[&[&[u8]]] = &[
        &[b"sid =EVIL"],
        &[b"sid\t=EVIL"],
        &[b"s%69d=EVIL"],
        &[b"sid\xc2\xa0=EVIL"],
        &[b"\xc2\xa0sid=EVIL"],
    ];
    for path in ["/me", "/me-policy"] {
        for attack in attacks {
            let app = test::init_service(
                App::new()
                    .wrap(CacheMiddleware::new(Cache::memory()))
                    .service(me_by_cookie)
                    .route("/me-policy", web::get().to(me_by_policy)),
            )
            .await;
            let mut req = get(path).to_request();
            for line in attack.iter() {
                req.headers_mut().append(
                    actix_web::http::header::COOKIE,
                    actix_web::http::header::HeaderValue::from_bytes(line)
                        .unwrap_or_else(|e| panic!("{e}")),
                );
            }
            let spelled = String::from_utf8_lossy(attack[0]).into_owned();
            let attacker = send_request(&app, req).await;
            assert_eq!(
                attacker.text(),
                "sid=EVIL",
                "{path} {spelled:?}: actix reads the cookie"
            );
            let victim = send(&app, get(path)).await;
            assert_eq!(
                victim.text(),
                "sid=none",
                "{path} {spelled:?}: the attacker's session page was served to a client \
                 without a session ({})",
                victim.x_cache()
            );
            let junk = send(&app, get(path).insert_header(("cookie", "_ga=1"))).await;
            assert_eq!(
                junk.text(),
                "sid=none",
                "{path} {spelled:?} ({})",
                junk.x_cache()
            );
            assert_eq!(
                send(&app, get(path)).await.x_cache(),
                "HIT",
                "{path} {spelled:?}: control"
            );
        }
    }
    // A `Cookie` line that is not UTF-8 makes actix read no cookie at all, so a page made for
    // "no lang" must not be stored as the page of `lang=fr`.
    let app = test::init_service(
        App::new()
            .wrap(CacheMiddleware::new(Cache::memory()))
            .service(prefs_by_cookies),
    )
    .await;
    let mut req = get("/prefs").to_request();
    for line in [&b"lang=fr"[..], b"x=\xff"] {
        req.headers_mut().append(
            actix_web::http::header::COOKIE,
            actix_web::http::header::HeaderValue::from_bytes(line)
                .unwrap_or_else(|e| panic!("{e}")),
        );
    }
    let attacker = send_request(&app, req).await;
    assert_eq!(attacker.text(), "sid=none lang=none");
    let fr = send(&app, get("/prefs").insert_header(("cookie", "lang=fr"))).await;
    assert_eq!(
        fr.text(),
        "sid=none lang=fr",
        "a French user got the page of a request actix read without cookies ({})",
        fr.x_cache()
    );
    let fr = send(&app, get("/prefs").insert_header(("cookie", "lang=fr"))).await;
    assert_eq!(fr.x_cache(), "HIT", "control");
}

fn http_cookie_origin(_n: usize, req: &HttpRequest, _body: web::Bytes) -> HttpResponse {
    let sid = cookie(req, "sid").unwrap_or_else(|| "none".into());
    let mut res = HttpResponse::Ok();
    match req.path() {
        "/vary" => {
            res.insert_header(("cache-control", "max-age=60"))
                .insert_header(("vary", "Cookie"));
        }
        "/public" => {
            res.insert_header(("cache-control", "public, max-age=60"));
        }
        _ => {
            res.insert_header(("cache-control", "max-age=60"));
        }
    }
    res.body(format!("sid={sid}"))
}

#[actix_web::test]
async fn rule4_http_mode_a_cookie_request_is_stored_only_with_vary_cookie_or_public() {
    let (app, _calls) = http_mode!(HttpOptions::default(), http_cookie_origin);
    let attacker = send(&app, get("/echo").insert_header(("cookie", "sid=ATTACKER"))).await;
    assert_eq!(attacker.text(), "sid=ATTACKER");
    let victim = send(&app, get("/echo")).await;
    assert_eq!(
        victim.text(),
        "sid=none",
        "the response to a cookie request was stored ({})",
        victim.x_cache()
    );
    let control = send(&app, get("/echo")).await;
    assert_eq!(
        (control.x_cache(), control.text().as_str()),
        ("HIT", "sid=none")
    );

    let with = |path: &str, cookies: &str| get(path).insert_header(("cookie", cookies.to_string()));
    let alice = send(&app, with("/vary", "sid=alice")).await;
    assert_eq!(alice.text(), "sid=alice");
    let bob = send(&app, with("/vary", "sid=bob")).await;
    assert_eq!(bob.text(), "sid=bob", "Vary: Cookie separates users");
    let alice = send(&app, with("/vary", "sid=alice")).await;
    assert_eq!(
        (alice.x_cache(), alice.text().as_str()),
        ("HIT", "sid=alice"),
        "Vary: Cookie is stored"
    );

    send(&app, with("/public", "sid=carol")).await;
    let plain = send(&app, get("/public")).await;
    assert_eq!(
        plain.x_cache(),
        "HIT",
        "Cache-Control: public is stored for a cookie request"
    );
}

#[actix_web::test]
async fn rule4_http_mode_a_cookieless_entry_may_answer_a_cookie_request() {
    // RFC 9111 lets it (the conformance suite's "other cookie" test): the stored response was
    // made without any cookie, so it holds nothing of anyone's.
    let (app, _calls) = http_mode!(HttpOptions::default(), http_cookie_origin);
    send(&app, get("/echo")).await;
    let with_cookie = send(&app, get("/echo").insert_header(("cookie", "other=1"))).await;
    assert_eq!(
        (with_cookie.x_cache(), with_cookie.text().as_str()),
        ("HIT", "sid=none")
    );
}

// ---------------------------------------------------------------------------------------------
// Rule 5: keys agree with what the app reads.
// ---------------------------------------------------------------------------------------------

#[cached(ttl = 60, vary = "Accept-Language")]
#[get("/lang")]
async fn language(lang: web::Header<AcceptLanguage>) -> impl Responder {
    format!(
        "lang={}",
        lang.preference().to_string().to_ascii_lowercase()
    )
}

/// Requests in order, each with the answer it must get; `hit` where the answer must come from
/// the cache (the controls).
async fn assert_languages<S, B>(app: &S, path: &str, context: &str)
where
    S: Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let cases = [
        ("fr, en", "lang=fr", None),
        ("en, fr", "lang=en", None),
        ("en,fr", "lang=en", Some("HIT")),
        ("EN, fr", "lang=en", None),
        ("fr;q=0.9, en", "lang=en", None),
        ("en, fr;q=0.9", "lang=en", None),
        ("de;q=0.5, fr;q=0.8", "lang=fr", None),
        ("fr;q=0.8, de;q=0.5", "lang=fr", None),
    ];
    for (asked, expected, x_cache) in cases {
        let r = send(app, get(path).insert_header(("accept-language", asked))).await;
        assert_eq!(
            r.text(),
            expected,
            "{context}: Accept-Language {asked:?} got another ranking's page ({})",
            r.x_cache()
        );
        if let Some(x_cache) = x_cache {
            assert_eq!(r.x_cache(), x_cache, "{context}: control {asked:?}");
        }
    }
}

#[actix_web::test]
async fn rule5_accept_language_order_is_part_of_the_key() {
    let app = test::init_service(
        App::new()
            .wrap(CacheMiddleware::new(Cache::memory()))
            .service(language),
    )
    .await;
    assert_languages(&app, "/lang", "policy mode").await;
}

#[cached(ttl = 60)]
#[get("/q")]
async fn query_echo(q: web::Query<HashMap<String, String>>) -> impl Responder {
    let sorted: BTreeMap<_, _> = q.into_inner().into_iter().collect();
    format!("{sorted:?}")
}

#[actix_web::test]
async fn rule5_query_keys_follow_decoded_names_and_keep_repeats_in_order() {
    let app = test::init_service(
        App::new()
            .wrap(CacheMiddleware::new(Cache::memory()))
            .service(query_echo),
    )
    .await;
    let attacker = send(&app, get("/q?a=1&%61=2")).await;
    assert_eq!(
        attacker.text(),
        r#"{"a": "2"}"#,
        "web::Query keeps the last a"
    );
    let victim = send(&app, get("/q?%61=2&a=1")).await;
    assert_eq!(
        victim.text(),
        r#"{"a": "1"}"#,
        "the victim got the other order's page ({})",
        victim.x_cache()
    );
    let attacker = send(&app, get("/q?x=1&%78=EVIL&y=2")).await;
    assert_eq!(attacker.text(), r#"{"x": "EVIL", "y": "2"}"#);
    let victim = send(&app, get("/q?%78=EVIL&y=2&x=1")).await;
    assert_eq!(
        victim.text(),
        r#"{"x": "1", "y": "2"}"#,
        "({})",
        victim.x_cache()
    );
    // Control: distinct names in another order mean the same to web::Query.
    let first = send(&app, get("/q?b=2&a=1")).await;
    assert_eq!(first.text(), r#"{"a": "1", "b": "2"}"#);
    let second = send(&app, get("/q?a=1&b=2")).await;
    assert_eq!(
        (second.x_cache(), second.text().as_str()),
        ("HIT", r#"{"a": "1", "b": "2"}"#)
    );
}

#[actix_web::test]
async fn rule5_query_names_actix_decodes_alike_keep_their_order() {
    // `web::Query` decodes names lossily: `%FF` and `%FE` both become U+FFFD, so these two
    // queries set one parameter twice, in opposite orders (the last one wins).
    let app = test::init_service(
        App::new()
            .wrap(CacheMiddleware::new(Cache::memory()))
            .service(query_echo),
    )
    .await;
    for (first, second) in [
        ("/q?%FF=EVIL&%FE=1", "/q?%FE=1&%FF=EVIL"),
        ("/q?%FF%FF=EVIL&%C0%80=1", "/q?%C0%80=1&%FF%FF=EVIL"),
    ] {
        let attacker = send(&app, get(first)).await;
        assert!(
            attacker.text().contains("\"1\""),
            "{first}: {}",
            attacker.text()
        );
        let victim = send(&app, get(second)).await;
        assert!(
            victim.text().contains("EVIL"),
            "{second}: got {} ({}), which web::Query does not read from it",
            victim.text(),
            victim.x_cache()
        );
        assert_eq!(send(&app, get(second)).await.x_cache(), "HIT", "control");
    }
}

#[actix_web::test]
async fn rule5_http_mode_keys_the_query_exactly_as_sent() {
    let (app, _calls) = http_mode!(
        HttpOptions::default(),
        |_n, req: &HttpRequest, _body: web::Bytes| {
            HttpResponse::Ok()
                .insert_header(("cache-control", "max-age=60"))
                .body(format!("query={}", req.query_string()))
        }
    );
    let attacker = send(&app, get("/raw?b=2&a=1")).await;
    assert_eq!(attacker.text(), "query=b=2&a=1");
    let victim = send(&app, get("/raw?a=1&b=2")).await;
    assert_eq!(
        victim.text(),
        "query=a=1&b=2",
        "an origin may read parameter order ({})",
        victim.x_cache()
    );
    let victim = send(&app, get("/raw?%61=1&b=2")).await;
    assert_eq!(victim.text(), "query=%61=1&b=2", "({})", victim.x_cache());
    let control = send(&app, get("/raw?b=2&a=1")).await;
    assert_eq!(
        (control.x_cache(), control.text().as_str()),
        ("HIT", "query=b=2&a=1")
    );
}

// ---------------------------------------------------------------------------------------------
// Rule 6: key hashes are seeded with a secret; a URL purge drops that URL only.
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn rule6_memory_caches_seed_their_key_hashes_with_a_secret_of_their_own() {
    let key = |c: &Cache| c.primary_key(HOST.as_bytes(), b"/p", b"a=1").hash();
    let (a, b) = (Cache::memory(), Cache::memory());
    assert_ne!(
        key(&a),
        key(&b),
        "two processes' memory caches must not agree on key hashes"
    );
    assert_eq!(key(&a), key(&a), "stable within a cache");
    let s1 = Cache::builder().key_secret("shared secret").build();
    let s2 = Cache::builder().key_secret("shared secret").build();
    let other = Cache::builder().key_secret("other secret").build();
    assert_eq!(key(&s1), key(&s2), "one explicit secret, one hash");
    assert_ne!(key(&s1), key(&other));
    assert_ne!(key(&s1), key(&a));
}

#[actix_web::test]
async fn rule6_tiered_nodes_of_one_namespace_agree_on_keys_and_share_entries() {
    let redis = RedisServer::start();
    let node = |namespace: &str| {
        let store = RedisStore::from_url(&redis.url()).unwrap_or_else(|e| panic!("{e}"));
        Cache::builder()
            .l1(MemoryStore::new())
            .l2(store)
            .namespace(namespace)
            .build()
    };
    let (a, b) = (node("x"), node("x"));
    let key = |c: &Cache| c.primary_key(HOST.as_bytes(), b"/p", b"").hash();
    assert_eq!(key(&a), key(&b), "nodes sharing an L2 share hashes");
    for cache in [&a, &b] {
        cache_actix_tests::redis::wait_in_sync(cache).await;
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let app = |cache: Cache| {
        let calls = calls.clone();
        test::init_service(App::new().wrap(CacheMiddleware::new(cache)).route(
            "/p",
            web::get().to(move || {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                async move { Cached::new(HttpResponse::Ok().body(format!("v{n}")), policy()) }
            }),
        ))
    };
    let (app_a, app_b) = (app(a.clone()).await, app(b.clone()).await);
    assert_eq!(send(&app_a, get("/p")).await.x_cache(), "MISS");
    let on_b = send(&app_b, get("/p")).await;
    assert_eq!(
        (on_b.x_cache(), on_b.text().as_str()),
        ("HIT", "v1"),
        "node B finds node A's entry"
    );
    let secret = |ns: &str| {
        let store = RedisStore::from_url(&redis.url()).unwrap_or_else(|e| panic!("{e}"));
        Cache::builder()
            .l2(store)
            .namespace(ns)
            .key_secret("k8s-secret")
            .build()
    };
    assert_eq!(key(&secret("x")), key(&secret("x")));
    assert_ne!(
        key(&secret("x")),
        key(&a),
        "an explicit secret replaces the namespace-derived one"
    );
}

#[actix_web::test]
async fn rule6_a_post_to_one_url_never_drops_another_urls_entry() {
    const URLS: usize = 2000;
    let app = test::init_service(
        App::new()
            .wrap(CacheMiddleware::new(Cache::memory()))
            .route(
                "/b/{i}",
                web::get().to(|i: web::Path<usize>| async move {
                    Cached::new(HttpResponse::Ok().body(format!("b{i}")), policy())
                }),
            )
            .route(
                "/a/{i}",
                web::get().to(|i: web::Path<usize>| async move {
                    Cached::new(HttpResponse::Ok().body(format!("a{i}")), policy())
                }),
            )
            .route("/a/{i}", web::post().to(|| async { "done" })),
    )
    .await;
    // Attacker, and the control that purges work at all: a POST drops its own URL.
    send(&app, get("/a/0")).await;
    assert_eq!(send(&app, get("/a/0")).await.x_cache(), "HIT");
    let post = send(
        &app,
        test::TestRequest::post()
            .uri("/a/0")
            .insert_header(("host", HOST)),
    )
    .await;
    assert_eq!(post.status.as_u16(), 200);
    assert_eq!(
        send(&app, get("/a/0")).await.x_cache(),
        "MISS",
        "POST /a/0 drops /a/0"
    );

    for i in 0..URLS {
        send(&app, get(&format!("/b/{i}"))).await;
    }
    for i in 1..=URLS {
        let req = test::TestRequest::post()
            .uri(&format!("/a/{i}"))
            .insert_header(("host", HOST));
        assert_eq!(send(&app, req).await.status.as_u16(), 200);
    }
    // With 2^16 shared URL buckets, 2000 purges would hit about 60 of these 2000 entries.
    let dropped: Vec<usize> = {
        let mut dropped = Vec::new();
        for i in 0..URLS {
            let r = send(&app, get(&format!("/b/{i}"))).await;
            if r.x_cache() != "HIT" {
                dropped.push(i);
            }
        }
        dropped
    };
    assert!(
        dropped.is_empty(),
        "POSTs to /a/* dropped {} of {URLS} /b/* entries, e.g. {:?}",
        dropped.len(),
        &dropped[..dropped.len().min(10)]
    );
}

// ---------------------------------------------------------------------------------------------
// Rule 7: the admin scope answers 401 before it reads anything.
// ---------------------------------------------------------------------------------------------

const TOKEN: &str = "correct-horse-battery-staple";

macro_rules! admin_app {
    ($cache:expr) => {{
        let cache: Cache = $cache;
        test::init_service(
            App::new()
                .service(admin::scope("/_cache", cache.clone(), TOKEN))
                .service(web::scope("").wrap(CacheMiddleware::new(cache)).route(
                    "/p",
                    web::get().to(|| async {
                        Cached::new(HttpResponse::Ok().body("page"), policy().tag("pages"))
                    }),
                )),
        )
        .await
    }};
}

fn purge_url_body() -> String {
    format!(r#"{{"host": "{HOST}", "path": "/p"}}"#)
}

#[actix_web::test]
async fn rule7_an_unauthenticated_purge_with_a_malformed_body_is_a_401() {
    let app = admin_app!(Cache::memory());
    let bodies: &[(&str, Option<&str>)] = &[
        ("{not json", Some("application/json")),
        ("{\"host\": 1}", Some("application/json")),
        ("", Some("application/json")),
        ("{not json", None),
        ("{not json", Some("text/plain")),
    ];
    for auth in [None, Some("Bearer wrong"), Some("garbage")] {
        for (body, content_type) in bodies {
            let mut req = test::TestRequest::post()
                .uri("/_cache/purge/url")
                .set_payload(body.to_string());
            if let Some(ct) = content_type {
                req = req.insert_header(("content-type", *ct));
            }
            if let Some(auth) = auth {
                req = req.insert_header(("authorization", auth));
            }
            let r = send(&app, req).await;
            assert_eq!(
                r.status.as_u16(),
                401,
                "auth {auth:?}, body {body:?}, content-type {content_type:?}: {}",
                r.text()
            );
        }
    }
}

#[actix_web::test]
async fn rule7_every_wrong_token_is_a_401_and_the_right_one_purges() {
    let app = admin_app!(Cache::memory());
    send(&app, get("/p")).await;
    assert_eq!(send(&app, get("/p")).await.x_cache(), "HIT");
    let wrong = [
        String::new(),
        "Bearer ".into(),
        "Bearer".into(),
        "Bearer c".into(),
        format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]),
        format!("Bearer {}", &TOKEN[..8]),
        format!("Bearer {TOKEN}x"),
        format!("Bearer {TOKEN}{TOKEN}"),
        format!("Bearer {}", TOKEN.to_uppercase()),
        format!("Basic {TOKEN}"),
        TOKEN.to_string(),
        format!("Bearer {}", "x".repeat(4096)),
    ];
    let routes = [
        ("GET", "/_cache/stats"),
        ("POST", "/_cache/purge/tag/pages"),
        ("POST", "/_cache/purge/url"),
        ("POST", "/_cache/purge/all"),
    ];
    for auth in &wrong {
        for (method, path) in routes {
            let mut req = test::TestRequest::default()
                .method(Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET))
                .uri(path)
                .insert_header(("content-type", "application/json"))
                .set_payload(purge_url_body());
            if !auth.is_empty() {
                req = req.insert_header(("authorization", auth.as_str()));
            }
            let r = send(&app, req).await;
            assert_eq!(r.status.as_u16(), 401, "{method} {path} with {auth:.40?}");
        }
    }
    assert_eq!(
        send(&app, get("/p")).await.x_cache(),
        "HIT",
        "refused purges changed nothing"
    );
    let bearer = format!("Bearer {TOKEN}");
    let purge = send(
        &app,
        test::TestRequest::post()
            .uri("/_cache/purge/url")
            .insert_header(("authorization", bearer.as_str()))
            .insert_header(("content-type", "application/json"))
            .set_payload(purge_url_body()),
    )
    .await;
    assert_eq!(purge.status.as_u16(), 200, "{}", purge.text());
    assert_eq!(
        send(&app, get("/p")).await.x_cache(),
        "MISS",
        "the right token purged the URL"
    );
    assert_eq!(send(&app, get("/p")).await.x_cache(), "HIT");
    let purge = send(
        &app,
        test::TestRequest::post()
            .uri("/_cache/purge/tag/pages")
            .insert_header(("authorization", bearer.as_str())),
    )
    .await;
    assert_eq!(purge.status.as_u16(), 200);
    assert_eq!(send(&app, get("/p")).await.x_cache(), "MISS");
    let stats = send(
        &app,
        test::TestRequest::get()
            .uri("/_cache/stats")
            .insert_header(("authorization", bearer.as_str())),
    )
    .await;
    assert_eq!(stats.status.as_u16(), 200);
}

// ---------------------------------------------------------------------------------------------
// Rule 8: stampedes stay coalesced.
// ---------------------------------------------------------------------------------------------

/// A slow handler for every method, counting its runs and echoing `Authorization`.
fn slow_app_handler(
    runs: Arc<AtomicUsize>,
    sleep: Duration,
) -> impl Fn(HttpRequest) -> futures_util::future::LocalBoxFuture<'static, Cached<HttpResponse>> + Clone
{
    use futures_util::FutureExt;
    move |req: HttpRequest| {
        runs.fetch_add(1, Ordering::SeqCst);
        let auth = req
            .headers()
            .get("authorization")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        async move {
            actix_web::rt::time::sleep(sleep).await;
            Cached::new(
                HttpResponse::Ok().body(format!("expensive auth={auth}")),
                policy(),
            )
        }
        .boxed_local()
    }
}

#[actix_web::test]
async fn rule8_a_cold_stampede_led_by_a_head_or_an_authorized_request_runs_the_handler_once() {
    type Leader = (&'static str, fn() -> test::TestRequest);
    let leaders: [Leader; 2] = [
        ("HEAD", || head("/slow")),
        ("Authorization", || {
            get("/slow").insert_header(("authorization", "Bearer ATTACKER"))
        }),
    ];
    for (name, leader) in leaders {
        let runs = Arc::new(AtomicUsize::new(0));
        let app = test::init_service(
            App::new()
                .wrap(CacheMiddleware::new(Cache::memory()))
                .route(
                    "/slow",
                    web::route().to(slow_app_handler(runs.clone(), Duration::from_millis(200))),
                ),
        )
        .await;
        let requests = (0..64).map(|i| {
            let req = if i == 0 { leader() } else { get("/slow") };
            app.call(req.to_request())
        });
        let results = futures_util::future::join_all(requests).await;
        let mut bodies = Vec::new();
        for res in results.into_iter().skip(1) {
            let res = res.unwrap_or_else(|e| panic!("service error: {e}"));
            assert_eq!(res.status().as_u16(), 200, "{name}");
            bodies.push(test::read_body(res).await);
        }
        assert!(
            bodies.iter().all(|b| b == "expensive auth="),
            "{name}: a plain client got the leader's answer: {:?}",
            bodies.iter().find(|b| *b != "expensive auth=")
        );
        let ran = runs.load(Ordering::SeqCst);
        assert!(
            ran <= 3,
            "{name} first: 64 cold requests ran the handler {ran} times"
        );
        let control = send(&app, get("/slow")).await;
        assert_eq!(
            (control.x_cache(), control.text().as_str()),
            ("HIT", "expensive auth="),
            "{name}: control"
        );
    }
}

#[actix_web::test]
async fn rule8_waiters_past_the_lock_timeout_run_the_handler_as_a_counted_bypass() {
    let runs = Arc::new(AtomicUsize::new(0));
    let cache = Cache::memory();
    let app = test::init_service(
        App::new()
            .wrap(CacheMiddleware::new(cache.clone()).lock_timeout(Duration::from_millis(100)))
            .route(
                "/slow",
                web::get().to(slow_app_handler(runs.clone(), Duration::from_secs(1))),
            ),
    )
    .await;
    let started = Instant::now();
    let requests = (0..3).map(|_| app.call(get("/slow").to_request()));
    let results = futures_util::future::join_all(requests).await;
    let elapsed = started.elapsed();
    let mut outcomes = Vec::new();
    for res in results {
        let res = res.unwrap_or_else(|e| panic!("service error: {e}"));
        let status = res
            .headers()
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let x = cache_actix_tests::x_cache_of(res.headers());
        assert_eq!(test::read_body(res).await, "expensive auth=");
        outcomes.push((x, status));
    }
    let timed_out = outcomes
        .iter()
        .filter(|(x, s)| x == "BYPASS" && s.contains("fwd=bypass; detail=lock-timeout"))
        .count();
    assert!(
        timed_out >= 1,
        "waiters past a 100 ms lock timeout must bypass with `lock-timeout`: {outcomes:?}"
    );
    assert!(
        cache.stats().bypasses >= timed_out as u64,
        "stats count {} bypasses for {timed_out} lock timeouts",
        cache.stats().bypasses
    );
    assert!(
        elapsed < Duration::from_millis(2500),
        "waiters were held for {elapsed:?}"
    );
    let control = send(&app, get("/slow")).await;
    assert_eq!(
        control.x_cache(),
        "HIT",
        "control: the leader stored its fill"
    );
}

#[actix_web::test]
async fn rule8_http_mode_concurrent_revalidations_of_one_entry_are_coalesced() {
    let conditionals = Arc::new(AtomicUsize::new(0));
    let counted = conditionals.clone();
    let app = test::init_service(
        App::new()
            .wrap(CacheMiddleware::new(Cache::memory()).http_semantics())
            .default_service(web::to(move |req: HttpRequest| {
                let counted = counted.clone();
                async move {
                    if req.headers().contains_key("if-none-match") {
                        counted.fetch_add(1, Ordering::SeqCst);
                        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
                        HttpResponse::NotModified()
                            .insert_header(("cache-control", "max-age=60"))
                            .insert_header(("etag", "\"v1\""))
                            .finish()
                    } else {
                        HttpResponse::Ok()
                            .insert_header(("cache-control", "max-age=0"))
                            .insert_header(("etag", "\"v1\""))
                            .body("page")
                    }
                }
            })),
    )
    .await;
    send(&app, get("/stale")).await;
    let requests = (0..32).map(|_| app.call(get("/stale").to_request()));
    let results = futures_util::future::join_all(requests).await;
    for res in results {
        let res = res.unwrap_or_else(|e| panic!("service error: {e}"));
        assert_eq!(res.status().as_u16(), 200);
        assert_eq!(test::read_body(res).await, "page");
    }
    let sent = conditionals.load(Ordering::SeqCst);
    assert!(
        sent <= 3,
        "32 concurrent requests for one stale entry sent {sent} conditional requests"
    );
    assert_eq!(send(&app, get("/stale")).await.x_cache(), "HIT", "control");
}

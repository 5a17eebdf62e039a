//! Single-flight under requests that cannot share a fill: what the waiters do when their leader
//! could not give them an answer (a cookie under a scope rule, no policy at all), or is slower
//! than `lock_timeout`; and the HTTP mode's revalidations, which a client's own `no-store` or
//! cookie must neither turn into a purge nor serialise. Every test times a concurrent burst and
//! counts handler runs, which is what a user of a stampeded origin notices.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{dev::Service, http::Version, test, web, App, HttpRequest, HttpResponse};
use cache_actix::{Cache, CacheMiddleware, CachePolicy, Cached};
use cache_actix_tests::x_cache_of;

fn get(path: &str) -> test::TestRequest {
    test::TestRequest::get().uri(path)
}

async fn burst<S, B>(app: &S, n: usize, make: impl Fn() -> test::TestRequest) -> Vec<String>
where
    S: Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
{
    let answers =
        futures_util::future::join_all((0..n).map(|_| app.call(make().to_request()))).await;
    answers
        .into_iter()
        .map(|r| match r {
            Ok(res) => x_cache_of(res.headers()),
            Err(err) => panic!("the cache answered an error: {err}"),
        })
        .collect()
}

#[actix_web::test]
async fn responses_that_are_never_stored_run_in_parallel_not_one_by_one() {
    let app = test::init_service(
        App::new()
            .wrap(CacheMiddleware::new(Cache::memory()))
            .route(
                "/no-policy",
                web::get().to(|| async {
                    actix_web::rt::time::sleep(Duration::from_millis(200)).await;
                    HttpResponse::Ok().body("x")
                }),
            ),
    )
    .await;
    let started = Instant::now();
    let answers = burst(&app, 10, || get("/no-policy")).await;
    assert!(answers.iter().all(|x| x == "BYPASS"), "{answers:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "ten 200 ms requests took {:?}: the waiters were run one at a time",
        started.elapsed()
    );
}

#[actix_web::test]
async fn cookie_requests_under_a_scope_rule_cannot_stall_a_plain_visitor() {
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let app = test::init_service(
        App::new()
            .wrap(
                CacheMiddleware::new(Cache::memory())
                    .default_ttl(Duration::from_secs(60))
                    .lock_timeout(Duration::from_secs(3)),
            )
            .route(
                "/home",
                web::get().to(move |req: HttpRequest| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    async move {
                        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
                        let who = if req.headers().contains_key("cookie") {
                            "session page"
                        } else {
                            "public page"
                        };
                        HttpResponse::Ok().body(who)
                    }
                }),
            ),
    )
    .await;
    // Attacker: sixty cookie-bearing requests, then the victim's plain one behind them.
    let attack = burst(&app, 60, || get("/home").insert_header(("cookie", "x=1")));
    let victim = async {
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        let res = app.call(get("/home").to_request()).await;
        let res = res.unwrap_or_else(|e| panic!("{e}"));
        (started.elapsed(), test::read_body(res).await)
    };
    let (answers, (waited, body)) = tokio::join!(attack, victim);
    assert!(answers.iter().all(|x| x == "BYPASS"), "{answers:?}");
    assert_eq!(body, "public page");
    assert!(
        waited < Duration::from_millis(600),
        "the plain visitor waited {waited:?} behind the cookie requests"
    );
    // Control: the plain visitor's page was stored.
    let again = app.call(get("/home").to_request()).await;
    assert_eq!(
        x_cache_of(again.unwrap_or_else(|e| panic!("{e}")).headers()),
        "HIT"
    );
}

#[actix_web::test]
async fn a_handler_slower_than_the_lock_timeout_still_runs_about_once() {
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let app = test::init_service(
        App::new()
            .wrap(CacheMiddleware::new(Cache::memory()).lock_timeout(Duration::from_millis(100)))
            .route(
                "/slow",
                web::get().to(move || {
                    counted.fetch_add(1, Ordering::SeqCst);
                    async {
                        actix_web::rt::time::sleep(Duration::from_millis(300)).await;
                        Cached::new(
                            HttpResponse::Ok().body("slow page"),
                            CachePolicy::new(Duration::from_secs(60)),
                        )
                    }
                }),
            ),
    )
    .await;
    let started = Instant::now();
    let answers = burst(&app, 20, || get("/slow")).await;
    let runs = runs.load(Ordering::SeqCst);
    assert!(
        runs <= 2,
        "20 requests ran the handler {runs} times: {answers:?}"
    );
    assert!(
        answers.iter().filter(|x| *x == "BYPASS").count() <= 1,
        "one waiter takes the lead (lock-timeout), the others share: {answers:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    let again = app.call(get("/slow").to_request()).await;
    assert_eq!(
        x_cache_of(again.unwrap_or_else(|e| panic!("{e}")).headers()),
        "HIT"
    );
}

/// An origin that answers conditionals with a 304 (counted) and the rest with a full page.
fn revalidating_app(
    fresh_for: &'static str,
    full: Arc<AtomicUsize>,
    conditional: Arc<AtomicUsize>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .wrap(CacheMiddleware::new(Cache::memory()).http_semantics())
        .default_service(web::to(move |req: HttpRequest| {
            let (full, conditional) = (full.clone(), conditional.clone());
            async move {
                if req.headers().contains_key("if-none-match") {
                    conditional.fetch_add(1, Ordering::SeqCst);
                    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
                    HttpResponse::NotModified()
                        .insert_header(("etag", "\"v1\""))
                        .insert_header(("cache-control", "max-age=60"))
                        .finish()
                } else {
                    full.fetch_add(1, Ordering::SeqCst);
                    HttpResponse::Ok()
                        .insert_header(("etag", "\"v1\""))
                        .insert_header(("cache-control", fresh_for))
                        .body("page")
                }
            }
        }))
}

#[actix_web::test]
async fn a_clients_own_no_store_never_purges_the_shared_entry() {
    let (full, conditional) = (Arc::default(), Arc::default());
    let app = test::init_service(revalidating_app("max-age=60", full, conditional)).await;
    let stored = app.call(get("/x").to_request()).await;
    assert_eq!(
        x_cache_of(stored.unwrap_or_else(|e| panic!("{e}")).headers()),
        "MISS"
    );
    // Attacker: forces a revalidation and says its answer must not be stored.
    let attacker = get("/x").insert_header(("cache-control", "no-cache, no-store"));
    let attacked = app.call(attacker.to_request()).await;
    assert_eq!(
        test::read_body(attacked.unwrap_or_else(|e| panic!("{e}"))).await,
        "page"
    );
    // Victim: still served from the entry.
    let victim = app.call(get("/x").to_request()).await;
    assert_eq!(
        x_cache_of(victim.unwrap_or_else(|e| panic!("{e}")).headers()),
        "HIT"
    );
}

#[actix_web::test]
async fn cookie_requests_refresh_a_stale_entry_once_together() {
    let (full, conditional) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let app = test::init_service(revalidating_app(
        "max-age=1",
        full.clone(),
        conditional.clone(),
    ))
    .await;
    let stored = app.call(get("/x").to_request()).await;
    assert_eq!(
        x_cache_of(stored.unwrap_or_else(|e| panic!("{e}")).headers()),
        "MISS"
    );
    actix_web::rt::time::sleep(Duration::from_millis(1100)).await;
    let started = Instant::now();
    let answers = burst(&app, 10, || get("/x").insert_header(("cookie", "sid=1"))).await;
    assert!(
        conditional.load(Ordering::SeqCst) <= 2,
        "{} conditional requests for one stale entry: {answers:?}",
        conditional.load(Ordering::SeqCst)
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    // The 304 refreshed the shared entry: the next client is a HIT without asking the origin.
    let next = app
        .call(get("/x").insert_header(("cookie", "sid=2")).to_request())
        .await;
    assert_eq!(
        x_cache_of(next.unwrap_or_else(|e| panic!("{e}")).headers()),
        "HIT"
    );
    assert_eq!(full.load(Ordering::SeqCst), 1);
}

#[actix_web::test]
async fn an_http2_get_whose_body_the_head_did_not_announce_is_not_stored() {
    let app = test::init_service(
        App::new()
            .wrap(CacheMiddleware::new(Cache::memory()))
            .route(
                "/search",
                web::get().to(|body: web::Bytes| async move {
                    let q = if body.is_empty() {
                        "default".to_string()
                    } else {
                        String::from_utf8_lossy(&body).into_owned()
                    };
                    Cached::new(
                        HttpResponse::Ok().body(q),
                        CachePolicy::new(Duration::from_secs(60)),
                    )
                }),
            ),
    )
    .await;
    // HTTP/2 frames a body without `Content-Length`; the test request has none either.
    let mut attacker = get("/search")
        .version(Version::HTTP_2)
        .set_payload("EVIL")
        .to_request();
    attacker.headers_mut().remove("content-length");
    let attacked = app.call(attacker).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(x_cache_of(attacked.headers()), "BYPASS");
    let victim = app.call(get("/search").to_request()).await;
    let victim = victim.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(test::read_body(victim).await, "default");
    let control = app.call(get("/search").to_request()).await;
    assert_eq!(
        x_cache_of(control.unwrap_or_else(|e| panic!("{e}")).headers()),
        "HIT"
    );
}

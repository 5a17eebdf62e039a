//! Fills, waiters and invalidations that overlap: single-flight, the in-flight invalidation race,
//! leaders that panic or are cancelled, stale-while-revalidate (refreshed in the background) and
//! stale-if-error.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{dev::Service, test, web, App, HttpRequest, HttpResponse, HttpServer};
use cache_actix::{Cache, CacheMiddleware, CachePolicy, Cached};
use cache_actix_tests::{listener, Server};
use futures_util::FutureExt;
use tokio::sync::Notify;

fn policy(ttl: u64) -> CachePolicy {
    CachePolicy::new(Duration::from_secs(ttl))
}

fn get(path: &str) -> actix_http::Request {
    test::TestRequest::get().uri(path).to_request()
}

fn x_cache<B>(res: &actix_web::dev::ServiceResponse<B>) -> String {
    cache_actix_tests::x_cache_of(res.headers())
}

#[actix_web::test]
async fn an_invalidation_during_a_fill_keeps_the_old_result_out_of_the_cache() {
    struct Gate {
        db: std::sync::Mutex<&'static str>,
        read: Notify,
        release: Notify,
    }
    let gate = Arc::new(Gate {
        db: std::sync::Mutex::new("old"),
        read: Notify::new(),
        release: Notify::new(),
    });
    let cache = Cache::memory();
    let g = gate.clone();
    let app = test::init_service(App::new().wrap(CacheMiddleware::new(cache.clone())).route(
        "/p",
        web::get().to(move || {
            let g = g.clone();
            async move {
                let value = *g.db.lock().unwrap();
                if value == "old" {
                    g.read.notify_one();
                    g.release.notified().await;
                }
                Cached::new(HttpResponse::Ok().body(value), policy(60).tag("products"))
            }
        }),
    ))
    .await;

    let writer = async {
        gate.read.notified().await;
        *gate.db.lock().unwrap() = "new";
        cache.invalidate_tag("products").await.unwrap();
        gate.release.notify_one();
    };
    let (res, ()) = tokio::join!(app.call(get("/p")), writer);
    let res = res.unwrap();
    assert_eq!(x_cache(&res), "MISS");
    assert_eq!(
        test::read_body(res).await,
        "old",
        "the in-flight request answers what it read"
    );

    let after = app.call(get("/p")).await.unwrap();
    assert_eq!(
        x_cache(&after),
        "MISS",
        "the fill that overlapped the invalidation must not be served"
    );
    assert_eq!(test::read_body(after).await, "new");
    assert_eq!(x_cache(&app.call(get("/p")).await.unwrap()), "HIT");
}

#[actix_web::test]
async fn two_hundred_fifty_six_cold_requests_run_the_handler_once() {
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = Cache::memory();
    let (l, base) = listener();
    let (c, counted) = (cache.clone(), calls.clone());
    let server = HttpServer::new(move || {
        let counted = counted.clone();
        App::new().wrap(CacheMiddleware::new(c.clone())).route(
            "/slow",
            web::get().to(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async {
                    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
                    Cached::new(HttpResponse::Ok().body("expensive"), policy(60))
                }
            }),
        )
    })
    .workers(2)
    .disable_signals()
    .listen(l)
    .unwrap()
    .run();
    let server = Server::spawn(server, base);
    let client = awc::Client::builder()
        .connector(awc::Connector::new().limit(512))
        .timeout(Duration::from_secs(30))
        .finish();
    let requests = (0..256).map(|_| {
        let client = client.clone();
        let url = server.url("/slow");
        async move {
            let mut res = client.get(url).send().await.unwrap();
            let x = cache_actix_tests::x_cache_of(res.headers());
            (res.status().as_u16(), x, res.body().await.unwrap())
        }
    });
    let results = futures_util::future::join_all(requests).await;
    assert!(results
        .iter()
        .all(|(s, _, b)| *s == 200 && b == "expensive"));
    assert_eq!(results.iter().filter(|(_, x, _)| x == "MISS").count(), 1);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the handler ran more than once"
    );
}

#[actix_web::test]
async fn waiters_with_other_vary_values_run_the_handler_themselves() {
    let app = test::init_service(
        App::new()
            .wrap(CacheMiddleware::new(Cache::memory()))
            .route(
                "/v",
                web::get().to(|req: HttpRequest| async move {
                    actix_web::rt::time::sleep(Duration::from_millis(50)).await;
                    let who = req
                        .headers()
                        .get("x-user")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    Cached::new(HttpResponse::Ok().body(who), policy(60).vary("x-user"))
                }),
            ),
    )
    .await;
    let req = |who: &str| {
        test::TestRequest::get()
            .uri("/v")
            .insert_header(("x-user", who))
            .to_request()
    };
    let (a, b, a2) = tokio::join!(
        app.call(req("alice")),
        app.call(req("bob")),
        app.call(req("alice"))
    );
    let (a, b, a2) = (a.unwrap(), b.unwrap(), a2.unwrap());
    assert_eq!(
        x_cache(&a2),
        "HIT",
        "a waiter with the same vary values shares the fill"
    );
    assert_eq!(test::read_body(a).await, "alice");
    assert_eq!(test::read_body(b).await, "bob");
    assert_eq!(test::read_body(a2).await, "alice");
}

fn flaky_app_handler(
    calls: Arc<AtomicUsize>,
    first: &'static str,
) -> impl Fn() -> futures_util::future::LocalBoxFuture<'static, Cached<HttpResponse>> + Clone {
    move || {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if n == 1 {
                actix_web::rt::time::sleep(Duration::from_millis(100)).await;
                if first == "panic" {
                    panic!("handler blew up");
                }
                actix_web::rt::time::sleep(Duration::from_secs(60)).await;
            }
            Cached::new(HttpResponse::Ok().body(format!("call {n}")), policy(60))
        }
        .boxed_local()
    }
}

#[actix_web::test]
async fn a_leader_that_panics_or_is_cancelled_releases_its_waiters_at_once() {
    for how in ["panic", "cancel"] {
        let calls = Arc::new(AtomicUsize::new(0));
        let app = test::init_service(
            App::new()
                .wrap(CacheMiddleware::new(Cache::memory()).lock_timeout(Duration::from_secs(30)))
                .route("/f", web::get().to(flaky_app_handler(calls.clone(), how))),
        )
        .await;
        let started = Instant::now();
        let leader = async {
            let call = AssertUnwindSafe(app.call(get("/f"))).catch_unwind();
            let outcome = tokio::time::timeout(Duration::from_millis(300), call).await;
            match how {
                "panic" => assert!(
                    matches!(outcome, Ok(Err(_))),
                    "the leader should have panicked"
                ),
                _ => assert!(outcome.is_err(), "the leader should have been cancelled"),
            }
        };
        let waiter = async {
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
            app.call(get("/f")).await.unwrap()
        };
        let ((), res) = tokio::join!(leader, waiter);
        assert_eq!(
            test::read_body(res).await,
            "call 2",
            "{how}: the waiter must run the handler itself"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{how}: the waiter was held too long"
        );
    }
}

#[actix_web::test]
async fn stale_while_revalidate_answers_stale_at_once_and_refreshes_in_the_background() {
    let version = Arc::new(AtomicU64::new(0));
    let v = version.clone();
    let app = test::init_service(
        App::new()
            .wrap(CacheMiddleware::new(Cache::memory()))
            .route(
                "/s",
                web::get().to(move || {
                    let n = v.fetch_add(1, Ordering::SeqCst) + 1;
                    async move {
                        // A slow handler: the refresh must not make any client wait for it.
                        if n > 1 {
                            actix_web::rt::time::sleep(Duration::from_millis(1000)).await;
                        }
                        Cached::new(
                            HttpResponse::Ok().body(format!("v{n}")),
                            policy(1).stale_while_revalidate(Duration::from_secs(30)),
                        )
                    }
                }),
            ),
    )
    .await;
    let body = |res: actix_web::dev::ServiceResponse| async move {
        (x_cache(&res), test::read_body(res).await)
    };
    assert_eq!(
        body(app.call(get("/s")).await.unwrap()).await,
        ("MISS".to_string(), "v1".into())
    );
    actix_web::rt::time::sleep(Duration::from_millis(1100)).await;
    let started = Instant::now();
    let stale = app.call(get("/s")).await.unwrap();
    assert_eq!(
        stale
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("max-age=0")
    );
    assert_eq!(body(stale).await, ("STALE".to_string(), "v1".into()));
    assert!(started.elapsed() < Duration::from_millis(100));
    // While the refresh runs, the next clients get the stale copy at once too.
    assert_eq!(
        body(app.call(get("/s")).await.unwrap()).await,
        ("STALE".to_string(), "v1".into())
    );
    assert!(started.elapsed() < Duration::from_millis(200));
    actix_web::rt::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        body(app.call(get("/s")).await.unwrap()).await,
        ("HIT".to_string(), "v2".into()),
        "the refresh stored the new body"
    );
    assert_eq!(version.load(Ordering::SeqCst), 2);
}

#[actix_web::test]
async fn stale_if_error_answers_stale_when_the_handler_fails() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let cache = Cache::memory();
    let app = test::init_service(App::new().wrap(CacheMiddleware::new(cache.clone())).route(
        "/e",
        web::get().to(move || {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                let res = if n == 1 {
                    HttpResponse::Ok().body("good")
                } else {
                    HttpResponse::ServiceUnavailable().body("down")
                };
                Cached::new(res, policy(1).stale_if_error(Duration::from_secs(30)))
            }
        }),
    ))
    .await;
    assert_eq!(
        test::read_body(app.call(get("/e")).await.unwrap()).await,
        "good"
    );
    actix_web::rt::time::sleep(Duration::from_millis(1100)).await;
    let res = app.call(get("/e")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(x_cache(&res), "STALE");
    assert_eq!(test::read_body(res).await, "good");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(cache.stats().stale_hits, 1);
}

#[actix_web::test]
async fn a_request_that_joins_a_fill_after_an_invalidation_never_gets_the_refused_result() {
    // The leader reads "old" and stalls; a first waiter joins; the tag is invalidated (the
    // leader's result will be refused by the store); a second waiter joins after the call
    // returned Ok. Neither waiter may be answered "old": both joined after the fill began, and
    // the second after the invalidation.
    struct Gate {
        db: std::sync::Mutex<&'static str>,
        read: Notify,
        release: Notify,
        runs: AtomicUsize,
    }
    let gate = Arc::new(Gate {
        db: std::sync::Mutex::new("old"),
        read: Notify::new(),
        release: Notify::new(),
        runs: AtomicUsize::new(0),
    });
    let cache = Cache::memory();
    let g = gate.clone();
    let app = test::init_service(App::new().wrap(CacheMiddleware::new(cache.clone())).route(
        "/p",
        web::get().to(move || {
            let g = g.clone();
            async move {
                g.runs.fetch_add(1, Ordering::SeqCst);
                let value = *g.db.lock().unwrap();
                if value == "old" {
                    g.read.notify_one();
                    g.release.notified().await;
                }
                Cached::new(HttpResponse::Ok().body(value), policy(60).tag("products"))
            }
        }),
    ))
    .await;
    let body = |res: actix_web::dev::ServiceResponse| async move {
        String::from_utf8_lossy(&test::read_body(res).await).into_owned()
    };
    let leader = app.call(get("/p"));
    let rest = async {
        gate.read.notified().await;
        let early = app.call(get("/p"));
        let invalidated = async {
            *gate.db.lock().unwrap() = "new";
            cache.invalidate_tag("products").await.unwrap();
            let late = app.call(get("/p"));
            let release = async {
                actix_web::rt::time::sleep(Duration::from_millis(20)).await;
                gate.release.notify_one();
            };
            tokio::join!(late, release).0
        };
        tokio::join!(early, invalidated)
    };
    let (leader, (early, late)) = tokio::join!(leader, rest);
    assert_eq!(
        body(leader.unwrap()).await,
        "old",
        "the leader answers what it read"
    );
    assert_eq!(
        body(early.unwrap()).await,
        "new",
        "joined after the fill began"
    );
    assert_eq!(
        body(late.unwrap()).await,
        "new",
        "joined after the invalidation returned"
    );
    assert_eq!(gate.runs.load(Ordering::SeqCst), 3);
    // The control: what the waiters filled is stored.
    let control = app.call(get("/p")).await.unwrap();
    assert_eq!(x_cache(&control), "HIT");
    assert_eq!(body(control).await, "new");
}

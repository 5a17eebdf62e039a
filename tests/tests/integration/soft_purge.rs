//! Soft purge and background refresh, as a client sees them: after `soft_invalidate_tag` the
//! next requests get the old body at once (`STALE`) while one refresh runs behind them, nobody
//! waits for a slow handler, and the refreshed body follows; outside every stale window a soft
//! purge is a hard one; a fill in flight during a soft purge is not stored as fresh; and over
//! Redis the soft purge reaches the other node.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{test, web, App, HttpResponse};
use cache_actix::{admin, Cache, CacheMiddleware, CachePolicy, Cached, MemoryStore, RedisStore};
use cache_actix_tests::{
    get_path,
    redis::{wait_in_sync, RedisServer},
    send, Reply,
};
use cache_core::Lookup;

/// How long the slow handler takes.
const SLOW: Duration = Duration::from_millis(1000);

/// An app whose `/p` handler takes `delay`, answers `v<n>` (n counts its runs) under tag
/// `products` with a 60 s ttl and `swr`; `/other` is the control, under tag `other`.
fn app_with(
    cache: Cache,
    runs: Arc<AtomicU64>,
    delay: Duration,
    swr: Duration,
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
        .service(admin::scope("/admin", cache.clone(), "t0ken"))
        .service(
            web::scope("")
                .wrap(CacheMiddleware::new(cache))
                .route(
                    "/p",
                    web::get().to(move || {
                        let runs = runs.clone();
                        async move {
                            let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                            actix_web::rt::time::sleep(delay).await;
                            Cached::new(
                                HttpResponse::Ok().body(format!("v{n}")),
                                CachePolicy::new(Duration::from_secs(60))
                                    .stale_while_revalidate(swr)
                                    .tag("products"),
                            )
                        }
                    }),
                )
                .route(
                    "/other",
                    web::get().to(|| async {
                        Cached::new(
                            HttpResponse::Ok().body("other"),
                            CachePolicy::new(Duration::from_secs(60)).tag("other"),
                        )
                    }),
                ),
        )
}

/// Polls `/p` until it answers `HIT` with `body`, for at most `within`.
/// A memory-only cache, its run counter and its initialised `app_with` service.
async fn memory_app(
    delay: Duration,
    swr: Duration,
) -> (
    Cache,
    Arc<AtomicU64>,
    impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
    >,
) {
    let cache = Cache::memory();
    let runs = Arc::new(AtomicU64::new(0));
    let app = test::init_service(app_with(cache.clone(), runs.clone(), delay, swr)).await;
    (cache, runs, app)
}

async fn until_hit<S, B>(app: &S, body: &str, within: Duration) -> Reply
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let deadline = Instant::now() + within;
    loop {
        let reply = get_path(app, "/p").await;
        if (reply.x_cache(), reply.text().as_str()) == ("HIT", body) || Instant::now() > deadline {
            return reply;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn a_soft_purge_answers_stale_at_once_while_one_background_refresh_runs() {
    let (cache, runs, app) = memory_app(SLOW, Duration::from_secs(30)).await;
    assert_eq!(get_path(&app, "/p").await.summary().1, "MISS");
    assert_eq!(get_path(&app, "/other").await.x_cache(), "MISS");
    assert_eq!(get_path(&app, "/p").await.x_cache(), "HIT");

    cache.soft_invalidate_tag("products").await.unwrap();
    // A burst while the refresh (1 s) runs: every answer is the old body, at once.
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let reply = get_path(&app, "/p").await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(
            (
                reply.status.as_u16(),
                reply.x_cache(),
                reply.text().as_str()
            ),
            (200, "STALE", "v1")
        );
    }
    assert!(
        slowest < Duration::from_millis(100),
        "a stale answer waited {slowest:?} for the refresh"
    );
    // Let the spawned refresh start, then count it.
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get_path(&app, "/p").await.summary().1, "STALE");
    assert_eq!(runs.load(Ordering::SeqCst), 2, "one refresh for the burst");
    // The control: another tag's entry is untouched.
    assert_eq!(get_path(&app, "/other").await.x_cache(), "HIT");
    // After the refresh the next request is fresh, with the new body.
    let fresh = until_hit(&app, "v2", SLOW * 3).await;
    assert_eq!((fresh.x_cache(), fresh.text().as_str()), ("HIT", "v2"));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[actix_web::test]
async fn outside_every_stale_window_a_soft_purge_is_a_hard_one() {
    let (cache, _, app) = memory_app(Duration::ZERO, Duration::ZERO).await;
    get_path(&app, "/p").await;
    get_path(&app, "/other").await;
    cache.soft_invalidate_tags(["products"]).await.unwrap();
    let after = get_path(&app, "/p").await;
    assert_eq!((after.x_cache(), after.text().as_str()), ("MISS", "v2"));
    assert_eq!(get_path(&app, "/p").await.summary().1, "HIT");
    assert_eq!(get_path(&app, "/other").await.x_cache(), "HIT");
}

#[actix_web::test]
async fn a_fill_in_flight_during_a_soft_purge_is_not_stored_as_fresh() {
    let (cache, _, app) = memory_app(Duration::from_millis(300), Duration::from_secs(30)).await;
    let (first, ()) = tokio::join!(get_path(&app, "/p"), async {
        // The handler has started (and read its data) when the soft purge lands.
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        cache.soft_invalidate_tag("products").await.unwrap();
    });
    assert_eq!((first.x_cache(), first.text().as_str()), ("MISS", "v1"));
    // Stored, but as stale: the next request is answered stale and refreshes it.
    let next = get_path(&app, "/p").await;
    assert_eq!((next.x_cache(), next.text().as_str()), ("STALE", "v1"));
    let fresh = until_hit(&app, "v2", Duration::from_secs(3)).await;
    assert_eq!((fresh.x_cache(), fresh.text().as_str()), ("HIT", "v2"));
}

/// Requests waiting on a fill when a soft purge lands: one that joined before the purge shares
/// the fill's answer (it asked before the purge), one that joined after it never gets that
/// answer as a fresh `HIT`: it joins the next fill instead.
#[actix_web::test]
async fn a_request_that_joins_a_fill_after_a_soft_purge_never_gets_its_answer_as_fresh() {
    let (cache, runs, app) = memory_app(Duration::from_millis(300), Duration::from_secs(30)).await;
    let after = |ms| actix_web::rt::time::sleep(Duration::from_millis(ms));
    let (leader, before, late, ()) = tokio::join!(
        get_path(&app, "/p"),
        async {
            after(50).await;
            get_path(&app, "/p").await
        },
        async {
            after(150).await;
            get_path(&app, "/p").await
        },
        async {
            after(100).await;
            cache.soft_invalidate_tag("products").await.unwrap();
        }
    );
    assert_eq!((leader.x_cache(), leader.text().as_str()), ("MISS", "v1"));
    // The control: joined before the soft purge, it shares the fill.
    assert_eq!((before.x_cache(), before.text().as_str()), ("HIT", "v1"));
    assert_ne!(
        (late.x_cache(), late.text().as_str()),
        ("HIT", "v1"),
        "a request after the soft purge got the softened fill as fresh"
    );
    assert_eq!(late.text(), "v2");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[actix_web::test]
async fn the_admin_scope_soft_purges_with_the_token_only() {
    let (_, _, app) = memory_app(Duration::ZERO, Duration::from_secs(30)).await;
    get_path(&app, "/p").await;
    let purge = || test::TestRequest::post().uri("/admin/soft-purge/tag/products");
    let refused = send(&app, purge()).await;
    assert_eq!(refused.status.as_u16(), 401);
    assert_eq!(
        get_path(&app, "/p").await.x_cache(),
        "HIT",
        "nothing purged"
    );
    let done = send(
        &app,
        purge().insert_header(("authorization", "Bearer t0ken")),
    )
    .await;
    assert_eq!(done.status.as_u16(), 200);
    assert_eq!(get_path(&app, "/p").await.summary().1, "STALE");
    let fresh = until_hit(&app, "v2", Duration::from_secs(3)).await;
    assert_eq!((fresh.x_cache(), fresh.text().as_str()), ("HIT", "v2"));
}

/// A node over `url` with an L1; `strict` (and then without an L1) checks every L2 read
/// against the clocks in Redis.
fn node(url: &str, strict: bool) -> Cache {
    let store = RedisStore::from_url(url)
        .unwrap_or_else(|e| panic!("redis url: {e}"))
        .strict_reads(strict);
    let builder = Cache::builder().l2(store).namespace("soft");
    if strict {
        builder.build()
    } else {
        builder.l1(MemoryStore::new()).build()
    }
}

#[actix_web::test]
async fn over_redis_a_soft_purge_on_one_node_stales_the_other_and_one_refresh_serves_both() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis.url(), false), node(&redis.url(), false));
    wait_in_sync(&a).await;
    wait_in_sync(&b).await;
    let runs = Arc::new(AtomicU64::new(0));
    let delay = Duration::from_millis(300);
    let swr = Duration::from_secs(30);
    let app_a = test::init_service(app_with(a.clone(), runs.clone(), delay, swr)).await;
    let app_b = test::init_service(app_with(b.clone(), runs.clone(), delay, swr)).await;
    assert_eq!(get_path(&app_a, "/p").await.summary().1, "MISS");
    assert_eq!(get_path(&app_b, "/p").await.x_cache(), "HIT", "from the L2");
    assert_eq!(get_path(&app_b, "/other").await.x_cache(), "MISS");

    a.soft_invalidate_tag("products").await.unwrap();
    // B hears of it: its L1 copy is stale now, not a HIT.
    let deadline = Instant::now() + Duration::from_secs(2);
    let stale = loop {
        let reply = get_path(&app_b, "/p").await;
        if reply.x_cache() != "HIT" || Instant::now() > deadline {
            break reply;
        }
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    };
    // Stale at once, whether B's mirror vouches for the record or B checks it in Redis (its
    // reading behind the record's tick): its mirror dates the soft purge either way.
    assert_eq!((stale.x_cache(), stale.text().as_str()), ("STALE", "v1"));
    let fresh = until_hit(&app_b, "v2", Duration::from_secs(3)).await;
    assert_eq!((fresh.x_cache(), fresh.text().as_str()), ("HIT", "v2"));
    // A takes B's refresh from the L2 instead of running the handler again.
    let on_a = get_path(&app_a, "/p").await;
    assert_eq!(on_a.text(), "v2", "{:?}", on_a.summary());
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(get_path(&app_b, "/other").await.x_cache(), "HIT");
}

/// The entry node `a` holds for `/p` (stale or fresh), to ask another node's mirror about it.
async fn entry_on(a: &Cache) -> Arc<cache_actix::Entry> {
    let key = a.primary_key(b"http://localhost:8080", b"/p", b"");
    match a.lookup(&key, |_| key.cache_key()).await {
        Lookup::Fresh(entry) | Lookup::Stale(entry) => entry,
        _ => panic!("node a holds no entry for /p"),
    }
}

#[actix_web::test]
async fn a_node_that_checks_in_redis_serves_a_softened_record_stale_once_it_knows_the_purge() {
    let redis = RedisServer::start();
    let (a, strict) = (node(&redis.url(), false), node(&redis.url(), true));
    wait_in_sync(&a).await;
    wait_in_sync(&strict).await;
    let runs = Arc::new(AtomicU64::new(0));
    let swr = Duration::from_secs(30);
    let app_a = test::init_service(app_with(a.clone(), runs.clone(), Duration::ZERO, swr)).await;
    let app_s =
        test::init_service(app_with(strict.clone(), runs.clone(), Duration::ZERO, swr)).await;
    get_path(&app_a, "/p").await;
    assert_eq!(get_path(&app_s, "/p").await.summary().1, "HIT");
    a.soft_invalidate_tag("products").await.unwrap();
    // Once the strict node's mirror has the soft purge, every read checked in Redis is served
    // stale (never as fresh), and refreshed behind the answer.
    let entry = entry_on(&a).await;
    let deadline = Instant::now() + Duration::from_secs(2);
    while strict.softened_at(&entry).is_none() {
        assert!(
            Instant::now() < deadline,
            "the soft purge never reached the strict node"
        );
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
    let after = get_path(&app_s, "/p").await;
    assert_eq!(
        (after.x_cache(), after.text().as_str()),
        ("STALE", "v1"),
        "a softened record is stale to a node that checks in Redis"
    );
    let fresh = until_hit(&app_s, "v2", Duration::from_secs(3)).await;
    assert_eq!((fresh.x_cache(), fresh.text().as_str()), ("HIT", "v2"));
    assert_eq!(runs.load(Ordering::SeqCst), 2, "one refresh");
}

#[actix_web::test]
async fn a_node_that_missed_the_soft_purge_misses_the_softened_record_rather_than_guess_its_window()
{
    let redis = RedisServer::start();
    let a = node(&redis.url(), false);
    wait_in_sync(&a).await;
    let runs = Arc::new(AtomicU64::new(0));
    let swr = Duration::from_secs(30);
    let app_a = test::init_service(app_with(a.clone(), runs.clone(), Duration::ZERO, swr)).await;
    get_path(&app_a, "/p").await;
    a.soft_invalidate_tag("products").await.unwrap();
    // A node that starts after the soft purge cannot date it: the record is neither fresh nor
    // stale to it, but a miss that refills.
    let late = node(&redis.url(), true);
    wait_in_sync(&late).await;
    let app_late =
        test::init_service(app_with(late.clone(), runs.clone(), Duration::ZERO, swr)).await;
    let seen = get_path(&app_late, "/p").await;
    assert_eq!((seen.x_cache(), seen.text().as_str()), ("MISS", "v2"));
    // The control: what it filled is stored and HITs.
    let again = get_path(&app_late, "/p").await;
    assert_eq!((again.x_cache(), again.text().as_str()), ("HIT", "v2"));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[actix_web::test]
async fn a_refresh_started_by_a_hostile_request_stores_what_a_plain_request_would_get() {
    let (cache, _, app) = memory_app(Duration::from_millis(50), Duration::from_secs(30)).await;
    get_path(&app, "/p").await;
    get_path(&app, "/other").await;
    cache.soft_invalidate_tag("products").await.unwrap();
    // The attacker's request starts the refresh, with a range and conditionals of its own.
    let attacker = send(
        &app,
        test::TestRequest::get()
            .uri("/p")
            .insert_header(("range", "bytes=0-0"))
            .insert_header(("if-none-match", "*"))
            .insert_header(("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT")),
    )
    .await;
    assert_eq!(attacker.x_cache(), "STALE");
    // The victim's plain request after the refresh gets the whole new body, as a 200.
    let victim = until_hit(&app, "v2", Duration::from_secs(3)).await;
    assert_eq!(
        (
            victim.status.as_u16(),
            victim.x_cache(),
            victim.text().as_str()
        ),
        (200, "HIT", "v2")
    );
    assert_eq!(get_path(&app, "/other").await.x_cache(), "HIT", "control");
}

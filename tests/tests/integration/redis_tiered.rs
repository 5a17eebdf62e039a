//! Many processes sharing one Redis, as clients see them: nodes are `Cache` values with their
//! own L1 over one real `redis-server`; each serves an actix app. Fill once, hit everywhere,
//! invalidate once, stale nowhere.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{http::StatusCode, test, web, App, HttpResponse};
use cache_actix::{Cache, CacheMiddleware, CachePolicy, Cached, MemoryStore, RedisStore};
use cache_actix_tests::shop::{app, Db};
use cache_actix_tests::{
    get_path as get,
    redis::{wait_in_sync, RedisServer},
};
use tokio::sync::Notify;

fn node(url: &str, namespace: &str, l1: bool) -> Cache {
    node_with(url, namespace, l1, false)
}

/// A node; `strict` checks every L2 read against the clocks in Redis instead of the local mirror.
fn node_with(url: &str, namespace: &str, l1: bool, strict: bool) -> Cache {
    let store = RedisStore::from_url(url)
        .unwrap_or_else(|e| panic!("redis url: {e}"))
        .strict_reads(strict);
    let builder = Cache::builder().l2(store).namespace(namespace);
    let builder = if l1 {
        builder.l1(MemoryStore::new())
    } else {
        builder
    };
    builder.build()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[actix_web::test]
async fn a_fill_on_one_node_is_a_hit_on_another_and_one_invalidation_reaches_both() {
    fill_hit_invalidate(false).await;
}

#[actix_web::test]
async fn the_same_with_every_l2_read_checked_in_redis() {
    fill_hit_invalidate(true).await;
}

async fn fill_hit_invalidate(strict: bool) {
    let redis = RedisServer::start();
    let db = Arc::new(Db::default());
    let (cache_a, cache_b) = (
        node_with(&redis.url(), "shop", true, strict),
        node_with(&redis.url(), "shop", true, strict),
    );
    wait_in_sync(&cache_a).await;
    wait_in_sync(&cache_b).await;
    let a = app(cache_a.clone(), db.clone()).await;
    let b = app(cache_b.clone(), db.clone()).await;

    assert_eq!(
        get(&a, "/p/1").await.summary(),
        (StatusCode::OK, "MISS".into(), "1:v0".into())
    );
    assert_eq!(
        get(&b, "/p/1").await.summary(),
        (StatusCode::OK, "HIT".into(), "1:v0".into())
    );
    assert_eq!(
        db.calls.load(Ordering::SeqCst),
        1,
        "filled once for both nodes"
    );
    assert_eq!(cache_b.stats().l2.hits, 1);

    db.version.store(1, Ordering::SeqCst);
    cache_a
        .invalidate_tag("products")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // B may have its copy in L1; the invalidation must still reach it.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let reply = get(&b, "/p/1").await;
        if reply.text() == "1:v1" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B still serves {:?}",
            reply.summary()
        );
    }
    assert_eq!(
        get(&a, "/p/1").await.summary(),
        (StatusCode::OK, "HIT".into(), "1:v1".into())
    );

    // Propagation delay, L1 to L1: B holds the entry in memory; A invalidates; how long until
    // B stops answering from it.
    let mut delays = Vec::new();
    for trial in 0..100 {
        let path = format!("/p/{}", 100 + trial);
        get(&b, &path).await;
        assert_eq!(get(&b, &path).await.x_cache(), "HIT");
        let calls = db.calls.load(Ordering::SeqCst);
        cache_a
            .invalidate_tag("products")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let start = Instant::now();
        loop {
            let reply = get(&b, &path).await;
            if reply.x_cache() == "MISS" {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "invalidation never reached B"
            );
            actix_web::rt::task::yield_now().await;
        }
        delays.push(start.elapsed());
        assert_eq!(db.calls.load(Ordering::SeqCst), calls + 1);
    }
    delays.sort();
    println!(
        "propagation delay (strict reads: {strict}) over 100 trials: p50 {:?}, p99 {:?}, max {:?}",
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        delays[delays.len() - 1]
    );
}

#[actix_web::test]
async fn a_fill_running_on_one_node_during_an_invalidation_on_another_is_not_kept() {
    let redis = RedisServer::start();
    let (cache_a, cache_b) = (
        node(&redis.url(), "race", true),
        node(&redis.url(), "race", true),
    );
    wait_in_sync(&cache_a).await;
    wait_in_sync(&cache_b).await;
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let version = Arc::new(AtomicUsize::new(0));
    let (s, r, v) = (started.clone(), release.clone(), version.clone());
    let a = test::init_service(
        App::new()
            .wrap(CacheMiddleware::new(cache_a.clone()))
            .route(
                "/slow",
                web::get().to(move || {
                    let (s, r, v) = (s.clone(), r.clone(), v.clone());
                    async move {
                        let read = v.load(Ordering::SeqCst); // reads old data...
                        s.notify_one();
                        r.notified().await; // ...and is still running when the write lands
                        Cached::new(
                            HttpResponse::Ok().body(format!("v{read}")),
                            CachePolicy::new(Duration::from_secs(60)).tag("products"),
                        )
                    }
                }),
            ),
    )
    .await;
    let a = std::rc::Rc::new(a);
    let slow = {
        let a = a.clone();
        actix_web::rt::spawn(async move { get(&*a, "/slow").await })
    };
    started.notified().await;
    version.store(1, Ordering::SeqCst);
    cache_b
        .invalidate_tag("products")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    release.notify_one();
    let first = slow.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.text(), "v0");
    assert_eq!(first.x_cache(), "MISS");
    // The old read must not have been stored: the next request runs the handler again.
    let second = {
        let a = a.clone();
        let next = actix_web::rt::spawn(async move { get(&*a, "/slow").await });
        started.notified().await;
        release.notify_one();
        next.await.unwrap_or_else(|e| panic!("{e}"))
    };
    assert_eq!(
        second.summary(),
        (StatusCode::OK, "MISS".into(), "v1".into())
    );
}

#[actix_web::test]
async fn separate_namespaces_share_nothing() {
    let redis = RedisServer::start();
    let db = Arc::new(Db::default());
    let (one, two) = (
        node(&redis.url(), "one", true),
        node(&redis.url(), "two", false),
    );
    wait_in_sync(&one).await;
    wait_in_sync(&two).await;
    let x = app(one.clone(), db.clone()).await;
    let y = app(two.clone(), db.clone()).await;
    assert_eq!(get(&x, "/p/1").await.x_cache(), "MISS");
    assert_eq!(
        get(&y, "/p/1").await.x_cache(),
        "MISS",
        "no entry crosses namespaces"
    );
    assert_eq!(get(&y, "/p/1").await.x_cache(), "HIT");
    one.invalidate_tag("products")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        get(&y, "/p/1").await.x_cache(),
        "HIT",
        "no invalidation crosses namespaces"
    );
    assert_eq!(get(&x, "/p/1").await.x_cache(), "MISS");
    two.purge_all().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(get(&x, "/p/1").await.x_cache(), "HIT");
    assert_eq!(get(&y, "/p/1").await.x_cache(), "MISS");
}

#[actix_web::test]
async fn garbage_over_every_value_never_reaches_a_client() {
    garbage(false).await;
}

#[actix_web::test]
async fn garbage_never_reaches_a_client_with_reads_checked_in_redis() {
    garbage(true).await;
}

async fn garbage(strict: bool) {
    let redis = RedisServer::start();
    let db = Arc::new(Db::default());
    let cache_a = node_with(&redis.url(), "junk", true, strict);
    wait_in_sync(&cache_a).await;
    let a = app(cache_a.clone(), db.clone()).await;
    for id in 0..20 {
        assert_eq!(get(&a, &format!("/p/{id}")).await.x_cache(), "MISS");
    }
    cache_a
        .invalidate_tag("other")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let keys = redis.keys("ca:*");
    assert!(
        keys.len() >= 20,
        "records and clocks are in Redis: {keys:?}"
    );
    for (i, key) in keys.iter().enumerate() {
        match i % 3 {
            // Right type, wrong contents: the decoder must refuse it.
            0 if key.contains(":r:") => {
                redis.command_bytes(&[
                    b"HSET",
                    key.as_bytes(),
                    b"v",
                    b"CAR\x01\x01\xff\xff garbage",
                ]);
            }
            1 => {
                redis.command_bytes(&[b"SET", key.as_bytes(), b"\x00\xffnot a number"]);
            }
            _ => {
                redis.command_bytes(&[b"SET", key.as_bytes(), b"12abc"]);
            }
        }
    }
    // A fresh node has no L1 to hide behind: everything comes from (garbage) Redis or the handler.
    let cache_b = node_with(&redis.url(), "junk", true, strict);
    wait_in_sync(&cache_b).await;
    let b = app(cache_b.clone(), db.clone()).await;
    for round in 0..3 {
        for id in 0..20 {
            let reply = get(&b, &format!("/p/{id}")).await;
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(reply.text(), format!("{id}:v0"), "round {round}");
        }
    }
    assert!(cache_b.stats().l2.errors > 0, "corrupt values are counted");
    // Writes still invalidate everywhere, garbage counter or not.
    db.version.store(1, Ordering::SeqCst);
    cache_a
        .invalidate_tag("products")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(2);
    for id in 0..20 {
        loop {
            let (ra, rb) = (
                get(&a, &format!("/p/{id}")).await,
                get(&b, &format!("/p/{id}")).await,
            );
            if ra.text() == format!("{id}:v1") && rb.text() == format!("{id}:v1") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "stale after invalidation: {:?}",
                rb.summary()
            );
        }
    }
    // And the cache works again once good values replace the garbage.
    assert_eq!(get(&b, "/p/0").await.x_cache(), "HIT");
}

#[actix_web::test]
async fn a_dead_redis_costs_hits_never_answers_and_invalidation_reports_it() {
    let mut redis = RedisServer::start();
    let db = Arc::new(Db::default());
    let tiered = node(&redis.url(), "crash", true);
    let l2_only = node(&redis.url(), "crash", false);
    wait_in_sync(&tiered).await;
    wait_in_sync(&l2_only).await;
    let a = app(tiered.clone(), db.clone()).await;
    let b = app(l2_only.clone(), db.clone()).await;
    get(&a, "/p/1").await;
    assert_eq!(get(&b, "/p/1").await.x_cache(), "HIT");

    redis.kill();
    for i in 0..300 {
        let id = i % 7;
        for node in [&a, &b] {
            let reply = get(node, &format!("/p/{id}")).await;
            assert_eq!(reply.status, StatusCode::OK, "request {i}");
            assert_eq!(reply.text(), format!("{id}:v0"), "request {i}");
        }
    }
    assert!(
        tiered.invalidate_tag("products").await.is_err(),
        "no silent success"
    );
    assert!(
        !tiered.in_sync(),
        "a node without its subscription knows it"
    );
    assert!(l2_only.stats().l2.errors + l2_only.stats().errors > 0);

    redis.restart();
    let restarted = Instant::now();
    loop {
        let reply = get(&b, "/p/1").await;
        assert_eq!(reply.summary().0, StatusCode::OK);
        assert_eq!(reply.text(), "1:v0");
        if reply.x_cache() == "HIT" {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(2),
            "L2 hits did not resume within 2 s of the restart"
        );
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    tiered
        .invalidate_tag("products")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[actix_web::test]
async fn a_redis_that_never_was_is_a_cache_that_always_misses() {
    let port = cache_actix_tests::free_port();
    let cache = node(&format!("redis://127.0.0.1:{port}"), "none", true);
    let db = Arc::new(Db::default());
    let a = app(cache.clone(), db.clone()).await;
    for _ in 0..20 {
        let reply = get(&a, "/p/3").await;
        assert_eq!(
            reply.summary(),
            (StatusCode::OK, "MISS".into(), "3:v0".into())
        );
    }
    assert_eq!(db.calls.load(Ordering::SeqCst), 20);
    assert!(cache.invalidate_tag("products").await.is_err());
    assert!(cache.purge_all().await.is_err());
}

#[actix_web::test]
async fn with_strict_reads_an_l2_only_node_sees_an_invalidation_on_its_very_next_read() {
    let redis = RedisServer::start();
    let db = Arc::new(Db::default());
    let writer = node(&redis.url(), "strict", true);
    let reader = node_with(&redis.url(), "strict", false, true);
    wait_in_sync(&writer).await;
    wait_in_sync(&reader).await;
    let b = app(reader.clone(), db.clone()).await;
    for round in 0..50 {
        let path = format!("/p/{round}");
        get(&b, &path).await;
        assert_eq!(get(&b, &path).await.x_cache(), "HIT");
        db.version.store(round + 1, Ordering::SeqCst);
        writer
            .invalidate_tag("products")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // No waiting for pub/sub: the read itself checks the clock in Redis.
        let after = get(&b, &path).await;
        assert_eq!(
            after.summary(),
            (
                StatusCode::OK,
                "MISS".into(),
                format!("{round}:v{}", round + 1)
            ),
            "round {round}"
        );
    }
}

#[actix_web::test]
async fn a_node_started_after_an_invalidation_or_purge_never_serves_what_it_removed() {
    let redis = RedisServer::start();
    let db = Arc::new(Db::default());
    let first = node(&redis.url(), "late", true);
    wait_in_sync(&first).await;
    let a = app(first.clone(), db.clone()).await;
    for id in 1..=3 {
        assert_eq!(get(&a, &format!("/p/{id}")).await.x_cache(), "MISS");
    }
    // The records stay in Redis (invalidation does not scan for them); only the clocks move.
    db.version.store(1, Ordering::SeqCst);
    first
        .invalidate_tag("products")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(redis.keys("ca:*:r:*").len() >= 3);

    // A process deployed now has heard of no invalidation: it must not trust what it reads.
    let late = node(&redis.url(), "late", true);
    wait_in_sync(&late).await;
    let c = app(late.clone(), db.clone()).await;
    for id in 1..=3 {
        let reply = get(&c, &format!("/p/{id}")).await;
        assert_eq!(
            reply.summary(),
            (StatusCode::OK, "MISS".into(), format!("{id}:v1"))
        );
    }
    assert_eq!(get(&c, "/p/1").await.x_cache(), "HIT");

    // The same after purge_all.
    db.version.store(2, Ordering::SeqCst);
    late.purge_all().await.unwrap_or_else(|e| panic!("{e}"));
    let later = node(&redis.url(), "late", false);
    wait_in_sync(&later).await;
    let d = app(later.clone(), db.clone()).await;
    let reply = get(&d, "/p/2").await;
    assert_eq!(
        reply.summary(),
        (StatusCode::OK, "MISS".into(), "2:v2".into())
    );
}

#[actix_web::test]
async fn a_quiet_channel_keeps_the_subscription_and_the_l1() {
    let redis = RedisServer::start();
    let db = Arc::new(Db::default());
    let cache = node(&redis.url(), "quiet", true);
    wait_in_sync(&cache).await;
    let a = app(cache.clone(), db.clone()).await;
    get(&a, "/p/1").await;
    // Longer than the subscription's heartbeat: the ping must not be mistaken for a failure.
    actix_web::rt::time::sleep(Duration::from_millis(2500)).await;
    assert!(cache.in_sync());
    let l1_hits = cache.stats().l1.hits;
    assert_eq!(get(&a, "/p/1").await.x_cache(), "HIT");
    assert_eq!(
        cache.stats().l1.hits,
        l1_hits + 1,
        "served from memory, not Redis"
    );
}

#[actix_web::test]
async fn a_counter_that_goes_back_in_redis_never_revives_an_invalidated_entry() {
    let redis = RedisServer::start();
    let db = Arc::new(Db::default());
    let (cache_a, cache_b) = (
        node(&redis.url(), "back", true),
        node(&redis.url(), "back", false),
    );
    wait_in_sync(&cache_a).await;
    wait_in_sync(&cache_b).await;
    for _ in 0..5 {
        cache_b
            .invalidate_tag("elsewhere")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let a = app(cache_a.clone(), db.clone()).await;
    let b = app(cache_b.clone(), db.clone()).await;
    assert_eq!(get(&a, "/p/1").await.x_cache(), "MISS");
    assert_eq!(get(&b, "/p/1").await.x_cache(), "HIT");
    // A failover to a lagging replica (or a restore, or an eviction) takes the counter back.
    let seq_key = redis
        .keys("ca:*:seq")
        .pop()
        .unwrap_or_else(|| panic!("no counter in Redis"));
    redis.command(&["SET", &seq_key, "0"]);
    db.version.store(1, Ordering::SeqCst);
    cache_b
        .invalidate_tag("products")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(2);
    for node in [&a, &b] {
        loop {
            let reply = get(node, "/p/1").await;
            if reply.text() == "1:v1" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the invalidation was lost: {:?}",
                reply.summary()
            );
        }
    }
}

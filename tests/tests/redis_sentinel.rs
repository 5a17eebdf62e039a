//! Nodes over a primary with a replica under three real sentinels (`RedisStore::sentinel`): a
//! fill on one node is a hit on another, and a failover of the primary under a client loop costs
//! misses for its window, never a 5xx, a wrong body or an invalidation that returned `Ok`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use cache_actix::{Cache, MemoryStore, RedisStore};
use cache_actix_tests::shop::{app, Db};
use cache_actix_tests::{get_path as get, redis::wait_in_sync, redis_sentinel::RedisSentinel};

fn node(sentinel: &RedisSentinel) -> Cache {
    let store = RedisStore::sentinel(sentinel.sentinel_urls(), sentinel.master_name())
        .unwrap_or_else(|e| panic!("sentinel: {e}"));
    Cache::builder()
        .l1(MemoryStore::new())
        .l2(store)
        .namespace("shop")
        .build()
}

#[actix_web::test]
async fn a_failover_costs_misses_never_a_5xx_or_an_acknowledged_invalidation() {
    let mut sentinel = RedisSentinel::start("cache");
    let db = Arc::new(Db::default());
    let (cache_a, cache_b) = (node(&sentinel), node(&sentinel));
    wait_in_sync(&cache_a).await;
    wait_in_sync(&cache_b).await;
    let a = app(cache_a.clone(), db.clone()).await;
    let b = app(cache_b.clone(), db.clone()).await;

    for id in 0..10 {
        assert_eq!(
            get(&a, &format!("/p/{id}")).await.text(),
            format!("{id}:v0")
        );
    }
    for id in 0..10 {
        assert_eq!(
            get(&b, &format!("/p/{id}")).await.summary(),
            (StatusCode::OK, "HIT".into(), format!("{id}:v0")),
            "B shares A's fill through the primary"
        );
    }

    // Acknowledged just before the failover: it must hold after it.
    db.version.store(1, Ordering::SeqCst);
    cache_a
        .invalidate_tag("products")
        .await
        .unwrap_or_else(|e| panic!("invalidate with a replica up: {e}"));
    let killed_at = Instant::now();
    sentinel.kill_primary();

    let mut misses = 0u32;
    let mut last_miss = killed_at;
    let mut round = 0u32;
    while killed_at.elapsed() < Duration::from_secs(8) {
        round += 1;
        for (name, node) in [("A", &a), ("B", &b)] {
            let id = round % 10;
            let reply = get(node, &format!("/p/{id}")).await;
            assert!(
                !reply.status.is_server_error(),
                "{name} round {round}: {:?}",
                reply.summary()
            );
            // B may still answer from its L1 until it hears of the invalidation or loses its
            // subscription; once it does, never the old version again. A knew at once.
            if name == "A" || killed_at.elapsed() > Duration::from_secs(1) {
                assert_eq!(
                    reply.text(),
                    format!("{id}:v1"),
                    "{name} round {round} serves an invalidated body: {:?}",
                    reply.summary()
                );
            }
            if reply.x_cache() != "HIT" {
                misses += 1;
                last_miss = Instant::now();
            }
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    let new_primary = sentinel.wait_failover(Duration::from_secs(10));
    eprintln!(
        "failover: new primary {new_primary}; {misses} non-hit answers in {round} rounds, the last {:?} after the kill",
        last_miss - killed_at
    );
    // After the failover both nodes share fills again through the new primary.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        get(&a, "/p/77").await;
        let reply = get(&b, "/p/77").await;
        if reply.x_cache() == "HIT" && reply.text() == "77:v1" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no shared hit after the failover: {:?}",
            reply.summary()
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    // The old primary is gone, so no replica can confirm an invalidation now: it is `Err`
    // (this node's L1 is dropped), yet it ran on the new primary, and no node serves the old
    // version.
    db.version.store(2, Ordering::SeqCst);
    let unconfirmed = cache_b.invalidate_tag("products").await;
    assert!(
        unconfirmed.is_err(),
        "an invalidation no replica confirmed must not be Ok"
    );
    assert_eq!(get(&b, "/p/3").await.text(), "3:v2");
    // A hears of it through its subscription, within the propagation delay.
    let deadline = Instant::now() + Duration::from_secs(2);
    while get(&a, "/p/4").await.text() != "4:v2" {
        assert!(
            Instant::now() < deadline,
            "A never heard of B's invalidation"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

//! Nodes over a primary with a replica under three real sentinels (`RedisStore::sentinel`): a
//! fill on one node is a hit on another, and a failover of the primary under a client loop costs
//! misses for its window, never a 5xx, a wrong body or an invalidation that returned `Ok`. The
//! same over a setup that speaks only TLS (`rediss://` sentinels, and the primary they name over
//! TLS too): with the CA (and the client certificate where every process requires one) the nodes
//! share fills, invalidations and a failover; a store without them reaches nothing and still
//! answers, misses every time, never a 5xx.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use cache_actix::{Cache, CacheError, MemoryStore, RedisStore};
use cache_actix_tests::redis_tls::Pki;
use cache_actix_tests::shop::{app, Db};
use cache_actix_tests::{
    get_path as get, redis::wait_in_sync, redis_sentinel::RedisSentinel, resp,
};

/// A node with an L1 and `sentinel`'s primary as L2, in namespace `shop`; `tls` adds
/// certificates. Over TLS the time limit is generous: each thread's first call makes TLS
/// connections to a sentinel and to the primary, and this machine may be busy with builds.
fn node(
    sentinel: &RedisSentinel,
    tls: impl FnOnce(RedisStore) -> Result<RedisStore, CacheError>,
) -> Cache {
    let store = RedisStore::sentinel(sentinel.sentinel_urls(), sentinel.master_name())
        .and_then(tls)
        .unwrap_or_else(|e| panic!("sentinel: {e}"));
    let store = match sentinel.pki() {
        Some(_) => store.timeout(Duration::from_secs(1)),
        None => store,
    };
    Cache::builder()
        .l1(MemoryStore::new())
        .l2(store)
        .namespace("shop")
        .build()
}

fn with_ca(pki: &Pki) -> impl Fn(RedisStore) -> Result<RedisStore, CacheError> + '_ {
    move |store| store.tls_root_ca_pem(pki.ca_pem())
}

fn with_ca_and_client_cert(
    pki: &Pki,
) -> impl Fn(RedisStore) -> Result<RedisStore, CacheError> + '_ {
    move |store| {
        store
            .tls_root_ca_pem(pki.ca_pem())?
            .tls_client_cert_pem(pki.client_cert_pem(), pki.client_key_pem())
    }
}

#[actix_web::test]
async fn a_failover_costs_misses_never_a_5xx_or_an_acknowledged_invalidation() {
    let mut sentinel = RedisSentinel::start("cache");
    let (a, b) = (node(&sentinel, Ok), node(&sentinel, Ok));
    failover_under_load(&mut sentinel, a, b).await;
}

#[actix_web::test]
async fn a_failover_over_tls_costs_misses_never_a_5xx_or_an_acknowledged_invalidation() {
    let mut sentinel = RedisSentinel::start_tls("cache", false);
    let pki = sentinel
        .pki()
        .unwrap_or_else(|| panic!("start_tls gave no certificates"));
    let (a, b) = (node(&sentinel, with_ca(pki)), node(&sentinel, with_ca(pki)));
    failover_under_load(&mut sentinel, a, b).await;
}

#[actix_web::test]
async fn over_tls_with_client_certificates_two_nodes_share_fills_and_invalidations_and_no_other_store_gets_in(
) {
    let sentinel = RedisSentinel::start_tls("cache", true);
    let pki = sentinel
        .pki()
        .unwrap_or_else(|| panic!("start_tls gave no certificates"));
    assert!(sentinel
        .sentinel_urls()
        .iter()
        .all(|u| u.starts_with("rediss://")));
    // Every process speaks TLS only: a store that reached any of them did so over TLS.
    for port in sentinel
        .data_ports()
        .into_iter()
        .chain(sentinel.sentinel_ports())
    {
        let plain = resp::command(port, &["PING"]);
        assert!(
            !plain.as_deref().unwrap_or("").contains("PONG"),
            "plaintext to {port} got {plain:?}"
        );
    }
    let db = Arc::new(Db::default());
    let (cache_a, cache_b) = (
        node(&sentinel, with_ca_and_client_cert(pki)),
        node(&sentinel, with_ca_and_client_cert(pki)),
    );
    // The subscriptions (pub/sub connections to the primary, over TLS) are up.
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
        (StatusCode::OK, "HIT".into(), "1:v0".into()),
        "B shares A's fill through the primary"
    );
    assert_eq!(db.calls(), 1, "filled once for both nodes");
    assert_eq!(cache_b.stats().l2.hits, 1, "B's hit came from Redis");

    db.version.store(1, Ordering::SeqCst);
    cache_a
        .invalidate_tag("products")
        .await
        .unwrap_or_else(|e| panic!("invalidate over TLS, confirmed by the replica: {e}"));
    // B holds its copy in L1: only the message on its subscription can drop it.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let reply = get(&b, "/p/1").await;
        assert_eq!(reply.status, StatusCode::OK);
        if reply.text() == "1:v1" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B still serves {:?} after the invalidation",
            reply.summary()
        );
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        get(&a, "/p/1").await.summary(),
        (StatusCode::OK, "HIT".into(), "1:v1".into()),
        "B's refill reached A through Redis"
    );
    assert_eq!(db.calls(), 2);
    assert_eq!(cache_a.stats().l2.errors + cache_b.stats().l2.errors, 0);

    // Neither a store that does not trust the CA (the platform's store does not know it) nor one
    // that trusts it but shows no certificate gets in: every request is a miss the handler
    // answers, never a 5xx, and their invalidations fail.
    for (what, outsider) in [
        ("without the CA", node(&sentinel, Ok)),
        (
            "without a client certificate",
            node(&sentinel, with_ca(pki)),
        ),
    ] {
        let c = app(outsider.clone(), db.clone()).await;
        let calls = db.calls();
        for round in 0..5 {
            assert_eq!(
                get(&c, "/p/1").await.summary(),
                (StatusCode::OK, "MISS".into(), "1:v1".into()),
                "{what}, round {round}: Redis holds /p/1, but this store must not reach it"
            );
        }
        assert_eq!(db.calls(), calls + 5, "{what}: the handler ran every time");
        assert_eq!(outsider.stats().l2.hits, 0, "{what}");
        assert!(
            !outsider.in_sync(),
            "{what}: its subscription never connects"
        );
        assert!(
            outsider.invalidate_tag("products").await.is_err(),
            "{what}: an invalidation through a Redis it cannot reach must fail"
        );
    }
    // The control: A still hits.
    assert_eq!(
        get(&a, "/p/1").await.summary(),
        (StatusCode::OK, "HIT".into(), "1:v1".into())
    );
}

#[test]
fn sentinel_tls_settings_that_cannot_work_are_refused_when_given() {
    let pki = Pki::generate();
    let config_error = |result: Result<RedisStore, CacheError>| match result {
        Err(CacheError::Config(message)) => message,
        Err(other) => panic!("not a configuration error: {other}"),
        Ok(_) => panic!("accepted"),
    };
    let plain = || {
        RedisStore::sentinel(["redis://127.0.0.1:1", "redis://127.0.0.1:2"], "cache")
            .unwrap_or_else(|e| panic!("{e}"))
    };
    config_error(plain().tls_root_ca_pem(pki.ca_pem()));
    config_error(plain().tls_client_cert_pem(pki.client_cert_pem(), pki.client_key_pem()));
    config_error(RedisStore::sentinel(
        ["rediss://127.0.0.1:1", "redis://127.0.0.1:2"],
        "cache",
    ));
    config_error(RedisStore::sentinel(
        ["rediss://127.0.0.1:1/#insecure"],
        "cache",
    ));
    let message = config_error(RedisStore::sentinel(
        [
            "rediss://:hunter2@127.0.0.1:1",
            "rediss://:other@127.0.0.1:2",
        ],
        "cache",
    ));
    assert!(!message.contains("hunter2"), "no password in: {message}");
    // What works: TLS sentinels with both, in either order.
    assert!(
        RedisStore::sentinel(["rediss://127.0.0.1:1", "rediss://127.0.0.1:2"], "cache")
            .and_then(|s| s.tls_client_cert_pem(pki.client_cert_pem(), pki.client_key_pem()))
            .and_then(|s| s.tls_root_ca_pem(pki.ca_pem()))
            .is_ok()
    );
}

/// Two nodes `cache_a` and `cache_b` over `sentinel`: a shared fill, an invalidation
/// acknowledged just before the primary is killed, then 8 s of requests through the failover
/// (no 5xx, never the invalidated body), shared hits again on the new primary, and an
/// invalidation no replica can confirm, which is `Err` yet holds everywhere.
async fn failover_under_load(sentinel: &mut RedisSentinel, cache_a: Cache, cache_b: Cache) {
    let db = Arc::new(Db::default());
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

#[actix_web::test]
async fn a_primary_that_requires_a_password_is_reached_with_primary_auth_and_never_without() {
    // On the data nodes, the `default` user keeps what the sentinels, replication and this
    // helper need, but no key and no channel of ours; the cache's user has them all.
    let sentinel = RedisSentinel::start_with(
        "cache",
        &[
            "--user",
            "default",
            "on",
            "nopass",
            "resetkeys",
            "resetchannels",
            "&__sentinel__:hello",
            "+@all",
            "--user",
            "cache",
            "on",
            ">primary-secret",
            "~*",
            "&*",
            "+@all",
        ],
    );
    let authed = |store: RedisStore| store.primary_auth(Some("cache"), "primary-secret");
    let (cache_a, cache_b) = (node(&sentinel, authed), node(&sentinel, authed));
    wait_in_sync(&cache_a).await;
    wait_in_sync(&cache_b).await;
    let db = Arc::new(Db::default());
    let a = app(cache_a.clone(), db.clone()).await;
    let b = app(cache_b.clone(), db.clone()).await;
    assert_eq!(get(&a, "/p/1").await.summary().2, "1:v0");
    let shared = get(&b, "/p/1").await;
    assert_eq!(
        shared.summary(),
        (StatusCode::OK, "HIT".into(), "1:v0".into()),
        "B shares A's fill through the primary"
    );
    db.version.store(1, Ordering::SeqCst);
    cache_a
        .invalidate_tag("products")
        .await
        .unwrap_or_else(|e| panic!("an invalidation with the primary's credentials: {e}"));
    assert_eq!(get(&a, "/p/1").await.text(), "1:v1");

    // Without the credentials, or with wrong ones: Redis refuses every call, so every request
    // runs the handler and answers; nothing is shared and no invalidation is acknowledged.
    let unauthed = node(&sentinel, Ok);
    let wrong = node(&sentinel, |store| {
        store.primary_auth(Some("cache"), "wrong")
    });
    for (name, cache) in [("no credentials", &unauthed), ("wrong password", &wrong)] {
        let service = app(cache.clone(), db.clone()).await;
        let calls = db.calls.load(Ordering::SeqCst);
        for _ in 0..3 {
            let reply = get(&service, "/p/1").await;
            assert_eq!(
                reply.summary(),
                (StatusCode::OK, "MISS".into(), "1:v1".into()),
                "{name}"
            );
        }
        assert_eq!(db.calls.load(Ordering::SeqCst), calls + 3, "{name}");
        assert!(cache.invalidate_tag("products").await.is_err(), "{name}");
        assert!(
            !cache.in_sync(),
            "{name}: subscribed without the credentials"
        );
    }
    // The control: the nodes with the credentials still share entries.
    let again = get(&b, "/p/1").await;
    assert_eq!(again.text(), "1:v1");
    let hit = get(&b, "/p/1").await;
    assert_eq!(hit.summary(), (StatusCode::OK, "HIT".into(), "1:v1".into()));
}

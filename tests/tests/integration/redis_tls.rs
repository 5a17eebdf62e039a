//! `rediss://`: nodes sharing a real `redis-server` that speaks TLS only, with certificates from
//! a test CA. With the CA, a two-node tiered cache works as over plain TCP (fill once, hit on
//! the other node, one invalidation reaches both through the subscription, itself over TLS);
//! without it, or without a client certificate where Redis requires one, the L2 is never used:
//! every request is a miss served by the handler, never a 5xx.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use cache_actix::{Cache, CacheError, MemoryStore, RedisStore};
use cache_actix_tests::shop::{app, Db};
use cache_actix_tests::{
    get_path as get,
    redis::wait_in_sync,
    redis_tls::{Pki, RedisTls},
};

/// A node with an L1 and the TLS Redis as L2, in namespace `shop`; `tls` adds certificates.
/// The time limit is generous: the first call of each thread makes its TLS connection, and this
/// machine may be busy with other builds.
fn node(url: &str, tls: impl FnOnce(RedisStore) -> Result<RedisStore, CacheError>) -> Cache {
    let store = RedisStore::from_url(url)
        .and_then(tls)
        .unwrap_or_else(|e| panic!("redis store: {e}"))
        .timeout(Duration::from_secs(1));
    Cache::builder()
        .l1(MemoryStore::new())
        .l2(store)
        .namespace("shop")
        .build()
}

fn with_ca(pki: &Pki) -> impl FnOnce(RedisStore) -> Result<RedisStore, CacheError> + '_ {
    move |store| store.tls_root_ca_pem(pki.ca_pem())
}

fn with_ca_and_client_cert(
    pki: &Pki,
) -> impl FnOnce(RedisStore) -> Result<RedisStore, CacheError> + '_ {
    move |store| {
        store
            .tls_root_ca_pem(pki.ca_pem())?
            .tls_client_cert_pem(pki.client_cert_pem(), pki.client_key_pem())
    }
}

#[actix_web::test]
async fn a_two_node_tiered_cache_over_tls_fills_once_hits_everywhere_and_invalidates_everywhere() {
    let redis = RedisTls::start();
    let pki = redis.pki();
    let db = Arc::new(Db::default());
    let (cache_a, cache_b) = (
        node(&redis.url(), with_ca(pki)),
        node(&redis.url(), with_ca(pki)),
    );
    // The subscriptions (pub/sub connections over TLS) are up.
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
    assert_eq!(db.calls(), 1, "filled once for both nodes");
    assert_eq!(cache_b.stats().l2.hits, 1, "B's hit came from Redis");
    // Now in B's L1 too.
    assert_eq!(get(&b, "/p/1").await.x_cache(), "HIT");

    db.version.store(1, Ordering::SeqCst);
    cache_a
        .invalidate_tag("products")
        .await
        .unwrap_or_else(|e| panic!("invalidate over TLS: {e}"));
    // B holds its copy in L1: only the message on the subscription can drop it.
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
    assert!(cache_a.in_sync() && cache_b.in_sync());
    assert_eq!(cache_a.stats().l2.errors + cache_b.stats().l2.errors, 0);
}

#[actix_web::test]
async fn a_store_that_does_not_trust_the_ca_never_uses_the_l2() {
    let redis = RedisTls::start();
    let pki = redis.pki();
    let db = Arc::new(Db::default());
    let trusted = node(&redis.url(), with_ca(pki));
    wait_in_sync(&trusted).await;
    let a = app(trusted.clone(), db.clone()).await;
    assert_eq!(get(&a, "/p/1").await.x_cache(), "MISS");
    assert_eq!(get(&a, "/p/1").await.x_cache(), "HIT");
    assert_eq!(db.calls(), 1);

    // The platform's trust store does not know the test CA.
    let untrusting = node(&redis.url(), Ok);
    let c = app(untrusting.clone(), db.clone()).await;
    for round in 0..5 {
        assert_eq!(
            get(&c, "/p/1").await.summary(),
            (StatusCode::OK, "MISS".into(), "1:v0".into()),
            "round {round}: Redis holds /p/1, but this store must not reach it"
        );
    }
    assert_eq!(db.calls(), 6, "the handler ran for every request of C");
    assert_eq!(untrusting.stats().l2.hits, 0);
    // Its subscription never connects (so its reads are not even tried: nothing could vouch for
    // them), and its command connections are refused too.
    assert!(!untrusting.in_sync());
    assert!(
        untrusting.invalidate_tag("products").await.is_err(),
        "an invalidation through a Redis this store cannot verify must fail"
    );
    // A is unaffected.
    assert_eq!(get(&a, "/p/1").await.x_cache(), "HIT");
}

#[actix_web::test]
async fn where_redis_requires_client_certificates_only_a_store_with_one_uses_the_l2() {
    let redis = RedisTls::start_requiring_client_cert();
    let pki = redis.pki();
    let db = Arc::new(Db::default());
    let (cache_a, cache_b) = (
        node(&redis.url(), with_ca_and_client_cert(pki)),
        node(&redis.url(), with_ca_and_client_cert(pki)),
    );
    wait_in_sync(&cache_a).await;
    wait_in_sync(&cache_b).await;
    let a = app(cache_a.clone(), db.clone()).await;
    let b = app(cache_b.clone(), db.clone()).await;
    assert_eq!(get(&a, "/p/1").await.x_cache(), "MISS");
    assert_eq!(db.calls(), 1);

    // Trusts the CA, but has no certificate to show.
    let anonymous = node(&redis.url(), with_ca(pki));
    let c = app(anonymous.clone(), db.clone()).await;
    for round in 0..5 {
        assert_eq!(
            get(&c, "/p/1").await.summary(),
            (StatusCode::OK, "MISS".into(), "1:v0".into()),
            "round {round}: Redis refuses a client without a certificate"
        );
    }
    assert_eq!(db.calls(), 6);
    assert_eq!(anonymous.stats().l2.hits, 0);
    assert!(!anonymous.in_sync());
    assert!(
        anonymous.invalidate_tag("products").await.is_err(),
        "Redis must refuse an invalidation from a client without a certificate"
    );

    // With the certificate, B hits what A stored.
    assert_eq!(
        get(&b, "/p/1").await.summary(),
        (StatusCode::OK, "HIT".into(), "1:v0".into())
    );
    assert_eq!(cache_b.stats().l2.hits, 1);
    assert_eq!(db.calls(), 6);
}

#[test]
fn certificates_that_cannot_work_are_refused_when_given() {
    let pki = Pki::generate();
    let store = || RedisStore::from_url("rediss://127.0.0.1:1").unwrap_or_else(|e| panic!("{e}"));
    let config_error = |result: Result<RedisStore, CacheError>| match result {
        Err(CacheError::Config(message)) => message,
        Err(other) => panic!("not a configuration error: {other}"),
        Ok(_) => panic!("accepted"),
    };
    config_error(store().tls_root_ca_pem("garbage"));
    config_error(store().tls_root_ca_pem(
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    ));
    // A private key is not a CA.
    config_error(store().tls_root_ca_pem(pki.client_key_pem()));
    config_error(store().tls_client_cert_pem(pki.client_cert_pem(), "garbage"));
    config_error(store().tls_client_cert_pem("garbage", pki.client_key_pem()));
    // The server's key does not belong to the client's certificate.
    let message =
        config_error(store().tls_client_cert_pem(pki.client_cert_pem(), pki.server_key_pem()));
    assert!(
        !message.contains("PRIVATE KEY"),
        "no key material in: {message}"
    );
    // TLS settings on a plain URL, and turning verification off.
    let plain = RedisStore::from_url("redis://127.0.0.1:1").unwrap_or_else(|e| panic!("{e}"));
    config_error(plain.tls_root_ca_pem(pki.ca_pem()));
    config_error(RedisStore::from_url("rediss://127.0.0.1:1/#insecure"));
    // What works: both, in either order, and a bundle given in two calls.
    assert!(store()
        .tls_client_cert_pem(pki.client_cert_pem(), pki.client_key_pem())
        .and_then(|s| s.tls_root_ca_pem(pki.ca_pem()))
        .and_then(|s| s.tls_root_ca_pem(pki.ca_pem()))
        .is_ok());
}

/// Set in the child process of the test below: the `rediss://` URL to use.
const CHILD_URL: &str = "CACHE_ACTIX_TLS_CHILD_URL";

/// `from_url` alone trusts the platform's store. The test CA is made the platform's store for a
/// child process of this test binary (`SSL_CERT_FILE`, which rustls-native-certs reads); the
/// environment is the process's, so the other tests here must not see it.
#[actix_web::test]
async fn the_platform_trust_store_is_the_default() {
    if let Ok(url) = std::env::var(CHILD_URL) {
        let cache = node(&url, Ok);
        wait_in_sync(&cache).await;
        cache
            .invalidate_tag("products")
            .await
            .unwrap_or_else(|e| panic!("invalidate with the platform's trust store: {e}"));
        let db = Arc::new(Db::default());
        let a = app(cache.clone(), db.clone()).await;
        assert_eq!(get(&a, "/p/1").await.x_cache(), "MISS");
        assert_eq!(cache.stats().l2.stores, 1, "stored in Redis");
        return;
    }
    let redis = RedisTls::start();
    let pki = redis.pki();
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("test binary: {e}"));
    // The harness names a test by its module path below the crate root.
    let name = match module_path!().split_once("::") {
        Some((_, module)) => format!("{module}::the_platform_trust_store_is_the_default"),
        None => "the_platform_trust_store_is_the_default".to_string(),
    };
    let out = std::process::Command::new(exe)
        .args([name.as_str(), "--exact", "--nocapture"])
        .env(CHILD_URL, redis.url())
        .env("SSL_CERT_FILE", &pki.ca_cert)
        .env_remove("SSL_CERT_DIR")
        .output()
        .unwrap_or_else(|e| panic!("cannot run the child test: {e}"));
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{output}");
    assert!(
        output.contains("1 passed"),
        "the child ran no test:\n{output}"
    );
}

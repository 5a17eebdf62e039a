//! Redis at its `maxmemory`, as users see it: nodes sharing one real `redis-server` started with
//! `--maxmemory 2mb`, a flood of unique URLs that fills it, then a product update.
//!
//! - `volatile-lru` (the README's recommendation): Redis evicts records (they all expire) and
//!   never a tag clock or the counter (they never expire); the update succeeds and no node serves
//!   what it invalidated.
//! - `noeviction`: Redis refuses new records (the fill is still answered, never a 5xx) and the
//!   invalidation script still runs (it is flagged `allow-oom`: a few bytes past the limit).
//! - `allkeys-lru`: a clock could be evicted, which would make an invalidated record look valid
//!   to a check in Redis. Nodes know it from the policy, say so in their stats, and serve from
//!   Redis only what their own clocks vouch for.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{dev::Service, http::StatusCode, test, web, App, HttpResponse};
use cache_actix::{
    Cache, CacheError, CacheMiddleware, CachePolicy, Cached, MemoryStore, RedisStore,
};
use cache_actix_tests::{
    get_path as get,
    redis::{until_propagated, wait_in_sync, RedisServer, PROPAGATION},
    send, Reply,
};

/// Redis's `maxmemory` in these tests (an empty Redis already uses about 0.9 MB of it).
const MAXMEMORY: u64 = 2 * 1024 * 1024;
/// Padding of each flood response: a few hundred of them fill Redis.
const PADDING: usize = 4096;
/// Most flood requests one test sends.
const FLOOD_LIMIT: usize = 4000;
/// Flood requests sent after Redis is seen full.
const FLOOD_AFTER_FULL: usize = 1000;

/// The data behind every node's handlers, shared like a real database.
#[derive(Default)]
struct Db {
    version: AtomicUsize,
}

fn full_redis(policy: &str) -> RedisServer {
    let maxmemory = MAXMEMORY.to_string();
    RedisServer::start_with(&["--maxmemory", &maxmemory, "--maxmemory-policy", policy])
}

/// A node. `l1: false` with `strict: true` reads every record from Redis and checks it there
/// (and against its own clocks): what it serves is exactly what Redis vouches for.
fn node(url: &str, l1: bool, strict: bool) -> Cache {
    let store = RedisStore::from_url(url)
        .unwrap_or_else(|e| panic!("redis url: {e}"))
        .strict_reads(strict);
    let builder = Cache::builder().l2(store).namespace("full");
    if l1 {
        builder.l1(MemoryStore::new()).build()
    } else {
        builder.build()
    }
}

/// The product update: bumps the data, then invalidates the tag; a failed invalidation is the
/// handler's error (a 500), as in the products example.
async fn update(cache: Cache, db: web::Data<Arc<Db>>) -> Result<HttpResponse, CacheError> {
    db.version.fetch_add(1, Ordering::SeqCst);
    cache.invalidate_tag("products").await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `/p/{id}` answers `"{id}:v{version}"`; `/f/{n}` the same plus 4 KiB (the flood); both
/// tagged `products`, cached a minute. `POST /p/{id}` is the update.
async fn app(
    cache: Cache,
    db: Arc<Db>,
) -> impl Service<
    actix_http::Request,
    Response = actix_web::dev::ServiceResponse,
    Error = actix_web::Error,
> {
    let (p, f) = (db.clone(), db.clone());
    test::init_service(
        App::new()
            .app_data(web::Data::new(db))
            .wrap(CacheMiddleware::new(cache))
            .route(
                "/p/{id}",
                web::get().to(move |id: web::Path<u32>| {
                    let v = p.version.load(Ordering::SeqCst);
                    async move {
                        Cached::new(
                            HttpResponse::Ok().body(format!("{id}:v{v}")),
                            CachePolicy::new(Duration::from_secs(60)).tag("products"),
                        )
                    }
                }),
            )
            .route("/p/{id}", web::post().to(update))
            .route(
                "/f/{n}",
                web::get().to(move |n: web::Path<u32>| {
                    let v = f.version.load(Ordering::SeqCst);
                    async move {
                        Cached::new(
                            HttpResponse::Ok().body(format!("{n}:v{v}:{}", "x".repeat(PADDING))),
                            CachePolicy::new(Duration::from_secs(60)).tag("products"),
                        )
                    }
                }),
            ),
    )
    .await
}

async fn post<S>(app: &S, path: &str) -> Reply
where
    S: Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
{
    send(app, test::TestRequest::post().uri(path)).await
}

/// The version a reply's body carries (`"{id}:v{version}..."`).
fn version_of(reply: &Reply) -> Option<usize> {
    let text = reply.text();
    let rest = text.split_once(":v")?.1;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Whether Redis is at its limit: it has evicted keys, or refuses writes.
fn is_full(redis: &RedisServer) -> bool {
    redis.info_field("evicted_keys").unwrap_or(0) > 0
        || redis.info_field("used_memory").unwrap_or(0) >= MAXMEMORY
}

/// Sends unique flood URLs `/f/{first}..` through `flooder` until Redis is full, then
/// `FLOOD_AFTER_FULL` more; every reply must be a 200 with the current body. Returns the paths
/// sent.
async fn flood<S>(flooder: &S, redis: &RedisServer, db: &Db, first: usize) -> Vec<String>
where
    S: Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
{
    let mut sent = Vec::new();
    let mut after_full = None;
    for n in first..first + FLOOD_LIMIT {
        let path = format!("/f/{n}");
        let reply = get(flooder, &path).await;
        assert_eq!(reply.status, StatusCode::OK, "flood request {path}");
        assert_eq!(
            version_of(&reply),
            Some(db.version.load(Ordering::SeqCst)),
            "flood request {path}"
        );
        sent.push(path);
        if after_full.is_none() && n % 50 == 0 && is_full(redis) {
            after_full = Some(n);
        }
        if after_full.is_some_and(|at| n >= at + FLOOD_AFTER_FULL) {
            println!(
                "flood: {} unique URLs, full after {:?}; used_memory {:?} of {MAXMEMORY}, \
                 evicted_keys {:?}",
                sent.len(),
                after_full.map(|at| at - first),
                redis.info_field("used_memory"),
                redis.info_field("evicted_keys")
            );
            return sent;
        }
    }
    panic!(
        "Redis never filled up: used_memory {:?}, evicted_keys {:?}",
        redis.info_field("used_memory"),
        redis.info_field("evicted_keys")
    );
}

/// The paths `reader` serves right now as HITs with the current (soon old) version.
async fn cached_now<S>(reader: &S, db: &Db, paths: &[String]) -> Vec<String>
where
    S: Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
{
    let current = db.version.load(Ordering::SeqCst);
    let mut hits = Vec::new();
    for path in paths {
        let reply = get(reader, path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        if reply.x_cache() == "HIT" && version_of(&reply) == Some(current) {
            hits.push(path.clone());
        }
    }
    hits
}

/// After an update, no path is ever answered with an older body by any node: at once by
/// `nodes[0]`, the node that made the update, and by every other node once the pub/sub
/// propagation delay (the contract across nodes) is over: within [`PROPAGATION`] of this call,
/// it answers the current version, and from then on only that.
async fn nothing_old<S>(nodes: &[&S], db: &Db, paths: &[String], rounds: usize)
where
    S: Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
{
    let current = db.version.load(Ordering::SeqCst);
    let propagated = Instant::now() + PROPAGATION;
    for round in 0..rounds {
        for (i, node) in nodes.iter().enumerate() {
            for path in paths {
                // The writer, and every node after the first round, is held to it at once.
                let deadline = if i > 0 && round == 0 {
                    propagated
                } else {
                    Instant::now()
                };
                let reply = until_propagated(
                    deadline,
                    || get(*node, path),
                    |reply| version_of(reply) == Some(current),
                )
                .await;
                assert_eq!(reply.status, StatusCode::OK, "node {i}, {path}");
                assert_eq!(
                    version_of(&reply),
                    Some(current),
                    "node {i} served an invalidated body for {path} (round {round}, x-cache {})",
                    reply.x_cache()
                );
            }
        }
    }
}

/// The paths read back around an update: the control entry, and a spread of flood entries,
/// newest first (what a full Redis still holds is the newest; reading the oldest first would
/// refill them and make Redis evict the newest before they are read).
fn sample(flooded: &[String]) -> Vec<String> {
    let mut paths = vec!["/p/1".to_string()];
    let step = (flooded.len() / 150).max(1);
    paths.extend(flooded.iter().rev().step_by(step).cloned());
    paths
}

/// The scenario under a policy that cannot evict a clock: a control HIT from Redis on the second
/// node, a flood that fills Redis, the update (which must succeed), then nothing old anywhere;
/// twice, so that the second update also meets a full Redis.
async fn flood_then_update(policy: &str) -> (RedisServer, Cache, Cache) {
    let redis = full_redis(policy);
    let db = Arc::new(Db::default());
    // A: tiered, mirrors the clocks. B: Redis only, checks every read in Redis.
    let (cache_a, cache_b) = (
        node(&redis.url(), true, false),
        node(&redis.url(), false, true),
    );
    wait_in_sync(&cache_a).await;
    wait_in_sync(&cache_b).await;
    let a = app(cache_a.clone(), db.clone()).await;
    let b = app(cache_b.clone(), db.clone()).await;
    assert!(
        !cache_b.stats().l2.clocks_at_risk,
        "{policy} cannot evict a clock"
    );

    // Control: B answers from what A stored in Redis.
    assert_eq!(
        get(&a, "/p/1").await.summary(),
        (StatusCode::OK, "MISS".into(), "1:v0".into())
    );
    assert_eq!(
        get(&b, "/p/1").await.summary(),
        (StatusCode::OK, "HIT".into(), "1:v0".into())
    );
    assert_eq!(cache_b.stats().l2.hits, 1);

    let mut first = 0;
    for update_no in 1..=2 {
        let flooded = flood(&a, &redis, &db, first).await;
        first += flooded.len();
        let paths = sample(&flooded);
        // Control, right before the update: B still answers entries from Redis.
        let old = cached_now(&b, &db, &paths).await;
        // A full Redis under noeviction keeps what the first update invalidated until it
        // expires, and takes nothing new meanwhile: before the second update it may well hold
        // nothing valid (a reason to prefer volatile-lru).
        assert!(
            !old.is_empty() || (update_no > 1 && policy == "noeviction"),
            "update {update_no}: B found nothing in Redis before the update"
        );
        println!(
            "{policy}, update {update_no}: B served {} of {} sampled paths from Redis before it",
            old.len(),
            paths.len()
        );
        if update_no > 1 {
            assert_eq!(
                redis.keys("ca:*:t:products").len(),
                1,
                "the clock of the first update survived the second flood"
            );
        }

        let reply = post(&a, "/p/1").await;
        assert_eq!(
            reply.status,
            StatusCode::NO_CONTENT,
            "update {update_no} with Redis full: {}",
            reply.text()
        );
        let clock = redis.keys("ca:*:t:products");
        assert_eq!(clock.len(), 1, "the tag's clock is in Redis: {clock:?}");
        assert_eq!(
            redis.pttl(&clock[0]),
            Some(-1),
            "a clock never expires, so no volatile-* policy evicts it"
        );
        assert_eq!(db.version.load(Ordering::SeqCst), update_no);
        nothing_old(&[&a, &b], &db, &old, 2).await;
        nothing_old(&[&a, &b], &db, &paths, 1).await;
    }
    assert!(is_full(&redis));
    (redis, cache_a, cache_b)
}

#[actix_web::test]
async fn with_volatile_lru_a_full_redis_evicts_entries_never_clocks_and_invalidation_holds() {
    let (redis, cache_a, _) = flood_then_update("volatile-lru").await;
    assert!(
        redis.info_field("evicted_keys").unwrap_or(0) > 0,
        "Redis evicted records to make room"
    );
    let seq = redis.keys("ca:*:seq");
    assert_eq!(seq.len(), 1, "the counter survived");
    assert_eq!(redis.pttl(&seq[0]), Some(-1));
    assert!(cache_a.stats().l2.stores > 0);
}

#[actix_web::test]
async fn with_noeviction_a_full_redis_refuses_fills_never_answers_and_invalidation_holds() {
    let (redis, cache_a, _) = flood_then_update("noeviction").await;
    assert_eq!(redis.info_field("evicted_keys"), Some(0));
    assert!(
        cache_a.stats().l2.errors > 0,
        "refused stores are counted (and were answered all the same)"
    );
}

/// Under `allkeys-lru` a clock may go. Simulated exactly (the flood may or may not evict this
/// particular clock): after an update, the tag's clock is deleted as Redis could evict it. A
/// node that started after the update has never heard of it and would, by a check in Redis,
/// find the old record valid; it must not serve it.
#[actix_web::test]
async fn with_allkeys_lru_nodes_fail_safe_and_say_so() {
    let redis = full_redis("allkeys-lru");
    let db = Arc::new(Db::default());
    // B subscribes first, so that A's fills are younger than B's subscription.
    let cache_b = node(&redis.url(), false, true);
    wait_in_sync(&cache_b).await;
    let cache_a = node(&redis.url(), true, false);
    wait_in_sync(&cache_a).await;
    let a = app(cache_a.clone(), db.clone()).await;
    let b = app(cache_b.clone(), db.clone()).await;
    for cache in [&cache_a, &cache_b] {
        assert!(cache.stats().l2.clocks_at_risk, "the stats say so");
    }

    // Control: what B can vouch for (filled after it subscribed) is still a HIT from Redis.
    assert_eq!(get(&a, "/p/1").await.x_cache(), "MISS");
    assert_eq!(
        get(&b, "/p/1").await.summary(),
        (StatusCode::OK, "HIT".into(), "1:v0".into())
    );
    assert_eq!(get(&a, "/p/2").await.x_cache(), "MISS");

    assert_eq!(post(&a, "/p/1").await.status, StatusCode::NO_CONTENT);
    // The eviction allkeys-lru allows: the clock that invalidated /p/2 is gone.
    let clock = redis.keys("ca:*:t:products");
    assert_eq!(clock.len(), 1);
    redis.command(&["DEL", &clock[0]]);
    assert!(
        !redis.keys("ca:*:r:*").is_empty(),
        "the invalidated records are still in Redis"
    );

    // C started after the update: nothing it knows vouches for the old record.
    let cache_c = node(&redis.url(), false, false);
    wait_in_sync(&cache_c).await;
    let c = app(cache_c.clone(), db.clone()).await;
    assert!(cache_c.stats().l2.clocks_at_risk);
    assert_eq!(
        get(&c, "/p/2").await.summary(),
        (StatusCode::OK, "MISS".into(), "2:v1".into()),
        "an invalidated record whose clock was evicted is not served"
    );
    assert!(
        cache_c.stats().l2.unverified >= 1,
        "the refused read is counted"
    );
    nothing_old(&[&a, &b, &c], &db, &["/p/1".into(), "/p/2".into()], 1).await;
    // What C can vouch for is still served from Redis.
    assert_eq!(get(&a, "/p/3").await.x_cache(), "MISS");
    assert_eq!(
        get(&c, "/p/3").await.summary(),
        (StatusCode::OK, "HIT".into(), "3:v1".into())
    );

    // The flood evicts whatever LRU picks, clocks included; updates still succeed and nothing
    // old comes back on any node.
    let flooded = flood(&a, &redis, &db, 0).await;
    assert!(redis.info_field("evicted_keys").unwrap_or(0) > 0);
    let paths = sample(&flooded);
    let old = cached_now(&b, &db, &paths).await;
    assert!(!old.is_empty(), "B still finds entries it can vouch for");
    let reply = post(&a, "/p/1").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
    nothing_old(&[&a, &b, &c], &db, &old, 2).await;
    nothing_old(&[&a, &b, &c], &db, &paths, 1).await;
}

/// An operator switching the policy at run time is noticed, both ways; coming back to a safe
/// policy, records stored while clocks could be evicted are dropped (a purge), since Redis can no
/// longer vouch for them.
#[actix_web::test]
async fn a_policy_changed_at_run_time_is_noticed_both_ways() {
    let redis = full_redis("volatile-lru");
    let db = Arc::new(Db::default());
    let (cache_a, cache_b) = (
        node(&redis.url(), true, false),
        node(&redis.url(), false, false),
    );
    wait_in_sync(&cache_a).await;
    wait_in_sync(&cache_b).await;
    let a = app(cache_a.clone(), db.clone()).await;
    let b = app(cache_b.clone(), db.clone()).await;
    assert!(!cache_b.stats().l2.clocks_at_risk);

    redis.command(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    wait_for(
        || cache_b.stats().l2.clocks_at_risk,
        "B to notice allkeys-lru",
    )
    .await;
    assert_eq!(get(&a, "/p/1").await.x_cache(), "MISS");
    assert_eq!(get(&b, "/p/1").await.text(), "1:v0");

    redis.command(&["CONFIG", "SET", "maxmemory-policy", "volatile-lru"]);
    wait_for(
        || !cache_a.stats().l2.clocks_at_risk && !cache_b.stats().l2.clocks_at_risk,
        "both nodes to notice volatile-lru",
    )
    .await;
    // Both nodes' purges have reached both nodes.
    actix_web::rt::time::sleep(PROPAGATION).await;
    // /p/1 was stored while a clock could have been evicted: not served from Redis any more.
    assert_eq!(
        get(&b, "/p/1").await.summary(),
        (StatusCode::OK, "MISS".into(), "1:v0".into())
    );
    assert_eq!(get(&b, "/p/1").await.x_cache(), "HIT");
}

async fn wait_for(condition: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Redis that will not say its policy (managed services may disable `CONFIG`) counts as one
/// that may evict a clock, unless the policy it really has is declared.
#[actix_web::test]
async fn a_redis_that_hides_its_policy_is_treated_as_unsafe_unless_declared() {
    let redis = RedisServer::start_with(&[
        "--maxmemory",
        "2mb",
        "--maxmemory-policy",
        "volatile-lru",
        "--rename-command",
        "CONFIG",
        "",
    ]);
    let db = Arc::new(Db::default());
    let guarded = node(&redis.url(), false, false);
    let declared = Cache::builder()
        .l2(RedisStore::from_url(&redis.url())
            .unwrap_or_else(|e| panic!("redis url: {e}"))
            .assume_maxmemory_policy("volatile-lru"))
        .namespace("full")
        .build();
    wait_in_sync(&guarded).await;
    wait_in_sync(&declared).await;
    assert!(guarded.stats().l2.clocks_at_risk);
    assert!(!declared.stats().l2.clocks_at_risk);
    let g = app(guarded.clone(), db.clone()).await;
    let d = app(declared.clone(), db.clone()).await;
    assert_eq!(get(&g, "/p/1").await.x_cache(), "MISS");
    assert_eq!(get(&d, "/p/1").await.x_cache(), "HIT");
    assert_eq!(get(&g, "/p/1").await.x_cache(), "HIT");
    assert_eq!(post(&d, "/p/1").await.status, StatusCode::NO_CONTENT);
    nothing_old(&[&d, &g], &db, &["/p/1".into()], 1).await;
}

//! Coalescing across nodes: `Cache` nodes, each with its own `RedisStore` to one real Redis
//! (or one Redis Cluster) and its own actix app, share one origin whose handler counts its runs.
//! Concurrent cold requests for one URL spread over the nodes run the handler once in total; a
//! lease holder that died costs about one lease time; a Redis that is away means one run per
//! node at once, never a wait for the lock timeout; an expired holder's late store never
//! replaces the newer holder's record.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{
    body::MessageBody,
    dev::{Service, ServiceResponse},
    http::StatusCode,
    test, web, App, HttpResponse,
};
use cache_actix::{Cache, CacheMiddleware, CachePolicy, Cached, Entry, MemoryStore, RedisStore};
use cache_actix_tests::{
    cluster_shop::eventually,
    free_port,
    redis::{wait_in_sync, RedisServer},
    redis_cluster::RedisCluster,
    x_cache_of,
};
use cache_core::{lease::LeaseGrant, Lookup};
use futures_util::future::join_all;
use tokio::sync::Notify;

/// What every node is given: the handler runs for `DELAY`, so that a node that ran it would
/// show; nobody may wait as long as `LOCK_TIMEOUT` in a passing run.
const DELAY: Duration = Duration::from_millis(200);
const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
const SECRET: &str = "coalescing test secret";

/// The origin every node fronts: counts its runs, and answers `item <run>` after `delay`; the
/// first run waits for `gate` when there is one.
#[derive(Clone, Default)]
struct Origin {
    runs: Arc<AtomicUsize>,
    gate: Option<Arc<Notify>>,
    /// A stale-while-revalidate window for what it answers, under tag `items`.
    swr: Option<Duration>,
}

impl Origin {
    fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
}

/// A node: its own L1 and its own `RedisStore` over `store`.
fn node(store: RedisStore) -> Cache {
    Cache::builder()
        .l1(MemoryStore::new())
        .l2(store)
        .namespace("coalescing")
        .key_secret(SECRET)
        .build()
}

/// A 200 of `primary` with `body`, fresh for a minute, born now on `cache` (a fill's entry).
fn fresh_entry(cache: &Cache, primary: &cache_core::PrimaryKey, body: &'static str) -> Entry {
    let now = cache_core::time::now_ms();
    Entry::new(
        primary.cache_key().bytes(),
        200,
        vec![],
        body.into(),
        now,
        now + 60_000,
    )
    .with_born(cache.begin_fill())
}

/// `N` nodes over one Redis, each subscribed before it is handed out.
async fn synced_nodes<const N: usize>(redis: &RedisServer) -> [Cache; N] {
    let caches: [Cache; N] = std::array::from_fn(|_| node(one_node_store(&redis.url())));
    for cache in &caches {
        wait_in_sync(cache).await;
    }
    caches
}

fn one_node_store(url: &str) -> RedisStore {
    RedisStore::from_url(url).unwrap_or_else(|e| panic!("redis url: {e}"))
}

async fn node_app(
    cache: Cache,
    origin: Origin,
    lease_time: Option<Duration>,
) -> impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl MessageBody>,
    Error = actix_web::Error,
> {
    let middleware = CacheMiddleware::new(cache).lock_timeout(LOCK_TIMEOUT);
    let middleware = match lease_time {
        Some(time) => middleware.lease_time(time),
        None => middleware,
    };
    test::init_service(App::new().wrap(middleware).route(
        "/item",
        web::get().to(move || {
            let origin = origin.clone();
            async move {
                let run = origin.runs.fetch_add(1, Ordering::SeqCst) + 1;
                if let (1, Some(gate)) = (run, &origin.gate) {
                    gate.notified().await;
                }
                actix_web::rt::time::sleep(DELAY).await;
                let policy = CachePolicy::new(Duration::from_secs(60)).tag("items");
                let policy = match origin.swr {
                    Some(swr) => policy.stale_while_revalidate(swr),
                    None => policy,
                };
                Cached::new(HttpResponse::Ok().body(format!("item {run}")), policy)
            }
        }),
    ))
    .await
}

/// One answer as the client saw it, and how long it took.
#[derive(Debug, Clone)]
struct Seen {
    node: usize,
    status: StatusCode,
    x_cache: String,
    body: String,
    took: Duration,
}

async fn ask<S, B>(app: &S, node: usize) -> Seen
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let started = Instant::now();
    let req = test::TestRequest::get().uri("/item").to_request();
    let res = app
        .call(req)
        .await
        .unwrap_or_else(|e| panic!("request failed: {e}"));
    let (status, x_cache) = (res.status(), x_cache_of(res.headers()));
    let body = test::read_body(res).await;
    Seen {
        node,
        status,
        x_cache,
        body: String::from_utf8_lossy(&body).into_owned(),
        took: started.elapsed(),
    }
}

/// `count` concurrent requests, the i-th to node `i % apps`.
async fn spread<S, B>(apps: &[S], count: usize) -> Vec<Seen>
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    join_all((0..count).map(|i| ask(&apps[i % apps.len()], i % apps.len()))).await
}

fn slowest(seen: &[Seen]) -> Duration {
    seen.iter().map(|s| s.took).max().unwrap_or_default()
}

fn tally(seen: &[Seen], x_cache: &str) -> usize {
    seen.iter().filter(|s| s.x_cache == x_cache).count()
}

/// The 256-request shape over `caches`: one handler run, every answer `200 item 1` (one MISS,
/// the rest HITs, collapsed on the holder's node or taken from Redis on the others), and
/// afterwards every node HITs.
async fn one_run_for_256_requests(caches: Vec<Cache>, what: &str) {
    for cache in &caches {
        wait_in_sync(cache).await;
    }
    let origin = Origin::default();
    let mut apps = Vec::new();
    for cache in &caches {
        apps.push(node_app(cache.clone(), origin.clone(), None).await);
    }
    let started = Instant::now();
    let seen = spread(&apps, 256).await;
    let elapsed = started.elapsed();
    for s in &seen {
        assert_eq!(
            (s.status, s.body.as_str()),
            (StatusCode::OK, "item 1"),
            "{what}: {s:?}"
        );
    }
    assert_eq!(
        origin.runs(),
        1,
        "{what}: one handler run for {} nodes",
        apps.len()
    );
    assert_eq!(tally(&seen, "MISS"), 1, "{what}: one fill");
    assert_eq!(
        tally(&seen, "HIT"),
        255,
        "{what}: every other request shared it"
    );
    assert!(
        elapsed < LOCK_TIMEOUT,
        "{what}: nobody waited for the lock timeout ({elapsed:?})"
    );
    for node in 0..apps.len() {
        let waited = seen.iter().filter(|s| s.node == node).map(|s| s.took);
        eprintln!(
            "{what}: node {node}: slowest answer {:?}",
            waited.max().unwrap_or_default()
        );
    }
    eprintln!(
        "{what}: 256 requests over {} nodes, {} handler run(s), all answered in {elapsed:?}",
        apps.len(),
        origin.runs()
    );
    // The control: what was filled is stored and answers every node.
    for (node, app) in apps.iter().enumerate() {
        let again = ask(app, node).await;
        assert_eq!(
            (again.status, again.x_cache.as_str(), again.body.as_str()),
            (StatusCode::OK, "HIT", "item 1"),
            "{what}: node {node} afterwards"
        );
    }
    assert_eq!(origin.runs(), 1);
}

#[actix_web::test]
async fn two_hundred_fifty_six_cold_requests_over_three_nodes_run_the_handler_once() {
    let redis = RedisServer::start();
    let caches = (0..3).map(|_| node(one_node_store(&redis.url()))).collect();
    one_run_for_256_requests(caches, "one Redis").await;
}

#[actix_web::test]
async fn the_same_over_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let caches: Vec<Cache> = (0..3)
        .map(|_| {
            node(RedisStore::cluster(cluster.urls()).unwrap_or_else(|e| panic!("cluster: {e}")))
        })
        .collect();
    // The cluster client's first connections may race the first calls; warm every node up on
    // another URL first (each store's lease and record calls then find their slots).
    for cache in &caches {
        wait_in_sync(cache).await;
        let probe = cache.primary_key(b"http://warm.example", b"/warm", b"");
        eventually(
            Duration::from_secs(5),
            "the cluster takes leases",
            || async {
                match cache.lease(probe.hash(), Duration::from_millis(50)).await {
                    LeaseGrant::Granted(_) | LeaseGrant::Held(_) => Ok(()),
                    LeaseGrant::Unavailable => Err("no lease yet".to_string()),
                }
            },
        )
        .await;
    }
    let per_master = cluster.keys_per_master("ca:*:l:*");
    assert!(per_master.iter().all(|(_, n)| *n <= 1), "{per_master:?}");
    one_run_for_256_requests(caches, "Redis Cluster").await;
}

#[actix_web::test]
async fn a_lease_holder_that_died_costs_the_others_one_lease_time_and_one_run() {
    let redis = RedisServer::start();
    let lease_time = Duration::from_millis(300);
    let [dead, b, c] = synced_nodes(&redis).await;
    // The holder takes the lease of `/item` (the key a test request's URL gets) and dies
    // without releasing it: the guard is never dropped.
    let flight = dead
        .primary_key(b"http://localhost:8080", b"/item", b"")
        .hash();
    match dead.lease(flight, lease_time).await {
        LeaseGrant::Granted(lease) => std::mem::forget(lease),
        other => panic!("the lease was free: {other:?}"),
    }
    let taken = Instant::now();
    let origin = Origin::default();
    let apps = [
        node_app(b, origin.clone(), Some(lease_time)).await,
        node_app(c, origin.clone(), Some(lease_time)).await,
    ];
    let seen = spread(&apps, 64).await;
    let all = taken.elapsed();
    for s in &seen {
        assert_eq!(
            (s.status, s.body.as_str()),
            (StatusCode::OK, "item 1"),
            "{s:?}"
        );
    }
    assert_eq!(origin.runs(), 1, "one of the survivors ran it, once");
    assert_eq!(tally(&seen, "MISS"), 1, "a fill, not a lock timeout");
    assert_eq!(tally(&seen, "HIT"), 63);
    // About one lease time, then the handler's run: nowhere near the lock timeout.
    let fastest = seen.iter().map(|s| s.took).min().unwrap_or_default();
    assert!(
        fastest >= lease_time - Duration::from_millis(50),
        "everyone waited for the dead holder's lease ({fastest:?})"
    );
    assert!(
        all < lease_time + DELAY + Duration::from_millis(700),
        "one lease time and one run, not the lock timeout ({all:?})"
    );
    eprintln!(
        "dead holder: lease {lease_time:?}, handler {DELAY:?}: fastest answer {fastest:?}, \
         slowest {:?}, {} run(s)",
        slowest(&seen),
        origin.runs()
    );
    assert_eq!(ask(&apps[0], 0).await.x_cache, "HIT", "the control");
}

#[actix_web::test]
async fn with_redis_away_every_node_fills_once_on_its_own_at_once() {
    // Nothing listens on the port: every connection is refused.
    let url = format!("redis://127.0.0.1:{}", free_port());
    let origin = Origin::default();
    let apps = [
        node_app(node(one_node_store(&url)), origin.clone(), None).await,
        node_app(node(one_node_store(&url)), origin.clone(), None).await,
    ];
    // Three rounds: the first on fresh stores, the later ones once their breakers have seen
    // failures; in each, half the requests arrive while the handler already runs.
    for round in 1..=3 {
        let started = Instant::now();
        let seen = join_all((0..64).map(|i| {
            let app = &apps[i % 2];
            async move {
                if i >= 32 {
                    actix_web::rt::time::sleep(DELAY / 4).await;
                }
                ask(app, i % 2).await
            }
        }))
        .await;
        let elapsed = started.elapsed();
        for s in &seen {
            assert!(!s.status.is_server_error(), "round {round}: {s:?}");
            assert_eq!(s.status, StatusCode::OK, "round {round}: {s:?}");
        }
        // Per-node single-flight: one run per node, and every answer of a node is its run's.
        assert_eq!(origin.runs(), 2 * round, "round {round}: one run per node");
        for node in 0..2 {
            let bodies: std::collections::BTreeSet<&str> = seen
                .iter()
                .filter(|s| s.node == node)
                .map(|s| s.body.as_str())
                .collect();
            assert_eq!(bodies.len(), 1, "round {round}: node {node}: {bodies:?}");
        }
        assert_eq!(tally(&seen, "MISS"), 2, "round {round}");
        assert!(
            elapsed < DELAY + Duration::from_secs(1),
            "round {round}: no wait near the lock timeout for a Redis that is away ({elapsed:?})"
        );
        eprintln!(
            "Redis away, round {round}: 64 requests over 2 nodes, {} runs so far, all answered \
             in {elapsed:?} (slowest {:?})",
            origin.runs(),
            slowest(&seen)
        );
    }
}

#[actix_web::test]
async fn an_expired_holders_late_store_does_not_replace_the_newer_holders_record() {
    let redis = RedisServer::start();
    let lease_time = Duration::from_millis(150);
    let [a, b, c] = synced_nodes(&redis).await;
    // The first run (on A) reads version 1 and stalls past its lease; B's fill, after the
    // lease expired, reads version 2 and stores first; then A's run ends and stores late.
    let gate = Arc::new(Notify::new());
    let origin = Origin {
        gate: Some(gate.clone()),
        ..Origin::default()
    };
    let app_a = node_app(a.clone(), origin.clone(), Some(lease_time)).await;
    let app_b = node_app(b.clone(), origin.clone(), Some(lease_time)).await;
    let app_c = node_app(c.clone(), origin.clone(), Some(lease_time)).await;
    let late = ask(&app_a, 0);
    let newer = async {
        // A holds the lease and is stuck in its handler until well past the lease time.
        while origin.runs() == 0 {
            actix_web::rt::time::sleep(Duration::from_millis(2)).await;
        }
        actix_web::rt::time::sleep(lease_time + Duration::from_millis(100)).await;
        let newer = ask(&app_b, 1).await;
        gate.notify_one();
        newer
    };
    let (late, newer) = tokio::join!(late, newer);
    assert_eq!(
        (newer.status, newer.x_cache.as_str(), newer.body.as_str()),
        (StatusCode::OK, "MISS", "item 2"),
        "B took the expired lease and filled"
    );
    assert_eq!(
        (late.status, late.body.as_str()),
        (StatusCode::OK, "item 1"),
        "A answers its own client with what it read"
    );
    assert_eq!(origin.runs(), 2);
    // A's late store was refused: every node, A included, is answered the newer record.
    for (node, app) in [(0, &app_a), (1, &app_b), (2, &app_c)] {
        let now = ask(app, node).await;
        assert_eq!(
            (now.status, now.x_cache.as_str(), now.body.as_str()),
            (StatusCode::OK, "HIT", "item 2"),
            "node {node}"
        );
    }
    assert_eq!(origin.runs(), 2, "the control: those were hits");
}

#[actix_web::test]
async fn the_store_refuses_a_write_under_an_older_token_whichever_came_first() {
    let redis = RedisServer::start();
    let [a, b] = synced_nodes(&redis).await;
    let primary = a.primary_key(b"http://shop.example", b"/fenced", b"");
    let flight = primary.hash();
    let entry = |cache: &Cache, body: &'static str| fresh_entry(cache, &primary, body);
    let LeaseGrant::Granted(old) = a.lease(flight, Duration::from_millis(50)).await else {
        panic!("the lease was free")
    };
    assert!(matches!(
        b.lease(flight, Duration::from_secs(5)).await,
        LeaseGrant::Held(_)
    ));
    actix_web::rt::time::sleep(Duration::from_millis(80)).await;
    let LeaseGrant::Granted(new) = b.lease(flight, Duration::from_secs(5)).await else {
        panic!("the expired lease is free to take")
    };
    assert!(new.token() > old.token(), "{new:?} after {old:?}");
    // The newer holder still runs: the older one's store is refused by the lease.
    let refused = a
        .store_fenced(&primary, &primary.cache_key(), entry(&a, "old"), Some(&old))
        .await;
    assert!(refused.is_err(), "refused while the newer lease is held");
    let stored = b
        .store_fenced(&primary, &primary.cache_key(), entry(&b, "new"), Some(&new))
        .await;
    assert!(stored.is_ok());
    drop(new);
    // Released; the record itself now carries the newer token.
    actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    let refused = a
        .store_fenced(&primary, &primary.cache_key(), entry(&a, "old"), Some(&old))
        .await;
    assert!(refused.is_err(), "refused by the record's token");
    // A fresh node (no L1 copy) reads what Redis holds: the newer body.
    let [reader] = synced_nodes(&redis).await;
    match reader.lookup(&primary, |_| unreachable!()).await {
        Lookup::Fresh(entry) => assert_eq!(&entry.body()[..], b"new"),
        other => panic!("the newer record: {other:?}"),
    }
    // The expired holder's late release never frees the lease another fill holds now.
    let LeaseGrant::Granted(newest) = b.lease(flight, Duration::from_secs(5)).await else {
        panic!("free after the release")
    };
    drop(old);
    actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    assert!(
        matches!(
            a.lease(flight, Duration::from_secs(1)).await,
            LeaseGrant::Held(_)
        ),
        "still held by {newest:?}"
    );
}

/// The newer fill's record was written without its token (a plain store: a fill that timed
/// out on the lock, or no lease) and then vanished (evicted, expired): the record carries no
/// token to fence by, yet the expired holder's late store is still refused, by the counter of
/// the tokens granted.
#[actix_web::test]
async fn an_expired_holders_late_store_is_refused_even_when_the_newer_record_carries_no_token() {
    let redis = RedisServer::start();
    let [a, b] = synced_nodes(&redis).await;
    let primary = a.primary_key(b"http://shop.example", b"/unfenced", b"");
    let entry = |cache: &Cache, body: &'static str| fresh_entry(cache, &primary, body);
    let LeaseGrant::Granted(old) = a.lease(primary.hash(), Duration::from_millis(50)).await else {
        panic!("the lease was free")
    };
    actix_web::rt::time::sleep(Duration::from_millis(80)).await;
    let LeaseGrant::Granted(new) = b.lease(primary.hash(), Duration::from_secs(5)).await else {
        panic!("the expired lease is free to take")
    };
    drop(new);
    actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    // The newer fill stores without a token, and its record is gone again (as if evicted).
    b.store(&primary, &primary.cache_key(), entry(&b, "new"))
        .await
        .unwrap_or_else(|_| panic!("a plain store"));
    let records = redis.keys("ca:*:r:*");
    assert_eq!(
        records.len(),
        1,
        "the newer record is in Redis: {records:?}"
    );
    redis.command(&["DEL", &records[0]]);
    let late = a
        .store_fenced(&primary, &primary.cache_key(), entry(&a, "old"), Some(&old))
        .await;
    assert!(late.is_err(), "the expired holder's late store is refused");
    // A fresh node (no L1 copy) finds nothing the old holder wrote.
    let [reader] = synced_nodes(&redis).await;
    let found = reader.lookup(&primary, |_| unreachable!()).await;
    assert!(
        !matches!(&found, Lookup::Fresh(e) if &e.body()[..] == b"old"),
        "the late body was stored"
    );
    // The control: the current holder's fenced store goes through.
    let LeaseGrant::Granted(current) = b.lease(primary.hash(), Duration::from_secs(5)).await else {
        panic!("the lease is free")
    };
    let stored = b
        .store_fenced(
            &primary,
            &primary.cache_key(),
            entry(&b, "newest"),
            Some(&current),
        )
        .await;
    assert!(stored.is_ok(), "the holder of the newest lease stores");
}

/// A request that asks for a refresh (`Cache-Control: no-cache`, honoured) is never answered
/// from the entry the L2 holds, by the look a leaseholder makes before it runs the handler:
/// the handler runs, and the new body is what the next request HITs.
#[actix_web::test]
async fn a_client_no_cache_is_a_fill_over_redis_too() {
    let redis = RedisServer::start();
    let [a, b] = synced_nodes(&redis).await;
    let origin = Origin::default();
    let app = |cache: Cache| {
        let origin = origin.clone();
        test::init_service(
            App::new()
                .wrap(CacheMiddleware::new(cache).honor_client_no_cache(true))
                .route(
                    "/item",
                    web::get().to(move || {
                        let origin = origin.clone();
                        async move {
                            let run = origin.runs.fetch_add(1, Ordering::SeqCst) + 1;
                            Cached::new(
                                HttpResponse::Ok().body(format!("item {run}")),
                                CachePolicy::new(Duration::from_secs(60)),
                            )
                        }
                    }),
                ),
        )
    };
    let (app_a, app_b) = (app(a.clone()).await, app(b.clone()).await);
    assert_eq!(ask(&app_a, 0).await.body, "item 1");
    let control = ask(&app_b, 1).await;
    assert_eq!(
        (control.x_cache.as_str(), control.body.as_str()),
        ("HIT", "item 1")
    );
    for (app, node) in [(&app_b, 1), (&app_a, 0)] {
        let req = test::TestRequest::get()
            .uri("/item")
            .insert_header(("cache-control", "no-cache"))
            .to_request();
        let res = app.call(req).await.unwrap_or_else(|e| panic!("{e}"));
        let x_cache = x_cache_of(res.headers());
        let body = String::from_utf8_lossy(&test::read_body(res).await).into_owned();
        assert_eq!(
            x_cache, "MISS",
            "node {node}: no-cache answered from the cache: {body}"
        );
        assert_ne!(body, "item 1", "node {node}");
    }
    assert_eq!(origin.runs(), 3, "each no-cache request ran the handler");
}

/// Node A's subscription is gone while Redis still answers it (its user lost the channel), so
/// A stores nothing and shares each fill with the requests that joined it. A fill begins on A
/// and reads version 1; node B writes version 2 and invalidates (Ok); then a victim's request
/// joins A's fill. It must not get version 1: A asks Redis whether the fill still holds before
/// it shares it with a request that came after the fill began, and Redis refuses it.
#[actix_web::test]
async fn a_node_out_of_touch_shares_no_fill_an_invalidation_it_missed_refused() {
    let redis = RedisServer::start();
    let acl = redis.command(&[
        "ACL",
        "SETUSER",
        "writer",
        "on",
        ">writer-pw",
        "~*",
        "&*",
        "+@all",
    ]);
    assert!(acl.is_some_and(|r| r.starts_with("+OK")), "ACL SETUSER");
    let b_url = format!(
        "redis://writer:writer-pw@127.0.0.1:{}",
        redis.url().rsplit(':').next().unwrap_or("")
    );
    let (a, b) = (
        node(one_node_store(&redis.url())),
        node(one_node_store(&b_url)),
    );
    wait_in_sync(&a).await;
    wait_in_sync(&b).await;
    let version = Arc::new(AtomicUsize::new(1));
    let runs = Arc::new(AtomicUsize::new(0));
    let app_a = {
        let (version, runs) = (version.clone(), runs.clone());
        test::init_service(App::new().wrap(CacheMiddleware::new(a.clone())).route(
            "/item",
            web::get().to(move || {
                let (version, runs) = (version.clone(), runs.clone());
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    let read = version.load(Ordering::SeqCst);
                    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
                    Cached::new(
                        HttpResponse::Ok().body(format!("v{read}")),
                        CachePolicy::new(Duration::from_secs(60)).tag("items"),
                    )
                }
            }),
        ))
        .await
    };
    // A's user loses the channel: Redis drops A's subscription and refuses a new one.
    let reset = redis.command(&["ACL", "SETUSER", "default", "resetchannels"]);
    assert!(
        reset.is_some_and(|r| r.starts_with("+OK")),
        "ACL resetchannels"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.in_sync() {
        assert!(Instant::now() < deadline, "node A stayed subscribed");
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
    let leader = ask(&app_a, 0);
    let victim = async {
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        version.store(2, Ordering::SeqCst);
        b.invalidate_tag("items")
            .await
            .unwrap_or_else(|e| panic!("B's invalidation: {e}"));
        // After the invalidation returned Ok, while A's fill still runs.
        ask(&app_a, 0).await
    };
    let (leader, victim) = futures_util::future::join(leader, victim).await;
    assert_eq!(leader.body, "v1", "the fill that began first: {leader:?}");
    assert_eq!(
        (victim.status, victim.body.as_str()),
        (StatusCode::OK, "v2"),
        "the victim got a body its invalidation removed: {victim:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    // The control: while A is out of touch, a burst still costs at most one run (its requests
    // share the fill, or the victim's fill was stored: Redis vouched for it).
    let burst = join_all((0..8).map(|_| ask(&app_a, 0))).await;
    assert!(
        burst
            .iter()
            .all(|s| s.status == StatusCode::OK && s.body == "v2"),
        "{burst:?}"
    );
    let runs = runs.load(Ordering::SeqCst);
    assert!(runs <= 3, "{runs} runs: more than one for the burst");
}

/// A soft purge seen by every node: each node answers its next request `STALE` at once and
/// refreshes in the background, and the refreshes coalesce over the lease, so the origin runs
/// once for all the nodes, not once per node. Then every node HITs the refreshed body.
#[actix_web::test]
async fn a_soft_purge_over_three_nodes_refreshes_once_in_the_background() {
    let redis = RedisServer::start();
    let caches = synced_nodes::<3>(&redis).await;
    let origin = Origin {
        swr: Some(Duration::from_secs(60)),
        ..Origin::default()
    };
    let mut apps = Vec::new();
    for cache in &caches {
        apps.push(node_app(cache.clone(), origin.clone(), None).await);
    }
    // Filled once, and every node has it (the control that the cache stores at all).
    let first = spread(&apps, 3).await;
    assert_eq!(origin.runs(), 1, "{first:?}");
    for (node, app) in apps.iter().enumerate() {
        let seen = ask(app, node).await;
        assert_eq!(
            (seen.x_cache.as_str(), seen.body.as_str()),
            ("HIT", "item 1")
        );
    }
    caches[0].soft_invalidate_tag("items").await.unwrap();
    for cache in &caches[1..] {
        let softened = || async {
            let key = cache.primary_key(b"http://localhost:8080", b"/item", b"");
            match cache.lookup(&key, |_| key.cache_key()).await {
                Lookup::Stale(_) => Ok(()),
                other => Err(format!("not stale yet: {}", lookup_name(&other))),
            }
        };
        eventually(
            Duration::from_secs(2),
            "the soft purge reaches the node",
            softened,
        )
        .await;
    }
    // 48 requests per node at once: every answer is the old body, STALE, and none waits for
    // the 200 ms handler.
    let seen = spread(&apps, 144).await;
    for s in &seen {
        assert_eq!(
            (s.status, s.x_cache.as_str(), s.body.as_str()),
            (StatusCode::OK, "STALE", "item 1"),
            "{s:?}"
        );
    }
    assert!(
        slowest(&seen) < DELAY / 2,
        "slowest stale answer {:?}",
        slowest(&seen)
    );
    // Every node is refreshed by the one run, and then HITs.
    for (node, app) in apps.iter().enumerate() {
        let label = format!("node {node} serves the refreshed body");
        eventually(Duration::from_secs(3), &label, || async {
            let seen = ask(app, node).await;
            match (seen.x_cache.as_str(), seen.body.as_str()) {
                ("HIT", "item 2") => Ok(()),
                _ => Err(format!("{seen:?}")),
            }
        })
        .await;
    }
    assert_eq!(origin.runs(), 2, "one background refresh for three nodes");
}

fn lookup_name(lookup: &Lookup) -> &'static str {
    match lookup {
        Lookup::Fresh(_) => "fresh",
        Lookup::Stale(_) => "stale",
        Lookup::Retained(_) => "retained",
        _ => "miss",
    }
}

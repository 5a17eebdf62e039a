//! Cold start and isolation of the Redis L2, as users see them: a node just built serves from
//! the L2 on its very first request (nobody waits for a readiness probe first), and a store
//! whose Redis is unreachable or hangs never delays another store of the same process.
//!
//! Every Redis here is a real `redis-server` on loopback, a loopback port nothing listens on
//! (connections refused at once), or a loopback listener that accepts connections and never
//! answers (a hung Redis). Each node runs on a thread of its own with its own actix runtime, as
//! a fresh actix worker (or process) would; the failing neighbours' request loops run on other
//! threads of the same process, at the same time, and stop on their own.
//!
//! What must stay true: a test counts its failures over every run before asserting, so its
//! message says how many of how many; every loop is bounded in count and time.

use std::future::Future;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use cache_actix::{Cache, MemoryStore, RedisStore};
use cache_actix_tests::shop::{app, Db};
use cache_actix_tests::{
    free_port, get_path as get,
    redis::{until_propagated, wait_in_sync, RedisServer, PROPAGATION},
};

/// Held by each test while it runs: each brings its own failing neighbours, and the two sets at
/// once would measure the CPU of a two-core machine rather than what one store costs another.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `make()`'s future on a new thread with its own actix runtime, as a fresh worker would.
fn on_new_thread<T, F, Fut>(make: F) -> JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    std::thread::spawn(move || actix_web::rt::System::new().block_on(make()))
}

fn joined<T>(handle: JoinHandle<T>) -> T {
    handle
        .join()
        .unwrap_or_else(|_| panic!("a node's thread panicked"))
}

/// A node: an L1 over a Redis L2 in `namespace` (default options: a 50 ms call limit).
fn node(url: &str, namespace: &str) -> Cache {
    let store = RedisStore::from_url(url).unwrap_or_else(|e| panic!("redis url: {e}"));
    Cache::builder()
        .l1(MemoryStore::new())
        .l2(store)
        .namespace(namespace)
        .build()
}

/// A "Redis" that accepts every connection and never answers: each connection is held open,
/// unread, until the hole is dropped (or 60 s have passed).
struct BlackHole {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<usize>>,
}

impl BlackHole {
    fn open() -> BlackHole {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("nonblocking: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("addr: {e}"))
            .port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut held: Vec<TcpStream> = Vec::new();
            let mut accepted = 0;
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        accepted += 1;
                        // Bounded: the oldest is let go first (its client sees a hang, then EOF).
                        if held.len() >= 4096 {
                            held.remove(0);
                        }
                        held.push(stream);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
            accepted
        });
        BlackHole {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The Redis of the failing neighbours: a loopback port nothing listens on (refused at once)
/// and a [`BlackHole`] (hangs), each over plain TCP and over TLS (`rediss://`, where every
/// connection attempt also builds a TLS client).
struct Failing {
    hole: BlackHole,
    closed: u16,
}

impl Failing {
    fn new() -> Failing {
        Failing {
            hole: BlackHole::open(),
            closed: free_port(),
        }
    }

    /// The `i`th neighbour's URL: the four kinds in turn.
    fn url(&self, i: usize) -> String {
        let (scheme, port) = match i % 4 {
            0 => ("redis", self.closed),
            1 => ("redis", self.hole.port),
            2 => ("rediss", self.closed),
            _ => ("rediss", self.hole.port),
        };
        format!("{scheme}://127.0.0.1:{port}")
    }
}

/// Stores of the same process whose Redis fails ([`Failing`]), each serving a request loop (one
/// request every 5 ms): `apart` of them on two threads of their own (other actix workers), and
/// any number more on a node's own thread ([`Beside::spawn`]). Each loop checks that every
/// answer is a 200 with the right body: a failing Redis is a miss, never an error.
struct Neighbours {
    beside: Beside,
    threads: Vec<JoinHandle<Vec<String>>>,
}

/// What starts and stops neighbours on a node's own thread.
#[derive(Clone)]
struct Beside {
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    failing: Arc<Failing>,
}

impl Neighbours {
    fn start(apart: usize) -> Neighbours {
        let failing = Arc::new(Failing::new());
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let threads = (0..2)
            .map(|t| {
                let urls: Vec<(usize, String)> = (0..apart)
                    .filter(|i| i % 2 == t)
                    .map(|i| (i, failing.url(i)))
                    .collect();
                let (stop, requests) = (stop.clone(), requests.clone());
                on_new_thread(move || async move {
                    let loops: Vec<_> = urls
                        .into_iter()
                        .map(|(i, url)| {
                            let (stop, requests) = (stop.clone(), requests.clone());
                            actix_web::rt::spawn(async move {
                                neighbour(i, &url, &stop, &requests).await
                            })
                        })
                        .collect();
                    let mut wrong = Vec::new();
                    for handle in loops {
                        match handle.await {
                            Ok(mut found) => wrong.append(&mut found),
                            Err(e) => wrong.push(format!("a neighbour's loop panicked: {e}")),
                        }
                    }
                    wrong
                })
            })
            .collect();
        Neighbours {
            beside: Beside {
                stop,
                requests,
                failing,
            },
            threads,
        }
    }

    /// Stops the loops; panics if any answer was wrong or no request ran at all.
    fn finish(mut self, mut wrong: Vec<String>) {
        self.beside.stop();
        for thread in self.threads.drain(..) {
            wrong.extend(joined(thread));
        }
        let requests = self.beside.requests.load(Ordering::Relaxed);
        println!("failing neighbours answered {requests} requests");
        assert!(wrong.is_empty(), "neighbours answered wrongly: {wrong:?}");
        assert!(requests > 0, "the neighbours' loops never ran");
    }
}

impl Beside {
    /// Starts `count` more neighbours on the calling thread's actix runtime (beside a node, as
    /// stores served by the same worker); await what they return after [`Beside::stop`].
    fn spawn(&self, count: usize) -> Vec<actix_web::rt::task::JoinHandle<Vec<String>>> {
        (0..count)
            .map(|k| {
                // The TLS kinds (refused, hung, in turn): each connection attempt builds a TLS
                // client, which is synchronous work on the thread it runs on.
                let i = 1002 + 4 * k + k % 2;
                let url = self.failing.url(i);
                let (stop, requests) = (self.stop.clone(), self.requests.clone());
                actix_web::rt::spawn(async move { neighbour(i, &url, &stop, &requests).await })
            })
            .collect()
    }

    /// Tells every neighbour's loop, here and apart, to end.
    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// How long the neighbours' own cold start may take (building a TLS client for each store's
/// first connections costs a few ms of CPU each, on a machine of two cores): the tests measure
/// what their failing Redis costs others after it.
const NEIGHBOURS_STARTED: Duration = Duration::from_secs(1);

/// One neighbour's request loop: until stopped, 30 s, or 20,000 requests.
async fn neighbour(i: usize, url: &str, stop: &AtomicBool, requests: &AtomicU64) -> Vec<String> {
    let db = Arc::new(Db::default());
    let service = app(node(url, &format!("neighbour{i}")), db).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut wrong = Vec::new();
    for n in 0..20_000u32 {
        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            break;
        }
        let id = n % 8;
        let reply = get(&service, &format!("/p/{id}")).await;
        requests.fetch_add(1, Ordering::Relaxed);
        if reply.status != StatusCode::OK || reply.text() != format!("{id}:v0") {
            wrong.push(format!("neighbour {i}: {:?}", reply.summary()));
        }
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
    wrong
}

/// What a node's first request got, and how long it took.
struct First {
    summary: (StatusCode, String, String),
    took: Duration,
}

async fn first_request(cache: Cache, db: Arc<Db>, path: &str) -> First {
    let service = app(cache, db).await;
    let start = Instant::now();
    let reply = get(&service, path).await;
    First {
        summary: reply.summary(),
        took: start.elapsed(),
    }
}

/// Longest a node's first request may take: it may wait for its connection and subscription
/// up to the call limit (50 ms), then make its calls (each under 50 ms); a user notices more.
const FIRST_REQUEST_LIMIT: Duration = Duration::from_millis(250);

fn answer(x_cache: &str, body: &str) -> (StatusCode, String, String) {
    (StatusCode::OK, x_cache.to_string(), body.to_string())
}

#[test]
fn a_node_just_built_hits_the_l2_on_its_first_request_beside_failing_neighbours() {
    let _alone = one_at_a_time();
    let redis = RedisServer::start();
    let neighbours = Neighbours::start(8);
    // Past their own cold start: their connections and subscriptions fail and are tried again.
    std::thread::sleep(NEIGHBOURS_STARTED);
    let runs = 10;
    let mut failures = Vec::new();
    let mut slowest = Duration::ZERO;
    for run in 0..runs {
        let namespace = format!("cold{run}");
        let db = Arc::new(Db::default());
        // Built alongside A: its first request comes ~100 ms after A's fill.
        let early = node(&redis.url(), &namespace);
        let a = {
            let (url, namespace, db) = (redis.url(), namespace.clone(), db.clone());
            joined(on_new_thread(move || async move {
                first_request(node(&url, &namespace), db, "/p/1").await
            }))
        };
        std::thread::sleep(Duration::from_millis(100));
        let b_early = {
            let db = db.clone();
            on_new_thread(move || first_request(early, db, "/p/1"))
        };
        // Built now, its first request at once: no time to connect or subscribe beforehand.
        let b_fresh = {
            let (url, namespace, db) = (redis.url(), namespace.clone(), db.clone());
            on_new_thread(
                move || async move { first_request(node(&url, &namespace), db, "/p/1").await },
            )
        };
        let (b_early, b_fresh) = (joined(b_early), joined(b_fresh));
        for (who, first, x_cache) in [
            ("A", &a, "MISS"),
            ("B built with A", &b_early, "HIT"),
            ("B built just before", &b_fresh, "HIT"),
        ] {
            slowest = slowest.max(first.took);
            if first.summary != answer(x_cache, "1:v0") {
                failures.push(format!(
                    "run {run}: {who}'s first request answered {:?} in {:?}",
                    first.summary, first.took
                ));
            } else if first.took > FIRST_REQUEST_LIMIT {
                failures.push(format!(
                    "run {run}: {who}'s first request took {:?}",
                    first.took
                ));
            }
        }
        if db.calls() != 1 {
            failures.push(format!(
                "run {run}: the handler ran {} times for three nodes",
                db.calls()
            ));
        }
    }
    neighbours.finish(Vec::new());
    println!(
        "cold start: {} failures in {runs} runs of 3 nodes; slowest first request {slowest:?}",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures in {runs} runs: {failures:#?}",
        failures.len()
    );
}

/// How long after being built (and after its first reads) a healthy node must be subscribed,
/// as a readiness probe sees it: its first request waits for the subscription up to the call
/// limit (50 ms), so one much slower than that costs it its first hits. Alone, it takes a few ms.
const SUBSCRIBED_WITHIN: Duration = Duration::from_millis(100);
/// Longest an invalidation on a healthy Redis may take (its call limit is 50 ms).
const INVALIDATED_WITHIN: Duration = Duration::from_millis(100);

#[test]
fn stores_whose_redis_is_refused_or_hangs_never_delay_a_healthy_store() {
    let _alone = one_at_a_time();
    let redis = RedisServer::start();
    let neighbours = Neighbours::start(20);
    let beside = neighbours.beside.clone();
    let url = redis.url();
    let rounds = 8;
    let invalidations = 10;
    let (failures, wrong) = joined(on_new_thread(move || async move {
        // Six more on the healthy nodes' own thread, as stores served by the same worker.
        let here = beside.spawn(6);
        // Past their own cold start: their connections and subscriptions fail and are tried again.
        actix_web::rt::time::sleep(NEIGHBOURS_STARTED).await;
        let mut failures = Vec::new();
        let mut slowest_subscription = Duration::ZERO;
        let mut slowest_invalidation = Duration::ZERO;
        for round in 0..rounds {
            let namespace = format!("healthy{round}");
            let db = Arc::new(Db::default());
            let built = Instant::now();
            let (one, two) = (node(&url, &namespace), node(&url, &namespace));
            let x = app(one.clone(), db.clone()).await;
            let y = app(two.clone(), db.clone()).await;
            let fill = get(&x, "/p/1").await.summary();
            if fill != answer("MISS", "1:v0") {
                failures.push(format!("round {round}: the fill answered {fill:?}"));
            }
            let first = get(&y, "/p/1").await.summary();
            if first != answer("HIT", "1:v0") {
                failures.push(format!(
                    "round {round}: the other node's first read {first:?}"
                ));
            }
            let deadline = built + Duration::from_secs(2);
            while !(one.in_sync() && two.in_sync()) && Instant::now() < deadline {
                actix_web::rt::time::sleep(Duration::from_millis(1)).await;
            }
            let subscribed = built.elapsed();
            slowest_subscription = slowest_subscription.max(subscribed);
            if subscribed > SUBSCRIBED_WITHIN {
                failures.push(format!("round {round}: subscribed after {subscribed:?}"));
                continue;
            }
            for version in 1..=invalidations {
                let body = format!("1:v{version}");
                db.version.store(version, Ordering::SeqCst);
                let start = Instant::now();
                let invalidated = one.invalidate_tag("products").await;
                let took = start.elapsed();
                slowest_invalidation = slowest_invalidation.max(took);
                if invalidated.is_err() || took > INVALIDATED_WITHIN {
                    failures.push(format!(
                        "round {round}: invalidation {version} {invalidated:?} in {took:?}"
                    ));
                    break;
                }
                // Never the invalidated body after `Ok` on the node that invalidated...
                let after = get(&x, "/p/1").await.summary();
                if after != answer("MISS", &body) {
                    failures.push(format!(
                        "round {round}: after invalidation {version}: {after:?}"
                    ));
                }
                // ...nor on the other after the propagation delay; then a hit (the control).
                let seen = until_propagated(
                    Instant::now() + PROPAGATION,
                    || get(&y, "/p/1"),
                    |reply| reply.text() == body,
                )
                .await
                .summary();
                if seen != answer("HIT", &body) {
                    failures.push(format!("round {round}: the other node then {seen:?}"));
                }
            }
            let control = get(&x, "/p/1").await.summary();
            if control != answer("HIT", &format!("1:v{invalidations}")) {
                failures.push(format!("round {round}: the control answered {control:?}"));
            }
            if db.calls() != 1 + invalidations {
                failures.push(format!(
                    "round {round}: the handler ran {} times",
                    db.calls()
                ));
            }
        }
        // Reads of a node without an L1 (every read goes to Redis) on this same thread, beside
        // the failing TLS neighbours: each a hit, within the call limit.
        let reads = 300;
        let db = Arc::new(Db::default());
        let store = RedisStore::from_url(&url).unwrap_or_else(|e| panic!("redis url: {e}"));
        let l2_only = Cache::builder()
            .l2(store)
            .namespace("healthy-reads")
            .build();
        // Subscribed first: this phase is about isolation, the rounds above about cold starts.
        wait_in_sync(&l2_only).await;
        let z = app(l2_only, db.clone()).await;
        get(&z, "/p/1").await;
        let mut missed = 0;
        let mut slowest_read = Duration::ZERO;
        for _ in 0..reads {
            let start = Instant::now();
            let read = get(&z, "/p/1").await.summary();
            slowest_read = slowest_read.max(start.elapsed());
            if read != answer("HIT", "1:v0") {
                missed += 1;
            }
            actix_web::rt::time::sleep(Duration::from_millis(3)).await;
        }
        if missed > 0 {
            failures.push(format!(
                "{missed} of {reads} reads of a healthy store were not hits"
            ));
        }
        println!(
            "slowest subscription {slowest_subscription:?}, slowest invalidation \
             {slowest_invalidation:?}, slowest read {slowest_read:?} ({missed} of {reads} missed)"
        );
        beside.stop();
        let mut wrong = Vec::new();
        for handle in here {
            match handle.await {
                Ok(mut found) => wrong.append(&mut found),
                Err(e) => wrong.push(format!("a neighbour's loop panicked: {e}")),
            }
        }
        (failures, wrong)
    }));
    neighbours.finish(wrong);
    println!("isolation: {} failures in {rounds} rounds", failures.len());
    assert!(
        failures.is_empty(),
        "{} failures in {rounds} rounds: {failures:#?}",
        failures.len()
    );
}

//! A randomized checker of the invalidation contract through the whole middleware, over one or
//! more `Cache` nodes that share a database: concurrent readers, writers and tag invalidations
//! spread over the nodes, with handlers that yield at random points so that fills, waits and
//! invalidations interleave in every order. Each product is written (and invalidated) through
//! one node, `id % nodes`, and read through all: the other nodes' copies of it then go only
//! when its invalidations reach them, which is what the cross-node check weighs.
//!
//! What must stay true: no read returns data older than the last invalidation of its tag that
//! completed on its own node before the read began, nor older than one another node completed
//! more than [`Plan::propagation`] before it (across nodes the contract holds within the pub/sub
//! delay; what was read late inside it is counted, never excused beyond it); nor data newer than
//! the database. An invalidation that returned `Err` raises no floor. The runs are seeded per
//! worker, so the operations each worker draws are the same on every run.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_web::{dev::Service, test, web, App, HttpResponse};
use cache_actix::{Cache, CacheMiddleware, CachePolicy, Cached};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// How big a run is.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Products (each its own tag `p:{id}`).
    pub keys: usize,
    /// Concurrent workers, spread over the nodes in turn.
    pub workers: usize,
    /// Operations in all; one in ten is a write and its invalidation.
    pub ops: usize,
    /// How long after an invalidation returned `Ok` on one node another may still serve what it
    /// replaced (zero for a single node).
    pub propagation: Duration,
}

/// What a run saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    /// Reads checked.
    pub reads: usize,
    /// Of which `x-cache: HIT`.
    pub hits: usize,
    /// Invalidations that returned `Ok`.
    pub invalidations: usize,
    /// Invalidations that returned `Err`.
    pub failed_invalidations: usize,
    /// Reads older than an invalidation another node completed within `propagation` before.
    pub late: usize,
    /// The longest time between such an invalidation's `Ok` and a late read's start.
    pub longest_lag: Duration,
    /// How long the run took.
    pub elapsed: Duration,
}

/// What the writers have completed for one product.
#[derive(Default)]
struct Completed {
    /// Per node: the newest version whose invalidation returned `Ok` on it.
    own: Vec<u64>,
    /// The newest version whose invalidation returned `Ok` at least `propagation` ago.
    propagated: u64,
    /// The newer ones: (version, when it returned).
    recent: VecDeque<(u64, Instant)>,
}

impl Completed {
    /// The floor of a read on `node` beginning now, and the recent completions above it.
    fn floor(&mut self, node: usize, propagation: Duration) -> (u64, Vec<(u64, Instant)>) {
        while let Some(&(version, at)) = self.recent.front() {
            if at.elapsed() < propagation {
                break;
            }
            self.propagated = self.propagated.max(version);
            self.recent.pop_front();
        }
        let floor = self.own[node].max(self.propagated);
        let above = self.recent.iter().filter(|&&(v, _)| v > floor).copied();
        (floor, above.collect())
    }
}

async fn yield_randomly(rng_seed: u64) {
    for _ in 0..(rng_seed % 4) {
        tokio::task::yield_now().await;
    }
}

/// Runs `plan` over `nodes` (each with the same handler over one database) and returns what it
/// saw; panics at the first read that breaks the contract.
pub async fn run(nodes: &[Cache], plan: Plan) -> Outcome {
    let started = Instant::now();
    let keys = plan.keys;
    // The "database": one version per product.
    let db: Rc<RefCell<Vec<u64>>> = Rc::new(RefCell::new(vec![0; keys]));
    let completed: Rc<RefCell<Vec<Completed>>> = Rc::new(RefCell::new(
        (0..keys)
            .map(|_| Completed {
                own: vec![0; nodes.len()],
                ..Completed::default()
            })
            .collect(),
    ));
    let mut apps = Vec::new();
    for cache in nodes {
        let handler_db = db.clone();
        let app = test::init_service(App::new().wrap(CacheMiddleware::new(cache.clone())).route(
            "/p/{id}",
            web::get().to(move |id: web::Path<usize>| {
                let db = handler_db.clone();
                async move {
                    let seed = rand::random::<u64>();
                    yield_randomly(seed).await;
                    let version = db.borrow()[*id % keys];
                    yield_randomly(seed >> 8).await;
                    let policy = CachePolicy::new(Duration::from_secs(600))
                        .tag("p:{id}")
                        .vary("x-lang");
                    Cached::new(HttpResponse::Ok().body(version.to_string()), policy)
                }
            }),
        ))
        .await;
        apps.push(Rc::new(app));
    }
    let workers = (0..plan.workers).map(|w| {
        let node = w % nodes.len();
        let app = apps[node].clone();
        let (db, completed) = (db.clone(), completed.clone());
        async move {
            let mut rng = StdRng::seed_from_u64(w as u64);
            let mut seen = Outcome::default();
            for _ in 0..plan.ops / plan.workers {
                let k = rng.gen_range(0..keys);
                if rng.gen_ratio(1, 10) {
                    let writer = k % nodes.len();
                    let cache = &nodes[writer];
                    let version = {
                        let mut db = db.borrow_mut();
                        db[k] += 1;
                        db[k]
                    };
                    let result = if rng.gen_bool(0.5) {
                        cache.invalidate_tag(format!("p:{k}")).await
                    } else {
                        cache
                            .invalidate_tags([format!("p:{k}"), "unrelated".to_string()])
                            .await
                    };
                    if result.is_err() {
                        seen.failed_invalidations += 1;
                        continue;
                    }
                    seen.invalidations += 1;
                    let mut done = completed.borrow_mut();
                    let done = &mut done[k];
                    done.own[writer] = done.own[writer].max(version);
                    done.recent.push_back((version, Instant::now()));
                } else {
                    let begun = Instant::now();
                    let (floor, recent) = completed.borrow_mut()[k].floor(node, plan.propagation);
                    let lang = if rng.gen_bool(0.5) { "en" } else { "fr" };
                    let req = test::TestRequest::get()
                        .uri(&format!("/p/{k}"))
                        .insert_header(("x-lang", lang))
                        .to_request();
                    let res = app
                        .call(req)
                        .await
                        .unwrap_or_else(|e| panic!("service error: {e}"));
                    assert!(res.status().is_success(), "node {node}: {}", res.status());
                    let hit = res.headers().get("x-cache").is_some_and(|v| v == "HIT");
                    let body = test::read_body(res).await;
                    let version: u64 = std::str::from_utf8(&body)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| panic!("bad body {body:?}"));
                    assert!(
                        version >= floor,
                        "node {node} read version {version} of p:{k} after the invalidation of \
                         version {floor} completed"
                    );
                    assert!(
                        version <= db.borrow()[k],
                        "node {node} read version {version} of p:{k}, which the database never had"
                    );
                    if let Some(&(_, at)) = recent.iter().find(|&&(v, _)| v > version) {
                        seen.late += 1;
                        seen.longest_lag = seen.longest_lag.max(begun - at);
                    }
                    seen.reads += 1;
                    seen.hits += usize::from(hit);
                }
            }
            seen
        }
    });
    let mut outcome = Outcome::default();
    for seen in futures_util::future::join_all(workers).await {
        outcome.reads += seen.reads;
        outcome.hits += seen.hits;
        outcome.invalidations += seen.invalidations;
        outcome.failed_invalidations += seen.failed_invalidations;
        outcome.late += seen.late;
        outcome.longest_lag = outcome.longest_lag.max(seen.longest_lag);
    }
    outcome.elapsed = started.elapsed();
    outcome
}

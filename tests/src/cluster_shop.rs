//! Two `Cache` nodes over one [`RedisCluster`] serving the [`crate::shop`] app, and the client
//! loop the cluster fault tests run on them while they break the cluster: every round reads every
//! product from both nodes and checks each answer, and a writer bumps the version and
//! invalidates `products`, from one node then the other.
//!
//! What must stay true: every answer is checked, with a contract a user would notice. It is a
//! 200 whose body is `"{id}:v{version}"` with a version the database has reached; it is never
//! older than an invalidation its own node completed before the read began, nor older than one
//! the other node completed more than [`PROPAGATION`] before (the contract across nodes holds
//! within the pub/sub delay; what was served late inside it is counted in [`Tally::late`]). A
//! failed invalidation is retried at the next round and raises no floor until it returns `Ok`.
//! Every loop is bounded in time and panics with what it saw.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use cache_actix::{Cache, MemoryStore, RedisStore};

use crate::redis::wait_in_sync;
pub use crate::redis::PROPAGATION;
use crate::redis_cluster::RedisCluster;
use crate::shop::{app, Db};
use crate::{get_path, Reply};

/// A cache node over `cluster` (namespace `shop`), with an L1 or not.
pub fn node(cluster: &RedisCluster, l1: bool) -> Cache {
    node_through(cluster, l1, 0)
}

/// As [`node`], with the cluster's URLs rotated to start at the `first`-th: its subscription is
/// made to the first seed that answers, so two nodes given different seeds subscribe on
/// different cluster nodes.
pub fn node_through(cluster: &RedisCluster, l1: bool, first: usize) -> Cache {
    let mut urls = cluster.urls();
    let len = urls.len();
    urls.rotate_left(first % len);
    let store = RedisStore::cluster(urls).unwrap_or_else(|e| panic!("cluster: {e}"));
    let builder = Cache::builder().l2(store).namespace("shop");
    if l1 {
        builder.l1(MemoryStore::new()).build()
    } else {
        builder.build()
    }
}

/// Until `check` holds, or panics after `limit` with what it last saw.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(()) => return,
            Err(seen) if Instant::now() >= deadline => panic!("{what}: {seen}"),
            Err(_) => actix_web::rt::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// What the loop saw, per node (`[A, B]`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tally {
    /// Rounds run.
    pub rounds: u64,
    /// Answers checked.
    pub reads: [u64; 2],
    /// Of which `x-cache: HIT`.
    pub hits: [u64; 2],
    /// Invalidations that returned `Ok`.
    pub invalidations: u64,
    /// Attempts that returned `Err` (each retried).
    pub failed_invalidations: u64,
    /// Answers older than an invalidation the other node completed less than [`PROPAGATION`]
    /// before the read began.
    pub late: u64,
    /// The longest such delay.
    pub longest_lag: Duration,
}

/// An invalidation that returned `Ok`.
struct Done {
    version: usize,
    at: Instant,
    by: usize,
}

/// The two nodes, their apps, the database they share and the writer's record.
pub struct Shop<S> {
    caches: [Cache; 2],
    apps: [S; 2],
    db: Arc<Db>,
    ids: u32,
    done: Vec<Done>,
    /// The version of an invalidation that has not returned `Ok` yet, and its node.
    pending: Option<(usize, usize)>,
    tally: Tally,
}

const NAMES: [&str; 2] = ["A", "B"];

/// Opens the shop on `caches` (A, B) once both are subscribed; rounds read products `0..ids`.
pub async fn open(
    caches: [Cache; 2],
    ids: u32,
) -> Shop<impl Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>> {
    for cache in &caches {
        wait_in_sync(cache).await;
    }
    let db = Arc::new(Db::default());
    let a = app(caches[0].clone(), db.clone()).await;
    let b = app(caches[1].clone(), db.clone()).await;
    Shop {
        caches,
        apps: [a, b],
        db,
        ids,
        done: Vec::new(),
        pending: None,
        tally: Tally::default(),
    }
}

impl<S> Shop<S>
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    /// Node `n`'s cache (0 is A, 1 is B).
    pub fn cache(&self, n: usize) -> &Cache {
        &self.caches[n]
    }

    /// What the loop saw so far.
    pub fn tally(&self) -> Tally {
        self.tally
    }

    /// Reads product `id` from node `n` and checks the answer (see the module's contract).
    pub async fn read(&mut self, n: usize, id: u32) -> Reply {
        let begun = Instant::now();
        let floor = |from: &dyn Fn(&Done) -> bool| {
            self.done
                .iter()
                .filter(|d| d.at <= begun && from(d))
                .map(|d| d.version)
                .max()
                .unwrap_or(0)
        };
        let own = floor(&|d| d.by == n);
        let propagated = floor(&|d| d.at + PROPAGATION <= begun);
        let any = floor(&|_| true);
        let reply = get_path(&self.apps[n], &format!("/p/{id}")).await;
        let name = NAMES[n];
        let seen = format!("{name} round {}: {:?}", self.tally.rounds, reply.summary());
        assert_eq!(reply.status, StatusCode::OK, "{seen}");
        let version: usize = reply
            .text()
            .strip_prefix(&format!("{id}:v"))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("a wrong body: {seen}"));
        assert!(
            version <= self.db.version.load(Ordering::SeqCst),
            "a version the database never had: {seen}"
        );
        assert!(
            version >= own,
            "an invalidated body: {name}'s own invalidation to v{own} had returned Ok: {seen}"
        );
        assert!(
            version >= propagated,
            "an invalidated body: the other node's invalidation to v{propagated} had returned Ok \
             more than {PROPAGATION:?} before: {seen}"
        );
        if version < any {
            self.tally.late += 1;
            let since = self
                .done
                .iter()
                .filter(|d| d.version > version && d.at <= begun)
                .map(|d| begun - d.at)
                .max()
                .unwrap_or_default();
            self.tally.longest_lag = self.tally.longest_lag.max(since);
        }
        self.tally.reads[n] += 1;
        if reply.x_cache() == "HIT" {
            self.tally.hits[n] += 1;
        }
        reply
    }

    /// Reads every product from both nodes; returns how many answers were hits, per node.
    pub async fn round(&mut self) -> [u64; 2] {
        let before = self.tally.hits;
        for id in 0..self.ids {
            for n in 0..2 {
                self.read(n, id).await;
            }
        }
        self.tally.rounds += 1;
        [
            self.tally.hits[0] - before[0],
            self.tally.hits[1] - before[1],
        ]
    }

    /// Starts an invalidation from node `by` (the database moves to the next version first), or
    /// retries the one not yet `Ok`; one attempt. `true` once it returned `Ok`.
    pub async fn invalidate(&mut self, by: usize) -> bool {
        let (version, by) = *self.pending.get_or_insert_with(|| {
            let version = self.db.version.fetch_add(1, Ordering::SeqCst) + 1;
            (version, by)
        });
        match self.caches[by].invalidate_tag("products").await {
            Ok(()) => {
                self.done.push(Done {
                    version,
                    at: Instant::now(),
                    by,
                });
                self.pending = None;
                self.tally.invalidations += 1;
                true
            }
            Err(_) => {
                self.tally.failed_invalidations += 1;
                false
            }
        }
    }

    /// Rounds until `done` says so, with an invalidation every `every` rounds (from A, then B,
    /// ...) and a pending one retried at every round; panics after `limit`.
    pub async fn rounds_until(
        &mut self,
        limit: Duration,
        what: &str,
        every: u64,
        mut done: impl FnMut(&Self) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        let mut round = 0u64;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "{what}: not done within {limit:?}: {:?}",
                self.tally
            );
            round += 1;
            if self.pending.is_some() || round.is_multiple_of(every) {
                self.invalidate(((round / every) % 2) as usize).await;
            }
            self.round().await;
            actix_web::rt::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Rounds (retrying a pending invalidation) until none is pending and the last one returned
    /// `Ok` more than [`PROPAGATION`] ago, then one more: every read of that round is held to
    /// every invalidation on both nodes.
    pub async fn settle(&mut self, limit: Duration) {
        self.rounds_until(limit, "settle", u64::MAX, |shop| {
            shop.pending.is_none()
                && shop
                    .done
                    .last()
                    .is_none_or(|d| d.at.elapsed() > PROPAGATION)
        })
        .await;
        self.round().await;
    }

    /// Rounds without invalidations until one in which every answer of both nodes was a hit
    /// (the control: a cache that stores nothing never gets there); panics after `limit`.
    pub async fn until_all_hit(&mut self, limit: Duration, what: &str) {
        let deadline = Instant::now() + limit;
        loop {
            let hits = self.round().await;
            if hits == [u64::from(self.ids); 2] {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: no round of hits only within {limit:?} (last {hits:?} of {}): {:?}",
                self.ids,
                self.tally
            );
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

//! A randomized checker of the invalidation contract through the whole middleware: concurrent
//! readers, writers and tag invalidations (100,000 operations), with handlers that yield at
//! random points so that fills, waits and invalidations interleave in every order. No read may
//! return data older than the last invalidation of its tag that completed before the read began.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use actix_web::{dev::Service, test, web, App, HttpResponse};
use cache_actix::{Cache, CacheMiddleware, CachePolicy, Cached};
use rand::{rngs::StdRng, Rng, SeedableRng};

const KEYS: usize = 8;
const WORKERS: usize = 64;
const OPS: usize = 100_000;

async fn yield_randomly(rng_seed: u64) {
    for _ in 0..(rng_seed % 4) {
        tokio::task::yield_now().await;
    }
}

#[actix_web::test]
async fn no_read_is_older_than_the_last_completed_invalidation() {
    // The "database": one version per product. `completed[k]` is the newest version whose
    // invalidation has resolved.
    let db: Rc<RefCell<[u64; KEYS]>> = Rc::new(RefCell::new([0; KEYS]));
    let completed: Rc<RefCell<[u64; KEYS]>> = Rc::new(RefCell::new([0; KEYS]));
    let cache = Cache::memory();
    let handler_db = db.clone();
    let app = test::init_service(App::new().wrap(CacheMiddleware::new(cache.clone())).route(
        "/p/{id}",
        web::get().to(move |id: web::Path<usize>| {
            let db = handler_db.clone();
            async move {
                let seed = rand::random::<u64>();
                yield_randomly(seed).await;
                let version = db.borrow()[*id % KEYS];
                yield_randomly(seed >> 8).await;
                let policy = CachePolicy::new(Duration::from_secs(600))
                    .tag("p:{id}")
                    .vary("x-lang");
                Cached::new(HttpResponse::Ok().body(version.to_string()), policy)
            }
        }),
    ))
    .await;
    let app = Rc::new(app);
    let mut checked_reads = 0usize;
    let mut hits = 0usize;
    let workers = (0..WORKERS).map(|w| {
        let (app, db, completed, cache) = (app.clone(), db.clone(), completed.clone(), cache.clone());
        async move {
            let mut rng = StdRng::seed_from_u64(w as u64);
            let (mut reads, mut hits) = (0usize, 0usize);
            for _ in 0..OPS / WORKERS {
                let k = rng.gen_range(0..KEYS);
                if rng.gen_ratio(1, 10) {
                    let version = {
                        let mut db = db.borrow_mut();
                        db[k] += 1;
                        db[k]
                    };
                    if rng.gen_bool(0.5) {
                        cache.invalidate_tag(format!("p:{k}")).await.unwrap();
                    } else {
                        cache.invalidate_tags([format!("p:{k}"), "unrelated".to_string()]).await.unwrap();
                    }
                    let mut done = completed.borrow_mut();
                    done[k] = done[k].max(version);
                } else {
                    let floor = completed.borrow()[k];
                    let lang = if rng.gen_bool(0.5) { "en" } else { "fr" };
                    let req = test::TestRequest::get().uri(&format!("/p/{k}")).insert_header(("x-lang", lang)).to_request();
                    let res = app.call(req).await.unwrap_or_else(|e| panic!("service error: {e}"));
                    let hit = res.headers().get("x-cache").is_some_and(|v| v == "HIT");
                    let body = test::read_body(res).await;
                    let seen: u64 = std::str::from_utf8(&body).ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad body {body:?}"));
                    assert!(seen >= floor, "read version {seen} of p:{k} after invalidation of version {floor} completed");
                    reads += 1;
                    hits += usize::from(hit);
                }
            }
            (reads, hits)
        }
    });
    for (reads, h) in futures_util::future::join_all(workers).await {
        checked_reads += reads;
        hits += h;
    }
    assert!(
        checked_reads > OPS * 8 / 10,
        "only {checked_reads} reads checked"
    );
    assert!(
        hits > checked_reads / 4,
        "the checker must exercise hits too: {hits} of {checked_reads}"
    );
}

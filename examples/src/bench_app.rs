//! The app the in-process measurement tools drive (`hit_allocs`, `growth`, `memory_overhead`
//! with `HIT=1`): the `bench_server` routes, built with `actix_web::test::init_service` so that
//! no socket or HTTP client sits between a request and its answer, and a latency summary.
//!
//! What must stay true: the handler, body and policy are those of `bench_server`
//! (`examples/src/bin/bench_server.rs`: 1 KiB of JSON, `Cached` with a 600 s policy tagged
//! `bench`), so in-process numbers and the load benchmark's measure the same work.

use std::time::Duration;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::{test, web, App, HttpResponse};
use bytes::Bytes;
use cache_actix::{Cache, CacheMiddleware, CachePolicy, Cached, X_CACHE};

/// The body every route answers: 1 KiB of JSON-ish text, built once.
///
/// ```
/// assert_eq!(cache_actix_examples::bench_app::body_1k().len(), 1024);
/// ```
pub fn body_1k() -> Bytes {
    let mut text = String::from("{\"data\":\"");
    while text.len() < 1024 - 2 {
        text.push('x');
    }
    text.push_str("\"}");
    Bytes::from(text)
}

/// The cached handler of `bench_server`'s `/l1/{n}`: the prepared body under a 600 s policy
/// tagged `bench`.
async fn cached(body: web::Data<Bytes>) -> Cached<HttpResponse> {
    Cached::new(
        HttpResponse::Ok()
            .content_type("application/json")
            .body(body.get_ref().clone()),
        CachePolicy::new(Duration::from_secs(600)).tag("bench"),
    )
}

/// `bench_server`'s `/static`: the prepared body, no policy.
async fn fixed(body: web::Data<Bytes>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body.get_ref().clone())
}

/// The in-process app of `bench_server`: `/static`, and `/l1/{n}` in a scope wrapped in
/// `CacheMiddleware` on `cache`.
///
/// ```
/// # actix_web::rt::System::new().block_on(async {
/// use actix_web::test;
/// use cache_actix::Cache;
/// use cache_actix_examples::bench_app::{app, x_cache};
/// let app = app(Cache::memory()).await;
/// let get = || test::TestRequest::get().uri("/l1/0").to_request();
/// assert_eq!(x_cache(&test::call_service(&app, get()).await), "MISS");
/// assert_eq!(x_cache(&test::call_service(&app, get()).await), "HIT");
/// # });
/// ```
pub async fn app(
    cache: Cache,
) -> impl Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error> {
    test::init_service(
        App::new()
            .app_data(web::Data::new(body_1k()))
            .route("/static", web::get().to(fixed))
            .service(
                web::scope("/l1")
                    .wrap(CacheMiddleware::new(cache))
                    .route("/{n}", web::get().to(cached)),
            ),
    )
    .await
}

/// The same routes with `CacheMiddleware` on the whole `App`: a hit is answered before
/// routing, and `/static` passes through the middleware too.
///
/// ```
/// # actix_web::rt::System::new().block_on(async {
/// use actix_web::test;
/// use cache_actix::Cache;
/// use cache_actix_examples::bench_app::{app_wide, x_cache};
/// let app = app_wide(Cache::memory()).await;
/// let get = || test::TestRequest::get().uri("/static").to_request();
/// assert_eq!(x_cache(&test::call_service(&app, get()).await), "BYPASS");
/// let get = || test::TestRequest::get().uri("/l1/0").to_request();
/// assert_eq!(x_cache(&test::call_service(&app, get()).await), "MISS");
/// assert_eq!(x_cache(&test::call_service(&app, get()).await), "HIT");
/// # });
/// ```
pub async fn app_wide(
    cache: Cache,
) -> impl Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error> {
    test::init_service(
        App::new()
            .wrap(CacheMiddleware::new(cache))
            .app_data(web::Data::new(body_1k()))
            .route("/static", web::get().to(fixed))
            .route("/l1/{n}", web::get().to(cached)),
    )
    .await
}

/// What the cache says it did (`x-cache`: `HIT`, `MISS`, `BYPASS`...), or `""`.
///
/// ```
/// use actix_web::{test, HttpResponse};
/// let res = test::TestRequest::default().to_srv_response(HttpResponse::Ok().finish());
/// assert_eq!(cache_actix_examples::bench_app::x_cache(&res), "");
/// ```
pub fn x_cache(res: &ServiceResponse) -> &str {
    res.headers()
        .get(X_CACHE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// A latency summary in nanoseconds: mean and percentiles of a set of samples.
///
/// ```
/// let s = cache_actix_examples::bench_app::Latencies::of((1..=1000).collect());
/// assert_eq!((s.p50, s.p99, s.max), (500, 990, 1000));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latencies {
    /// How many samples.
    pub count: usize,
    /// Their mean.
    pub mean: f64,
    /// The median (nearest rank).
    pub p50: u64,
    /// The 99th percentile (nearest rank).
    pub p99: u64,
    /// The 99.9th percentile (nearest rank).
    pub p999: u64,
    /// The largest sample.
    pub max: u64,
}

impl Latencies {
    /// The summary of `samples` (any order; none gives zeros).
    pub fn of(mut samples: Vec<u64>) -> Latencies {
        samples.sort_unstable();
        let count = samples.len();
        let rank = |q: f64| -> u64 {
            if count == 0 {
                return 0;
            }
            let i = ((q * count as f64).ceil() as usize).clamp(1, count) - 1;
            samples[i]
        };
        Latencies {
            count,
            mean: if count == 0 {
                0.0
            } else {
                samples.iter().map(|&s| s as f64).sum::<f64>() / count as f64
            },
            p50: rank(0.50),
            p99: rank(0.99),
            p999: rank(0.999),
            max: samples.last().copied().unwrap_or(0),
        }
    }
}

impl std::fmt::Display for Latencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "n={} mean={:.0} p50={} p99={} p99.9={} max={} ns",
            self.count, self.mean, self.p50, self.p99, self.p999, self.max
        )
    }
}

/// A small deterministic generator (xorshift64*) for picking keys: the same sequence every
/// run, and no dependency.
///
/// ```
/// let mut rng = cache_actix_examples::bench_app::Rng::new(7);
/// assert!((0..1000).all(|_| rng.below(10) < 10));
/// ```
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (0 is replaced: xorshift never leaves 0).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1) as u64) as usize
    }
}

//! Heap allocations per request, by kind of request: what the cache's hit, 304, HEAD and miss
//! paths allocate, against the same app's static route. Run it optimised:
//!
//! `cargo run --release -p cache-actix-examples --bin hit_allocs`
//!
//! The app is `bench_server`'s (`cache_actix_examples::bench_app`), driven in-process with
//! `actix_web::test` on one thread, under a counting global allocator (`stats_alloc` around the
//! system allocator). Each case serves `N` requests (env `N`, default 10,000) after 1,000 of
//! warm-up; every answer's status and `x-cache` are checked, and the run stops at the first
//! one that is not the case it counts. The requests are built before counting starts (their
//! own allocations, `build allocs`, are printed apart), so `allocs` is what serving one costs:
//! routing, the handler or the cache, the response, and taking its body (whole, as the server's
//! dispatcher does; `test::read_body` would copy it into a new buffer). `ONLY=<text>` runs only
//! the cases whose name contains it (to profile one, e.g. `ONLY="l1 hit" N=1000000` under
//! `perf record -g` or `heaptrack`).
//!
//! Prints, for the middleware on the `/l1` scope (as `bench_server`) and then on the whole
//! `App` (a hit is answered before routing): one line per case with build allocations,
//! allocations, reallocations and bytes allocated per request, then each cache case minus
//! `static`.

#![forbid(unsafe_code)]

use std::alloc::System;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::test::{self, TestRequest};
use cache_actix::Cache;
use cache_actix_examples::bench_app::{app, app_wide, x_cache};
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const WARM_UP: usize = 1_000;

/// Per-request averages of one case.
#[derive(Clone, Copy, Default)]
struct Counts {
    build_allocs: f64,
    allocs: f64,
    reallocs: f64,
    bytes: f64,
}

/// One kind of request: how to build the `i`th, and what its answer must be.
struct Case {
    name: &'static str,
    build: Box<dyn Fn(usize) -> actix_http::Request>,
    status: u16,
    /// The `x-cache` the answer must carry; `None`: not checked (printed instead).
    x_cache: Option<&'static str>,
}

fn get(uri: &str) -> actix_http::Request {
    TestRequest::get().uri(uri).to_request()
}

/// The length of the answer's body, read as the server's dispatcher reads it: a body of
/// prepared bytes is taken whole, without `test::read_body`'s copy into a new buffer (which
/// would add one allocation of the body's size to every case).
async fn body_len(res: ServiceResponse) -> usize {
    match res.into_body().try_into_bytes() {
        Ok(bytes) => bytes.len(),
        Err(body) => actix_web::body::to_bytes(body).await.map_or(0, |b| b.len()),
    }
}

/// Serves `n` requests of `case`, numbered from `from`, and counts what serving them allocated.
async fn count<S>(app: &S, case: &Case, from: usize, n: usize) -> Result<(Counts, String), String>
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let before_build = GLOBAL.stats();
    let requests: Vec<_> = (from..from + n).map(|i| (case.build)(i)).collect();
    let before = GLOBAL.stats();
    let mut seen = String::new();
    for (i, req) in requests.into_iter().enumerate() {
        let res = test::call_service(app, req).await;
        let status = res.status().as_u16();
        let outcome = x_cache(&res);
        if status != case.status || case.x_cache.is_some_and(|x| x != outcome) {
            return Err(format!(
                "{}: request {} answered {status} x-cache {outcome:?}, expected {} {:?}",
                case.name,
                from + i,
                case.status,
                case.x_cache
            ));
        }
        if i == 0 {
            seen = outcome.to_string();
        }
        let len = body_len(res).await;
        if status == 200 && len != 1024 {
            return Err(format!(
                "{}: request {} has a body of {len} bytes",
                case.name,
                from + i
            ));
        }
    }
    let after = GLOBAL.stats();
    let per = |x: usize| x as f64 / n as f64;
    Ok((
        Counts {
            build_allocs: per(before.allocations - before_build.allocations),
            allocs: per(after.allocations - before.allocations),
            reallocs: per(after.reallocations - before.reallocations),
            bytes: per(after.bytes_allocated - before.bytes_allocated),
        },
        seen,
    ))
}

/// Every case on `app`, whose `/l1/0` is filled first; `label` names the layout.
async fn run<S>(app: S, label: &str, n: usize) -> Result<(), String>
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let fill = test::call_service(&app, get("/l1/0")).await;
    if x_cache(&fill) != "MISS" {
        return Err(format!("{label}: the fill answered {:?}", x_cache(&fill)));
    }
    let etag = fill
        .headers()
        .get(header::ETAG)
        .cloned()
        .ok_or_else(|| format!("{label}: the fill carried no etag"))?;
    let cases = [
        Case {
            name: "static",
            build: Box::new(|_| get("/static")),
            status: 200,
            x_cache: None,
        },
        Case {
            name: "l1 hit",
            build: Box::new(|_| get("/l1/0")),
            status: 200,
            x_cache: Some("HIT"),
        },
        Case {
            name: "l1 hit, HEAD",
            build: Box::new(|_| {
                TestRequest::default()
                    .method(Method::HEAD)
                    .uri("/l1/0")
                    .to_request()
            }),
            status: 200,
            x_cache: Some("HIT"),
        },
        Case {
            name: "l1 hit, If-None-Match (304)",
            build: Box::new(move |_| {
                TestRequest::get()
                    .uri("/l1/0")
                    .insert_header((header::IF_NONE_MATCH, etag.clone()))
                    .to_request()
            }),
            status: 304,
            x_cache: Some("HIT"),
        },
        Case {
            name: "miss (unique URLs)",
            build: Box::new(|i| get(&format!("/l1/m{i}"))),
            status: 200,
            x_cache: Some("MISS"),
        },
    ];
    println!("\n{label}");
    println!(
        "{:<38} {:>13} {:>11} {:>13} {:>11}",
        "case", "build allocs", "allocs", "reallocs", "bytes"
    );
    let mut results = Vec::new();
    let only = std::env::var("ONLY").unwrap_or_default();
    for case in cases.iter().filter(|c| c.name.contains(only.as_str())) {
        // Warm-up numbers come after the measured ones, so a miss's URLs never repeat.
        count(&app, case, n, WARM_UP).await?;
        let (c, seen) = count(&app, case, 0, n).await?;
        let note = match case.x_cache {
            None => format!("  (x-cache {seen:?})"),
            Some(_) => String::new(),
        };
        println!(
            "{:<38} {:>13.2} {:>11.2} {:>13.2} {:>11.1}{note}",
            case.name, c.build_allocs, c.allocs, c.reallocs, c.bytes
        );
        results.push((case.name, c));
    }
    let Some(&("static", base)) = results.first() else {
        return Ok(());
    };
    for (name, c) in &results[1..] {
        println!(
            "{:<38} {:>13} {:>11.2} {:>13.2} {:>11.1}",
            format!("{name} - static"),
            "",
            c.allocs - base.allocs,
            c.reallocs - base.reallocs,
            c.bytes - base.bytes
        );
    }
    Ok(())
}

fn main() {
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    println!(
        "hit_allocs: {n} requests per case after {WARM_UP} of warm-up, 1 KiB body, in-process \
         (actix_web::test), one thread; per request: allocations (alloc + alloc_zeroed), \
         reallocations, bytes allocated (allocs + realloc growth)"
    );
    let result = actix_web::rt::System::new().block_on(async {
        run(
            app(Cache::memory()).await,
            "CacheMiddleware on the /l1 scope (as bench_server)",
            n,
        )
        .await?;
        run(
            app_wide(Cache::memory()).await,
            "CacheMiddleware on the whole App (static passes through it too)",
            n,
        )
        .await
    });
    if let Err(err) = result {
        eprintln!("hit_allocs: {err}");
        std::process::exit(1);
    }
}

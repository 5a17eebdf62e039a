//! How the L1's costs change as it grows: hit latency at 10k and at 1M entries, `invalidate_tag`
//! at both sizes, and hit latency while the L1 evicts under overflow. Run it optimised:
//!
//! `cargo run --release -p cache-actix-examples --bin growth`
//!
//! Everything goes through `CacheMiddleware` in `bench_server`'s app
//! (`cache_actix_examples::bench_app`), driven in-process with `actix_web::test`: fills are
//! misses of the real middleware, hits are what a user's request pays from the middleware's
//! call to its answer (the request is built before the clock starts; the body is taken whole).
//! Every answer's `x-cache` is checked.
//!
//! - (a) Two caches, filled with `SMALL` (default 10,000) and `LARGE` (default 1,000,000)
//!   entries of 1 KiB under a budget no fill reaches (nothing is evicted; checked). Then `HITS`
//!   hits (default 200,000) per case, in `ROUNDS` slices (default 10) interleaved with the other
//!   cases, so that a change of machine load falls on every case alike: a random resident key
//!   of the small cache, of the large cache, and of the large cache's first `SMALL` keys (its
//!   map is large, its working set small), plus one key of the small cache (a warm CPU cache)
//!   and the uncached `/static` route. Prints each case's mean, p50 and p99 over all its hits,
//!   the median, lowest and highest of its slices' means, and the ratios large/small (target:
//!   within 10%).
//! - (b) `invalidate_tag("bench")`, the tag every entry carries: the first call with `SMALL`
//!   and with `LARGE` entries under it, then the mean and max of 1,000 more calls; then checks
//!   that `/l1/0` is a miss.
//! - (c) A cache with a `BUDGET_MIB` budget (default 32) and `HOT` hot entries (default 1,000).
//!   One thread hits random hot keys and records every hit's latency, first alone (`HITS`
//!   hits), then while a second thread (its own actix system and app on the same cache) writes
//!   new entries through the middleware totalling `OVERFLOW` (default 10) times the budget.
//!   Prints p50/p99/p99.9/max of both, the hot keys that were not hits, and the evictions,
//!   entries and bytes from `Cache::stats()`.
//!
//! `PHASES` (default `abc`) picks the parts to run; (b) needs (a)'s caches and runs only with it.
//! `CASES=<text>` runs only the cases of (a) whose name contains it (to profile one, e.g.
//! `PHASES=a CASES="10k: random" HITS=2000000` under `perf record -g`).
//!
//! All loops are bounded in count, and the writer and the hitter of (c) in time too (60 s). With
//! the defaults the run takes about a minute on 2 cores and about 3 GiB of memory (the 1M
//! entries of 1 KiB).

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::test::{self, TestRequest};
use cache_actix::{Cache, MemoryStore};
use cache_actix_examples::bench_app::{app, x_cache, Latencies, Rng};

/// A budget no fill of (a) reaches.
const UNBOUNDED: usize = usize::MAX;
/// How long the writer and the hitter of (c) may run at most.
const PHASE_LIMIT: Duration = Duration::from_secs(60);

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn get(uri: &str) -> actix_http::Request {
    TestRequest::get().uri(uri).to_request()
}

/// Serves `req`; `Ok(ns)` from the call to the answer's body in hand, or what was wrong with
/// the answer (its `x-cache` is not `expect`, or a 200 without the 1 KiB body).
async fn timed<S>(app: &S, req: actix_http::Request, expect: &str) -> Result<u64, String>
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let start = Instant::now();
    let res = test::call_service(app, req).await;
    let ok = x_cache(&res) == expect;
    let outcome = (!ok).then(|| format!("{} {:?}", res.status(), x_cache(&res)));
    let len = match res.into_body().try_into_bytes() {
        Ok(bytes) => bytes.len(),
        Err(body) => actix_web::body::to_bytes(body).await.map_or(0, |b| b.len()),
    };
    let ns = start.elapsed().as_nanos() as u64;
    match outcome {
        Some(outcome) => Err(format!("answered {outcome}, expected {expect:?}")),
        None if len != 1024 => Err(format!("a body of {len} bytes")),
        None => Ok(ns),
    }
}

/// Fills `/l1/{from}..{to}` through the middleware (each a miss); returns the seconds it took.
async fn fill<S>(app: &S, from: usize, to: usize) -> Result<f64, String>
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let start = Instant::now();
    for n in from..to {
        timed(app, get(&format!("/l1/{n}")), "MISS")
            .await
            .map_err(|e| format!("fill of /l1/{n}: {e}"))?;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Which keys a run of hits picks from.
#[derive(Clone, Copy)]
enum Keys {
    /// A random one of `/l1/0..n`.
    Random(usize),
    /// `/l1/0` every time.
    One,
    /// `/static`, the route without the cache.
    Static,
}

/// `hits` requests on `keys`, their latencies in ns.
async fn hits<S>(app: &S, keys: Keys, hits: usize, seed: u64) -> Result<Vec<u64>, String>
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let mut rng = Rng::new(seed);
    let mut samples = Vec::with_capacity(hits);
    for _ in 0..hits {
        let (uri, expect) = match keys {
            Keys::Random(n) => (format!("/l1/{}", rng.below(n)), "HIT"),
            Keys::One => ("/l1/0".to_string(), "HIT"),
            Keys::Static => ("/static".to_string(), ""),
        };
        let ns = timed(app, get(&uri), expect)
            .await
            .map_err(|e| format!("{uri}: {e}"))?;
        samples.push(ns);
    }
    Ok(samples)
}

/// `10k`, `1M`, or the number as it is.
fn size_label(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// (a), and (b) when `invalidation`.
async fn growth(
    small_n: usize,
    large_n: usize,
    hits_n: usize,
    rounds: usize,
    invalidation: bool,
) -> Result<(), String> {
    let small = Cache::builder()
        .l1(MemoryStore::new().max_bytes(UNBOUNDED))
        .build();
    let large = Cache::builder()
        .l1(MemoryStore::new().max_bytes(UNBOUNDED))
        .build();
    let small_app = app(small.clone()).await;
    let large_app = app(large.clone()).await;
    let secs = fill(&small_app, 0, small_n).await?;
    println!(
        "(a) filled {small_n} entries in {secs:.2} s ({:.1} us per miss)",
        secs * 1e6 / small_n as f64
    );
    let secs = fill(&large_app, 0, large_n).await?;
    println!(
        "(a) filled {large_n} entries in {secs:.2} s ({:.1} us per miss)",
        secs * 1e6 / large_n as f64
    );
    for (cache, n) in [(&small, small_n), (&large, large_n)] {
        let stats = cache.stats();
        if stats.l1.entries != n as u64 || stats.l1.evictions != 0 {
            return Err(format!(
                "a cache filled with {n} entries holds {} after {} evictions",
                stats.l1.entries, stats.l1.evictions
            ));
        }
        println!(
            "    {n} entries: {} bytes charged ({} per entry), 0 evictions",
            stats.l1.bytes,
            stats.l1.bytes / n as u64
        );
    }
    let (small_l, large_l) = (size_label(small_n), size_label(large_n));
    let only = std::env::var("CASES").unwrap_or_default();
    let cases: Vec<(String, bool, Keys)> = [
        ("static (no cache)".to_string(), false, Keys::Static),
        (format!("{small_l}: one key"), false, Keys::One),
        (
            format!("{small_l}: random key"),
            false,
            Keys::Random(small_n),
        ),
        (
            format!("{large_l}: random key"),
            true,
            Keys::Random(large_n),
        ),
        (
            format!("{large_l}: random key of the first {small_l}"),
            true,
            Keys::Random(small_n),
        ),
    ]
    .into_iter()
    .filter(|(name, _, _)| name.contains(only.as_str()))
    .collect();
    // Each case runs in `rounds` slices, interleaved with the others, so that a change of
    // machine load (a shared 2-core VM) falls on every case alike.
    let per_round = (hits_n / rounds).max(1);
    let mut samples: Vec<Vec<u64>> = vec![Vec::with_capacity(per_round * rounds); cases.len()];
    let mut round_means: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); cases.len()];
    for round in 0..rounds {
        for (i, (_, on_large, keys)) in cases.iter().enumerate() {
            let seed = 1 + round as u64;
            let run = if *on_large {
                hits(&large_app, *keys, per_round, seed).await?
            } else {
                hits(&small_app, *keys, per_round, seed).await?
            };
            round_means[i].push(run.iter().sum::<u64>() as f64 / run.len() as f64);
            samples[i].extend(run);
        }
    }
    println!(
        "(a) {} hits per case in {rounds} interleaved rounds of {per_round}; ns per request \
         (all hits pooled; then the median, lowest and highest of the rounds' means)",
        per_round * rounds
    );
    let mut means = Vec::new();
    for (i, (name, _, _)) in cases.iter().enumerate() {
        let pooled = Latencies::of(std::mem::take(&mut samples[i]));
        let rm = &mut round_means[i];
        let (lo, hi) = (
            rm.iter().copied().fold(f64::INFINITY, f64::min),
            rm.iter().copied().fold(0.0, f64::max),
        );
        let med = median(rm);
        println!(
            "    {name:<34} mean {:>6.0}  p50 {:>6}  p99 {:>7}  | rounds: median {med:>6.0}  \
             low {lo:>6.0}  high {hi:>6.0}",
            pooled.mean, pooled.p50, pooled.p99
        );
        means.push((pooled, med));
    }
    let find = |name: &str| cases.iter().position(|(n, _, _)| n == name);
    let ratio = |a: &str, b: &str| {
        let (x, y) = (&means[find(a)?], &means[find(b)?]);
        Some((
            x.0.mean / y.0.mean,
            x.0.p50 as f64 / y.0.p50.max(1) as f64,
            x.0.p99 as f64 / y.0.p99.max(1) as f64,
            x.1 / y.1,
        ))
    };
    let (one, random) = (
        format!("{small_l}: one key"),
        format!("{small_l}: random key"),
    );
    let (large_random, large_first) = (
        format!("{large_l}: random key"),
        format!("{large_l}: random key of the first {small_l}"),
    );
    for (label, pair) in [
        (
            format!("{large_l} random / {small_l} random"),
            ratio(&large_random, &random),
        ),
        (
            format!("{large_l} first-{small_l} / {small_l} random"),
            ratio(&large_first, &random),
        ),
        (
            format!("{small_l} random / {small_l} one key"),
            ratio(&random, &one),
        ),
    ] {
        if let Some((mean, p50, p99, rounds)) = pair {
            println!(
                "    ratio {label:<27} mean {mean:.3}  p50 {p50:.3}  p99 {p99:.3}  | rounds' median {rounds:.3}"
            );
        }
    }
    if let Some((mean, _, _, _)) = ratio(&large_random, &random) {
        println!(
            "    target: {large_l} within 10% of {small_l} (pooled mean ratio <= 1.10): {}",
            if mean <= 1.10 { "met" } else { "not met" }
        );
    }

    if !invalidation {
        return Ok(());
    }
    for (cache, app, n) in [(&small, &small_app, small_n), (&large, &large_app, large_n)] {
        let start = Instant::now();
        cache
            .invalidate_tag("bench")
            .await
            .map_err(|e| format!("invalidate_tag: {e}"))?;
        let first = start.elapsed().as_nanos();
        let mut again = Vec::with_capacity(1000);
        for _ in 0..1000 {
            let start = Instant::now();
            cache
                .invalidate_tag("bench")
                .await
                .map_err(|e| format!("invalidate_tag: {e}"))?;
            again.push(start.elapsed().as_nanos() as u64);
        }
        let again = Latencies::of(again);
        timed(app, get("/l1/0"), "MISS")
            .await
            .map_err(|e| format!("/l1/0 after invalidate_tag: {e}"))?;
        println!(
            "(b) invalidate_tag with {n:>7} entries under the tag: first call {first} ns; \
             1000 more: mean {:.0} ns, max {} ns; /l1/0 then a MISS",
            again.mean, again.max
        );
    }
    Ok(())
}

/// (c): what the hitter measured, and what the writer did.
struct Overflow {
    alone: Latencies,
    during: Latencies,
    hot_not_hit: usize,
    writes: usize,
    write_secs: f64,
}

fn overflow(budget: usize, hot: usize, ratio: usize, hits_n: usize) -> Result<Overflow, String> {
    let cache = Cache::builder()
        .l1(MemoryStore::new().max_bytes(budget))
        .build();
    let start_writing = Arc::new(Barrier::new(2));
    let writing = Arc::new(AtomicBool::new(true));
    let per_entry = Arc::new(std::sync::Mutex::new(0usize));
    let hitter = {
        let (cache, start_writing, writing, per_entry) = (
            cache.clone(),
            start_writing.clone(),
            writing.clone(),
            per_entry.clone(),
        );
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let app = app(cache.clone()).await;
                let filled = fill(&app, 0, hot).await;
                if let Ok(mut p) = per_entry.lock() {
                    *p = (cache.stats().l1.bytes as usize / hot.max(1)).max(1);
                }
                let alone = match filled {
                    Ok(_) => hits(&app, Keys::Random(hot), hits_n, 7)
                        .await
                        .map(Latencies::of),
                    Err(e) => Err(e),
                };
                // The writer waits for this even when the hitter failed.
                start_writing.wait();
                let alone = alone?;
                let mut rng = Rng::new(11);
                let mut during = Vec::new();
                let mut hot_not_hit = 0;
                let begin = Instant::now();
                while writing.load(Ordering::Relaxed) && begin.elapsed() < PHASE_LIMIT {
                    let uri = format!("/l1/{}", rng.below(hot));
                    match timed(&app, get(&uri), "HIT").await {
                        Ok(ns) => during.push(ns),
                        // A hot entry evicted: this request refilled it.
                        Err(_) => hot_not_hit += 1,
                    }
                }
                Ok::<_, String>((alone, Latencies::of(during), hot_not_hit))
            })
        })
    };
    let writer = {
        let (cache, start_writing, writing, per_entry) = (
            cache.clone(),
            start_writing.clone(),
            writing.clone(),
            per_entry.clone(),
        );
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let app = app(cache).await;
                start_writing.wait();
                let per_entry = per_entry.lock().map(|p| *p).unwrap_or(1).max(1);
                let writes = (ratio * budget).div_ceil(per_entry);
                let begin = Instant::now();
                let mut result = Ok(());
                for n in 0..writes {
                    if begin.elapsed() >= PHASE_LIMIT {
                        result = Err(format!("the writer ran out of time after {n} writes"));
                        break;
                    }
                    if let Err(e) = timed(&app, get(&format!("/l1/w{n}")), "MISS").await {
                        result = Err(format!("write /l1/w{n}: {e}"));
                        break;
                    }
                }
                writing.store(false, Ordering::Relaxed);
                result.map(|()| (writes, begin.elapsed().as_secs_f64()))
            })
        })
    };
    let measured = hitter
        .join()
        .map_err(|_| "the hitter panicked".to_string())?;
    let written = writer
        .join()
        .map_err(|_| "the writer panicked".to_string())?;
    let (alone, during, hot_not_hit) = measured?;
    let (writes, write_secs) = written?;
    let stats = cache.stats();
    println!(
        "(c) after the writes: {} evictions, {} entries, {} of {budget} bytes charged",
        stats.l1.evictions, stats.l1.entries, stats.l1.bytes
    );
    Ok(Overflow {
        alone,
        during,
        hot_not_hit,
        writes,
        write_secs,
    })
}

fn main() {
    let small_n = env("SMALL", 10_000);
    let large_n = env("LARGE", 1_000_000);
    let hits_n = env("HITS", 200_000);
    let rounds = env("ROUNDS", 10).max(1);
    let budget = env("BUDGET_MIB", 32) << 20;
    let hot = env("HOT", 1_000).max(1);
    let ratio = env("OVERFLOW", 10);
    let phases = std::env::var("PHASES").unwrap_or_else(|_| "abc".to_string());
    println!(
        "growth: SMALL={small_n} LARGE={large_n} HITS={hits_n} ROUNDS={rounds} \
         BUDGET_MIB={} HOT={hot} OVERFLOW={ratio} PHASES={phases}; 1 KiB bodies, in-process (actix_web::test), \
         every request through CacheMiddleware on the /l1 scope; {} cores",
        budget >> 20,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let begin = Instant::now();
    if phases.contains('a') {
        let result = actix_web::rt::System::new().block_on(growth(
            small_n,
            large_n,
            hits_n,
            rounds,
            phases.contains('b'),
        ));
        if let Err(err) = result {
            eprintln!("growth: {err}");
            std::process::exit(1);
        }
    }
    if !phases.contains('c') {
        println!("growth: done in {:.1} s", begin.elapsed().as_secs_f64());
        return;
    }
    match overflow(budget, hot, ratio, hits_n) {
        Ok(o) => {
            println!(
                "(c) writer: {} entries ({ratio}x the budget) in {:.2} s ({:.0} writes/s)",
                o.writes,
                o.write_secs,
                o.writes as f64 / o.write_secs.max(1e-9)
            );
            for (label, l) in [("alone", &o.alone), ("during eviction", &o.during)] {
                println!(
                    "(c) hot hits {label:<16} n={:>8}  p50 {:>6}  p99 {:>7}  p99.9 {:>8}  max {:>9} ns",
                    l.count, l.p50, l.p99, l.p999, l.max
                );
            }
            println!(
                "(c) ratio during/alone: p50 {:.2}  p99 {:.2}  p99.9 {:.2}; hot requests that were not hits: {}",
                o.during.p50 as f64 / o.alone.p50.max(1) as f64,
                o.during.p99 as f64 / o.alone.p99.max(1) as f64,
                o.during.p999 as f64 / o.alone.p999.max(1) as f64,
                o.hot_not_hit
            );
        }
        Err(err) => {
            eprintln!("growth: {err}");
            std::process::exit(1);
        }
    }
    println!("growth: done in {:.1} s", begin.elapsed().as_secs_f64());
}

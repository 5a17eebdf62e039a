//! What clients wait while a slow refresh runs: the latency of the `STALE` answers given while a
//! background refresh of a handler that takes `REFRESH_MS` (default 1,000 ms) runs, and how long
//! after the refresh began the first fresh answer came. Run it optimised:
//!
//! `cargo run --release -p cache-actix-examples --bin refresh_latency`
//!
//! One app behind `CacheMiddleware`, driven in-process with `actix_web::test` on an actix
//! system (so the refresh is spawned as in a server). `/slow` answers `v<n>` (n counts its runs)
//! after `REFRESH_MS`, under tag `slow`, fresh for 60 s with a 60 s stale-while-revalidate
//! window. After one fill, each of `ROUNDS` rounds (default 10):
//! - `soft`: `soft_invalidate_tag("slow")` makes the entry stale;
//! - `ttl` (with `MODE=ttl`): the entry is fresh for 1 s only, and the round waits it out.
//!
//! Then `CLIENTS` clients (default 32) each send a request every 5 ms until one of them gets the
//! refreshed body as a `HIT`, or 3 × `REFRESH_MS` passed. Every answer is checked: `STALE` with
//! the old body, or `HIT` with the new one; anything else stops the run. Prints the `STALE`
//! answers' p50/p99/max over all rounds, the handler runs (one per round, plus the fill), and
//! the time from the round's first stale answer to its first fresh one.
//!
//! With `REDIS_URL` set the cache is tiered (an L1 over that Redis, namespace
//! `refresh-latency`); otherwise memory only. All loops are bounded in count and time.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{test, web, App, HttpResponse};
use cache_actix::{Cache, CacheMiddleware, CachePolicy, Cached, MemoryStore, RedisStore};
use cache_actix_examples::bench_app::Latencies;
use futures_util::future::join_all;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn cache() -> Result<Cache, String> {
    let builder = Cache::builder().l1(MemoryStore::new());
    match std::env::var("REDIS_URL") {
        Ok(url) => {
            let store = RedisStore::from_url(&url).map_err(|e| format!("REDIS_URL: {e}"))?;
            Ok(builder.l2(store).namespace("refresh-latency").build())
        }
        Err(_) => Ok(builder.build()),
    }
}

/// One answer as a client saw it.
struct Seen {
    x_cache: String,
    body: String,
    took: Duration,
    at: Instant,
}

fn main() -> Result<(), String> {
    let refresh = Duration::from_millis(env("REFRESH_MS", 1_000));
    let rounds = env("ROUNDS", 10);
    let clients = env("CLIENTS", 32) as usize;
    let by_ttl = std::env::var("MODE").is_ok_and(|m| m == "ttl");
    let cache = cache()?;
    actix_web::rt::System::new().block_on(run(cache, refresh, rounds, clients, by_ttl))
}

async fn run(
    cache: Cache,
    refresh: Duration,
    rounds: u64,
    clients: usize,
    by_ttl: bool,
) -> Result<(), String> {
    let runs = Arc::new(AtomicUsize::new(0));
    let ttl = if by_ttl {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(60)
    };
    let handler_runs = runs.clone();
    let app = test::init_service(App::new().wrap(CacheMiddleware::new(cache.clone())).route(
        "/slow",
        web::get().to(move || {
            let runs = handler_runs.clone();
            async move {
                let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
                actix_web::rt::time::sleep(refresh).await;
                Cached::new(
                    HttpResponse::Ok().body(format!("v{run}")),
                    CachePolicy::new(ttl)
                        .stale_while_revalidate(Duration::from_secs(60))
                        .tag("slow"),
                )
            }
        }),
    ))
    .await;
    let ask = || async {
        let started = Instant::now();
        let res =
            test::call_service(&app, test::TestRequest::get().uri("/slow").to_request()).await;
        let x_cache = res
            .headers()
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = test::read_body(res).await;
        Seen {
            x_cache,
            body: String::from_utf8_lossy(&body).into_owned(),
            took: started.elapsed(),
            at: Instant::now(),
        }
    };
    let first = ask().await;
    if (first.x_cache.as_str(), first.body.as_str()) != ("MISS", "v1") {
        return Err(format!(
            "the first fill answered {} {}",
            first.x_cache, first.body
        ));
    }
    let mut stale = Vec::new();
    let mut to_fresh = Vec::new();
    for round in 1..=rounds {
        let old = format!("v{round}");
        let new = format!("v{}", round + 1);
        if by_ttl {
            actix_web::rt::time::sleep(Duration::from_millis(1_050)).await;
        } else {
            cache
                .soft_invalidate_tag("slow")
                .await
                .map_err(|e| format!("soft purge: {e}"))?;
        }
        let limit = Instant::now() + refresh * 3;
        let refreshed = std::cell::Cell::new(false);
        let client = |_| async {
            let mut seen = Vec::new();
            while !refreshed.get() && Instant::now() < limit {
                let answer = ask().await;
                if (answer.x_cache.as_str(), answer.body.as_str()) == ("HIT", new.as_str()) {
                    refreshed.set(true);
                }
                seen.push(answer);
                actix_web::rt::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        };
        let seen: Vec<Seen> = join_all((0..clients).map(client))
            .await
            .into_iter()
            .flatten()
            .collect();
        if !refreshed.get() {
            return Err(format!(
                "round {round}: no fresh answer within {:?}",
                refresh * 3
            ));
        }
        let mut first_stale = None;
        let mut first_fresh = None;
        for s in &seen {
            match (s.x_cache.as_str(), s.body.as_str()) {
                ("STALE", body) if body == old => {
                    stale.push(s.took.as_nanos() as u64);
                    let at = s.at - s.took;
                    first_stale = Some(first_stale.map_or(at, |f: Instant| f.min(at)));
                }
                ("HIT", body) if body == new => {
                    first_fresh = Some(first_fresh.map_or(s.at, |f: Instant| f.min(s.at)));
                }
                (x_cache, body) => {
                    return Err(format!("round {round}: answered {x_cache} {body}"));
                }
            }
        }
        if let (Some(a), Some(b)) = (first_stale, first_fresh) {
            to_fresh.push(b.saturating_duration_since(a).as_nanos() as u64);
        }
    }
    let stale = Latencies::of(stale);
    let to_fresh = Latencies::of(to_fresh);
    let ms = |ns: u64| ns as f64 / 1e6;
    println!(
        "mode {}, handler {refresh:?}, {clients} clients, {rounds} rounds, {}",
        if by_ttl { "ttl" } else { "soft" },
        if std::env::var("REDIS_URL").is_ok() {
            "L1 + Redis"
        } else {
            "memory"
        }
    );
    println!(
        "stale answers while the refresh ran: n={} p50={:.3} ms p99={:.3} ms max={:.3} ms",
        stale.count,
        ms(stale.p50),
        ms(stale.p99),
        ms(stale.max)
    );
    println!(
        "first stale answer to first fresh one: p50={:.0} ms max={:.0} ms",
        ms(to_fresh.p50),
        ms(to_fresh.max)
    );
    println!(
        "handler runs: {} (1 fill + {rounds} refreshes expected)",
        runs.load(Ordering::SeqCst)
    );
    if runs.load(Ordering::SeqCst) as u64 != rounds + 1 {
        return Err("more handler runs than refreshes".into());
    }
    Ok(())
}

//! Measurements of the cache on a Redis Cluster, through `RedisStore::cluster` and the middleware
//! as a user runs them (actix apps driven in-process with `actix_web::test`, so no HTTP client
//! sits between a request and its answer). `examples/benches/cluster.sh` starts a cluster of
//! three masters with a replica each and runs one phase per fresh cluster:
//!
//! - `spread`: one node (L1 off) fills `FILLS` URLs (default 100,000); then the records on each
//!   master are counted (`SCAN` for the record names) and the largest deviation from the mean is
//!   printed.
//! - `propagation`: node A invalidates a tag, node B (L1 on, subscribed) had the tagged entry in
//!   its L1; the time from A's call until B no longer answers from that copy, `ROUNDS` times
//!   (default 1,000), as p50/p99/max, next to the time A's own call took.
//! - `failover`: nodes A (L1 off) and B (L1 on) each read one of 30 URLs every ~10 ms; one master
//!   is SIGKILLed (`VICTIM=clocks`: the one holding the namespace's clocks; `records`: one that
//!   holds neither the clocks nor a subscription; `subscription`: the one the nodes subscribe
//!   on) and its replica takes over. Printed: the window (first to last non-hit answer after the
//!   kill), the non-hit answers and handler runs, and any 5xx, error or wrong body.
//!
//! Environment: `CLUSTER_URLS` (comma-separated `redis://127.0.0.1:PORT`, every node), `FILLS`,
//! `ROUNDS`, `VICTIM`, `SEED` (see `seed_first`), `FAILOVER_SECS` (how long reads go on after the
//! kill, default 15), `RUST_LOG`.
//! `redis-cli` must be on the PATH: the bench asks each node for its keys, roles and pid.
//!
//! What must stay true: it talks only to the loopback nodes it is given, every loop is bounded
//! in count and time, and the only process it signals is the master it was told to kill (by the
//! pid that master reports).

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::{Service, ServiceResponse};
use actix_web::{test, web, App, HttpResponse};
use cache_actix::{Cache, CacheMiddleware, CachePolicy, Cached, MemoryStore, RedisStore};
use futures_util::stream::{self, StreamExt};

/// The app every node runs: `/p/{id}` answers `"{id}:v{version}"`, tagged `products` and
/// `item:{id}`, counting its runs.
#[derive(Default)]
struct Db {
    version: AtomicU64,
    calls: AtomicU64,
}

async fn app(
    cache: Cache,
    db: Arc<Db>,
) -> impl Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error> {
    test::init_service(App::new().wrap(CacheMiddleware::new(cache)).route(
        "/p/{id}",
        web::get().to(move |id: web::Path<u32>| {
            let db = db.clone();
            async move {
                db.calls.fetch_add(1, Ordering::Relaxed);
                let v = db.version.load(Ordering::SeqCst);
                let policy = CachePolicy::new(Duration::from_secs(600))
                    .tag("products")
                    .tag(&format!("item:{id}"));
                Cached::new(HttpResponse::Ok().body(format!("{id}:v{v}")), policy)
            }
        }),
    ))
    .await
}

/// What a client saw.
#[derive(Debug, Clone)]
struct Reply {
    /// 0 when the service itself failed.
    status: u16,
    x_cache: String,
    body: String,
}

impl Reply {
    fn hit(&self) -> bool {
        self.status == 200 && self.x_cache == "HIT"
    }
}

async fn get<S>(app: &S, path: &str) -> Reply
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let req = test::TestRequest::get().uri(path).to_request();
    let res = match app.call(req).await {
        Ok(res) => res,
        Err(err) => {
            return Reply {
                status: 0,
                x_cache: String::new(),
                body: format!("service error: {err}"),
            }
        }
    };
    let status = res.status().as_u16();
    let x_cache = res
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = match actix_web::body::to_bytes(res.into_body()).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => "<body error>".to_string(),
    };
    Reply {
        status,
        x_cache,
        body,
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The key secret every node of this process shares: new for each run, so that each run of
/// `spread` hashes its URLs anew (without a secret the hashes follow from the namespace, and
/// every run would put the same keys on the same masters).
fn key_secret() -> &'static str {
    static SECRET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SECRET.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("cluster-bench-{}-{nanos}", std::process::id())
    })
}

/// A node of the bench: a cache on the cluster, in namespace `bench`, with the store's default
/// time limit per call (50 ms) unless `timeout` says otherwise.
fn node(urls: &[String], l1: bool) -> Result<Cache, String> {
    node_with(urls, l1, None)
}

fn node_with(urls: &[String], l1: bool, timeout: Option<Duration>) -> Result<Cache, String> {
    let store = RedisStore::cluster(urls).map_err(|e| format!("RedisStore::cluster: {e}"))?;
    let store = match timeout {
        Some(t) => store.timeout(t),
        None => store,
    };
    let builder = Cache::builder()
        .l2(store)
        .namespace("bench")
        .key_secret(key_secret());
    Ok(if l1 {
        builder.l1(MemoryStore::new()).build()
    } else {
        builder.build()
    })
}

async fn wait_in_sync(cache: &Cache) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cache.in_sync() {
        if Instant::now() > deadline {
            return Err("no invalidation subscription within 10 s".into());
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

// ---- asking the cluster (through redis-cli; loopback ports only) ----

fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .arg("-h")
        .arg("127.0.0.1")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ports(urls: &[String]) -> Result<Vec<u16>, String> {
    urls.iter()
        .map(|u| {
            let rest = u
                .strip_prefix("redis://127.0.0.1:")
                .ok_or_else(|| format!("only redis://127.0.0.1:PORT URLs, not {u}"))?;
            rest.trim_end_matches('/')
                .parse()
                .map_err(|_| format!("bad port in {u}"))
        })
        .collect()
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
struct NodeLine {
    id: String,
    port: u16,
    master: bool,
    /// `fail` or `fail?`.
    failed: bool,
    /// `fail`: the masters agreed.
    agreed_fail: bool,
    master_id: Option<String>,
    slots: u32,
}

fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let port = f[1].split('@').next()?.rsplit(':').next()?.parse().ok()?;
            let slots = f[8..]
                .iter()
                .filter(|r| !r.starts_with('['))
                .filter_map(|r| {
                    let (lo, hi) = r.split_once('-').unwrap_or((r, r));
                    Some(hi.parse::<u32>().ok()? - lo.parse::<u32>().ok()? + 1)
                })
                .sum();
            Some(NodeLine {
                id: f[0].to_string(),
                port,
                master: f[2].split(',').any(|x| x == "master"),
                failed: f[2].split(',').any(|x| x == "fail" || x == "fail?"),
                agreed_fail: f[2].split(',').any(|x| x == "fail"),
                master_id: (f[3] != "-").then(|| f[3].to_string()),
                slots,
            })
        })
        .collect()
}

/// The cluster as the first of `ports` that answers sees it.
fn view(ports: &[u16]) -> Result<Vec<NodeLine>, String> {
    ports
        .iter()
        .find_map(|&p| cli(p, &["cluster", "nodes"]).map(|t| parse_nodes(&t)))
        .ok_or_else(|| "no node answers CLUSTER NODES".to_string())
}

fn masters(ports: &[u16]) -> Result<Vec<NodeLine>, String> {
    let mut m: Vec<NodeLine> = view(ports)?
        .into_iter()
        .filter(|l| l.master && !l.failed && l.slots > 0)
        .collect();
    m.sort_by_key(|l| l.port);
    Ok(m)
}

/// How many keys matching `pattern` the node on `port` holds.
fn count_keys(port: u16, pattern: &str) -> Result<u64, String> {
    let text = cli(port, &["--scan", "--pattern", pattern])
        .ok_or_else(|| format!("port {port}: SCAN failed"))?;
    Ok(text.lines().filter(|l| !l.is_empty()).count() as u64)
}

/// The record names (the middleware's layout: `ca:<ns>:r:{hash}`); the bench's namespace is the
/// only one on its fresh cluster.
const RECORDS: &str = "ca:*:r:*";

/// The master holding the namespace's clocks (its tick counter, `ca:{<ns>}:seq`).
fn clock_master(masters: &[NodeLine]) -> Option<u16> {
    masters
        .iter()
        .find(|m| count_keys(m.port, "ca:{*}:seq").is_ok_and(|n| n > 0))
        .map(|m| m.port)
}

/// The nodes with a pub/sub client, and how many.
fn subscribed(ports: &[u16]) -> Vec<(u16, usize)> {
    ports
        .iter()
        .filter_map(|&p| {
            let n = cli(p, &["client", "list", "type", "pubsub"])?
                .lines()
                .filter(|l| !l.is_empty())
                .count();
            (n > 0).then_some((p, n))
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// ---- the phases ----

async fn spread(urls: &[String], ports: &[u16]) -> Result<(), String> {
    let fills: u32 = env_or("FILLS", 100_000);
    // What is measured is where records land, not how fast: a generous time limit, so that a
    // machine busy with other work does not turn fills into timeouts (stores are counted).
    let cache = node_with(urls, false, Some(Duration::from_secs(1)))?;
    wait_in_sync(&cache).await?;
    let db = Arc::new(Db::default());
    let a = app(cache.clone(), db.clone()).await;
    // The first fill may race the cluster client's first connection.
    for _ in 0..100 {
        get(&a, "/p/0").await;
        if get(&a, "/p/0").await.hit() {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    let bad = Arc::new(AtomicU64::new(0));
    stream::iter(1..=fills)
        .map(|id| {
            let (a, bad) = (&a, bad.clone());
            async move {
                let reply = get(a, &format!("/p/{id}")).await;
                if reply.status != 200 || reply.body != format!("{id}:v0") {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    let took = started.elapsed();
    let stats = cache.stats();
    let masters = masters(ports)?;
    let mut counts = Vec::new();
    for m in &masters {
        counts.push((m.port, m.slots, count_keys(m.port, RECORDS)?));
    }
    let total: u64 = counts.iter().map(|c| c.2).sum();
    let mean = total as f64 / counts.len().max(1) as f64;
    println!(
        "spread: {} fills (+1 warm-up) by one node (L1 off, 32 at a time, 1 s time limit per call) in {:.1} s; load {}",
        fills,
        took.as_secs_f64(),
        loadavg()
    );
    println!(
        "  answers not 200 with the right body: {}; L2 stores {}, handler runs {}, cache errors {}",
        bad.load(Ordering::Relaxed),
        stats.l2.stores,
        db.calls.load(Ordering::Relaxed),
        stats.errors
    );
    let mut worst: f64 = 0.0;
    for (port, slots, n) in &counts {
        let dev = (*n as f64 - mean) / mean * 100.0;
        worst = worst.max(dev.abs());
        println!("  master {port}: {slots} slots, {n} records ({dev:+.2}% from the mean)");
    }
    println!(
        "  total {total} records, mean {mean:.1} per master, max deviation {worst:.2}% (aim: within 10%)"
    );
    if stats.l2.stores < u64::from(fills) {
        println!(
            "  NOT A VALID RUN: only {} of {} fills were stored",
            stats.l2.stores, fills
        );
    }
    Ok(())
}

/// `urls` with the master `seed` names first, since a node subscribes on the first seed that
/// answers: `clocks`, the master holding the namespace's clocks (where an invalidation
/// publishes), or `other`, another master (the message then crosses the cluster bus);
/// `as-given` keeps the order. A probe cache invalidates once so that the clocks exist.
async fn seed_first(urls: &[String], ports: &[u16], seed: &str) -> Result<Vec<String>, String> {
    if seed == "as-given" {
        return Ok(urls.to_vec());
    }
    let probe = node(urls, false)?;
    wait_in_sync(&probe).await?;
    let mut tries = 0;
    while let Err(err) = probe.invalidate_tag("probe").await {
        tries += 1;
        if tries > 50 {
            return Err(format!("probe invalidation: {err}"));
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    drop(probe);
    let masters = masters(ports)?;
    let clocks = clock_master(&masters).ok_or("no master holds the clocks")?;
    let first = match seed {
        "clocks" => clocks,
        "other" => masters
            .iter()
            .map(|m| m.port)
            .find(|&p| p != clocks)
            .ok_or("no other master")?,
        other => {
            return Err(format!(
                "SEED must be as-given, clocks or other, not {other}"
            ))
        }
    };
    let url = format!("redis://127.0.0.1:{first}");
    let mut ordered = vec![url.clone()];
    ordered.extend(urls.iter().filter(|u| **u != url).cloned());
    Ok(ordered)
}

async fn propagation(urls: &[String], ports: &[u16]) -> Result<(), String> {
    let rounds: u32 = env_or("ROUNDS", 1000);
    let seed = std::env::var("SEED").unwrap_or_else(|_| "as-given".to_string());
    let urls = seed_first(urls, ports, &seed).await?;
    let (cache_a, cache_b) = (node(&urls, true)?, node(&urls, true)?);
    wait_in_sync(&cache_a).await?;
    wait_in_sync(&cache_b).await?;
    let db = Arc::new(Db::default());
    let a = app(cache_a.clone(), db.clone()).await;
    let b = app(cache_b.clone(), db.clone()).await;
    for _ in 0..100 {
        get(&a, "/p/0").await;
        if get(&b, "/p/0").await.hit() {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let masters = masters(ports)?;
    let clocks = clock_master(&masters);
    let subs = subscribed(ports);
    let (mut seen_ms, mut answered_ms) = (Vec::new(), Vec::new());
    let (mut ok_ms, mut after_ok_ms) = (Vec::new(), Vec::new());
    let (mut not_l1, mut lost, mut before_ok, mut wrong) = (0u32, 0u32, 0u32, 0u32);
    let started = Instant::now();
    for round in 1..=rounds {
        let id = round;
        let path = format!("/p/{id}");
        db.version.store(u64::from(round), Ordering::SeqCst);
        get(&b, &path).await; // B fills: the record in the cluster, a copy in B's L1
        let l1_before = cache_b.stats().l1.hits;
        let old = get(&b, &path).await;
        if !old.hit() || cache_b.stats().l1.hits != l1_before + 1 {
            not_l1 += 1;
            continue;
        }
        // The write a real app would make before invalidating.
        db.version
            .store(u64::from(round) + 1_000_000, Ordering::SeqCst);
        let t0 = Instant::now();
        let invalidating = {
            let cache_a = cache_a.clone();
            actix_web::rt::spawn(async move {
                let result = cache_a.invalidate_tag(format!("item:{id}")).await;
                (result, t0.elapsed())
            })
        };
        let limit = Duration::from_secs(2);
        // When B's first request that was not answered from the copy began (the delay, to
        // within one L1 hit) and ended (its miss refilled the entry meanwhile).
        let seen = loop {
            let began = t0.elapsed();
            let reply = get(&b, &path).await;
            if !(reply.hit() && reply.body == old.body) {
                if reply.body != format!("{id}:v{}", u64::from(round) + 1_000_000) {
                    wrong += 1;
                }
                break Some((began, t0.elapsed()));
            }
            if t0.elapsed() > limit {
                break None;
            }
            tokio::task::yield_now().await;
        };
        let (result, ok_at) = invalidating
            .await
            .map_err(|e| format!("invalidation task: {e}"))?;
        result.map_err(|e| format!("invalidate_tag: {e}"))?;
        ok_ms.push(ok_at.as_secs_f64() * 1e3);
        match seen {
            Some((began, ended)) => {
                seen_ms.push(began.as_secs_f64() * 1e3);
                answered_ms.push(ended.as_secs_f64() * 1e3);
                after_ok_ms.push((began.as_secs_f64() - ok_at.as_secs_f64()) * 1e3);
                if began < ok_at {
                    before_ok += 1;
                }
            }
            None => lost += 1,
        }
    }
    let took = started.elapsed();
    for v in [&mut seen_ms, &mut answered_ms, &mut ok_ms, &mut after_ok_ms] {
        v.sort_by(f64::total_cmp);
    }
    let line = |what: &str, v: &[f64]| {
        println!(
            "  {what}: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            percentile(v, 50.0),
            percentile(v, 99.0),
            v.last().copied().unwrap_or(f64::NAN)
        )
    };
    println!(
        "propagation (SEED={seed}): {} invalidations in {:.1} s (A and B with L1 on; B polls its L1 copy); load {}",
        seen_ms.len(),
        took.as_secs_f64(),
        loadavg()
    );
    println!(
        "  clocks on master {}; pub/sub clients per node: {:?}",
        clocks.map_or("?".to_string(), |p| p.to_string()),
        subs
    );
    line("A's call until B stops answering from its L1", &seen_ms);
    line(
        "A's call until B's first fresh answer (its refill included)",
        &answered_ms,
    );
    line("A's invalidate_tag call itself", &ok_ms);
    line(
        "B stops answering from its L1, after A's Ok (negative: before)",
        &after_ok_ms,
    );
    println!(
        "  B stopped before A's Ok returned: {before_ok}; not seen within 2 s: {lost}; \
         rounds skipped (B's copy not an L1 hit): {not_l1}; wrong bodies after: {wrong}"
    );
    Ok(())
}

/// One answer in the failover loop.
struct Seen {
    /// Milliseconds after the kill (negative before it).
    at_ms: f64,
    node: usize,
    key: usize,
    reply: Reply,
}

/// When the live nodes saw the failover, in ms after the kill.
#[derive(Default, Debug, Clone)]
struct Monitor {
    failed_ms: Option<f64>,
    promoted_ms: Option<f64>,
    ok_ms: Option<f64>,
}

fn watch_failover(
    live: Vec<u16>,
    victim_id: String,
    heir: u16,
    killed: Instant,
    out: Arc<Mutex<Monitor>>,
) {
    std::thread::spawn(move || {
        while killed.elapsed() < Duration::from_secs(30) {
            let at = killed.elapsed().as_secs_f64() * 1e3;
            let nodes = view(&live).unwrap_or_default();
            let mut m = out.lock().unwrap_or_else(|p| p.into_inner());
            if m.failed_ms.is_none() && nodes.iter().any(|l| l.id == victim_id && l.agreed_fail) {
                m.failed_ms = Some(at);
            }
            if m.promoted_ms.is_none() && nodes.iter().any(|l| l.port == heir && l.master) {
                m.promoted_ms = Some(at);
            }
            let ok = m.promoted_ms.is_some()
                && live.iter().all(|&p| {
                    cli(p, &["cluster", "info"]).is_some_and(|t| t.contains("cluster_state:ok"))
                });
            if m.ok_ms.is_none() && ok {
                m.ok_ms = Some(at);
                return;
            }
            drop(m);
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

async fn failover(urls: &[String], ports: &[u16]) -> Result<(), String> {
    const KEYS: usize = 30;
    let victim_kind = std::env::var("VICTIM").unwrap_or_else(|_| "clocks".to_string());
    let secs: u64 = env_or("FAILOVER_SECS", 15);
    let caches = [node(urls, false)?, node(urls, true)?];
    for c in &caches {
        wait_in_sync(c).await?;
    }
    let db = Arc::new(Db::default());
    let apps = [
        app(caches[0].clone(), db.clone()).await,
        app(caches[1].clone(), db.clone()).await,
    ];
    for _ in 0..100 {
        get(&apps[0], "/p/1000").await;
        if get(&apps[1], "/p/1000").await.hit() {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    // Fill each key through A, then find the master that got its record.
    let masters = masters(ports)?;
    let count_all = || -> Result<HashMap<u16, u64>, String> {
        masters
            .iter()
            .map(|m| Ok((m.port, count_keys(m.port, RECORDS)?)))
            .collect()
    };
    let mut key_master = Vec::new();
    let mut before = count_all()?;
    for key in 0..KEYS {
        get(&apps[0], &format!("/p/{key}")).await;
        let after = count_all()?;
        let grew = masters
            .iter()
            .find(|m| after.get(&m.port) > before.get(&m.port))
            .map(|m| m.port);
        key_master.push(grew);
        before = after;
        // B's L1 copy.
        get(&apps[1], &format!("/p/{key}")).await;
    }
    let clocks = clock_master(&masters);
    let subs = subscribed(ports);
    let holds_sub = |p: u16| subs.iter().any(|(s, _)| *s == p);
    let victim = match victim_kind.as_str() {
        "clocks" => clocks,
        "subscription" => masters.iter().map(|m| m.port).find(|&p| holds_sub(p)),
        "records" => masters
            .iter()
            .map(|m| m.port)
            .find(|&p| Some(p) != clocks && !holds_sub(p))
            .or_else(|| masters.iter().map(|m| m.port).find(|&p| Some(p) != clocks)),
        other => {
            return Err(format!(
                "VICTIM must be clocks, records or subscription, not {other}"
            ))
        }
    }
    .ok_or_else(|| format!("no master fits VICTIM={victim_kind}"))?;
    let victim_line = masters
        .iter()
        .find(|m| m.port == victim)
        .cloned()
        .ok_or("victim vanished")?;
    let heir = view(ports)?
        .into_iter()
        .find(|l| l.master_id.as_deref() == Some(victim_line.id.as_str()))
        .map(|l| l.port)
        .ok_or_else(|| format!("master {victim} has no replica"))?;
    let pid: u32 = cli(victim, &["info", "server"])
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.trim().strip_prefix("process_id:").map(str::to_string))
        })
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| format!("master {victim} reports no pid"))?;
    let victim_keys: Vec<bool> = key_master.iter().map(|m| *m == Some(victim)).collect();
    let mut role = Vec::new();
    if Some(victim) == clocks {
        role.push("the clocks");
    }
    if holds_sub(victim) {
        role.push("the nodes' subscription");
    }
    println!(
        "failover (VICTIM={victim_kind}): killing master {victim} (pid {pid}; holds {} of the {KEYS} records{}{}); its replica {heir} takes over; cluster-node-timeout {} ms; load {}",
        victim_keys.iter().filter(|v| **v).count(),
        if role.is_empty() { "" } else { ", " },
        role.join(" and "),
        std::env::var("CLUSTER_NODE_TIMEOUT_MS").unwrap_or_else(|_| "?".into()),
        loadavg()
    );
    println!("  clocks on {clocks:?}; pub/sub clients per node: {subs:?}");

    let calls_before = db.calls.load(Ordering::Relaxed);
    let mut seen: Vec<Seen> = Vec::new();
    let monitor = Arc::new(Mutex::new(Monitor::default()));
    let start = Instant::now();
    let mut killed: Option<Instant> = None;
    let mut round = 0usize;
    let pre = Duration::from_secs(1);
    loop {
        if killed.is_none() && start.elapsed() >= pre {
            let status = Command::new("kill")
                .arg("-9")
                .arg(pid.to_string())
                .status()
                .map_err(|e| format!("kill: {e}"))?;
            if !status.success() {
                return Err(format!("kill -9 {pid} failed"));
            }
            let at = Instant::now();
            killed = Some(at);
            let live: Vec<u16> = ports.iter().copied().filter(|&p| p != victim).collect();
            watch_failover(live, victim_line.id.clone(), heir, at, monitor.clone());
        }
        if killed.is_some_and(|k| k.elapsed() >= Duration::from_secs(secs)) {
            break;
        }
        let key = round % KEYS;
        for (n, app) in apps.iter().enumerate() {
            let reply = get(app, &format!("/p/{key}")).await;
            let now = Instant::now();
            let at_ms = match killed {
                Some(k) => now.duration_since(k).as_secs_f64() * 1e3,
                None => (start.elapsed().as_secs_f64() - pre.as_secs_f64()) * 1e3,
            };
            seen.push(Seen {
                at_ms,
                node: n,
                key,
                reply,
            });
        }
        round += 1;
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    let calls = db.calls.load(Ordering::Relaxed) - calls_before;
    // The control: afterwards every key is a hit again on both nodes.
    let mut not_hit_after = 0;
    for key in 0..KEYS {
        for app in &apps {
            let path = format!("/p/{key}");
            get(app, &path).await;
            if !get(app, &path).await.hit() {
                not_hit_after += 1;
            }
        }
    }
    let m = monitor.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let fmt = |v: Option<f64>| v.map_or("not seen".to_string(), |v| format!("{v:.0} ms"));
    println!(
        "  cluster: victim flagged fail at {}, replica promoted at {}, cluster_state:ok everywhere at {} (after the kill)",
        fmt(m.failed_ms),
        fmt(m.promoted_ms),
        fmt(m.ok_ms)
    );
    for (n, name) in ["A (L1 off)", "B (L1 on)"].iter().enumerate() {
        let mine: Vec<&Seen> = seen.iter().filter(|s| s.node == n).collect();
        let pre_non_hits = mine
            .iter()
            .filter(|s| s.at_ms < 0.0 && !s.reply.hit())
            .count();
        let post: Vec<&&Seen> = mine.iter().filter(|s| s.at_ms >= 0.0).collect();
        let non_hits: Vec<&&&Seen> = post.iter().filter(|s| !s.reply.hit()).collect();
        let errors = post
            .iter()
            .filter(|s| s.reply.status == 0 || s.reply.status >= 500)
            .count();
        let wrong = post
            .iter()
            .filter(|s| s.reply.status == 200 && s.reply.body != format!("{}:v0", s.key))
            .count();
        let on_victim = non_hits.iter().filter(|s| victim_keys[s.key]).count();
        let window = match (non_hits.first(), non_hits.last()) {
            (Some(f), Some(l)) => format!(
                "{:.0} ms to {:.0} ms after the kill ({:.0} ms)",
                f.at_ms,
                l.at_ms,
                l.at_ms - f.at_ms
            ),
            _ => "none".to_string(),
        };
        let mut kinds: HashMap<String, usize> = HashMap::new();
        for s in &non_hits {
            *kinds
                .entry(format!("{} {}", s.reply.status, s.reply.x_cache))
                .or_default() += 1;
        }
        let settled = m.ok_ms.map_or(f64::INFINITY, |ok| ok + 1000.0);
        let late: Vec<String> = non_hits
            .iter()
            .filter(|s| s.at_ms > settled)
            .map(|s| format!("{:.0}", s.at_ms))
            .collect();
        println!(
            "  {name}: {} reads after the kill, {} non-hits {:?} ({} on the victim's keys, {} on others); window {}; 5xx/errors {}, wrong bodies {}; non-hits before the kill {}",
            post.len(),
            non_hits.len(),
            kinds,
            on_victim,
            non_hits.len() - on_victim,
            window,
            errors,
            wrong,
            pre_non_hits
        );
        if !late.is_empty() {
            println!(
                "  {name}: {} non-hits more than 1 s after cluster_state:ok, at ms {}",
                late.len(),
                late.join(", ")
            );
        }
        if let Some(last) = non_hits.last() {
            if last.at_ms > (secs as f64) * 1e3 - 1000.0 {
                println!("  {name}: the window had not closed 1 s before the reads stopped");
            }
        }
    }
    println!(
        "  handler runs during the reads: {calls}; afterwards, keys not a hit on the second read: {not_hit_after} of {}; in sync: A {}, B {}",
        KEYS * 2,
        caches[0].in_sync(),
        caches[1].in_sync()
    );
    Ok(())
}

fn main() {
    cache_actix_examples::init_tracing();
    let phase = std::env::args().nth(1).unwrap_or_default();
    let urls: Vec<String> = std::env::var("CLUSTER_URLS")
        .unwrap_or_default()
        .split(',')
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .collect();
    let result = ports(&urls).and_then(|ports| {
        if ports.is_empty() {
            return Err("CLUSTER_URLS is empty".into());
        }
        actix_web::rt::System::new().block_on(async {
            match phase.as_str() {
                "spread" => spread(&urls, &ports).await,
                "propagation" => propagation(&urls, &ports).await,
                "failover" => failover(&urls, &ports).await,
                other => Err(format!(
                    "usage: cluster_bench spread|propagation|failover (not {other:?})"
                )),
            }
        })
    });
    if let Err(err) = result {
        eprintln!("cluster_bench: {err}");
        std::process::exit(1);
    }
}

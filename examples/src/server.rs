//! The product API server as a whole program: configuration from the environment, the cache
//! (in memory, or tiered over Redis), and the HTTP server. The `products` binary is this.
//!
//! Environment: `LISTEN_ADDR` (default `127.0.0.1:8080`), `CACHE_ADMIN_TOKEN` (enables `/admin`),
//! `DB_LATENCY_MS` (default 200), `REDIS_URL` (tiered: L1 memory + L2 Redis), or
//! `REDIS_CLUSTER_URLS` (comma-separated seed nodes of a Redis Cluster), or
//! `REDIS_SENTINEL_URLS` (comma-separated sentinels) with `REDIS_SENTINEL_MASTER` (and
//! `REDIS_PRIMARY_PASSWORD`, `REDIS_PRIMARY_USER` when the primary asks for them), `CACHE_L1=off`
//! (with an L2: L2 only, for measuring Redis hits), `CACHE_STRICT_READS=1` (check every
//! Redis read against the clocks in Redis), `CACHE_NAMESPACE`, `WORKERS`,
//! `RUST_LOG` (e.g. `cache_core=debug`).

use std::time::Duration;

use crate::products::{configure, Db};
use actix_web::{web, App, HttpServer};
use cache_actix::{Cache, MemoryStore, RedisStore};

/// Runs the server until it is stopped; what `main` of the `products` binary does.
pub fn run_from_env() -> std::io::Result<()> {
    actix_web::rt::System::new().block_on(serve_from_env())
}

/// The server, configured from the environment.
pub async fn serve_from_env() -> std::io::Result<()> {
    crate::init_tracing();
    let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_string());
    let latency = std::env::var("DB_LATENCY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let admin_token = std::env::var("CACHE_ADMIN_TOKEN").ok();
    let cache = build_cache()?;
    let db = web::Data::new(Db::seeded(Duration::from_millis(latency)));
    let workers = std::env::var("WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    tracing::info!(%addr, admin = admin_token.is_some(), "product API listening");
    HttpServer::new(move || {
        let (cache, db, token) = (cache.clone(), db.clone(), admin_token.clone());
        App::new().configure(move |cfg| configure(cfg, cache, db, token))
    })
    .workers(workers)
    .bind(&addr)?
    .run()
    .await
}

fn build_cache() -> std::io::Result<Cache> {
    let namespace = std::env::var("CACHE_NAMESPACE").unwrap_or_else(|_| "products".to_string());
    let set = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    // Neither constructor connects: the server starts (and serves misses) with Redis down.
    let list =
        |urls: String| -> Vec<String> { urls.split(',').map(|u| u.trim().to_string()).collect() };
    let l2 = if let Some(urls) = set("REDIS_CLUSTER_URLS") {
        Some(RedisStore::cluster(list(urls))?)
    } else if let Some(urls) = set("REDIS_SENTINEL_URLS") {
        let master = set("REDIS_SENTINEL_MASTER").unwrap_or_else(|| "mymaster".to_string());
        let store = RedisStore::sentinel(list(urls), &master)?;
        match set("REDIS_PRIMARY_PASSWORD") {
            Some(password) => {
                let user = set("REDIS_PRIMARY_USER");
                Some(store.primary_auth(user.as_deref(), &password)?)
            }
            None => Some(store),
        }
    } else if let Some(url) = set("REDIS_URL") {
        Some(RedisStore::from_url(&url)?)
    } else {
        None
    };
    let Some(l2) = l2 else {
        return Ok(Cache::builder()
            .l1(MemoryStore::new())
            .namespace(&namespace)
            .build());
    };
    let strict = std::env::var("CACHE_STRICT_READS").is_ok_and(|v| v == "1");
    let l2 = l2.strict_reads(strict);
    let l1_off = std::env::var("CACHE_L1").is_ok_and(|v| v == "off");
    let builder = Cache::builder().l2(l2).namespace(&namespace);
    let builder = if l1_off {
        builder
    } else {
        builder.l1(MemoryStore::new())
    };
    tracing::info!(l1 = !l1_off, "tiered cache on Redis");
    Ok(builder.build())
}

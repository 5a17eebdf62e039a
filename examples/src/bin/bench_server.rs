//! The server the load benchmark (`examples/benches/load.sh`) drives: the same 1 KiB body
//! served every way the benchmark compares, on one port.
//!
//! - `/static`: prepared static bytes, no middleware (the limit);
//! - `/plain/{n}`: the app handler without any cache (what nginx and Varnish sit in front of,
//!   and the baseline of the miss path);
//! - `/l1/{n}`: the same handler under `CacheMiddleware` with an in-memory cache (`/l1/0` is the
//!   hit case; unique `n` is the miss path);
//! - `/l2/{n}`: the same handler under a cache with no L1, on the Redis at `REDIS_URL` (when set),
//!   and `/l2json/{n}`, `/l2gz/{n}`: the JSON below stored there plain and compressed;
//! - `/json/{n}`: a 16 KiB JSON body under an in-memory cache that does not compress;
//! - `/gz/{n}`: the same JSON under a cache that stores br and gzip copies
//!   (`CacheMiddleware::compress`);
//! - `/cz/{n}`: the same JSON under a cache that does not compress, inside actix's `Compress`
//!   (every hit compressed again, as when `Compress` wraps the app).
//!
//! On `APP_LISTEN_ADDR` (when set), a second server whose whole `App` is wrapped in the
//! middleware (`/l1/{n}` again), so that a hit is answered before routing.
//!
//! Environment: `LISTEN_ADDR` (default `127.0.0.1:8090`), `APP_LISTEN_ADDR`, `WORKERS`
//! (default 1), `REDIS_URL`.

use std::time::Duration;

use actix_web::{middleware::Compress, web, App, HttpResponse, HttpServer};
use bytes::Bytes;
use cache_actix::{Cache, CacheMiddleware, CachePolicy, Cached, Compression, RedisStore};

/// 1 KiB of JSON-ish text, built once.
fn body() -> Bytes {
    let mut text = String::from("{\"data\":\"");
    while text.len() < 1024 - 2 {
        text.push('x');
    }
    text.push_str("\"}");
    Bytes::from(text)
}

/// 16 KiB of JSON records, as a list endpoint returns them.
fn json_body() -> Bytes {
    let mut text = String::from("[");
    let mut i = 0;
    while text.len() < 16 * 1024 - 80 {
        text.push_str(&format!(
            "{{\"id\":{i},\"name\":\"product {i}\",\"price\":{},\"stock\":{}}},",
            i * 7 % 1000,
            i * 13 % 97
        ));
        i += 1;
    }
    text.pop();
    text.push(']');
    Bytes::from(text)
}

/// The JSON handler: the same policy, the 16 KiB body.
async fn json(body: web::Data<JsonBody>) -> Cached<HttpResponse> {
    Cached::new(
        HttpResponse::Ok()
            .content_type("application/json")
            .body(body.0.clone()),
        CachePolicy::new(Duration::from_secs(600)).tag("bench"),
    )
}

struct JsonBody(Bytes);

/// The app's handler: what a real endpoint does after its (here instant) work.
async fn handler(body: web::Data<Bytes>) -> Cached<HttpResponse> {
    Cached::new(
        HttpResponse::Ok()
            .content_type("application/json")
            .body(body.get_ref().clone()),
        CachePolicy::new(Duration::from_secs(600)).tag("bench"),
    )
}

/// The same handler with no policy attached, for the uncached baselines.
async fn plain(body: web::Data<Bytes>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body.get_ref().clone())
}

fn main() -> std::io::Result<()> {
    actix_web::rt::System::new().block_on(serve())
}

async fn serve() -> std::io::Result<()> {
    let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:8090".to_string());
    let workers = std::env::var("WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let l1 = Cache::memory();
    let json_cache = Cache::memory();
    let gz_cache = Cache::memory();
    let cz_cache = Cache::memory();
    let app_cache = Cache::memory();
    let json_data = web::Data::new(JsonBody(json_body()));
    // L2-only caches: the 1 KiB hit, and the 16 KiB JSON stored plain and compressed (the
    // benchmark compares the two records' sizes in Redis).
    let l2 = match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => {
            let only_l2 = |namespace: &str| -> std::io::Result<Cache> {
                Ok(Cache::builder()
                    .l2(RedisStore::from_url(&url)?)
                    .namespace(namespace)
                    .build())
            };
            Some((
                only_l2("bench")?,
                only_l2("bench-json")?,
                only_l2("bench-gz")?,
            ))
        }
        _ => None,
    };
    let body = web::Data::new(body());
    let stat = body.get_ref().clone();
    let app_server = match std::env::var("APP_LISTEN_ADDR") {
        Ok(app_addr) if !app_addr.is_empty() => {
            let body = body.clone();
            Some(
                HttpServer::new(move || {
                    App::new()
                        .wrap(CacheMiddleware::new(app_cache.clone()))
                        .app_data(body.clone())
                        .route("/l1/{n}", web::get().to(handler))
                })
                .workers(workers)
                .bind(&app_addr)?
                .run(),
            )
        }
        _ => None,
    };
    let main = HttpServer::new(move || {
        let stat = stat.clone();
        let mut app = App::new()
            .app_data(body.clone())
            .route(
                "/static",
                web::get().to(move || {
                    let stat = stat.clone();
                    async move {
                        HttpResponse::Ok()
                            .content_type("application/json")
                            .body(stat)
                    }
                }),
            )
            .route("/plain/{n}", web::get().to(plain))
            .app_data(json_data.clone())
            .service(
                web::scope("/l1")
                    .wrap(CacheMiddleware::new(l1.clone()))
                    .route("/{n}", web::get().to(handler)),
            )
            .service(
                web::scope("/json")
                    .wrap(CacheMiddleware::new(json_cache.clone()))
                    .route("/{n}", web::get().to(json)),
            )
            .service(
                web::scope("/gz")
                    .wrap(CacheMiddleware::new(gz_cache.clone()).compress(Compression::new()))
                    .route("/{n}", web::get().to(json)),
            )
            .service(
                // The last `wrap` is the outermost: `Compress` sees the cache's answers.
                web::scope("/cz")
                    .wrap(CacheMiddleware::new(cz_cache.clone()))
                    .wrap(Compress::default())
                    .route("/{n}", web::get().to(json)),
            );
        if let Some((l2, l2_json, l2_gz)) = &l2 {
            app = app
                .service(
                    web::scope("/l2")
                        .wrap(CacheMiddleware::new(l2.clone()))
                        .route("/{n}", web::get().to(handler)),
                )
                .service(
                    web::scope("/l2json")
                        .wrap(CacheMiddleware::new(l2_json.clone()))
                        .route("/{n}", web::get().to(json)),
                )
                .service(
                    web::scope("/l2gz")
                        .wrap(CacheMiddleware::new(l2_gz.clone()).compress(Compression::new()))
                        .route("/{n}", web::get().to(json)),
                );
        }
        app
    })
    .workers(workers)
    .bind(&addr)?
    .run();
    match app_server {
        Some(app_server) => {
            let (a, b) = futures_util::future::join(main, app_server).await;
            a.and(b)
        }
        None => main.await,
    }
}

//! The server the load benchmark (`examples/benches/load.sh`) drives: the same 1 KiB body
//! served every way the benchmark compares, on one port.
//!
//! - `/static`: prepared static bytes, no middleware (the limit);
//! - `/plain/{n}`: the app handler without any cache (what nginx and Varnish sit in front of,
//!   and the baseline of the miss path);
//! - `/l1/{n}`: the same handler under `CacheMiddleware` with an in-memory cache (`/l1/0` is the
//!   hit case; unique `n` is the miss path);
//! - `/l2/{n}`: the same handler under a cache with no L1, on the Redis at `REDIS_URL` (when set).
//!
//! Environment: `LISTEN_ADDR` (default `127.0.0.1:8090`), `WORKERS` (default 1), `REDIS_URL`.

use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use bytes::Bytes;
use cache_actix::{Cache, CacheMiddleware, CachePolicy, Cached, RedisStore};

/// 1 KiB of JSON-ish text, built once.
fn body() -> Bytes {
    let mut text = String::from("{\"data\":\"");
    while text.len() < 1024 - 2 {
        text.push('x');
    }
    text.push_str("\"}");
    Bytes::from(text)
}

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
    let l2 = match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(
            Cache::builder()
                .l2(RedisStore::from_url(&url)?)
                .namespace("bench")
                .build(),
        ),
        _ => None,
    };
    let body = web::Data::new(body());
    let stat = body.get_ref().clone();
    HttpServer::new(move || {
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
            .service(
                web::scope("/l1")
                    .wrap(CacheMiddleware::new(l1.clone()))
                    .route("/{n}", web::get().to(handler)),
            );
        if let Some(l2) = &l2 {
            app = app.service(
                web::scope("/l2")
                    .wrap(CacheMiddleware::new(l2.clone()))
                    .route("/{n}", web::get().to(handler)),
            );
        }
        app
    })
    .workers(workers)
    .bind(&addr)?
    .run()
    .await
}

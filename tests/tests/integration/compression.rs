//! Compressed hits as a client sees them: a response compressed once when stored, each hit in
//! the coding its `Accept-Encoding` asks for, per-coding `ETag`s, `Vary: Accept-Encoding`, the
//! bodies left alone, actix's `Compress` outside the cache, and a compressed record shared over
//! a real Redis.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix_web::{http::StatusCode, middleware::Compress, test, web, App, HttpResponse};
use cache_actix::{Cache, CacheMiddleware, CachePolicy, Cached, Compression, RedisStore};
use cache_actix_tests::{
    redis::{until_propagated, wait_in_sync, RedisServer, PROPAGATION},
    send, Reply,
};

/// 16 KiB of JSON, different per version so that a stale copy would show.
fn json(version: usize) -> String {
    let mut text = String::from("[");
    let mut i = 0;
    while text.len() < 16 * 1024 {
        text.push_str(&format!(
            "{{\"id\":{i},\"name\":\"product {i}\",\"version\":{version}}},"
        ));
        i += 1;
    }
    text.pop();
    text.push(']');
    text
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("not gzip: {e}"));
    out
}

fn unbrotli(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::Decompressor::new(bytes, 4096)
        .read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("not br: {e}"));
    out
}

/// The body a client gets after undoing the answer's `Content-Encoding`.
fn decoded(reply: &Reply) -> Vec<u8> {
    match reply.header("content-encoding") {
        "" => reply.body.to_vec(),
        "gzip" => gunzip(&reply.body),
        "br" => unbrotli(&reply.body),
        other => panic!("unexpected content-encoding {other}"),
    }
}

#[derive(Default)]
struct Calls(AtomicUsize);

/// A route per kind of body, each counting its runs.
fn routes(cfg: &mut web::ServiceConfig) {
    fn policy() -> CachePolicy {
        CachePolicy::new(Duration::from_secs(60)).tag("compressed")
    }
    cfg.route(
        "/json",
        web::get().to(|calls: web::Data<Calls>| async move {
            let n = calls.0.fetch_add(1, Ordering::SeqCst) + 1;
            Cached::new(
                HttpResponse::Ok()
                    .content_type("application/json")
                    .body(json(n)),
                policy(),
            )
        }),
    )
    .route(
        "/small",
        web::get().to(|| async {
            Cached::new(
                HttpResponse::Ok()
                    .content_type("application/json")
                    .body("{\"small\":true}"),
                policy(),
            )
        }),
    )
    .route(
        "/png",
        web::get().to(|| async {
            Cached::new(
                HttpResponse::Ok().content_type("image/png").body(json(0)),
                policy(),
            )
        }),
    )
    .route(
        "/pre-encoded",
        web::get().to(|| async {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            std::io::Write::write_all(&mut encoder, json(0).as_bytes()).unwrap_or_default();
            let body = encoder.finish().unwrap_or_default();
            Cached::new(
                HttpResponse::Ok()
                    .content_type("application/json")
                    .insert_header(("content-encoding", "gzip"))
                    .body(body),
                policy(),
            )
        }),
    )
    .route(
        "/no-transform",
        web::get().to(|| async {
            Cached::new(
                HttpResponse::Ok()
                    .content_type("application/json")
                    .insert_header(("cache-control", "no-transform"))
                    .body(json(0)),
                policy(),
            )
        }),
    );
}

/// The routes under a memory cache that compresses, with a fresh run counter.
async fn compressed_app() -> impl actix_web::dev::Service<
    actix_http::Request,
    Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
    Error = actix_web::Error,
> {
    test::init_service(
        App::new()
            .app_data(web::Data::new(Calls::default()))
            .service(
                web::scope("")
                    .wrap(CacheMiddleware::new(Cache::memory()).compress(Compression::new()))
                    .configure(routes),
            ),
    )
    .await
}

fn get(path: &str, accept: Option<&str>) -> test::TestRequest {
    let req = test::TestRequest::get().uri(path);
    match accept {
        Some(value) => req.insert_header(("accept-encoding", value)),
        None => req,
    }
}

#[actix_web::test]
async fn every_hit_gets_the_coding_it_accepts_from_one_compressed_store() {
    let cache = Cache::memory();
    let calls = web::Data::new(Calls::default());
    let app = test::init_service(
        App::new().app_data(calls.clone()).service(
            web::scope("")
                .wrap(CacheMiddleware::new(cache.clone()).compress(Compression::new()))
                .configure(routes),
        ),
    )
    .await;
    let v1 = json(1);
    let miss = send(&app, get("/json", Some("gzip, deflate, br"))).await;
    assert_eq!((miss.status, miss.x_cache()), (StatusCode::OK, "MISS"));
    assert_eq!(miss.header("content-encoding"), "br");
    assert_eq!(decoded(&miss), v1.as_bytes());
    assert!(
        miss.body.len() * 4 < v1.len(),
        "br copy of {} bytes",
        miss.body.len()
    );
    let mut etags = vec![miss.header("etag").to_string()];
    for (accept, coding) in [
        (Some("gzip"), "gzip"),
        (Some("br;q=0.5, gzip;q=0.8"), "gzip"),
        (Some("br"), "br"),
        (Some("*"), "br"),
        (None, ""),
        (Some("identity"), ""),
        (Some("br;q=0, gzip;q=0"), ""),
        (Some("zstd, deflate"), ""),
    ] {
        let hit = send(&app, get("/json", accept)).await;
        assert_eq!(hit.x_cache(), "HIT", "accept-encoding {accept:?}");
        assert_eq!(
            hit.header("content-encoding"),
            coding,
            "accept-encoding {accept:?}"
        );
        assert_eq!(decoded(&hit), v1.as_bytes(), "accept-encoding {accept:?}");
        assert_eq!(hit.header("vary").to_ascii_lowercase(), "accept-encoding");
        if !etags.contains(&hit.header("etag").to_string()) {
            etags.push(hit.header("etag").to_string());
        }
    }
    assert_eq!(etags.len(), 3, "one etag per coding: {etags:?}");
    assert_eq!(
        calls.0.load(Ordering::SeqCst),
        1,
        "compressed once, served from one store"
    );
    // HEAD gets the coding's head (actix's dispatcher drops the body).
    let head = send(
        &app,
        test::TestRequest::default()
            .method(actix_web::http::Method::HEAD)
            .uri("/json")
            .insert_header(("accept-encoding", "gzip")),
    )
    .await;
    assert_eq!(
        (head.x_cache(), head.header("content-encoding")),
        ("HIT", "gzip")
    );
    // After an invalidation, every coding carries the new version.
    cache
        .invalidate_tag("compressed")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for accept in [Some("br"), Some("gzip"), None] {
        let reply = send(&app, get("/json", accept)).await;
        assert_eq!(
            decoded(&reply),
            json(2).as_bytes(),
            "accept-encoding {accept:?}"
        );
    }
    assert_eq!(calls.0.load(Ordering::SeqCst), 2);
}

#[actix_web::test]
async fn a_validator_confirms_only_the_coding_it_names() {
    let app = compressed_app().await;
    let br = send(&app, get("/json", Some("br"))).await;
    let identity = send(&app, get("/json", None)).await;
    let conditional = |etag: &str, accept: Option<&str>| {
        get("/json", accept).insert_header(("if-none-match", etag.to_string()))
    };
    let same = send(&app, conditional(br.header("etag"), Some("br"))).await;
    assert_eq!(same.status, StatusCode::NOT_MODIFIED);
    assert_eq!(same.header("etag"), br.header("etag"));
    // The br tag does not confirm a client that would get gzip, and the identity tag does not
    // confirm a client that would get br: each gets the full body of its own coding.
    let gzip = send(&app, conditional(br.header("etag"), Some("gzip"))).await;
    assert_eq!(
        (gzip.status, gzip.header("content-encoding")),
        (StatusCode::OK, "gzip")
    );
    assert_eq!(decoded(&gzip), json(1).as_bytes());
    let other = send(&app, conditional(identity.header("etag"), Some("br"))).await;
    assert_eq!(
        (other.status, other.header("content-encoding")),
        (StatusCode::OK, "br")
    );
    // A range is a range of the coding's bytes.
    let part = send(
        &app,
        get("/json", Some("br")).insert_header(("range", "bytes=0-9")),
    )
    .await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.body, br.body.slice(0..10));
    assert_eq!(
        part.header("content-range"),
        format!("bytes 0-9/{}", br.body.len())
    );
}

#[actix_web::test]
async fn bodies_that_should_not_be_compressed_are_served_as_the_handler_made_them() {
    let app = compressed_app().await;
    for path in ["/small", "/png", "/no-transform"] {
        let first = send(&app, get(path, Some("br, gzip"))).await;
        let hit = send(&app, get(path, Some("br, gzip"))).await;
        assert_eq!(hit.x_cache(), "HIT", "{path}");
        assert_eq!(hit.header("content-encoding"), "", "{path} was compressed");
        assert_eq!(hit.body, first.body, "{path}");
        assert!(
            !hit.header("vary")
                .to_ascii_lowercase()
                .contains("accept-encoding"),
            "{path}"
        );
    }
    // The handler's own gzip stays its own: one layer, the same bytes for every client.
    let first = send(&app, get("/pre-encoded", Some("br"))).await;
    let plain = send(&app, get("/pre-encoded", None)).await;
    assert_eq!(plain.x_cache(), "HIT");
    assert_eq!(plain.header("content-encoding"), "gzip");
    assert_eq!(plain.body, first.body);
    assert_eq!(gunzip(&plain.body), json(0).as_bytes());
}

#[actix_web::test]
async fn the_l1_budget_counts_the_compressed_copies() {
    let on = Cache::memory();
    let off = Cache::memory();
    for (cache, compression) in [(&on, Some(Compression::new())), (&off, None)] {
        let mw = CacheMiddleware::new(cache.clone());
        let mw = match compression {
            Some(c) => mw.compress(c),
            None => mw,
        };
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(Calls::default()))
                .service(web::scope("").wrap(mw).configure(routes)),
        )
        .await;
        let _ = send(&app, get("/json", None)).await;
        assert_eq!(send(&app, get("/json", None)).await.x_cache(), "HIT");
    }
    let app = compressed_app().await;
    let br = send(&app, get("/json", Some("br"))).await.body.len() as u64;
    let gzip = send(&app, get("/json", Some("gzip"))).await.body.len() as u64;
    let (with, without) = (on.stats().bytes, off.stats().bytes);
    assert!(
        with >= without + br + gzip,
        "budget {with} with copies, {without} without; the copies are {br} + {gzip} bytes"
    );
}

#[actix_web::test]
async fn actix_compress_outside_the_cache_never_encodes_a_compressed_hit_twice() {
    let app = test::init_service(
        App::new()
            .wrap(Compress::default())
            .app_data(web::Data::new(Calls::default()))
            .service(
                web::scope("")
                    .wrap(CacheMiddleware::new(Cache::memory()).compress(Compression::new()))
                    .configure(routes),
            ),
    )
    .await;
    for accept in ["br", "gzip", "br", "gzip"] {
        let reply = send(&app, get("/json", Some(accept))).await;
        assert_eq!(reply.header("content-encoding"), accept);
        assert_eq!(decoded(&reply), json(1).as_bytes(), "one layer of {accept}");
    }
}

/// Through a real Redis: node A stores the compressed record, node B (no L1) answers every
/// coding from it, the identity body rebuilt from a copy, and Redis holds fewer bytes than the
/// body itself.
#[actix_web::test]
async fn a_compressed_record_in_redis_is_smaller_than_the_body_and_serves_every_coding() {
    let redis = RedisServer::start();
    let node = |l1: bool| {
        let store = RedisStore::from_url(&redis.url()).unwrap_or_else(|e| panic!("{e}"));
        let builder = Cache::builder().l2(store).namespace("gz");
        if l1 {
            builder.l1(cache_actix::MemoryStore::new()).build()
        } else {
            builder.build()
        }
    };
    let (a, b) = (node(true), node(false));
    wait_in_sync(&a).await;
    wait_in_sync(&b).await;
    let calls = web::Data::new(Calls::default());
    let app = |cache: Cache| {
        App::new().app_data(calls.clone()).service(
            web::scope("")
                .wrap(CacheMiddleware::new(cache).compress(Compression::new()))
                .configure(routes),
        )
    };
    let app_a = test::init_service(app(a.clone())).await;
    let app_b = test::init_service(app(b.clone())).await;
    let miss = send(&app_a, get("/json", Some("br"))).await;
    assert_eq!(miss.x_cache(), "MISS");
    for accept in [None, Some("gzip"), Some("br")] {
        let hit = send(&app_b, get("/json", accept)).await;
        assert_eq!(hit.x_cache(), "HIT", "node B, accept-encoding {accept:?}");
        assert_eq!(
            decoded(&hit),
            json(1).as_bytes(),
            "node B, accept-encoding {accept:?}"
        );
    }
    assert_eq!(calls.0.load(Ordering::SeqCst), 1);
    let records: Vec<String> = redis.keys("ca:*gz:r:*");
    let sizes: Vec<u64> = records
        .iter()
        .filter_map(|k| {
            // An integer reply: `:<n>\r\n`.
            let reply = redis.command(&["MEMORY", "USAGE", k])?;
            reply.trim().strip_prefix(':')?.parse().ok()
        })
        .collect();
    let largest = sizes.iter().copied().max().unwrap_or(0);
    assert!(largest > 0, "no record found among {records:?}");
    assert!(
        (largest as usize) < json(1).len() / 2,
        "the largest record takes {largest} bytes for a {} byte body",
        json(1).len()
    );
    // A write on either node reaches both, in every coding: on node B within the pub/sub
    // propagation delay (the invalidation contract across nodes; B's reads use its mirror of
    // the clocks), after which B refills once and then hits the new version.
    a.invalidate_tag("compressed")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let fresh = until_propagated(
        Instant::now() + PROPAGATION,
        || send(&app_b, get("/json", Some("gzip"))),
        |reply| decoded(reply) != json(1).as_bytes(),
    )
    .await;
    assert_eq!(
        fresh.x_cache(),
        "MISS",
        "node B's first answer after the write"
    );
    assert_eq!(decoded(&fresh), json(2).as_bytes());
    for accept in [None, Some("gzip"), Some("br")] {
        let hit = send(&app_b, get("/json", accept)).await;
        assert_eq!(hit.x_cache(), "HIT", "node B after the write, {accept:?}");
        assert_eq!(decoded(&hit), json(2).as_bytes(), "node B after the write");
    }
    assert_eq!(calls.0.load(Ordering::SeqCst), 2);
}

//! The example product API on a real server, driven over HTTP like the README's curl
//! walk-through: MISS, HIT, update, MISS with new data; users kept apart; the admin scope.

use std::time::Duration;

use actix_web::{web, App, HttpServer};
use cache_actix::Cache;
use cache_actix_examples::products::{configure, Db};
use cache_actix_tests::{call, listener, Server};

fn start(token: Option<&str>) -> (Server, web::Data<Db>, Cache) {
    start_with(token, Duration::from_millis(50))
}

/// As [`start`], with each database query taking `latency`.
fn start_with(token: Option<&str>, latency: Duration) -> (Server, web::Data<Db>, Cache) {
    let cache = Cache::memory();
    let db = web::Data::new(Db::seeded(latency));
    let (l, base) = listener();
    let (c, d, t) = (cache.clone(), db.clone(), token.map(str::to_string));
    let server = HttpServer::new(move || {
        let (c, d, t) = (c.clone(), d.clone(), t.clone());
        App::new().configure(move |cfg| configure(cfg, c, d, t))
    })
    .workers(1)
    .disable_signals()
    .listen(l)
    .unwrap_or_else(|e| panic!("listen: {e}"))
    .run();
    (Server::spawn(server, base), db, cache)
}

#[actix_web::test]
async fn miss_hit_update_miss() {
    let (server, db, _) = start(None);
    let client = awc::Client::default();
    let first = call(client.get(server.url("/api/products/1")), None).await;
    assert_eq!((first.status, first.x_cache.as_str()), (200, "MISS"));
    assert_eq!(first.body["name"], "Teapot");
    let second = call(client.get(server.url("/api/products/1")), None).await;
    assert_eq!(
        (second.x_cache.as_str(), &second.body),
        ("HIT", &first.body)
    );
    let list = call(client.get(server.url("/api/products")), None).await;
    assert_eq!(list.body.as_array().map(Vec::len), Some(3));
    assert_eq!(
        call(client.get(server.url("/api/products")), None)
            .await
            .x_cache,
        "HIT"
    );
    assert_eq!(db.reads(), 2);

    let update = serde_json::json!({ "name": "Teapot XL", "price_cents": 2600 });
    let put = call(client.put(server.url("/api/products/1")), Some(update)).await;
    assert_eq!(put.status, 200);
    let after = call(client.get(server.url("/api/products/1")), None).await;
    assert_eq!(
        (after.x_cache.as_str(), &after.body["name"]),
        ("MISS", &serde_json::json!("Teapot XL"))
    );
    let list = call(client.get(server.url("/api/products")), None).await;
    assert_eq!(
        list.x_cache, "MISS",
        "the list is tagged `products` and must drop too"
    );
    assert_eq!(list.body[0]["name"], "Teapot XL");

    let created = call(
        client.post(server.url("/api/products")),
        Some(serde_json::json!({ "name": "Cup", "price_cents": 500 })),
    )
    .await;
    assert_eq!(created.status, 201);
    assert_eq!(
        call(client.get(server.url("/api/products")), None)
            .await
            .body
            .as_array()
            .map(Vec::len),
        Some(4)
    );
    assert_eq!(
        call(client.delete(server.url("/api/products/4")), None)
            .await
            .status,
        204
    );
    let gone = call(client.get(server.url("/api/products/4")), None).await;
    assert_eq!((gone.status, gone.x_cache.as_str()), (404, "BYPASS"));
}

#[actix_web::test]
async fn a_write_soft_purges_the_catalog_figures_and_hard_purges_the_pages() {
    // Queries slow enough that an answer which waited for one cannot pass for one that did not.
    let query = Duration::from_millis(400);
    let (server, db, _) = start_with(None, query);
    let client = awc::Client::default();
    let stats = call(client.get(server.url("/api/stats")), None).await;
    assert_eq!(
        (stats.x_cache.as_str(), &stats.body["products"]),
        ("MISS", &serde_json::json!(3))
    );
    call(client.get(server.url("/api/products")), None).await;
    let created = call(
        client.post(server.url("/api/products")),
        Some(serde_json::json!({ "name": "Cup", "price_cents": 500 })),
    )
    .await;
    assert_eq!(created.status, 201);
    // The list is purged hard: the new product at once.
    let list = call(client.get(server.url("/api/products")), None).await;
    assert_eq!(
        (list.x_cache.as_str(), list.body.as_array().map(Vec::len)),
        ("MISS", Some(4))
    );
    // The figures are purged soft: the old ones at once, without waiting for the slow query...
    let reads = db.reads();
    let started = std::time::Instant::now();
    let stale = call(client.get(server.url("/api/stats")), None).await;
    assert!(
        started.elapsed() < query / 2,
        "the stale figures took {:?}",
        started.elapsed()
    );
    assert_eq!(
        (stale.x_cache.as_str(), &stale.body["products"]),
        ("STALE", &serde_json::json!(3))
    );
    // ...and the new ones once the background refresh ran (one slow read).
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let fresh = loop {
        let reply = call(client.get(server.url("/api/stats")), None).await;
        if reply.x_cache == "HIT" || std::time::Instant::now() > deadline {
            break reply;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (fresh.x_cache.as_str(), &fresh.body["products"]),
        ("HIT", &serde_json::json!(4))
    );
    assert_eq!(db.reads(), reads + 1);
}

#[actix_web::test]
async fn me_is_cached_per_user() {
    let (server, _, _) = start(None);
    let client = awc::Client::default();
    let as_user = |who: &str| {
        client
            .get(server.url("/api/me"))
            .insert_header(("authorization", format!("Bearer {who}")))
    };
    assert_eq!(call(as_user("alice"), None).await.body["user"], "alice");
    assert_eq!(call(as_user("bob"), None).await.body["user"], "bob");
    let again = call(as_user("alice"), None).await;
    assert_eq!(
        (again.x_cache.as_str(), &again.body["user"]),
        ("HIT", &serde_json::json!("alice"))
    );
    assert_eq!(
        call(client.get(server.url("/api/me")), None).await.body["user"],
        "anonymous"
    );
}

#[actix_web::test]
async fn admin_scope_needs_the_token_and_purges() {
    let (server, _, cache) = start(Some("s3cret"));
    let client = awc::Client::default();
    call(client.get(server.url("/api/products/2")), None).await;
    assert_eq!(
        call(client.get(server.url("/admin/stats")), None)
            .await
            .status,
        401
    );
    assert_eq!(
        call(
            client.get(server.url("/admin/stats")).bearer_auth("wrong"),
            None
        )
        .await
        .status,
        401
    );
    assert_eq!(
        call(
            client
                .post(server.url("/admin/purge/all"))
                .bearer_auth("s3cre"),
            None
        )
        .await
        .status,
        401
    );
    assert_eq!(
        call(client.get(server.url("/api/products/2")), None)
            .await
            .x_cache,
        "HIT",
        "a refused purge must do nothing"
    );
    let stats = call(
        client.get(server.url("/admin/stats")).bearer_auth("s3cret"),
        None,
    )
    .await;
    assert_eq!(
        (stats.status, &stats.body["hits"]),
        (200, &serde_json::json!(1))
    );
    let purge = call(
        client
            .post(server.url("/admin/purge/tag/product:2"))
            .bearer_auth("s3cret"),
        None,
    )
    .await;
    assert_eq!(purge.body["ok"], true);
    assert_eq!(
        call(client.get(server.url("/api/products/2")), None)
            .await
            .x_cache,
        "MISS"
    );
    call(
        client
            .post(server.url("/admin/purge/all"))
            .bearer_auth("s3cret"),
        None,
    )
    .await;
    assert_eq!(
        call(client.get(server.url("/api/products/2")), None)
            .await
            .x_cache,
        "MISS"
    );
    assert_eq!(cache.stats().invalidations, 2);

    let (open, _, _) = start(None);
    assert_eq!(
        call(client.get(open.url("/admin/stats")), None)
            .await
            .status,
        404,
        "admin is off without a token"
    );
}

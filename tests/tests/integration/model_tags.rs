//! Model tags, downstream tag headers and invalidation hooks, as a client (and a CDN) sees them:
//! pages stored with `Cached::tags_of(&product)` are dropped by `cache.invalidate(&product)` and
//! by nothing else; with `downstream_tags` every answer from a stored entry lists its tags (never
//! the cache's per-URL tag) in the CDN's spelling; `on_invalidate` hooks see each invalidated tag
//! once per call, raw, even when a hook panics or the shared tier is unreachable.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{
    body::MessageBody, dev::ServiceResponse, http::StatusCode, test, web, App, HttpResponse,
};
use cache_actix::{
    cached, Cache, CacheMiddleware, CachePolicy, CacheTags, Cached, MemoryStore, RedisStore,
    TagHeader,
};
use cache_actix_tests::redis::{wait_in_sync, RedisServer};
use cache_actix_tests::{free_port, send, Reply};

#[derive(CacheTags, Clone)]
#[cache_tags(prefix = "product")]
struct Product {
    #[cache_tag]
    id: u32,
    #[cache_tag(prefix = "category")]
    category_id: u32,
    #[cache_tag(prefix = "brand")]
    brand: Option<String>,
}

/// The catalogue the handlers read: product 1 and 2 in category 7, 3 in category 8; product 2's
/// brand has a space in it.
fn catalogue(id: u32) -> Product {
    Product {
        id,
        category_id: if id == 3 { 8 } else { 7 },
        brand: (id == 2).then(|| "Acme Corp".to_string()),
    }
}

/// How many times each handler ran, so that every body says which run made it.
#[derive(Default)]
struct Runs(AtomicUsize);

impl Runs {
    fn next(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
}

async fn show_product(id: web::Path<u32>, runs: web::Data<Runs>) -> Cached<HttpResponse> {
    let product = catalogue(*id);
    let body = format!("product {} v{}", product.id, runs.next());
    let policy = CachePolicy::new(Duration::from_secs(60));
    Cached::new(HttpResponse::Ok().body(body), policy).tags_of(&product)
}

/// A category page: stored under the tags of every product it lists.
async fn show_category(id: web::Path<u32>, runs: web::Data<Runs>) -> Cached<HttpResponse> {
    let listed: Vec<Product> = (1..=3)
        .map(catalogue)
        .filter(|p| p.category_id == *id)
        .collect();
    let body = format!("category {id} ({} products) v{}", listed.len(), runs.next());
    let policy = CachePolicy::new(Duration::from_secs(60));
    Cached::new(HttpResponse::Ok().body(body), policy).tags_of(&listed)
}

/// The same tag written the `#[cached]` way: the derive must spell it identically.
#[cached(ttl = 60, tags = ["product:{id}"])]
async fn product_reviews(id: web::Path<u32>, runs: web::Data<Runs>) -> HttpResponse {
    HttpResponse::Ok().body(format!("reviews of {id} v{}", runs.next()))
}

/// Fresh for a second (the shortest ttl), then served stale for a minute while one refresh runs.
async fn short_lived(runs: web::Data<Runs>) -> Cached<HttpResponse> {
    let policy =
        CachePolicy::new(Duration::from_secs(1)).stale_while_revalidate(Duration::from_secs(60));
    Cached::new(
        HttpResponse::Ok().body(format!("short v{}", runs.next())),
        policy,
    )
    .tags_of(&catalogue(3))
}

/// Tags from the `cache-tag` response header, one with a space.
async fn header_tagged(runs: web::Data<Runs>) -> Cached<HttpResponse> {
    let response = HttpResponse::Ok()
        .insert_header(("cache-tag", "team:7, summer sale"))
        .body(format!("tagged v{}", runs.next()));
    Cached::new(response, CachePolicy::new(Duration::from_secs(60)))
}

/// A tagged response that is never stored (it sets a cookie).
async fn never_stored(runs: web::Data<Runs>) -> Cached<HttpResponse> {
    let response = HttpResponse::Ok()
        .insert_header(("set-cookie", "sid=1"))
        .body(format!("cookie v{}", runs.next()));
    Cached::new(response, CachePolicy::new(Duration::from_secs(60))).tags_of(&catalogue(1))
}

/// The admin's rename, outside the cached scope (so no URL purge of the page can help): it
/// invalidates the product it changed.
async fn rename(id: web::Path<u32>, cache: web::Data<Cache>) -> actix_web::Result<HttpResponse> {
    cache.invalidate(&catalogue(*id)).await?;
    Ok(HttpResponse::Ok().body("renamed"))
}

fn shop(
    cache: Cache,
    downstream: Option<TagHeader>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    shop_with(cache, downstream, web::Data::new(Runs::default()))
}

/// The shop, counting its handlers' runs in `runs` (shared by several nodes' apps, so that no
/// two runs anywhere make the same body).
fn shop_with(
    cache: Cache,
    downstream: Option<TagHeader>,
    runs: web::Data<Runs>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let mut middleware = CacheMiddleware::new(cache.clone());
    if let Some(header) = downstream {
        middleware = middleware.downstream_tags(header);
    }
    App::new()
        .app_data(web::Data::new(cache))
        .app_data(runs)
        .route("/admin/products/{id}/rename", web::post().to(rename))
        .service(
            web::scope("/shop")
                .wrap(middleware)
                .route("/products/{id}", web::get().to(show_product))
                .route("/products/{id}", web::post().to(HttpResponse::Ok))
                .route("/products/{id}/reviews", web::get().to(product_reviews))
                .route("/categories/{id}", web::get().to(show_category))
                .route("/short", web::get().to(short_lived))
                .route("/header-tagged", web::get().to(header_tagged))
                .route("/never-stored", web::get().to(never_stored))
                .route(
                    "/plain",
                    web::get().to(|| async { HttpResponse::Ok().body("plain") }),
                ),
        )
}

fn get(path: &str) -> test::TestRequest {
    test::TestRequest::get().uri(path)
}

/// The tags a header lists, split on its separator.
fn listed(reply: &Reply, header: TagHeader) -> Vec<String> {
    let value = reply.header(header.name().as_str());
    if value.is_empty() {
        return Vec::new();
    }
    value
        .split(header.separator())
        .map(str::to_string)
        .collect()
}

#[actix_web::test]
async fn invalidating_a_value_drops_the_pages_stored_with_its_tags_and_no_other() {
    let cache = Cache::memory();
    let app = test::init_service(shop(cache.clone(), None)).await;
    let pages = [
        "/shop/products/1",
        "/shop/products/2",
        "/shop/products/3",
        "/shop/products/1/reviews",
        "/shop/categories/7",
        "/shop/categories/8",
    ];
    let mut first = Vec::new();
    for page in pages {
        let miss = send(&app, get(page)).await;
        assert_eq!(
            (miss.status, miss.x_cache()),
            (StatusCode::OK, "MISS"),
            "{page}"
        );
        let hit = send(&app, get(page)).await;
        assert_eq!(
            hit.summary(),
            (StatusCode::OK, "HIT".into(), miss.text()),
            "{page}"
        );
        first.push(miss.text());
    }

    // Product 1 changes: `product:1` and `category:7` go. So do its page, its
    // `#[cached(tags = ["product:{id}"])]` reviews (the derive spells the tag the same way), the
    // category that lists it, and product 2, which is in that category; product 3 and
    // category 8 stay.
    let renamed = send(
        &app,
        test::TestRequest::post().uri("/admin/products/1/rename"),
    )
    .await;
    assert_eq!(renamed.status, StatusCode::OK);
    for (page, before) in pages.iter().zip(&first) {
        let after = send(&app, get(page)).await;
        assert_eq!(after.status, StatusCode::OK, "{page}");
        if matches!(*page, "/shop/products/3" | "/shop/categories/8") {
            assert_eq!(
                (after.x_cache(), after.text()),
                ("HIT", before.clone()),
                "{page}"
            );
        } else {
            assert_eq!(after.x_cache(), "MISS", "{page}");
            assert_ne!(&after.text(), before, "{page} still has the old body");
        }
    }

    // A value built elsewhere: product 3's page and category 8 go, product 2 (stored again
    // above) stays.
    cache.invalidate(&catalogue(3)).await.unwrap();
    assert_eq!(
        send(&app, get("/shop/categories/8")).await.x_cache(),
        "MISS"
    );
    assert_eq!(send(&app, get("/shop/products/3")).await.x_cache(), "MISS");
    assert_eq!(send(&app, get("/shop/products/2")).await.x_cache(), "HIT");
    // A value whose optional field is `None` has no tag for it: nothing else is dropped.
    assert_eq!(catalogue(1).cache_tags(), ["product:1", "category:7"]);
    assert_eq!(
        catalogue(2).cache_tags(),
        ["product:2", "category:7", "brand:Acme Corp"]
    );
}

#[actix_web::test]
async fn surrogate_key_lists_the_entry_tags_on_every_answer_from_storage_and_never_the_url_tag() {
    let app = test::init_service(shop(Cache::memory(), Some(TagHeader::SurrogateKey))).await;
    let key = TagHeader::SurrogateKey;

    let miss = send(&app, get("/shop/products/1")).await;
    assert_eq!(miss.x_cache(), "MISS");
    assert_eq!(listed(&miss, key), ["product:1", "category:7"]);
    let hit = send(&app, get("/shop/products/1")).await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(hit.header("surrogate-key"), "product:1 category:7");
    let head = send(
        &app,
        test::TestRequest::default()
            .method(actix_web::http::Method::HEAD)
            .uri("/shop/products/1"),
    )
    .await;
    assert_eq!(head.header("surrogate-key"), "product:1 category:7");
    let not_modified = send(
        &app,
        get("/shop/products/1").insert_header(("if-none-match", hit.header("etag"))),
    )
    .await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert_eq!(not_modified.header("surrogate-key"), "product:1 category:7");
    for reply in [&miss, &hit, &head, &not_modified] {
        let all = reply.header("surrogate-key");
        assert!(
            !all.contains("url") && !all.contains('\0') && !all.contains("%00"),
            "{all}"
        );
        // Our header alone: the handler's internal `cache-tag` never leaves.
        assert!(reply.headers.get("cache-tag").is_none());
    }

    // A category page lists every product's tags, each once.
    let category = send(&app, get("/shop/categories/7")).await;
    assert_eq!(
        listed(&category, key),
        ["product:1", "category:7", "product:2", "brand:Acme%20Corp"]
    );
    assert_eq!(
        send(&app, get("/shop/categories/7"))
            .await
            .header("surrogate-key"),
        category.header("surrogate-key")
    );

    // Tags from the `cache-tag` response header, one with a space, in the CDN's spelling.
    let tagged = send(&app, get("/shop/header-tagged")).await;
    assert_eq!(listed(&tagged, key), ["team:7", "summer%20sale"]);
    assert_eq!(
        send(&app, get("/shop/header-tagged")).await.x_cache(),
        "HIT"
    );

    // STALE: past its second, inside its stale window.
    let short = send(&app, get("/shop/short")).await;
    assert_eq!(listed(&short, key), ["product:3", "category:8"]);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let stale = send(&app, get("/shop/short")).await;
    assert_eq!((stale.x_cache(), stale.text()), ("STALE", short.text()));
    assert_eq!(listed(&stale, key), ["product:3", "category:8"]);

    // Not from storage: no tags downstream.
    let bypass = send(&app, get("/shop/never-stored")).await;
    assert_eq!(bypass.x_cache(), "BYPASS");
    assert!(bypass.headers.get("surrogate-key").is_none());
    let plain = send(&app, get("/shop/plain")).await;
    assert!(plain.headers.get("surrogate-key").is_none());
}

#[actix_web::test]
async fn cache_tag_downstream_is_comma_separated_and_off_by_default() {
    let app = test::init_service(shop(Cache::memory(), Some(TagHeader::CacheTag))).await;
    for expected in ["MISS", "HIT"] {
        let reply = send(&app, get("/shop/products/2")).await;
        assert_eq!(reply.x_cache(), expected);
        assert_eq!(
            reply.header("cache-tag"),
            "product:2,category:7,brand:Acme%20Corp"
        );
        assert!(reply.headers.get("surrogate-key").is_none());
    }
    // The handler's own `cache-tag` header is read for tags and replaced by ours.
    let tagged = send(&app, get("/shop/header-tagged")).await;
    assert_eq!(tagged.header("cache-tag"), "team:7,summer%20sale");

    let off = test::init_service(shop(Cache::memory(), None)).await;
    for _ in 0..2 {
        let reply = send(&off, get("/shop/products/2")).await;
        assert!(reply.headers.get("cache-tag").is_none());
        assert!(reply.headers.get("surrogate-key").is_none());
    }
}

#[actix_web::test]
async fn on_invalidate_sees_each_tag_once_per_call_raw_and_in_the_spelling_sent_downstream() {
    let cache = Cache::memory();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let second = Arc::new(Mutex::new(Vec::<String>::new()));
    let hook_seen = seen.clone();
    cache.on_invalidate(move |tag| hook_seen.lock().unwrap().push(tag.to_string()));
    let hook_second = second.clone();
    cache.on_invalidate(move |tag| hook_second.lock().unwrap().push(tag.to_string()));
    let app = test::init_service(shop(cache.clone(), Some(TagHeader::SurrogateKey))).await;
    let take = |log: &Arc<Mutex<Vec<String>>>| std::mem::take(&mut *log.lock().unwrap());

    let page = send(&app, get("/shop/products/2")).await;
    let sent = page.header("surrogate-key").to_string();
    let renamed = send(
        &app,
        test::TestRequest::post().uri("/admin/products/2/rename"),
    )
    .await;
    assert_eq!(renamed.status, StatusCode::OK);
    let raw = take(&seen);
    assert_eq!(raw, ["product:2", "category:7", "brand:Acme Corp"]);
    assert_eq!(take(&second), raw, "every hook sees every tag");
    // Forwarding `TagHeader::encode(tag)` names exactly what the CDN was sent.
    let forwarded: Vec<String> = raw
        .iter()
        .map(|t| TagHeader::encode(t).into_owned())
        .collect();
    assert_eq!(forwarded.join(" "), sent);
    assert_eq!(send(&app, get("/shop/products/2")).await.x_cache(), "MISS");

    cache.invalidate_tags(["a", "b", "a", "b"]).await.unwrap();
    assert_eq!(take(&seen), ["a", "b"]);
    cache.invalidate_tag("a").await.unwrap();
    assert_eq!(take(&seen), ["a"], "once per call, again on the next call");
    // A list of values repeating a category: the category once.
    cache
        .invalidate(&vec![catalogue(1), catalogue(2)])
        .await
        .unwrap();
    assert_eq!(
        take(&seen),
        ["product:1", "category:7", "product:2", "brand:Acme Corp"]
    );
    // URL purges (a POST to a cached URL) and purge_all invalidate no tag.
    let purged = send(&app, test::TestRequest::post().uri("/shop/products/1")).await;
    assert_eq!(purged.status, StatusCode::OK);
    cache.purge_all().await.unwrap();
    cache.invalidate_tags(Vec::<String>::new()).await.unwrap();
    assert!(take(&seen).is_empty());
    take(&second);
}

#[actix_web::test]
async fn a_hook_that_panics_poisons_nothing_and_the_other_hooks_still_run() {
    let cache = Cache::memory();
    cache.on_invalidate(|tag| panic!("the CDN client broke on {tag}"));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let hook_seen = seen.clone();
    cache.on_invalidate(move |tag| hook_seen.lock().unwrap().push(tag.to_string()));
    let app = test::init_service(shop(cache.clone(), None)).await;

    for round in 1..=2 {
        let miss = send(&app, get("/shop/products/1")).await;
        assert_eq!(miss.x_cache(), "MISS", "round {round}");
        assert_eq!(send(&app, get("/shop/products/1")).await.x_cache(), "HIT");
        let control = send(&app, get("/shop/products/3")).await;
        // The invalidation still happened and returned Ok.
        let renamed = send(
            &app,
            test::TestRequest::post().uri("/admin/products/1/rename"),
        )
        .await;
        assert_eq!(renamed.status, StatusCode::OK, "round {round}");
        let after = send(&app, get("/shop/products/1")).await;
        assert_eq!(after.x_cache(), "MISS", "round {round}");
        assert_ne!(after.text(), miss.text());
        assert_eq!(
            send(&app, get("/shop/products/3")).await.text(),
            control.text()
        );
        send(&app, get("/shop/products/1")).await;
        cache.invalidate(&catalogue(1)).await.unwrap();
    }
    // Registering after the panics works: no lock was left poisoned.
    let late = Arc::new(AtomicUsize::new(0));
    let hook_late = late.clone();
    cache.on_invalidate(move |_| {
        hook_late.fetch_add(1, Ordering::SeqCst);
    });
    cache.invalidate_tag("x").await.unwrap();
    assert_eq!(late.load(Ordering::SeqCst), 1);
    assert_eq!(seen.lock().unwrap().last().map(String::as_str), Some("x"));
}

#[actix_web::test]
async fn hooks_see_the_tags_when_the_shared_tier_cannot_be_reached() {
    // Nothing listens on this loopback port: every Redis call fails.
    let store = RedisStore::from_url(&format!("redis://127.0.0.1:{}", free_port()))
        .unwrap()
        .timeout(Duration::from_millis(50));
    let cache = Cache::builder().l2(store).namespace("down").build();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let hook_seen = seen.clone();
    cache.on_invalidate(move |tag| hook_seen.lock().unwrap().push(tag.to_string()));
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), cache.invalidate(&catalogue(3)))
        .await
        .expect("the invalidation returns in time");
    assert!(result.is_err(), "never a silent success");
    assert_eq!(*seen.lock().unwrap(), ["product:3", "category:8"]);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[actix_web::test]
async fn an_entry_another_node_stored_carries_its_tags_downstream_and_one_invalidation_drops_it_on_both(
) {
    let redis = RedisServer::start();
    let node = || {
        let store = RedisStore::from_url(&redis.url()).unwrap();
        Cache::builder()
            .l2(store)
            .l1(MemoryStore::new())
            .namespace("model-tags")
            .build()
    };
    let (a, b) = (node(), node());
    wait_in_sync(&a).await;
    wait_in_sync(&b).await;
    let seen_on_b = Arc::new(Mutex::new(Vec::<String>::new()));
    let hook = seen_on_b.clone();
    b.on_invalidate(move |tag| hook.lock().unwrap().push(tag.to_string()));
    let runs = web::Data::new(Runs::default());
    let key = Some(TagHeader::SurrogateKey);
    let app_a = test::init_service(shop_with(a.clone(), key, runs.clone())).await;
    let app_b = test::init_service(shop_with(b.clone(), key, runs)).await;

    let stored = send(&app_a, get("/shop/products/2")).await;
    assert_eq!(stored.x_cache(), "MISS");
    let control = send(&app_a, get("/shop/products/3")).await;
    // Node B's first answer comes from Redis, its second from its own L1: both with the tags.
    for expected in ["HIT", "HIT"] {
        let hit = send(&app_b, get("/shop/products/2")).await;
        assert_eq!((hit.x_cache(), hit.text()), (expected, stored.text()));
        assert_eq!(
            hit.header("surrogate-key"),
            "product:2 category:7 brand:Acme%20Corp"
        );
    }
    assert_eq!(
        send(&app_b, get("/shop/products/3")).await.text(),
        control.text()
    );

    a.invalidate(&catalogue(2)).await.unwrap();
    // B made no invalidation: its hook hears nothing, so only A would forward it to the CDN.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let after = send(&app_b, get("/shop/products/2")).await;
        if after.x_cache() == "MISS" {
            assert_ne!(after.text(), stored.text());
            break;
        }
        assert_eq!(after.text(), stored.text());
        assert!(
            std::time::Instant::now() < deadline,
            "B never heard of the invalidation"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(send(&app_b, get("/shop/products/3")).await.x_cache(), "HIT");
    assert!(seen_on_b.lock().unwrap().is_empty());
}

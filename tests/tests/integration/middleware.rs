//! The request flow of `CacheMiddleware` as a client sees it, on real actix-web services.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{
    body::MessageBody, dev::ServiceResponse, get, http::StatusCode, post, test, web, App,
    HttpRequest, HttpResponse, Responder,
};
use cache_actix::{cached, Cache, CacheMiddleware, CachePolicy, Cached};
use cache_actix_tests::send;

#[derive(Default)]
struct Calls(AtomicUsize);

impl Calls {
    fn bump(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

#[cached(ttl = 30, tags = ["products", "product:{id}"])]
#[get("/products/{id}")]
async fn product(id: web::Path<u32>, calls: web::Data<Calls>) -> impl Responder {
    let n = calls.bump();
    HttpResponse::Ok()
        .content_type("text/plain")
        .body(format!("product {id} v{n}"))
}

#[post("/products/{id}")]
async fn update(id: web::Path<u32>, cache: Cache) -> actix_web::Result<&'static str> {
    cache.invalidate_tag(format!("product:{id}")).await?;
    Ok("updated")
}

#[cached(ttl = 30, vary = "Authorization")]
#[get("/me")]
async fn me(req: HttpRequest, calls: web::Data<Calls>) -> impl Responder {
    calls.bump();
    let who = req
        .headers()
        .get("authorization")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    format!("me: {}", who.unwrap_or_default())
}

#[cached(ttl = 30)]
#[get("/public")]
async fn public_page(calls: web::Data<Calls>) -> impl Responder {
    calls.bump();
    "same for everyone"
}

#[get("/plain")]
async fn plain(calls: web::Data<Calls>) -> impl Responder {
    calls.bump();
    "no policy"
}

async fn runtime_tagged(calls: web::Data<Calls>) -> Cached<HttpResponse> {
    let n = calls.bump();
    let policy = CachePolicy::new(Duration::from_secs(30));
    Cached::new(
        HttpResponse::Ok()
            .insert_header(("cache-tag", "from-header, other"))
            .body(format!("tagged v{n}")),
        policy,
    )
    .tag("from-code")
}

fn app_with(
    cache: Cache,
    calls: Arc<Calls>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(web::Data::new(cache.clone()))
        .app_data(web::Data::from(calls))
        .service(
            web::scope("/api")
                .wrap(CacheMiddleware::new(cache))
                .service(product)
                .service(update)
                .service(me)
                .service(public_page)
                .service(plain)
                .route("/tagged", web::get().to(runtime_tagged)),
        )
}

fn get(path: &str) -> test::TestRequest {
    test::TestRequest::get().uri(path)
}

#[actix_web::test]
async fn miss_then_hit_with_age_etag_cache_control_and_cache_status() {
    let calls = Arc::new(Calls::default());
    let app = test::init_service(app_with(Cache::memory(), calls.clone())).await;
    let first = send(&app, get("/api/products/1")).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.x_cache(), "MISS");
    assert_eq!(first.text(), "product 1 v1");
    assert!(
        first
            .header("cache-status")
            .contains("fwd=uri-miss; stored"),
        "{}",
        first.header("cache-status")
    );
    let second = send(&app, get("/api/products/1")).await;
    assert_eq!(second.x_cache(), "HIT");
    assert_eq!(second.text(), "product 1 v1");
    assert_eq!(second.header("content-type"), "text/plain");
    assert_eq!(second.header("age"), "0");
    assert!(second
        .header("cache-status")
        .starts_with("cache-actix; hit; ttl="));
    assert!(
        second.header("cache-control").starts_with("max-age=")
            && second.header("cache-control") != "max-age=0"
    );
    assert!(!second.header("expires").is_empty());
    let etag = second.header("etag");
    assert!(etag.starts_with('"') && etag.len() == 34, "{etag}");
    assert_eq!(
        first.header("etag"),
        etag,
        "etag must be the same on MISS and HIT"
    );
    assert_eq!(calls.get(), 1);
}

#[actix_web::test]
async fn etag_is_a_stable_hash_of_the_body_across_caches() {
    let calls = Arc::new(Calls::default());
    let a = test::init_service(app_with(Cache::memory(), calls.clone())).await;
    let b = test::init_service(app_with(Cache::memory(), Arc::new(Calls::default()))).await;
    let ra = send(&a, get("/api/public")).await;
    let rb = send(&b, get("/api/public")).await;
    assert_eq!(ra.header("etag"), rb.header("etag"));
    assert_ne!(ra.header("etag"), "");
}

#[actix_web::test]
async fn if_none_match_gives_304_for_exact_list_weak_and_star_and_200_for_garbage() {
    let app = test::init_service(app_with(Cache::memory(), Arc::default())).await;
    let etag = send(&app, get("/api/products/3"))
        .await
        .header("etag")
        .to_string();
    for inm in [
        etag.clone(),
        format!("\"zzz\", {etag}"),
        format!("W/{etag}"),
        "*".to_string(),
    ] {
        let r = send(
            &app,
            get("/api/products/3").insert_header(("if-none-match", inm.as_str())),
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED, "If-None-Match: {inm}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), etag);
    }
    for bad in ["\"unterminated", "no-quotes", "\"other\"", ",,,", "W/"] {
        let r = send(
            &app,
            get("/api/products/3").insert_header(("if-none-match", bad)),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "If-None-Match: {bad}");
        assert_eq!(r.text(), "product 3 v1");
    }
}

#[actix_web::test]
async fn head_is_served_from_the_get_entry() {
    let calls = Arc::new(Calls::default());
    let app = test::init_service(app_with(Cache::memory(), calls.clone())).await;
    send(&app, get("/api/products/4")).await;
    let head = send(
        &app,
        test::TestRequest::default()
            .method(actix_web::http::Method::HEAD)
            .uri("/api/products/4"),
    )
    .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.x_cache(), "HIT");
    assert_eq!(calls.get(), 1);
}

#[actix_web::test]
async fn tag_invalidation_drops_only_that_tag_and_unsafe_methods_drop_their_url() {
    let calls = Arc::new(Calls::default());
    let app = test::init_service(app_with(Cache::memory(), calls.clone())).await;
    send(&app, get("/api/products/1")).await;
    send(&app, get("/api/products/2")).await;
    // POST /api/products/1 invalidates product:1 and, being unsafe and successful, its own URL.
    let post = send(&app, test::TestRequest::post().uri("/api/products/1")).await;
    assert_eq!(post.status, StatusCode::OK);
    assert_eq!(post.x_cache(), "BYPASS");
    let one = send(&app, get("/api/products/1")).await;
    assert_eq!(one.x_cache(), "MISS");
    assert_eq!(one.text(), "product 1 v3");
    assert_eq!(send(&app, get("/api/products/2")).await.x_cache(), "HIT");
}

#[actix_web::test]
async fn invalidate_tag_purge_all_and_stats_through_the_handle() {
    let cache = Cache::memory();
    let calls = Arc::new(Calls::default());
    let app = test::init_service(app_with(cache.clone(), calls.clone())).await;
    send(&app, get("/api/products/1")).await;
    send(&app, get("/api/products/2")).await;
    send(&app, get("/api/products/2")).await;
    cache.invalidate_tag("products").await.unwrap();
    assert_eq!(send(&app, get("/api/products/1")).await.x_cache(), "MISS");
    assert_eq!(send(&app, get("/api/products/2")).await.x_cache(), "MISS");
    cache.purge_all().await.unwrap();
    assert_eq!(send(&app, get("/api/products/1")).await.x_cache(), "MISS");
    cache
        .invalidate_tags(["product:1", "product:2"])
        .await
        .unwrap();
    let stats = cache.stats();
    assert_eq!(stats.hits, 1);
    assert_eq!(stats.misses, 5);
    assert_eq!(stats.stores, 5);
    assert_eq!(stats.invalidations, 3);
    assert!(stats.entries >= 1 && stats.bytes > 0);
    assert_eq!(stats.entries, stats.l1.entries);
}

#[actix_web::test]
async fn runtime_tags_from_code_and_header_and_the_header_is_hidden() {
    let cache = Cache::memory();
    let app = test::init_service(app_with(cache.clone(), Arc::default())).await;
    for tag in ["from-code", "from-header", "other"] {
        let r = send(&app, get("/api/tagged")).await;
        assert_eq!(r.x_cache(), "MISS");
        assert_eq!(r.header("cache-tag"), "", "cache-tag header leaked");
        let r = send(&app, get("/api/tagged")).await;
        assert_eq!(r.x_cache(), "HIT");
        assert_eq!(r.header("cache-tag"), "");
        cache.invalidate_tag(tag).await.unwrap();
    }
    assert_eq!(send(&app, get("/api/tagged")).await.text(), "tagged v4");
}

#[actix_web::test]
async fn vary_authorization_keeps_users_apart() {
    let calls = Arc::new(Calls::default());
    let app = test::init_service(app_with(Cache::memory(), calls.clone())).await;
    let alice = || get("/api/me").insert_header(("authorization", "Bearer alice"));
    let bob = || get("/api/me").insert_header(("authorization", "Bearer bob"));
    assert_eq!(send(&app, alice()).await.text(), "me: Bearer alice");
    assert_eq!(send(&app, bob()).await.text(), "me: Bearer bob");
    let a = send(&app, alice()).await;
    assert_eq!(
        (a.x_cache(), a.text().as_str()),
        ("HIT", "me: Bearer alice")
    );
    assert_eq!(a.header("vary"), "authorization");
    let b = send(&app, bob()).await;
    assert_eq!((b.x_cache(), b.text().as_str()), ("HIT", "me: Bearer bob"));
    let anon = send(&app, get("/api/me")).await;
    assert_eq!((anon.x_cache(), anon.text().as_str()), ("MISS", "me: "));
    assert_eq!(calls.get(), 3);
}

#[actix_web::test]
async fn authorization_without_vary_is_never_stored_nor_served_from_a_shared_entry() {
    let calls = Arc::new(Calls::default());
    let app = test::init_service(app_with(Cache::memory(), calls.clone())).await;
    let authed = send(
        &app,
        get("/api/public").insert_header(("authorization", "Bearer x")),
    )
    .await;
    assert_eq!(authed.x_cache(), "BYPASS");
    assert!(authed
        .header("cache-status")
        .contains("detail=authorization"));
    assert_eq!(send(&app, get("/api/public")).await.x_cache(), "MISS");
    assert_eq!(send(&app, get("/api/public")).await.x_cache(), "HIT");
    let authed = send(
        &app,
        get("/api/public").insert_header(("authorization", "Bearer x")),
    )
    .await;
    assert_ne!(
        authed.x_cache(),
        "HIT",
        "an entry stored for anonymous users answered an authorized request"
    );
}

#[actix_web::test]
async fn responses_without_policy_are_not_cached_unless_a_scope_rule_says_so() {
    let calls = Arc::new(Calls::default());
    let app = test::init_service(app_with(Cache::memory(), calls.clone())).await;
    for _ in 0..2 {
        let r = send(&app, get("/api/plain")).await;
        assert_eq!(r.x_cache(), "BYPASS");
        assert!(r.header("cache-status").contains("detail=no-policy"));
    }
    assert_eq!(calls.get(), 2);

    let cache = Cache::memory();
    let counted = Arc::new(Calls::default());
    let handler = |calls: web::Data<Calls>| async move {
        let n = calls.bump();
        format!("v{n}")
    };
    let app = test::init_service(
        App::new()
            .app_data(web::Data::from(counted.clone()))
            .service(
                web::scope("/s")
                    .wrap(
                        CacheMiddleware::new(cache)
                            .default_ttl(Duration::from_secs(60))
                            .include("/s/cat")
                            .exclude("/s/cat/admin"),
                    )
                    .route("/cat", web::get().to(handler))
                    .route("/cat/{x}", web::get().to(handler))
                    .route("/cat/admin/x", web::get().to(handler))
                    .route("/catalogue", web::get().to(handler)),
            ),
    )
    .await;
    let twice = |path: &'static str| {
        let app = &app;
        async move {
            (
                send(app, get(path)).await.x_cache().to_string(),
                send(app, get(path)).await.x_cache().to_string(),
            )
        }
    };
    assert_eq!(twice("/s/cat").await, ("MISS".into(), "HIT".into()));
    assert_eq!(twice("/s/cat/7").await, ("MISS".into(), "HIT".into()));
    assert_eq!(
        twice("/s/cat/admin/x").await,
        ("BYPASS".into(), "BYPASS".into())
    );
    // The router decodes percent-escapes before matching, so the rules must too: otherwise
    // `/s/cat/%61dmin/x` would reach the excluded handler and be cached.
    assert_eq!(
        twice("/s/cat/%61dmin/x").await,
        ("BYPASS".into(), "BYPASS".into())
    );
    assert_eq!(
        twice("/s/catalogue").await,
        ("BYPASS".into(), "BYPASS".into()),
        "prefixes match whole segments"
    );
}

#[actix_web::test]
async fn middleware_on_the_app_caches_every_scope() {
    let cache = Cache::memory();
    let calls = Arc::new(Calls::default());
    let app = test::init_service(
        App::new()
            .wrap(CacheMiddleware::new(cache.clone()))
            .app_data(web::Data::new(cache.clone()))
            .app_data(web::Data::from(calls.clone()))
            .service(product)
            .service(web::scope("/x").service(public_page)),
    )
    .await;
    assert_eq!(send(&app, get("/products/9")).await.x_cache(), "MISS");
    assert_eq!(send(&app, get("/products/9")).await.x_cache(), "HIT");
    assert_eq!(send(&app, get("/x/public")).await.x_cache(), "MISS");
    assert_eq!(send(&app, get("/x/public")).await.x_cache(), "HIT");
    assert_eq!(calls.get(), 2);
}

#[actix_web::test]
async fn query_parameter_order_does_not_split_the_cache_but_values_do() {
    let calls = Arc::new(Calls::default());
    let app = test::init_service(app_with(Cache::memory(), calls.clone())).await;
    assert_eq!(
        send(&app, get("/api/products/1?a=1&b=2")).await.x_cache(),
        "MISS"
    );
    assert_eq!(
        send(&app, get("/api/products/1?b=2&a=1")).await.x_cache(),
        "HIT"
    );
    assert_eq!(
        send(&app, get("/api/products/1?a=2&b=2")).await.x_cache(),
        "MISS"
    );
    assert_eq!(
        send(&app, get("/api/products/1%2F")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[actix_web::test]
async fn the_cache_extractor_finds_the_middlewares_cache_without_app_data() {
    let cache = Cache::memory();
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(Calls::default()))
            .service(
                web::scope("")
                    .wrap(CacheMiddleware::new(cache.clone()))
                    .service(product)
                    .service(update),
            ),
    )
    .await;
    assert_eq!(send(&app, get("/products/5")).await.x_cache(), "MISS");
    let post = send(&app, test::TestRequest::post().uri("/products/5")).await;
    assert_eq!(post.status, StatusCode::OK);
    assert_eq!(
        cache.stats().invalidations,
        2,
        "the tag invalidation and the URL purge"
    );
    assert_eq!(send(&app, get("/products/5")).await.x_cache(), "MISS");
}

#[actix_web::test]
async fn the_cache_extractor_without_any_cache_is_a_500_without_detail() {
    let app = test::init_service(App::new().service(update)).await;
    let r = send(&app, test::TestRequest::post().uri("/products/1")).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        !r.text().contains("Cache"),
        "no configuration detail leaks: {}",
        r.text()
    );
}

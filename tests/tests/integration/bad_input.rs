//! Bad input gets the right answer or a clean pass-through: no panic, no 5xx caused by the
//! cache, memory still bounded.

use std::time::Duration;

use actix_web::{dev::Service, error, http::StatusCode, test, web, App, HttpRequest, HttpResponse};
use cache_actix::{Cache, CacheMiddleware, CachePolicy, Cached, MemoryStore};

fn echo_app_policy() -> CachePolicy {
    CachePolicy::new(Duration::from_secs(60))
        .vary("authorization")
        .vary("x-big")
}

async fn echo(req: HttpRequest) -> Cached<HttpResponse> {
    let body = format!("{}?{}", req.path(), req.query_string().len());
    Cached::new(HttpResponse::Ok().body(body), echo_app_policy())
}

async fn send<S>(app: &S, req: test::TestRequest) -> (StatusCode, String, String)
where
    S: Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
{
    cache_actix_tests::send(app, req).await.summary()
}

#[actix_web::test]
async fn non_utf8_and_enormous_header_values() {
    let app = test::init_service(
        App::new()
            .wrap(CacheMiddleware::new(Cache::memory()))
            .route("/e", web::get().to(echo)),
    )
    .await;
    let raw = actix_web::http::header::HeaderValue::from_bytes(b"Bearer \xff\xfe\x80").unwrap();
    let r = || {
        test::TestRequest::get()
            .uri("/e")
            .insert_header(("authorization", raw.clone()))
    };
    assert_eq!(
        send(&app, r()).await,
        (StatusCode::OK, "MISS".into(), "/e?0".into())
    );
    assert_eq!(
        send(&app, r()).await,
        (StatusCode::OK, "HIT".into(), "/e?0".into())
    );
    let bad_inm = actix_web::http::header::HeaderValue::from_bytes(b"\"\xff\"").unwrap();
    assert_eq!(
        send(&app, r().insert_header(("if-none-match", bad_inm)))
            .await
            .0,
        StatusCode::OK
    );

    let big = "x".repeat(60 * 1024);
    let r = || {
        test::TestRequest::get()
            .uri("/e")
            .insert_header(("x-big", big.as_str()))
    };
    // The varied value makes the key larger than the 8 KiB limit: answered, never stored.
    assert_eq!(
        send(&app, r()).await,
        (StatusCode::OK, "MISS".into(), "/e?0".into())
    );
    assert_eq!(
        send(&app, r()).await,
        (StatusCode::OK, "MISS".into(), "/e?0".into())
    );
}

#[actix_web::test]
async fn a_64_kib_query_string_bypasses_and_10000_parameters_are_keyed_correctly() {
    let app = test::init_service(
        App::new()
            .wrap(CacheMiddleware::new(Cache::memory()))
            .route("/e", web::get().to(echo)),
    )
    .await;
    // 64 KiB less a little: `http::Uri` itself refuses anything of 65,535 bytes or more.
    let long = format!("/e?q={}", "a".repeat(64 * 1024 - 16));
    let (status, x, body) = send(&app, test::TestRequest::get().uri(&long)).await;
    assert_eq!((status, x.as_str()), (StatusCode::OK, "BYPASS"));
    assert_eq!(body, format!("/e?{}", 64 * 1024 - 14));

    let app = test::init_service(
        App::new()
            .wrap(CacheMiddleware::new(Cache::memory()).max_key_bytes(1 << 20))
            .route("/e", web::get().to(echo)),
    )
    .await;
    let params: Vec<String> = (0..10_000).map(|i| format!("{i:x}")).collect();
    let forward = format!("/e?{}", params.join("&"));
    let backward = format!(
        "/e?{}",
        params.iter().rev().cloned().collect::<Vec<_>>().join("&")
    );
    assert_eq!(
        send(&app, test::TestRequest::get().uri(&forward)).await.1,
        "MISS"
    );
    let (status, x, body) = send(&app, test::TestRequest::get().uri(&backward)).await;
    assert_eq!((status, x.as_str()), (StatusCode::OK, "HIT"));
    assert_eq!(body, format!("/e?{}", forward.len() - 3));
}

#[actix_web::test]
async fn handler_errors_pass_through_untouched() {
    let app = test::init_service(
        App::new()
            .wrap(CacheMiddleware::new(Cache::memory()))
            .route(
                "/err",
                web::get().to(|| async {
                    Err::<Cached<HttpResponse>, _>(error::ErrorBadRequest("bad id"))
                }),
            ),
    )
    .await;
    for _ in 0..2 {
        let (status, x, body) = send(&app, test::TestRequest::get().uri("/err")).await;
        assert_eq!(
            (status, x.as_str(), body.as_str()),
            (StatusCode::BAD_REQUEST, "BYPASS", "bad id")
        );
    }
}

#[actix_web::test]
async fn memory_stays_within_the_budget_under_many_distinct_urls() {
    let budget = 256 * 1024;
    let cache = Cache::builder()
        .l1(MemoryStore::new().max_bytes(budget))
        .build();
    let app = test::init_service(App::new().wrap(CacheMiddleware::new(cache.clone())).route(
        "/m/{n}",
        web::get().to(|| async {
            Cached::new(
                HttpResponse::Ok().body(vec![b'm'; 1024]),
                CachePolicy::new(Duration::from_secs(60)),
            )
        }),
    ))
    .await;
    for n in 0..3000 {
        let (status, _, body) = send(&app, test::TestRequest::get().uri(&format!("/m/{n}"))).await;
        assert_eq!((status, body.len()), (StatusCode::OK, 1024));
        assert!(cache.stats().bytes <= budget as u64);
    }
    let stats = cache.stats();
    assert!(stats.evictions > 2000, "{stats:?}");
    assert!(
        stats.entries > 50,
        "the budget should hold a good number of 1 KiB entries: {stats:?}"
    );
    assert_eq!(
        send(&app, test::TestRequest::get().uri("/m/2999")).await.1,
        "HIT"
    );
}

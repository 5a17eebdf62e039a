//! What is never stored (the README's "What is never stored"): each rule, as a client sees
//! it, plus the client's own `Cache-Control: no-cache` and oversized or streamed bodies passed
//! through intact.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{dev::Service, http::StatusCode, test, web, App, HttpResponse};
use bytes::Bytes;
use cache_actix::{Cache, CacheMiddleware, CachePolicy, Cached, Visibility};
use futures_util::stream;

fn policy() -> CachePolicy {
    CachePolicy::new(Duration::from_secs(60))
}

/// Serves `respond(n)` at `/r` with the call count `n`, under a middleware with a 1 KiB body limit.
async fn twice(
    respond: impl Fn(usize) -> Cached<HttpResponse> + Clone + 'static,
    honor_no_cache: bool,
    headers: &[(&str, &str)],
) -> (Vec<String>, Vec<Bytes>, usize) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let app = test::init_service(
        App::new()
            .wrap(
                CacheMiddleware::new(Cache::memory())
                    .max_body_bytes(1024)
                    .honor_client_no_cache(honor_no_cache),
            )
            .route(
                "/r",
                web::get().to(move || {
                    let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                    let out = respond(n);
                    async move { out }
                }),
            ),
    )
    .await;
    let mut x_cache = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let mut req = test::TestRequest::get().uri("/r");
        for (name, value) in headers {
            req = req.insert_header((*name, *value));
        }
        let res = app
            .call(req.to_request())
            .await
            .unwrap_or_else(|e| panic!("service error: {e}"));
        x_cache.push(cache_actix_tests::x_cache_of(res.headers()));
        bodies.push(test::read_body(res).await);
    }
    (x_cache, bodies, calls.load(Ordering::SeqCst))
}

fn bypassed(result: &(Vec<String>, Vec<Bytes>, usize)) {
    assert_eq!(result.0, ["BYPASS", "BYPASS"]);
    assert_eq!(result.2, 2, "the handler must run every time");
}

#[actix_web::test]
async fn error_statuses_and_206_are_not_stored_unless_listed() {
    bypassed(
        &twice(
            |_| Cached::new(HttpResponse::NotFound().body("nope"), policy()),
            false,
            &[],
        )
        .await,
    );
    bypassed(
        &twice(
            |_| Cached::new(HttpResponse::InternalServerError().body("x"), policy()),
            false,
            &[],
        )
        .await,
    );
    bypassed(
        &twice(
            |_| Cached::new(HttpResponse::PartialContent().body("part"), policy()),
            false,
            &[],
        )
        .await,
    );
    let listed = twice(
        |_| Cached::new(HttpResponse::NotFound().body("gone"), policy().status(404)),
        false,
        &[],
    )
    .await;
    assert_eq!(listed.0, ["MISS", "HIT"]);
    assert_eq!(listed.1[1], "gone");
}

#[actix_web::test]
async fn set_cookie_no_store_and_private_are_not_stored() {
    let headers = [
        ("set-cookie", "s=1; Path=/"),
        ("cache-control", "no-store"),
        ("cache-control", "Private, max-age=5"),
    ];
    for (name, value) in headers {
        let respond = move |_| {
            Cached::new(
                HttpResponse::Ok().insert_header((name, value)).body("x"),
                policy(),
            )
        };
        bypassed(&twice(respond, false, &[]).await);
    }
}

#[actix_web::test]
async fn policy_private_or_public_only_changes_what_clients_are_told() {
    let private = twice(
        |_| {
            Cached::new(
                HttpResponse::Ok().body("x"),
                policy().visibility(Visibility::Private),
            )
        },
        false,
        &[],
    )
    .await;
    assert_eq!(private.0, ["MISS", "HIT"]);
    let public = twice(
        |_| {
            Cached::new(
                HttpResponse::Ok().body("x"),
                policy().visibility(Visibility::Public),
            )
        },
        false,
        &[("authorization", "Bearer a")],
    )
    .await;
    assert_eq!(
        public.0,
        ["MISS", "HIT"],
        "public lets an authorized response be shared"
    );
}

#[actix_web::test]
async fn bodies_over_the_limit_and_streams_pass_through_intact() {
    let big = twice(
        |_| Cached::new(HttpResponse::Ok().body(vec![b'z'; 4096]), policy()),
        false,
        &[],
    )
    .await;
    bypassed(&big);
    assert_eq!(big.1[0].len(), 4096);
    assert!(big.1[1].iter().all(|b| *b == b'z'));

    let streamed = twice(
        |n| {
            let chunks =
                (0..200).map(move |i| Ok::<_, actix_web::Error>(Bytes::from(format!("{n}:{i};"))));
            Cached::new(HttpResponse::Ok().streaming(stream::iter(chunks)), policy())
        },
        false,
        &[],
    )
    .await;
    bypassed(&streamed);
    let expected: String = (0..200).map(|i| format!("2:{i};")).collect();
    assert_eq!(streamed.1[1], expected.as_bytes());
}

#[actix_web::test]
async fn client_no_cache_is_ignored_by_default_and_honored_when_allowed() {
    let ignored = twice(
        |n| Cached::new(HttpResponse::Ok().body(format!("v{n}")), policy()),
        false,
        &[("cache-control", "no-cache")],
    )
    .await;
    assert_eq!(ignored.0, ["MISS", "HIT"]);
    let honored = twice(
        |n| Cached::new(HttpResponse::Ok().body(format!("v{n}")), policy()),
        true,
        &[("cache-control", "no-cache")],
    )
    .await;
    assert_eq!(honored.0, ["MISS", "MISS"]);
    assert_eq!(honored.1[1], "v2");
    let pragma = twice(
        |n| Cached::new(HttpResponse::Ok().body(format!("v{n}")), policy()),
        true,
        &[("pragma", "no-cache")],
    )
    .await;
    assert_eq!(pragma.2, 2);
}

#[actix_web::test]
async fn cache_control_and_expires_follow_the_policy() {
    let app = test::init_service(
        App::new()
            .wrap(CacheMiddleware::new(Cache::memory()))
            .route(
                "/r",
                web::get().to(|| async {
                    Cached::new(
                        HttpResponse::Ok()
                            .insert_header(("cache-control", "max-age=999"))
                            .body("x"),
                        policy()
                            .visibility(Visibility::Public)
                            .max_age(Duration::from_secs(10)),
                    )
                }),
            ),
    )
    .await;
    for _ in 0..2 {
        let res = test::call_service(&app, test::TestRequest::get().uri("/r").to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            res.headers()
                .get("cache-control")
                .and_then(|v| v.to_str().ok()),
            Some("public, max-age=10")
        );
        assert!(res.headers().contains_key("expires"));
    }
}

#[actix_web::test]
async fn a_handler_vary_the_policy_does_not_key_on_is_not_stored() {
    // The handler varies on Accept-Language but the policy keys on nothing: storing would hand
    // one language to everybody.
    let uncovered = twice(
        |n| {
            Cached::new(
                HttpResponse::Ok()
                    .insert_header(("vary", "Accept-Language"))
                    .body(format!("v{n}")),
                policy(),
            )
        },
        false,
        &[],
    )
    .await;
    bypassed(&uncovered);
    bypassed(
        &twice(
            |_| {
                Cached::new(
                    HttpResponse::Ok().insert_header(("vary", "*")).body("x"),
                    policy(),
                )
            },
            false,
            &[],
        )
        .await,
    );
    let covered = twice(
        |n| {
            Cached::new(
                HttpResponse::Ok()
                    .insert_header(("vary", "accept-language"))
                    .body(format!("v{n}")),
                policy().vary("Accept-Language"),
            )
        },
        false,
        &[("accept-language", "fr")],
    )
    .await;
    assert_eq!(covered.0, ["MISS", "HIT"]);
    assert_eq!(covered.1[1], "v1");
}

#[actix_web::test]
async fn head_misses_are_answered_but_not_stored_and_304_is_only_for_2xx() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let app = test::init_service(
        App::new()
            .wrap(CacheMiddleware::new(Cache::memory()))
            .route(
                "/r",
                web::route().to(move || {
                    let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                    async move { Cached::new(HttpResponse::Ok().body(format!("v{n}")), policy()) }
                }),
            )
            .route(
                "/gone",
                web::get().to(|| async {
                    Cached::new(HttpResponse::NotFound().body("gone"), policy().status(404))
                }),
            ),
    )
    .await;
    let head = cache_actix_tests::send(
        &app,
        test::TestRequest::default()
            .method(actix_web::http::Method::HEAD)
            .uri("/r"),
    )
    .await;
    assert_eq!(head.x_cache(), "MISS");
    let get = cache_actix_tests::send(&app, test::TestRequest::get().uri("/r")).await;
    assert_eq!(
        get.summary(),
        (StatusCode::OK, "MISS".into(), "v2".into()),
        "HEAD stored nothing"
    );
    let again = cache_actix_tests::send(&app, test::TestRequest::get().uri("/r")).await;
    assert_eq!(again.summary(), (StatusCode::OK, "HIT".into(), "v2".into()));

    let first = cache_actix_tests::send(&app, test::TestRequest::get().uri("/gone")).await;
    let etag = first.header("etag").to_string();
    assert!(!etag.is_empty());
    let revalidated = cache_actix_tests::send(
        &app,
        test::TestRequest::get()
            .uri("/gone")
            .insert_header(("if-none-match", etag)),
    )
    .await;
    assert_eq!(
        revalidated.summary(),
        (StatusCode::NOT_FOUND, "HIT".into(), "gone".into()),
        "a stored 404 is replayed, never turned into a 304"
    );
}

//! Runtime behaviour of `#[cached(...)]` behind `CacheMiddleware`: the policy the macro builds
//! reaches the middleware whether the attribute sits above or below actix's route attribute or
//! on a handler registered with `web::resource(..).to(..)`, and its `{id}` tag is filled from the
//! route so that invalidating `product:7` drops exactly that entry.

// Every form each macro accepts, compiled against actix-web's own route macros; the forms each
// rejects, with their errors, are cache-macros' trybuild tests.
mod every_form;
mod tag_forms;

use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::{get, test, web, App, Responder};
use cache_actix::{cached, Cache, CacheMiddleware};

#[derive(Default)]
struct Runs(AtomicUsize);

impl Runs {
    fn bump(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

#[cached(ttl = 60, tags = ["product:{id}"])]
#[get("/above/{id}")]
async fn above(id: web::Path<u32>, runs: web::Data<Runs>) -> impl Responder {
    runs.bump();
    format!("above {id}")
}

#[get("/below/{id}")]
#[cached(ttl = 60, tags = ["product:{id}"])]
async fn below(id: web::Path<u32>, runs: web::Data<Runs>) -> impl Responder {
    runs.bump();
    format!("below {id}")
}

#[cached(ttl = 60, tags = ["product:{id}"])]
async fn plain(id: web::Path<u32>, runs: web::Data<Runs>) -> impl Responder {
    runs.bump();
    format!("plain {id}")
}

async fn check(prefix: &str) {
    let cache = Cache::memory();
    let runs = web::Data::new(Runs::default());
    let app = test::init_service(
        App::new()
            .app_data(runs.clone())
            .wrap(CacheMiddleware::new(cache.clone()))
            .service(above)
            .service(below)
            .service(web::resource("/plain/{id}").to(plain)),
    )
    .await;

    let get = |id: u32| {
        test::TestRequest::get()
            .uri(&format!("/{prefix}/{id}"))
            .to_request()
    };
    let expect = |res: &actix_web::dev::ServiceResponse, x_cache: &str| {
        assert!(
            res.status().is_success(),
            "{prefix}: status {}",
            res.status()
        );
        let seen = res.headers().get("x-cache").and_then(|v| v.to_str().ok());
        assert_eq!(seen, Some(x_cache), "{prefix}: x-cache");
    };

    let res = test::call_service(&app, get(7)).await;
    expect(&res, "MISS");
    assert_eq!(test::read_body(res).await, format!("{prefix} 7"));
    let res = test::call_service(&app, get(7)).await;
    expect(&res, "HIT");
    assert_eq!(test::read_body(res).await, format!("{prefix} 7"));
    assert_eq!(
        runs.get(),
        1,
        "{prefix}: the second request must not run the handler"
    );

    let res = test::call_service(&app, get(8)).await;
    expect(&res, "MISS");
    assert_eq!(runs.get(), 2);

    // The tag was filled from the route: only product 7 is dropped.
    cache
        .invalidate_tag("product:7")
        .await
        .expect("memory invalidation");
    expect(&test::call_service(&app, get(7)).await, "MISS");
    expect(&test::call_service(&app, get(8)).await, "HIT");
    assert_eq!(runs.get(), 3);
}

#[actix_web::test]
async fn above_the_route_attribute() {
    check("above").await;
}

#[actix_web::test]
async fn below_the_route_attribute() {
    check("below").await;
}

#[actix_web::test]
async fn registered_with_resource_to() {
    check("plain").await;
}

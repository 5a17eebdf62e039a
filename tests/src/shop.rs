//! The app the multi-node Redis tests share: `/p/{id}` answers `"{id}:v{version}"` under a
//! 60 s policy tagged `products`, over a [`Db`] every node shares like a real database.
//!
//! What must stay true: the body names the version the handler read, so a test can tell an
//! invalidated answer from a fresh one, and `calls` counts every handler run.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{dev::Service, test, web, App, HttpResponse};
use cache_actix::{Cache, CacheMiddleware, CachePolicy, Cached};

/// The data behind the handler: the version it serves and how often it ran.
#[derive(Default)]
pub struct Db {
    /// The version the handler serves now.
    pub version: AtomicUsize,
    /// Handler runs so far.
    pub calls: AtomicUsize,
}

impl Db {
    /// Handler runs so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// The shop app on `cache`, reading `db`.
pub async fn app(
    cache: Cache,
    db: Arc<Db>,
) -> impl Service<
    actix_http::Request,
    Response = actix_web::dev::ServiceResponse,
    Error = actix_web::Error,
> {
    test::init_service(App::new().wrap(CacheMiddleware::new(cache)).route(
        "/p/{id}",
        web::get().to(move |id: web::Path<u32>| {
            let db = db.clone();
            async move {
                db.calls.fetch_add(1, Ordering::SeqCst);
                let v = db.version.load(Ordering::SeqCst);
                Cached::new(
                    HttpResponse::Ok().body(format!("{id}:v{v}")),
                    CachePolicy::new(Duration::from_secs(60)).tag("products"),
                )
            }
        }),
    ))
    .await
}

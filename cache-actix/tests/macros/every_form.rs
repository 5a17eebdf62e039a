//! Every key and every placement `#[cached]` supports, compiled against actix-web's own macros.

use actix_web::{get, route, web, App, HttpResponse, Responder};
use cache_actix::{cached, Cached};

/// Above the route attribute: the route is checked against the tags.
#[cached(
    ttl = "5m",
    vary = ["Authorization", "Accept-Language"],
    vary_cookie = ["session", "lang"],
    tags = ["products", "product:{id}"],
    stale_while_revalidate = 10,
    stale_if_error = "1m",
    max_age = 0,
    private,
    statuses = [404, 301],
)]
#[get("/products/{id}")]
pub async fn get_product(id: web::Path<u32>) -> impl Responder {
    format!("product {id}")
}

/// Below the route attribute: actix expands first and `#[cached]` runs inside its `register`.
#[actix_web::get("/categories/{slug}")]
#[cached(ttl = 30, vary = "Accept", vary_cookie = "sid", tags = ["category:{slug}"], public = true)]
async fn get_category(slug: web::Path<String>) -> HttpResponse {
    HttpResponse::Ok().body(slug.into_inner())
}

/// A path and a query, taken together as one tuple extractor.
type PathAndQuery = (web::Path<(u32, String)>, web::Query<Vec<(String, String)>>);

/// Patterns, several extractors, a regex and a tail parameter, `?` in the body.
#[cached(ttl = 1, tags = ["shop:{shop}", "file:{path}"], private = false)]
#[route(
    "/shops/{shop:\\d{1,4}}/files/{path}*",
    method = "GET",
    method = "HEAD"
)]
async fn get_file((params, query): PathAndQuery) -> actix_web::Result<String> {
    let (shop, file) = params.into_inner();
    let _: u8 = u8::try_from(shop).map_err(actix_web::error::ErrorBadRequest)?;
    Ok(format!("{shop}/{file}?{}", query.len()))
}

/// A plain handler registered with `web::resource(..).to(..)`: no route to check.
#[cached(ttl = 30, tags = ["thing:{id}"])]
async fn plain(id: web::Path<u32>, mut body: String) -> impl Responder {
    body.push_str(&id.to_string());
    body
}

/// Generic over the extractor; also returns early.
#[cached(ttl = 30)]
async fn generic<T: actix_web::FromRequest + std::fmt::Debug>(value: T) -> String {
    if format!("{value:?}").is_empty() {
        return String::new();
    }
    format!("{value:?}")
}

/// The wrapper type is nameable, so handlers can be stored or called directly.
async fn call_directly(id: web::Path<u32>) -> Cached<HttpResponse> {
    plain(id, String::new()).await;
    get_category_plain().await
}

#[cached(ttl = 30)]
async fn get_category_plain() -> HttpResponse {
    HttpResponse::Ok().finish()
}

/// Each form registers as an actix service (a form actix could not take would not compile).
#[test]
fn every_form_registers_with_actix() {
    let _ = App::new()
        .service(get_product)
        .service(get_category)
        .service(get_file)
        .service(web::resource("/things/{id}").to(plain))
        .service(web::resource("/generic").to(generic::<web::Query<Vec<(String, String)>>>))
        .service(web::resource("/direct/{id}").to(call_directly));
}

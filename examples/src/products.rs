//! The product API: list, get, create, update and delete products held in a deliberately slow
//! fake database, cached with `#[cached]`, invalidated by tag after every write (a product's
//! own tags come from `#[derive(CacheTags)]`, spelled as the `product:{id}` of its page).
//!
//! - `GET /api/products` (tag `products`), `GET /api/products/{id}` (tags `products`, `product:{id}`)
//! - `POST /api/products`, `PUT /api/products/{id}`, `DELETE /api/products/{id}`: write, then invalidate
//! - `GET /api/stats` (tag `stats`): counts and prices, which may lag a write by one refresh, so
//!   writes soft-purge it: the next reader gets the old figures at once (`STALE`) while they are
//!   recomputed in the background
//! - `GET /api/me`: varies on `Authorization`, so every user gets their own entry
//! - `/admin/...` (only when an admin token is configured): purge or soft-purge a tag, purge
//!   all, stats as JSON

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use actix_web::{delete, get, post, put, web, HttpRequest, HttpResponse, Responder};
use cache_actix::{admin, cached, Cache, CacheMiddleware, CacheTags};
use serde::{Deserialize, Serialize};

/// A product; its tag is `product:<id>`, the one its page is stored under.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, CacheTags)]
#[cache_tags(prefix = "product")]
pub struct Product {
    /// Identifier.
    #[cache_tag]
    pub id: u32,
    /// Display name.
    pub name: String,
    /// Price in cents.
    pub price_cents: u64,
}

/// What a client sends to create or update a product.
#[derive(Debug, Clone, Deserialize)]
pub struct ProductInput {
    /// Display name.
    pub name: String,
    /// Price in cents.
    pub price_cents: u64,
}

/// A fake database whose every read takes `latency`, like a slow query would.
pub struct Db {
    rows: Mutex<BTreeMap<u32, Product>>,
    latency: Duration,
    reads: std::sync::atomic::AtomicU64,
}

impl Db {
    /// Three products and the given read latency.
    pub fn seeded(latency: Duration) -> Db {
        let rows = [(1, "Teapot", 2500), (2, "Kettle", 4000), (3, "Mug", 900)]
            .into_iter()
            .map(|(id, name, price_cents)| {
                (
                    id,
                    Product {
                        id,
                        name: name.to_string(),
                        price_cents,
                    },
                )
            })
            .collect();
        Db {
            rows: Mutex::new(rows),
            latency,
            reads: Default::default(),
        }
    }

    /// How many (slow) reads the handlers made: what the cache saves.
    pub fn reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn read<T>(&self, f: impl FnOnce(&BTreeMap<u32, Product>) -> T) -> T {
        tokio::time::sleep(self.latency).await;
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        f(&rows)
    }

    fn write<T>(&self, f: impl FnOnce(&mut BTreeMap<u32, Product>) -> T) -> T {
        let mut rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut rows)
    }
}

#[cached(ttl = 60, tags = ["products"])]
#[get("/products")]
async fn list_products(db: web::Data<Db>) -> impl Responder {
    let products: Vec<Product> = db.read(|rows| rows.values().cloned().collect()).await;
    HttpResponse::Ok().json(products)
}

#[cached(ttl = 60, tags = ["products", "product:{id}"], stale_if_error = "5m")]
#[get("/products/{id}")]
async fn get_product(id: web::Path<u32>, db: web::Data<Db>) -> impl Responder {
    let id = id.into_inner();
    match db.read(|rows| rows.get(&id).cloned()).await {
        Some(product) => HttpResponse::Ok().json(product),
        None => HttpResponse::NotFound().json(serde_json::json!({ "error": "no such product" })),
    }
}

/// Figures over the whole catalog: worth a slow query, and fine to show one refresh late.
#[cached(ttl = 300, tags = ["stats"], stale_while_revalidate = "10m")]
#[get("/stats")]
async fn catalog_stats(db: web::Data<Db>) -> impl Responder {
    let (count, total): (usize, u64) = db
        .read(|rows| (rows.len(), rows.values().map(|p| p.price_cents).sum()))
        .await;
    HttpResponse::Ok().json(serde_json::json!({ "products": count, "total_price_cents": total }))
}

/// After a write: the product pages and lists must never show the old data (hard), the
/// catalog figures may for one refresh (soft: no burst of slow queries after each write).
async fn after_write(cache: &Cache, tags: Vec<String>) -> Result<(), cache_actix::CacheError> {
    cache.invalidate_tags(tags).await?;
    cache.soft_invalidate_tag("stats").await
}

#[post("/products")]
async fn create_product(
    input: web::Json<ProductInput>,
    db: web::Data<Db>,
    cache: Cache,
) -> actix_web::Result<HttpResponse> {
    let product = db.write(|rows| {
        let id = rows.keys().next_back().map_or(1, |max| max + 1);
        let product = Product {
            id,
            name: input.name.clone(),
            price_cents: input.price_cents,
        };
        rows.insert(id, product.clone());
        product
    });
    after_write(&cache, vec!["products".to_string()]).await?;
    Ok(HttpResponse::Created().json(product))
}

#[put("/products/{id}")]
async fn update_product(
    id: web::Path<u32>,
    input: web::Json<ProductInput>,
    db: web::Data<Db>,
    cache: Cache,
) -> actix_web::Result<HttpResponse> {
    let id = id.into_inner();
    let updated = db.write(|rows| {
        rows.get_mut(&id).map(|p| {
            p.name = input.name.clone();
            p.price_cents = input.price_cents;
            p.clone()
        })
    });
    let Some(product) = updated else {
        return Ok(HttpResponse::NotFound().json(serde_json::json!({ "error": "no such product" })));
    };
    after_write(&cache, with_list(&product)).await?;
    Ok(HttpResponse::Ok().json(product))
}

#[delete("/products/{id}")]
async fn delete_product(
    id: web::Path<u32>,
    db: web::Data<Db>,
    cache: Cache,
) -> actix_web::Result<HttpResponse> {
    let id = id.into_inner();
    let Some(product) = db.write(|rows| rows.remove(&id)) else {
        return Ok(HttpResponse::NotFound().json(serde_json::json!({ "error": "no such product" })));
    };
    after_write(&cache, with_list(&product)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A changed product's own tags and the list's, for one invalidation (one tick).
fn with_list(product: &Product) -> Vec<String> {
    let mut tags = product.cache_tags();
    tags.push("products".to_string());
    tags
}

/// Who am I: varies on `Authorization`, so each caller gets (and caches) their own answer.
#[cached(ttl = 30, vary = "Authorization", private)]
#[get("/me")]
async fn me(req: HttpRequest, db: web::Data<Db>) -> impl Responder {
    db.read(|_| ()).await;
    let user = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("anonymous")
        .to_string();
    HttpResponse::Ok().json(serde_json::json!({ "user": user }))
}

/// Registers the whole app on `cfg`: the cached API under `/api`, and the admin scope under
/// `/admin` when `admin_token` is given (off otherwise).
pub fn configure(
    cfg: &mut web::ServiceConfig,
    cache: Cache,
    db: web::Data<Db>,
    admin_token: Option<String>,
) {
    cfg.app_data(web::Data::new(cache.clone()))
        .app_data(db)
        .service(
            web::scope("/api")
                // Campaign and click-tracking parameters never change a page: one entry for
                // `/api/products?utm_source=mail` and `/api/products`.
                .wrap(
                    CacheMiddleware::new(cache.clone()).ignore_query(["utm_*", "fbclid", "gclid"]),
                )
                .service(list_products)
                .service(catalog_stats)
                .service(get_product)
                .service(create_product)
                .service(update_product)
                .service(delete_product)
                .service(me),
        );
    if let Some(token) = admin_token.filter(|t| !t.is_empty()) {
        cfg.service(admin::scope("/admin", cache, token));
    }
}

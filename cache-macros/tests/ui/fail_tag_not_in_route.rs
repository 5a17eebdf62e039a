use actix_web::{get, web, Responder};
use cache_actix::cached;

#[cached(ttl = 30, tags = ["products", "product:{slug}"])]
#[get("/products/{id}")]
async fn get_product(id: web::Path<u32>) -> impl Responder {
    format!("product {id}")
}

fn main() {}

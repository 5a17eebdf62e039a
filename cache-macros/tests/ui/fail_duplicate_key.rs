use actix_web::{get, Responder};
use cache_actix::cached;

#[cached(ttl = 30, vary = "Accept", ttl = "5m")]
#[get("/")]
async fn index() -> impl Responder {
    "hello"
}

fn main() {}

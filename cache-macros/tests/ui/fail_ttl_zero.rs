use actix_web::{get, Responder};
use cache_actix::cached;

#[cached(ttl = 0)]
#[get("/")]
async fn index() -> impl Responder {
    "hello"
}

fn main() {}

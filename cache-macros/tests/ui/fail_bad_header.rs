use actix_web::{get, Responder};
use cache_actix::cached;

#[cached(ttl = 30, vary = ["Accept-Language", "Bad Header"])]
#[get("/")]
async fn index() -> impl Responder {
    "hello"
}

fn main() {}

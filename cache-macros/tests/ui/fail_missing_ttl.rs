use actix_web::{get, Responder};
use cache_actix::cached;

#[cached(tags = ["index"])]
#[get("/")]
async fn index() -> impl Responder {
    "hello"
}

fn main() {}

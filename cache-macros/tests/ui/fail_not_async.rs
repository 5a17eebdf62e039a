use actix_web::{get, App};
use cache_actix::cached;

#[cached(ttl = 30)]
#[get("/")]
fn index() -> &'static str {
    "hello"
}

// Registration compiles: the only error is the one about `async`.
fn main() {
    let _ = App::new().service(index);
}

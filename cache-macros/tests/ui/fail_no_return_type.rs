use cache_actix::cached;

#[cached(ttl = 30)]
async fn index() {}

fn main() {}

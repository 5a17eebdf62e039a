use cache_actix::CacheTags;

#[derive(CacheTags)]
#[cache_tags(prefix = "product")]
struct Product {
    id: u32,
}

#[derive(CacheTags)]
#[cache_tags(prefix = "unit")]
struct Unit;

fn main() {}

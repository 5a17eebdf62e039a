use cache_actix::CacheTags;

#[derive(CacheTags)]
#[cache_tag]
#[cache_tags(prefix = "product")]
struct Product {
    #[cache_tags(prefix = "category")]
    #[cache_tag]
    id: u32,
    #[cache_tag = "brand"]
    brand: u32,
}

fn main() {}

use cache_actix::CacheTags;

#[derive(CacheTags)]
#[cache_tags(prefix = "product")]
#[cache_tags(prefix = "item")]
struct Product {
    #[cache_tag]
    #[cache_tag(prefix = "product")]
    id: u32,
    #[cache_tag(prefix = "category", prefix = "group")]
    category_id: u32,
}

fn main() {}

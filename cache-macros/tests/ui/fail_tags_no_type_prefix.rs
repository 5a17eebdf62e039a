use cache_actix::CacheTags;

#[derive(CacheTags)]
struct Product {
    #[cache_tag]
    id: u32,
    #[cache_tag(prefix = "category")]
    category_id: u32,
}

fn main() {}

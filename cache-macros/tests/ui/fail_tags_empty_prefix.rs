use cache_actix::CacheTags;

#[derive(CacheTags)]
#[cache_tags(prefix = "")]
struct Product {
    #[cache_tag]
    id: u32,
    #[cache_tag(prefix = "")]
    category_id: u32,
}

fn main() {}

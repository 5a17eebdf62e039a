use cache_actix::CacheTags;

#[derive(CacheTags)]
#[cache_tags(prefx = "product")]
struct Product {
    #[cache_tag(name = "category")]
    category_id: u32,
}

fn main() {}

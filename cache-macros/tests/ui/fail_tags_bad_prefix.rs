use cache_actix::CacheTags;

#[derive(CacheTags)]
#[cache_tags(prefix = "shop:product")]
struct Product {
    #[cache_tag]
    id: u32,
    #[cache_tag(prefix = "main category")]
    category_id: u32,
    #[cache_tag(prefix = "{brand}")]
    brand: u32,
    #[cache_tag(prefix = 7)]
    line: u32,
}

fn main() {}

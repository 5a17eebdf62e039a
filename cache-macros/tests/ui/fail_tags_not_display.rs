use cache_actix::CacheTags;

struct Id(u32);

#[derive(CacheTags)]
#[cache_tags(prefix = "product")]
struct Product {
    #[cache_tag]
    id: Id,
    #[cache_tag(prefix = "category")]
    category: Option<Vec<u32>>,
}

fn main() {}

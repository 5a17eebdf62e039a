use cache_actix::CacheTags;

#[derive(CacheTags)]
#[cache_tags(prefix = "bits")]
union Bits {
    #[cache_tag]
    int: u32,
    float: f32,
}

fn main() {}

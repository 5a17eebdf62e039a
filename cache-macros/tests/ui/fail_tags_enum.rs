use cache_actix::CacheTags;

#[derive(CacheTags)]
#[cache_tags(prefix = "shape")]
enum Shape {
    Circle {
        #[cache_tag]
        id: u32,
    },
}

fn main() {}

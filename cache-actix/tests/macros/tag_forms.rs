//! Every form `#[derive(CacheTags)]` accepts, and the tags each gives.

use std::fmt;

use cache_actix::CacheTags;

#[derive(CacheTags)]
#[cache_tags(prefix = "product")]
struct Product {
    #[cache_tag]
    #[cache_tag(prefix = "sku")]
    id: u64,
    #[cache_tag(prefix = "category")]
    category_id: u32,
    #[cache_tag(prefix = "brand")]
    brand: Option<String>,
    #[cache_tag(prefix = "shop.v2/line-item_x")]
    line: std::option::Option<&'static str>,
    #[allow(dead_code)]
    name: String,
}

/// A tuple struct: its fields are tagged by position.
#[derive(CacheTags)]
#[cache_tags(prefix = "user")]
struct UserId(#[cache_tag] u32);

/// Every field has its own prefix, so the type needs none.
#[derive(CacheTags)]
struct Pair {
    #[cache_tag(prefix = "left")]
    left: char,
    #[cache_tag(prefix = "right")]
    right: i8,
}

/// Generic: the field's type must be `Display`.
#[derive(CacheTags)]
#[cache_tags(prefix = "order")]
struct Order<'a, K: Clone, V>
where
    V: Default,
{
    #[cache_tag]
    key: K,
    #[cache_tag(prefix = "customer")]
    customer: Option<&'a str>,
    #[allow(dead_code)]
    value: V,
}

/// A type of one's own with `Display`.
struct Slug(&'static str);

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

#[derive(CacheTags)]
#[cache_tags(prefix = "page")]
pub struct Page {
    #[cache_tag]
    slug: Slug,
}

#[test]
fn every_form_gives_its_tags() {
    let p = Product {
        id: 1,
        category_id: 7,
        brand: None,
        line: Some("lamps"),
        name: "Lamp".into(),
    };
    assert_eq!(
        p.cache_tags(),
        [
            "product:1",
            "sku:1",
            "category:7",
            "shop.v2/line-item_x:lamps"
        ]
    );
    let p = Product {
        brand: Some("Acme Corp".into()),
        ..p
    };
    assert!(p.cache_tags().contains(&"brand:Acme Corp".to_string()));
    assert_eq!(UserId(3).cache_tags(), ["user:3"]);
    assert_eq!(
        Pair {
            left: 'a',
            right: -1
        }
        .cache_tags(),
        ["left:a", "right:-1"]
    );
    let order = Order {
        key: "A-1".to_string(),
        customer: Some("c9"),
        value: 0u8,
    };
    assert_eq!(order.cache_tags(), ["order:A-1", "customer:c9"]);
    assert_eq!(
        Page {
            slug: Slug("about")
        }
        .cache_tags(),
        ["page:about"]
    );
    // References and lists of values.
    assert_eq!(<&UserId as CacheTags>::cache_tags(&&UserId(4)), ["user:4"]);
    assert_eq!(
        vec![UserId(1), UserId(2)].cache_tags(),
        ["user:1", "user:2"]
    );
}

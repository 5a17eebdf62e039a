//! Model tags: the tags a domain value stands for, so that the handler that caches a page about
//! the value and the code that changes the value spell its tags the same way.
//!
//! What lives here: the [`CacheTags`] trait (which `#[derive(CacheTags)]` in `cache-actix`
//! implements), its impls for references, boxes, `Arc`s, slices and `Vec`s, and
//! [`check_tag_prefix`], the rule for prefixes that the derive checks at compile time.
//!
//! What must stay true: a value's tags depend on the value alone (never on the clock or a
//! request), so the tags stored with a page and the tags invalidated after a change are equal
//! whenever the value is; the prefix rule is the derive's only rule, so compile time and any
//! run-time check agree.

use std::sync::Arc;

use crate::policy::PolicyError;

/// The tags a value stands for: `product:1` and `category:7` for product 1 of category 7.
///
/// [`crate::Cache::invalidate`] invalidates them; `cache_actix::Cached::tags_of` stores a
/// response under them. Derive it with `#[derive(CacheTags)]` from `cache-actix` (field values
/// through `Display`, `Option` fields only when `Some`), or write it by hand:
///
/// ```
/// use cache_core::CacheTags;
///
/// struct Product { id: u32, category_id: u32 }
///
/// impl CacheTags for Product {
///     fn cache_tags(&self) -> Vec<String> {
///         vec![format!("product:{}", self.id), format!("category:{}", self.category_id)]
///     }
/// }
///
/// let p = Product { id: 1, category_id: 7 };
/// assert_eq!(p.cache_tags(), ["product:1", "category:7"]);
/// // A list of values stands for all their tags.
/// assert_eq!(vec![p].cache_tags(), ["product:1", "category:7"]);
/// ```
pub trait CacheTags {
    /// The tags, in a fixed order (duplicates allowed: every consumer tolerates them).
    fn cache_tags(&self) -> Vec<String>;
}

impl<T: CacheTags + ?Sized> CacheTags for &T {
    fn cache_tags(&self) -> Vec<String> {
        (**self).cache_tags()
    }
}

impl<T: CacheTags + ?Sized> CacheTags for Box<T> {
    fn cache_tags(&self) -> Vec<String> {
        (**self).cache_tags()
    }
}

impl<T: CacheTags + ?Sized> CacheTags for Arc<T> {
    fn cache_tags(&self) -> Vec<String> {
        (**self).cache_tags()
    }
}

/// Every element's tags, in order: a page listing several products is stored under each.
impl<T: CacheTags> CacheTags for [T] {
    fn cache_tags(&self) -> Vec<String> {
        self.iter().flat_map(CacheTags::cache_tags).collect()
    }
}

/// Every element's tags, in order.
impl<T: CacheTags> CacheTags for Vec<T> {
    fn cache_tags(&self) -> Vec<String> {
        self.as_slice().cache_tags()
    }
}

/// Checks a model tag prefix (`product` in `product:1`): not empty, and only ASCII letters,
/// digits, `_`, `-`, `.` and `/`. So the tag reads as `<prefix>:<value>` with one `:` that
/// cannot be mistaken for part of the prefix, the same tag can be written in a
/// `#[cached(tags = ["product:{id}"])]` template (which has no escape for braces) and in a
/// `cache-tag` response header (split on commas), and a CDN header carries the prefix as is.
///
/// ```
/// use cache_core::check_tag_prefix;
/// assert!(check_tag_prefix("product").is_ok());
/// assert!(check_tag_prefix("shop.v2/product-line").is_ok());
/// for bad in ["", "shop:product", "my product", "a,b", "{id}", "produit\u{e9}"] {
///     assert!(check_tag_prefix(bad).is_err(), "{bad:?}");
/// }
/// ```
pub fn check_tag_prefix(prefix: &str) -> Result<(), PolicyError> {
    if prefix.is_empty() {
        return Err(PolicyError("empty tag prefix".into()));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/');
    match prefix.chars().find(|c| !allowed(*c)) {
        None => Ok(()),
        Some(c) => Err(PolicyError(format!(
            "tag prefix `{}` contains {:?}; a prefix is ASCII letters, digits, `_`, `-`, `.` and `/` \
             (the `:` between prefix and value is added for you)",
            prefix.escape_debug(),
            c
        ))),
    }
}

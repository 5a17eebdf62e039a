//! The `#[cached(...)]` attribute and the `#[derive(CacheTags)]` derive of `cache-actix`. Users
//! reach them as `cache_actix::cached` and `cache_actix::CacheTags`; nothing else in this crate
//! is public. Depend on `cache-actix`, not on this crate: the code both generate names
//! `::cache_actix` items. The runnable examples live in cache-actix's
//! documentation (its crate-level example and the README's policy section) and in its tests.
//!
//! What lives here: the attribute's entry point, which ties together the private `args` module
//! (parse and validate the arguments, check tag placeholders against the route) and the private
//! `expand` module (check the fn's shape and generate the wrapper); and the derive's entry point,
//! whose whole body is the private `derive_tags` module.
//!
//! What must stay true: the macro never panics on user input. Every problem becomes a
//! `compile_error!` spanned on the offending token, and the original fn is emitted beside the
//! errors, so one mistake in the attribute does not turn into a cascade of "cannot find
//! `get_product`" errors wherever the handler is registered.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod args;
mod derive_tags;
mod expand;

use proc_macro::TokenStream;
use quote::quote;
use syn::{DeriveInput, ItemFn};

use crate::args::CacheArgs;

/// Caches the responses of an actix-web handler.
///
/// The example is not compiled here: a proc-macro crate cannot use its own macro in a doctest,
/// and the expansion names `::cache_actix` items. It is compiled and run, with a
/// `CacheMiddleware` in front of the handler, in cache-actix's crate documentation; every key and
/// placement is compiled in cache-actix's `tests/macros/every_form.rs`, and the behaviour behind
/// the middleware is tested in its `tests/macros/main.rs`.
///
/// ```ignore
/// use actix_web::{get, web, App, Responder};
/// use cache_actix::{cached, Cache, CacheMiddleware};
///
/// /// The product page; fresh for 30 seconds, one entry per `Authorization` value, dropped when
/// /// either tag is invalidated (`cache.invalidate_tag("product:7")` drops only product 7).
/// #[cached(ttl = 30, vary = "Authorization", tags = ["products", "product:{id}"])]
/// #[get("/products/{id}")]
/// async fn get_product(id: web::Path<u32>) -> impl Responder {
///     format!("product {id}")
/// }
///
/// // The attribute only attaches a policy; the middleware on the scope does the caching.
/// let cache = Cache::memory();
/// let app = App::new()
///     .app_data(web::Data::new(cache.clone()))
///     .service(web::scope("").wrap(CacheMiddleware::new(cache)).service(get_product));
/// ```
///
/// The handler keeps its name, attributes and extractors; its result is wrapped in
/// `cache_actix::Cached<_>`, which hands the policy to `CacheMiddleware`. The attribute may sit
/// above or below actix's route attribute, and also works on a plain `async fn` registered with
/// `web::resource("/x").to(handler)`.
///
/// Keys (only `ttl` is required):
///
/// | key | value |
/// |-----|-------|
/// | `ttl` | seconds (`30`) or a duration string (`"30s"`, `"5m"`, `"1h"`, `"1d"`); not zero |
/// | `vary` | a header name or a list of them: `"Authorization"`, `["Authorization", "Accept-Language"]` |
/// | `vary_cookie` | a cookie name or a list of them: `"sid"`, `["sid", "lang"]`; keys on those cookies' values, not on the whole `Cookie` header |
/// | `tags` | a list of tags; `{name}` is filled from the route's match info: `["products", "product:{id}"]` |
/// | `stale_while_revalidate` | duration; how long a stale copy may be served while one refresh runs |
/// | `stale_if_error` | duration; how long a stale copy may be served when the handler fails |
/// | `max_age` | duration; the client `max-age` (default: the whole ttl; clients subtract `Age`) |
/// | `private` / `public` | flag (or `= true`); what `Cache-Control` tells clients; not both |
/// | `statuses` | extra status codes to store: `[404, 301]` (by default only 2xx except 206) |
///
/// Rejected at compile time, with the error on the offending token: unknown or repeated keys, a
/// missing `ttl`, `ttl = 0`, invalid header or cookie names, status codes outside 100..=599, tags
/// with unbalanced braces, `private` together with `public`, a tag `{name}` that the route of an
/// actix route attribute on the same fn does not define, a fn that is not `async`, takes `self`,
/// or has no return type.
///
/// The route check only sees a route attribute written *below* `#[cached]` (actix consumes the
/// ones above first). It checks against that attribute's own path, so a tag that uses a parameter
/// of an enclosing `web::scope` is rejected there; put `#[cached]` below the route attribute in
/// that case.
#[proc_macro_attribute]
pub fn cached(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func = match syn::parse::<ItemFn>(item.clone()) {
        Ok(func) => func,
        Err(err) => {
            let err = syn::Error::new(
                err.span(),
                format!("#[cached] applies to an async fn: {err}"),
            )
            .into_compile_error();
            let item = proc_macro2::TokenStream::from(item);
            return quote!(#err #item).into();
        }
    };

    let args = syn::parse::<CacheArgs>(attr);
    let checked = match (args, expand::check_fn(&func.sig)) {
        (Ok(args), Ok(())) => args::check_tag_routes(&args, &func.attrs).map(|()| args),
        (Ok(args), Err(fn_err)) => {
            // Still report route mismatches so one build shows every mistake.
            let mut all = fn_err;
            if let Err(route_err) = args::check_tag_routes(&args, &func.attrs) {
                all.combine(route_err);
            }
            Err(all)
        }
        (Err(mut args_err), fn_result) => {
            if let Err(fn_err) = fn_result {
                args_err.combine(fn_err);
            }
            Err(args_err)
        }
    };

    match checked {
        Ok(args) => expand::expand(&args, func).into(),
        Err(err) => {
            let err = err.into_compile_error();
            let mut func = func;
            // Recovery only (the build already fails): an `async` fallback keeps a route macro on
            // the same fn from adding a second, less helpful "not a Handler" error.
            if func.sig.asyncness.is_none() {
                func.sig.asyncness = Some(syn::Token![async](func.sig.fn_token.span));
            }
            quote!(#err #func).into()
        }
    }
}

/// Implements `cache_actix::CacheTags` for a struct: the tags its values stand for, so that a
/// page cached with `Cached::tags_of(&product)` is dropped by `cache.invalidate(&product)`.
///
/// The example is not compiled here (a proc-macro crate cannot use its own derive, and the
/// expansion names `::cache_actix`); it is compiled and run in the documentation of
/// `cache_actix::CacheTags`, and every accepted form in cache-actix's `tests/macros/tag_forms.rs`.
///
/// ```ignore
/// use cache_actix::CacheTags;
///
/// #[derive(CacheTags)]
/// #[cache_tags(prefix = "product")]
/// struct Product {
///     #[cache_tag]
///     id: u32,
///     #[cache_tag(prefix = "category")]
///     category_id: u32,
///     #[cache_tag(prefix = "brand")]
///     brand: Option<String>,
///     name: String,
/// }
/// let p = Product { id: 1, category_id: 7, brand: None, name: "Lamp".into() };
/// assert_eq!(p.cache_tags(), ["product:1", "category:7"]);
/// ```
///
/// - `#[cache_tags(prefix = "...")]` on the type: the prefix of its bare `#[cache_tag]` fields
///   (required when there is one).
/// - `#[cache_tag]` on a field: the tag `<type prefix>:<value>`; `#[cache_tag(prefix = "...")]`:
///   `<prefix>:<value>`. A field may carry several with different prefixes.
/// - Values go through `Display` (integers, strings, `Uuid`...). A field spelled `Option<T>`
///   gives its tag only when `Some` (a type alias of `Option` is not recognised and does not
///   compile, as `Option` has no `Display`).
/// - Named and tuple structs, generic ones too (each tagged field's type must be `Display`).
///
/// Rejected at compile time, on the offending token: an enum or a union, a struct with no
/// `#[cache_tag]` field, a bare `#[cache_tag]` without a type prefix, unknown or repeated keys,
/// a prefix that is empty or holds anything but ASCII letters, digits, `_`, `-`, `.` and `/`
/// (so no `:`, whitespace, comma or brace), the same prefix twice on one field, and a tagged
/// field whose type is not `Display`.
#[proc_macro_derive(CacheTags, attributes(cache_tags, cache_tag))]
pub fn derive_cache_tags(input: TokenStream) -> TokenStream {
    match syn::parse::<DeriveInput>(input) {
        Ok(input) => derive_tags::derive(input).into(),
        Err(err) => err.into_compile_error().into(),
    }
}

//! [`Cached<R>`]: a responder that carries a [`CachePolicy`] to `CacheMiddleware`.
//!
//! What must stay true: the policy travels in the response's extensions, never in a header, so
//! nothing of it reaches the client unless the middleware decides so; tag templates are filled
//! from the route's match info here, where the request is at hand.

use actix_web::{body::BoxBody, HttpRequest, HttpResponse, Responder};
use cache_core::{CachePolicy, CacheTags};

/// The policy of one response, tags filled in; read by the middleware from the extensions.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedPolicy {
    pub(crate) policy: CachePolicy,
    pub(crate) tags: Vec<String>,
    /// Whether it is the scope's default rule rather than the handler's own policy: the rule
    /// does not know what the page reads, so cookies are treated as identity.
    pub(crate) from_scope: bool,
}

/// A response with a cache policy. `#[cached(...)]` wraps handler results in it; write it by
/// hand to choose the policy at run time or to add tags known only after the handler ran.
///
/// ```
/// use std::time::Duration;
/// use actix_web::{web, HttpResponse};
/// use cache_actix::{Cached, CachePolicy};
///
/// async fn profile(user: web::Path<u32>) -> Cached<HttpResponse> {
///     let policy = CachePolicy::new(Duration::from_secs(60)).tag("profiles");
///     Cached::new(HttpResponse::Ok().body("..."), policy).tag(format!("user:{user}"))
/// }
/// let app = actix_web::App::new().route("/users/{id}", web::get().to(profile));
/// ```
#[derive(Debug)]
pub struct Cached<R> {
    inner: R,
    policy: CachePolicy,
    tags: Vec<String>,
}

impl<R> Cached<R> {
    /// Wraps a responder with a policy.
    pub fn new(inner: R, policy: CachePolicy) -> Cached<R> {
        Cached {
            inner,
            policy,
            tags: Vec::new(),
        }
    }

    /// Adds a tag known at run time (taken as is: no `{name}` filling).
    pub fn tag(mut self, tag: impl Into<String>) -> Cached<R> {
        self.tags.push(tag.into());
        self
    }

    /// Adds the tags of a value ([`CacheTags`], usually `#[derive(CacheTags)]`), so that
    /// `cache.invalidate(&value)` after a change drops this response. A list of values adds
    /// every element's tags (a page listing several products).
    ///
    /// ```
    /// use std::time::Duration;
    /// use actix_web::{web, HttpResponse};
    /// use cache_actix::{Cache, CachePolicy, CacheTags, Cached};
    ///
    /// #[derive(CacheTags, serde::Serialize)]
    /// #[cache_tags(prefix = "product")]
    /// struct Product {
    ///     #[cache_tag]
    ///     id: u32,
    ///     #[cache_tag(prefix = "category")]
    ///     category_id: u32,
    /// }
    ///
    /// /// Stored under `product:1` and `category:7` for product 1 of category 7.
    /// async fn show(id: web::Path<u32>) -> Cached<HttpResponse> {
    ///     let product = Product { id: *id, category_id: 7 };
    ///     let policy = CachePolicy::new(Duration::from_secs(60));
    ///     Cached::new(HttpResponse::Ok().json(&product), policy).tags_of(&product)
    /// }
    ///
    /// /// After the change, the next GET of the page runs `show` again.
    /// async fn rename(id: web::Path<u32>, cache: Cache) -> actix_web::Result<&'static str> {
    ///     let product = Product { id: *id, category_id: 7 };
    ///     cache.invalidate(&product).await?;
    ///     Ok("renamed")
    /// }
    /// let app = actix_web::App::new()
    ///     .route("/products/{id}", web::get().to(show))
    ///     .route("/products/{id}", web::post().to(rename));
    /// ```
    pub fn tags_of<T: CacheTags + ?Sized>(mut self, value: &T) -> Cached<R> {
        self.tags.extend(value.cache_tags());
        self
    }

    /// The policy.
    pub fn policy(&self) -> &CachePolicy {
        &self.policy
    }

    /// The wrapped responder.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Responder> Responder for Cached<R> {
    type Body = BoxBody;

    fn respond_to(self, req: &HttpRequest) -> HttpResponse<BoxBody> {
        let mut res = self.inner.respond_to(req).map_into_boxed_body();
        let info = req.match_info();
        let mut tags: Vec<String> = self
            .policy
            .tag_templates()
            .iter()
            .map(|t| t.render(|name| info.get(name).map(str::to_owned)))
            .collect();
        tags.extend(self.tags);
        res.extensions_mut().insert(ResolvedPolicy {
            from_scope: false,
            policy: self.policy,
            tags,
        });
        res
    }
}

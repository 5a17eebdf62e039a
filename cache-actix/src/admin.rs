//! The optional admin scope: purge a tag, a URL or everything, and read the stats as JSON.
//! Off unless you mount it; every route demands `Authorization: Bearer <token>`.
//!
//! What must stay true: the token is compared in constant time, an empty token opens nothing,
//! and a refused request learns nothing but 401.

use actix_web::{http::header, web, HttpRequest, HttpResponse, Scope};
use cache_core::{Cache, Stats, TierStats};
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

#[derive(Clone)]
struct AdminState {
    cache: Cache,
    token: String,
}

/// Builds the admin scope at `path`:
///
/// | route | does |
/// |---|---|
/// | `GET {path}/stats` | the counters as JSON, and `in_sync` ([`Cache::in_sync`]) |
/// | `POST {path}/purge/tag/{tag}` | `invalidate_tag(tag)` |
/// | `POST {path}/purge/url` with JSON `{"host": "...", "path": "/p?q=1"}` | drops one URL |
/// | `POST {path}/purge/all` | `purge_all()` |
///
/// ```
/// use actix_web::App;
/// use cache_actix::{admin, Cache};
/// let cache = Cache::memory();
/// if let Ok(token) = std::env::var("CACHE_ADMIN_TOKEN") {
///     let app = App::new().service(admin::scope("/_cache", cache.clone(), token));
/// }
/// ```
pub fn scope(path: &str, cache: Cache, token: impl Into<String>) -> Scope {
    let state = AdminState {
        cache,
        token: token.into(),
    };
    web::scope(path)
        .app_data(web::Data::new(state))
        .route("/stats", web::get().to(stats))
        .route("/purge/tag/{tag}", web::post().to(purge_tag))
        .route("/purge/url", web::post().to(purge_url))
        .route("/purge/all", web::post().to(purge_all))
}

fn authorized(req: &HttpRequest, state: &AdminState) -> bool {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    !state.token.is_empty() && bool::from(presented.ct_eq(state.token.as_bytes()))
}

fn refused() -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
        .finish()
}

fn result(outcome: Result<(), cache_core::CacheError>) -> HttpResponse {
    match outcome {
        Ok(()) => HttpResponse::Ok().json(json!({ "ok": true })),
        Err(err) => {
            tracing::warn!(error = %err, "admin purge failed");
            HttpResponse::BadGateway()
                .json(json!({ "ok": false, "error": "cache backend unavailable" }))
        }
    }
}

async fn stats(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    if !authorized(&req, &state) {
        return refused();
    }
    let mut body = stats_json(&state.cache.stats());
    // Whether this process currently receives every invalidation: a readiness probe's question.
    body["in_sync"] = Value::Bool(state.cache.in_sync());
    HttpResponse::Ok().json(body)
}

async fn purge_tag(
    req: HttpRequest,
    tag: web::Path<String>,
    state: web::Data<AdminState>,
) -> HttpResponse {
    if !authorized(&req, &state) {
        return refused();
    }
    result(state.cache.invalidate_tag(tag.into_inner()).await)
}

#[derive(Deserialize)]
struct UrlBody {
    host: String,
    path: String,
}

async fn purge_url(
    req: HttpRequest,
    body: web::Json<UrlBody>,
    state: web::Data<AdminState>,
) -> HttpResponse {
    if !authorized(&req, &state) {
        return refused();
    }
    let (path, query) = body.path.split_once('?').unwrap_or((&body.path, ""));
    let primary = state
        .cache
        .primary_key(body.host.as_bytes(), path.as_bytes(), query.as_bytes());
    result(state.cache.purge_url(&primary).await)
}

async fn purge_all(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    if !authorized(&req, &state) {
        return refused();
    }
    result(state.cache.purge_all().await)
}

fn tier_json(t: &TierStats) -> Value {
    json!({
        "hits": t.hits, "misses": t.misses, "stores": t.stores, "errors": t.errors,
        "evictions": t.evictions, "entries": t.entries, "bytes": t.bytes,
    })
}

/// The stats as the admin scope serves them.
///
/// ```
/// let json = cache_actix::admin::stats_json(&cache_actix::Cache::memory().stats());
/// assert_eq!(json["hits"], 0);
/// ```
pub fn stats_json(s: &Stats) -> Value {
    json!({
        "hits": s.hits, "misses": s.misses, "stale_hits": s.stale_hits, "stores": s.stores,
        "bypasses": s.bypasses, "evictions": s.evictions, "invalidations": s.invalidations,
        "errors": s.errors, "entries": s.entries, "bytes": s.bytes,
        "l1": tier_json(&s.l1), "l2": tier_json(&s.l2),
    })
}

//! The optional admin scope: purge or soft-purge a tag, purge a URL or everything, and read the stats as JSON.
//! Off unless you mount it; every route demands `Authorization: Bearer <token>`.
//!
//! What must stay true: every route authenticates before it reads anything of the request
//! beyond its head (a body is read only after the token matched, so a refused request is a
//! 401 whatever it carries, never a 400 or a 413); the token is compared as SHA-256 digests in
//! constant time, so neither its bytes nor its length leak through timing; an empty token
//! opens nothing.

use actix_web::{http::header, web, HttpRequest, HttpResponse, Scope};
use cache_core::{key::QueryOrder, Cache, Stats, TierStats};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Largest body the admin routes read: a URL purge is a host and a path.
const MAX_ADMIN_BODY: usize = 16 << 10;

#[derive(Clone)]
struct AdminState {
    cache: Cache,
    /// SHA-256 of the token; `None` for an empty token, which opens nothing.
    token_digest: Option<[u8; 32]>,
}

/// Builds the admin scope at `path`:
///
/// | route | does |
/// |---|---|
/// | `GET {path}/stats` | the counters as JSON, and `in_sync` ([`Cache::in_sync`]) |
/// | `POST {path}/purge/tag/{tag}` | `invalidate_tag(tag)` |
/// | `POST {path}/soft-purge/tag/{tag}` | `soft_invalidate_tag(tag)`: stale, refreshed in the background |
/// | `POST {path}/purge/url` with JSON `{"host": "...", "path": "/p?q=1"}` (and optionally `"scheme"`; both `http` and `https` without it) | drops one URL |
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
    let token = token.into();
    let state = AdminState {
        cache,
        token_digest: (!token.is_empty()).then(|| digest(token.as_bytes())),
    };
    web::scope(path)
        .app_data(web::Data::new(state))
        .route("/stats", web::get().to(stats))
        .route("/purge/tag/{tag}", web::post().to(purge_tag))
        .route("/soft-purge/tag/{tag}", web::post().to(soft_purge_tag))
        .route("/purge/url", web::post().to(purge_url))
        .route("/purge/all", web::post().to(purge_all))
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn authorized(req: &HttpRequest, state: &AdminState) -> bool {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    // Digests of equal length: the comparison's time says nothing about the token's length.
    let presented = digest(presented);
    state
        .token_digest
        .is_some_and(|token| bool::from(presented.ct_eq(&token)))
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

async fn soft_purge_tag(
    req: HttpRequest,
    tag: web::Path<String>,
    state: web::Data<AdminState>,
) -> HttpResponse {
    if !authorized(&req, &state) {
        return refused();
    }
    result(state.cache.soft_invalidate_tag(tag.into_inner()).await)
}

#[derive(Deserialize)]
struct UrlBody {
    host: String,
    path: String,
    scheme: Option<String>,
}

/// Reads a JSON body of at most [`MAX_ADMIN_BODY`]; only called once the token matched.
async fn read_json<T: serde::de::DeserializeOwned>(
    mut payload: web::Payload,
) -> Result<T, HttpResponse> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| HttpResponse::BadRequest().finish())?;
        if body.len() + chunk.len() > MAX_ADMIN_BODY {
            return Err(HttpResponse::PayloadTooLarge().finish());
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|err| {
        HttpResponse::BadRequest().json(json!({ "ok": false, "error": err.to_string() }))
    })
}

async fn purge_url(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AdminState>,
) -> HttpResponse {
    if !authorized(&req, &state) {
        return refused();
    }
    let body: UrlBody = match read_json(payload).await {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let (path, query) = body.path.split_once('?').unwrap_or((&body.path, ""));
    let schemes = match &body.scheme {
        Some(scheme) => vec![scheme.as_str()],
        None => vec!["http", "https"],
    };
    // The middleware keys on `scheme://host`, with the query sorted (policies) or as sent
    // (the HTTP mode): drop every spelling this URL can have been stored under.
    for scheme in schemes {
        let authority = format!("{scheme}://{}", body.host);
        for order in [QueryOrder::ByDecodedName, QueryOrder::AsSent] {
            let primary = state.cache.primary_key_with(
                authority.as_bytes(),
                path.as_bytes(),
                query.as_bytes(),
                order,
            );
            if let Err(err) = state.cache.purge_url(&primary).await {
                return result(Err(err));
            }
        }
    }
    result(Ok(()))
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
        "unverified": t.unverified, "clocks_at_risk": t.clocks_at_risk,
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

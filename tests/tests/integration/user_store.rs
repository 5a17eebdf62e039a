//! A user-written `Store` plugged in through the public trait, and a lying store that returns
//! another key's record: the cache must turn that into a miss, never someone else's response.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use actix_web::{dev::Service, test, web, App, HttpRequest, HttpResponse};
use cache_actix::{
    async_trait, Cache, CacheError, CacheKey, CacheMiddleware, CachePolicy, Cached, Record, Store,
    TierStats,
};

/// A plain map; with `lie` it answers every lookup with whatever record it stored first.
#[derive(Default)]
struct MapStore {
    map: Mutex<HashMap<u128, Record>>,
    lie: bool,
}

#[async_trait]
impl Store for MapStore {
    async fn get(&self, key: &CacheKey) -> Result<Option<Record>, CacheError> {
        let map = self
            .map
            .lock()
            .map_err(|_| CacheError::Backend("poisoned".into()))?;
        if self.lie {
            return Ok(map.values().next().cloned());
        }
        Ok(map.get(&key.hash()).cloned())
    }
    async fn put(&self, key: &CacheKey, record: Record) -> Result<(), CacheError> {
        self.map
            .lock()
            .map_err(|_| CacheError::Backend("poisoned".into()))?
            .insert(key.hash(), record);
        Ok(())
    }
    async fn remove(&self, key: &CacheKey) -> Result<(), CacheError> {
        self.map
            .lock()
            .map_err(|_| CacheError::Backend("poisoned".into()))?
            .remove(&key.hash());
        Ok(())
    }
    async fn clear(&self) -> Result<(), CacheError> {
        self.map
            .lock()
            .map_err(|_| CacheError::Backend("poisoned".into()))?
            .clear();
        Ok(())
    }
    fn stats(&self) -> TierStats {
        TierStats {
            entries: self.map.lock().map(|m| m.len() as u64).unwrap_or(0),
            ..TierStats::default()
        }
    }
}

async fn path_echo(req: HttpRequest) -> Cached<HttpResponse> {
    Cached::new(
        HttpResponse::Ok().body(req.path().to_string()),
        CachePolicy::new(Duration::from_secs(60)),
    )
}

async fn fetch<S>(app: &S, path: &str) -> (String, String)
where
    S: Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
    >,
{
    let reply = cache_actix_tests::send(app, test::TestRequest::get().uri(path)).await;
    (reply.x_cache().to_string(), reply.text())
}

#[actix_web::test]
async fn a_user_written_store_serves_hits() {
    let cache = Cache::builder().store(MapStore::default()).build();
    let app = test::init_service(
        App::new()
            .wrap(CacheMiddleware::new(cache.clone()))
            .route("/{x}", web::get().to(path_echo)),
    )
    .await;
    assert_eq!(fetch(&app, "/a").await, ("MISS".into(), "/a".into()));
    assert_eq!(fetch(&app, "/a").await, ("HIT".into(), "/a".into()));
    let stats = cache.stats();
    assert_eq!((stats.l2.hits, stats.l2.stores, stats.entries), (1, 1, 1));
}

#[actix_web::test]
async fn a_store_returning_another_keys_record_causes_a_miss() {
    let cache = Cache::builder()
        .store(MapStore {
            lie: true,
            ..MapStore::default()
        })
        .build();
    let app = test::init_service(
        App::new()
            .wrap(CacheMiddleware::new(cache))
            .route("/{x}", web::get().to(path_echo)),
    )
    .await;
    assert_eq!(fetch(&app, "/first").await.1, "/first");
    for other in ["/second", "/third"] {
        assert_eq!(
            fetch(&app, other).await,
            ("MISS".into(), other.to_string()),
            "served another key's response"
        );
    }
}

//! The two actix-web trait impls that Rust's orphan rule forces to live beside their types:
//! `FromRequest` for [`Cache`] and `ResponseError` for [`CacheError`]. Everything else about
//! actix lives in the `cache-actix` crate.

use std::future::{ready, Ready};

use actix_web::{
    dev::Payload, http::StatusCode, web, FromRequest, HttpMessage, HttpRequest, HttpResponse,
};

use crate::{Cache, CacheError};

impl actix_web::ResponseError for CacheError {
    fn status_code(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    fn error_response(&self) -> HttpResponse {
        // The detail (hosts, keys, backend messages) is for the log, not for the client.
        tracing::error!(error = %self, "cache operation failed");
        HttpResponse::InternalServerError().body("internal server error")
    }
}

/// Finds the cache in `web::Data<Cache>`, plain app data, or the request extensions that
/// `CacheMiddleware` fills; a handler asking for a cache that was never configured is a
/// programming error and answers 500.
impl FromRequest for Cache {
    type Error = actix_web::Error;
    type Future = Ready<Result<Cache, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let found = req
            .app_data::<web::Data<Cache>>()
            .map(|data| data.get_ref().clone())
            .or_else(|| req.app_data::<Cache>().cloned())
            .or_else(|| req.extensions().get::<Cache>().cloned());
        ready(found.ok_or_else(|| {
            tracing::error!(
                "no Cache found: add app_data(web::Data::new(cache)) or wrap with CacheMiddleware"
            );
            actix_web::error::ErrorInternalServerError("internal server error")
        }))
    }
}

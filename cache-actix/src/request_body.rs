//! Whether a GET or HEAD carried a body. HTTP/1 says so in its head (`Content-Length`,
//! `Transfer-Encoding`); HTTP/2 and HTTP/3 may send body frames with neither, so for them the
//! payload is watched while the handler reads it.
//!
//! What must stay true: a fill whose request turned out to carry a body is never stored, since
//! the handler may have made the answer from it.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_web::dev::{Payload, ServiceRequest};
use actix_web::error::PayloadError;
use actix_web::http::{header, header::HeaderMap, Version};
use actix_web::HttpMessage;
use bytes::Bytes;
use futures_util::Stream;

/// Whether the head announces a body (`Content-Length` other than 0, or `Transfer-Encoding`).
/// An unreadable length counts as a body.
pub(crate) fn announced(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get_all(header::CONTENT_LENGTH)
            .any(|v| v.as_bytes().trim_ascii() != b"0")
}

/// Set once the handler read a non-empty chunk of a body the head did not announce.
#[derive(Clone, Default)]
pub(crate) struct Seen(Rc<Cell<bool>>);

impl Seen {
    pub(crate) fn get(&self) -> bool {
        self.0.get()
    }
}

/// Wraps the payload of a request whose protocol can carry an unannounced body (HTTP/2 and
/// later) so that reading any of it is noticed; HTTP/1 requests are left as they are.
pub(crate) fn watch(req: &mut ServiceRequest) -> Seen {
    let seen = Seen::default();
    if req.version() >= Version::HTTP_2 {
        let inner = req.take_payload();
        let watched: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(Watched {
            inner,
            seen: seen.clone(),
        });
        req.set_payload(Payload::from(watched));
    }
    seen
}

struct Watched {
    inner: Payload,
    seen: Seen,
}

impl Stream for Watched {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &next {
            if !chunk.is_empty() {
                self.seen.0.set(true);
            }
        }
        next
    }
}

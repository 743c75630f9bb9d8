//! Headers every answer carries, whichever face gives it: `nosniff`, no
//! referrer, nothing cached unless the handler said it may be (the JWKS,
//! discovery, this API's description), `Pragma: no-cache` beside `no-store`
//! for HTTP/1.0 caches (RFC 6749 §5.1), and JSON labelled UTF-8. One pass
//! over the response head, no allocation per request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::{HeaderMap, HeaderValue, Request, header};
use axum::response::Response;

/// Adds the headers of the module's description to every response.
#[derive(Debug, Clone, Copy, Default)]
pub struct HardenLayer;

impl<S> tower::Layer<S> for HardenLayer {
    type Service = Harden<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Harden { inner }
    }
}

/// The service [`HardenLayer`] makes.
#[derive(Debug, Clone)]
pub struct Harden<S> {
    inner: S,
}

impl<S, B> tower::Service<Request<B>> for Harden<S>
where
    S: tower::Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Hardened<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        Hardened {
            answer: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// A response, hardened when it is ready.
    pub struct Hardened<F> {
        #[pin]
        answer: F,
    }
}

impl<F, E> Future for Hardened<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut answer = std::task::ready!(self.project().answer.poll(cx));
        if let Ok(response) = &mut answer {
            harden(response.headers_mut());
        }
        Poll::Ready(answer)
    }
}

const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// What [`HardenLayer`] does to one response's headers.
pub fn harden(headers: &mut HeaderMap) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    let cache_control = headers.entry(header::CACHE_CONTROL).or_insert(NO_STORE);
    if cache_control.as_bytes().starts_with(b"no-store") {
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    }
    let labelled = match headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes) {
        Some(b"application/json") => Some("application/json; charset=utf-8"),
        Some(b"application/problem+json") => Some("application/problem+json; charset=utf-8"),
        _ => None,
    };
    if let Some(labelled) = labelled {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(labelled));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_json_answer_is_hardened() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        harden(&mut headers);
        assert_eq!(headers["content-type"], "application/json; charset=utf-8");
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(headers["pragma"], "no-cache");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["referrer-policy"], "no-referrer");
    }

    #[test]
    fn a_cacheable_document_keeps_its_caching_and_other_types_are_left_alone() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        harden(&mut headers);
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        assert_eq!(headers["cache-control"], "public, max-age=300");
        assert!(headers.get("pragma").is_none());
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
}

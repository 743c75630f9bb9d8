//! `http.request_timeout`, answered in the shape of the face that was asked.
//!
//! A request that runs out of time is answered by its face, as any other
//! refusal of that face: a problem document on the native and admin APIs,
//! an RFC 6749 error (or the error page) on the OAuth face, each contract's
//! own body on the contract faces. Two cases are told apart, because an
//! operator alerts on the second and not on the first: the client had not
//! finished sending its body (408, the client's doing) or the answer was not
//! ready (503 with `Retry-After`, Sesame's or its database's).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::response::Response;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// What ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overrun {
    /// The request's body had not all arrived: the client is slow (408).
    Body,
    /// The body had arrived (or there was none) and the answer was not
    /// ready: Sesame or its database is slow (503, worth retrying).
    Answer,
}

impl Overrun {
    /// The core error a face renders for an answer not ready in time.
    pub fn busy() -> crate::core::Error {
        crate::core::Error::Busy {
            retry_after_secs: 1,
        }
    }
}

/// Limits each request of the routes it wraps to `after`, and answers one
/// that overruns with `answer`, given what `note` took from the request
/// before it ran (the face may need its path or language; most need
/// nothing, `()`).
pub struct Deadline<N> {
    after: Duration,
    note: fn(&Request) -> N,
    answer: fn(N, Overrun) -> Response,
}

impl<N> Clone for Deadline<N> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<N> Copy for Deadline<N> {}

impl Deadline<()> {
    /// A deadline whose answer needs nothing of the request.
    pub fn new(after: Duration, answer: fn((), Overrun) -> Response) -> Self {
        Deadline {
            after,
            note: |_| (),
            answer,
        }
    }
}

impl<N> Deadline<N> {
    /// A deadline whose answer needs what `note` takes from the request.
    pub fn noting(
        after: Duration,
        note: fn(&Request) -> N,
        answer: fn(N, Overrun) -> Response,
    ) -> Self {
        Deadline {
            after,
            note,
            answer,
        }
    }
}

impl<S, N> Layer<S> for Deadline<N> {
    type Service = DeadlineService<S, N>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService {
            inner,
            deadline: *self,
        }
    }
}

/// The service [`Deadline`] wraps around a route.
pub struct DeadlineService<S, N> {
    inner: S,
    deadline: Deadline<N>,
}

impl<S: Clone, N> Clone for DeadlineService<S, N> {
    fn clone(&self) -> Self {
        DeadlineService {
            inner: self.inner.clone(),
            deadline: self.deadline,
        }
    }
}

impl<S, N> Service<Request> for DeadlineService<S, N>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = DeadlineFuture<S::Future, N>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let note = (self.deadline.note)(&request);
        // Only a body still to come is watched: a request without one (the
        // hot path's GETs) costs no allocation here.
        let (request, arrived) = if request.body().is_end_stream() {
            (request, None)
        } else {
            let arrived = Arc::new(AtomicBool::new(false));
            let (parts, body) = request.into_parts();
            let body = Body::new(Watched {
                inner: body,
                arrived: arrived.clone(),
            });
            (Request::from_parts(parts, body), Some(arrived))
        };
        DeadlineFuture {
            inner: self.inner.call(request),
            sleep: tokio::time::sleep(self.deadline.after),
            overran: Some((note, self.deadline.answer, arrived)),
        }
    }
}

type Overran<N> = (N, fn(N, Overrun) -> Response, Option<Arc<AtomicBool>>);

pin_project! {
    /// The route's answer, or the face's when the time is up first.
    pub struct DeadlineFuture<F, N> {
        #[pin]
        inner: F,
        #[pin]
        sleep: tokio::time::Sleep,
        overran: Option<Overran<N>>,
    }
}

impl<F, N, E> Future for DeadlineFuture<F, N>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result);
        }
        if this.sleep.poll(cx).is_pending() {
            return Poll::Pending;
        }
        let Some((note, answer, arrived)) = this.overran.take() else {
            // Polled again after answering: nothing left to answer with.
            return Poll::Pending;
        };
        let overrun = match arrived {
            Some(arrived) if !arrived.load(Ordering::Acquire) => Overrun::Body,
            _ => Overrun::Answer,
        };
        // A slow client is the internet's everyday noise; a slow answer is
        // worth an operator's look.
        match overrun {
            Overrun::Body => {
                tracing::debug!("a request's body did not arrive within http.request_timeout")
            }
            Overrun::Answer => {
                tracing::warn!("a request was not answered within http.request_timeout")
            }
        }
        Poll::Ready(Ok(answer(note, overrun)))
    }
}

pin_project! {
    /// A request body that says when it has all arrived.
    struct Watched {
        #[pin]
        inner: Body,
        arrived: Arc<AtomicBool>,
    }
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        let done = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            _ => false,
        };
        if done {
            this.arrived.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

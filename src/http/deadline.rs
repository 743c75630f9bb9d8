//! `http.request_timeout`, answered in the shape of the face that was asked.
//!
//! A request that runs out of time is answered by its face, as any other
//! refusal of that face: a problem document on the native and admin APIs,
//! an RFC 6749 error (or the error page) on the OAuth face, each contract's
//! own body on the contract faces. Two cases are told apart, because an
//! operator alerts on the second and not on the first: the handler was
//! waiting for the rest of a body the client had not sent (408, the
//! client's doing), or for anything else (503 with `Retry-After`, Sesame's
//! or its database's doing). A body the handler has not started to read
//! when the time runs out (it was still checking the bearer token, say)
//! counts as Sesame's: the client may be holding it back on purpose
//! (`Expect: 100-continue` waits for the first read).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
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
    /// The handler was reading a body that had not all arrived: the
    /// client is slow (408).
    Body,
    /// The answer was not ready for any other reason: Sesame or its
    /// database is slow (503, worth retrying).
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
        let (request, reading) = if request.body().is_end_stream() {
            (request, None)
        } else {
            let reading = Arc::new(AtomicU8::new(UNREAD));
            let (parts, body) = request.into_parts();
            let body = Body::new(Watched {
                inner: body,
                reading: reading.clone(),
            });
            (Request::from_parts(parts, body), Some(reading))
        };
        DeadlineFuture {
            inner: self.inner.call(request),
            sleep: tokio::time::sleep(self.deadline.after),
            overran: Some((note, self.deadline.answer, reading)),
        }
    }
}

type Overran<N> = (N, fn(N, Overrun) -> Response, Option<Arc<AtomicU8>>);

/// How far the handler has read the body: not at all, in part, all of it.
const UNREAD: u8 = 0;
const READING: u8 = 1;
const READ: u8 = 2;

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
        let Some((note, answer, reading)) = this.overran.take() else {
            // Polled again after answering: nothing left to answer with.
            return Poll::Pending;
        };
        let overrun = match reading {
            Some(reading) if reading.load(Ordering::Acquire) == READING => Overrun::Body,
            _ => Overrun::Answer,
        };
        match overrun {
            // A slow client is the internet's everyday noise.
            Overrun::Body => {
                tracing::debug!("a request's body did not arrive within http.request_timeout")
            }
            // A slow answer is worth an operator's look, once a second at
            // most: under overload every request overruns at once.
            Overrun::Answer => {
                if let Some(missed) = LATE.once_a_second() {
                    tracing::warn!(
                        also_since_last_warning = missed,
                        "a request was not answered within http.request_timeout"
                    );
                }
            }
        }
        Poll::Ready(Ok(answer(note, overrun)))
    }
}

/// Warnings of late answers, at most one a second.
static LATE: Throttle = Throttle::new();

/// Lets one event a second through and counts the others.
struct Throttle {
    /// The second (since the first event, plus one) last let through.
    last: AtomicU64,
    missed: AtomicU64,
}

impl Throttle {
    const fn new() -> Self {
        Throttle {
            last: AtomicU64::new(0),
            missed: AtomicU64::new(0),
        }
    }

    /// `Some(events held back since the last one let through)` if this one
    /// may pass.
    fn once_a_second(&self) -> Option<u64> {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let now = START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_secs()
            + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != now
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.missed.swap(0, Ordering::Relaxed));
        }
        self.missed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

pin_project! {
    /// A request body that says how far the handler has read it.
    struct Watched {
        #[pin]
        inner: Body,
        reading: Arc<AtomicU8>,
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
            // Trailers come last.
            Poll::Ready(Some(Ok(frame))) => frame.is_trailers() || this.inner.is_end_stream(),
            _ => false,
        };
        this.reading
            .store(if done { READ } else { READING }, Ordering::Release);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use http_body::Frame;
    use tower::ServiceExt;

    use super::*;

    /// A body that yields its frames, then waits forever (a client that
    /// stops sending) or ends.
    struct Scripted {
        frames: VecDeque<Frame<Bytes>>,
        hang: bool,
    }

    impl HttpBody for Scripted {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            match self.frames.pop_front() {
                Some(frame) => Poll::Ready(Some(Ok(frame))),
                None if self.hang => Poll::Pending,
                None => Poll::Ready(None),
            }
        }
    }

    fn body(frames: Vec<Frame<Bytes>>) -> Body {
        Body::new(Scripted {
            frames: frames.into(),
            hang: true,
        })
    }

    fn data(text: &'static str) -> Frame<Bytes> {
        Frame::data(Bytes::from_static(text.as_bytes()))
    }

    /// Runs `handler` for a request with `body` under a 50 ms deadline and
    /// returns the status: 408 and 503 are the deadline's answers.
    async fn status<F, Fut>(body: Body, handler: F) -> StatusCode
    where
        F: FnOnce(Request) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let deadline = Deadline::new(Duration::from_millis(50), |(), overrun| match overrun {
            Overrun::Body => StatusCode::REQUEST_TIMEOUT.into_response(),
            Overrun::Answer => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        });
        let service = tower::service_fn(move |request: Request| {
            let handler = handler.clone();
            async move {
                handler(request).await;
                Ok::<_, std::convert::Infallible>(StatusCode::OK.into_response())
            }
        });
        let request = Request::post("/").body(body).unwrap();
        deadline
            .layer(service)
            .oneshot(request)
            .await
            .unwrap()
            .status()
    }

    async fn slow() {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }

    /// Reads frames until the body ends or a trailers frame comes.
    async fn read_to_trailers(request: Request) {
        let mut body = request.into_body();
        while let Some(Ok(frame)) =
            std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            if frame.is_trailers() {
                return;
            }
        }
    }

    #[tokio::test]
    async fn a_handler_waiting_for_the_rest_of_the_body_is_the_clients_fault() {
        let read = |request: Request| async move {
            let _ = axum::body::to_bytes(request.into_body(), 1 << 20).await;
        };
        assert_eq!(
            status(body(vec![data("half")]), read).await,
            StatusCode::REQUEST_TIMEOUT
        );
    }

    #[tokio::test]
    async fn a_body_not_yet_read_is_not_the_clients_fault() {
        // The handler is busy elsewhere (a slow database behind the bearer
        // check) and has not asked for the body the client holds back.
        let busy = |_: Request| slow();
        assert_eq!(
            status(body(vec![data("half")]), busy).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn a_body_read_to_the_end_is_not_the_clients_fault() {
        let read_then_wait = |request: Request| async move {
            let _ = axum::body::to_bytes(request.into_body(), 1 << 20).await;
            slow().await;
        };
        let whole = Body::new(Scripted {
            frames: vec![data("all of it")].into(),
            hang: false,
        });
        assert_eq!(
            status(whole, read_then_wait).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        // Trailers end a body even if the stream is not seen to end.
        let read_then_wait = |request: Request| async move {
            read_to_trailers(request).await;
            slow().await;
        };
        let with_trailers = body(vec![data("all"), Frame::trailers(HeaderMap::new())]);
        assert_eq!(
            status(with_trailers, read_then_wait).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn an_answer_in_time_is_the_handlers() {
        let quick = |request: Request| async move {
            let _ = axum::body::to_bytes(request.into_body(), 1 << 20).await;
        };
        let whole = Body::new(Scripted {
            frames: vec![data("{}")].into(),
            hang: false,
        });
        assert_eq!(status(whole, quick).await, StatusCode::OK);
        assert_eq!(
            status(Body::empty(), |_| slow()).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}

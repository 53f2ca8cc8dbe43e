//! A response body that holds what its request took until the body ends: the function's slot,
//! its in-flight gauge and its warm state. A guest may stream its body long after the response
//! head; until the last frame (or the client going away drops the body) the request still
//! counts against `max × concurrency`.

use crate::instance::{Body, BoxError};
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use prometheus_client::metrics::gauge::Gauge;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Raises a gauge while alive.
pub struct InFlight(Gauge);

impl InFlight {
    pub fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        InFlight(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `inner` with `guard` dropped at its end or when it is dropped, whichever comes first.
pub struct Guarded<G> {
    inner: Body,
    guard: Option<G>,
}

impl<G: Send + Unpin + 'static> Guarded<G> {
    pub fn wrap(inner: Body, guard: G) -> Body {
        if inner.is_end_stream() {
            return inner;
        }
        http_body_util::BodyExt::boxed_unsync(Guarded {
            inner,
            guard: Some(guard),
        })
    }
}

impl<G: Unpin> HttpBody for Guarded<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = polled {
            self.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn streamed() -> Body {
        let frames = futures_util::stream::iter(vec![
            Ok::<_, BoxError>(Frame::data(Bytes::from("a"))),
            Ok(Frame::data(Bytes::from("b"))),
        ]);
        StreamBody::new(frames).boxed_unsync()
    }

    #[tokio::test]
    async fn the_guard_lives_until_the_last_frame() {
        let dropped = Arc::new(AtomicBool::new(false));
        let mut body = Guarded::wrap(streamed(), Flag(dropped.clone()));
        body.frame().await.unwrap().unwrap();
        assert!(!dropped.load(Ordering::SeqCst), "still streaming");
        body.frame().await.unwrap().unwrap();
        assert!(body.frame().await.is_none());
        assert!(dropped.load(Ordering::SeqCst), "freed at the end");
    }

    #[tokio::test]
    async fn dropping_the_body_drops_the_guard() {
        let dropped = Arc::new(AtomicBool::new(false));
        let body = Guarded::wrap(streamed(), Flag(dropped.clone()));
        drop(body);
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn in_flight_counts_while_alive() {
        let gauge = Gauge::default();
        let held = InFlight::new(&gauge);
        assert_eq!(gauge.get(), 1);
        drop(held);
        assert_eq!(gauge.get(), 0);
    }
}

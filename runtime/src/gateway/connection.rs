//! One gateway connection's life: when it is busy (a request being answered or a response
//! body being sent) and when it has been idle long enough to close.

use super::access::AccessLine;
use crate::instance::{Body, BoxError};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// When a connection last had something to do: requests being answered now and the time the
/// last one began or ended.
pub(super) struct Activity {
    opened: Instant,
    answering: AtomicUsize,
    /// Milliseconds after `opened`.
    last_ms: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Self {
        Self {
            opened: Instant::now(),
            answering: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Marks a request as being answered until the guard drops.
    pub(super) fn begin(self: &Arc<Self>) -> Answering {
        self.answering.fetch_add(1, Ordering::Relaxed);
        self.touch();
        Answering(self.clone())
    }

    /// When the connection will have been idle for `idle`, if nothing happens before.
    fn idle_at(&self, idle: Duration) -> Instant {
        self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle
    }

    fn is_idle(&self, idle: Duration) -> bool {
        self.answering.load(Ordering::Relaxed) == 0 && Instant::now() >= self.idle_at(idle)
    }
}

/// A request being answered, from its head until its response body ends.
pub(super) struct Answering(Arc<Activity>);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.touch();
        self.0.answering.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its connection busy (not idle) until it ends, so a long
/// download is never taken for an idle connection.
/// It also carries the request's access line, written when the body ends or is dropped.
pub(super) struct Streaming {
    body: Body,
    answering: Answering,
    access: Option<Box<AccessLine>>,
}

impl Streaming {
    pub(super) fn new(body: Body, answering: Answering, access: Option<Box<AccessLine>>) -> Self {
        Self {
            body,
            answering,
            access,
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        if let Some(access) = self.access.take() {
            access.write();
        }
    }
}

impl hyper::body::Body for Streaming {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(frame) = &polled {
            self.answering.0.touch();
            if let Some(access) = &mut self.access {
                match frame {
                    Some(Ok(frame)) => {
                        access.bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
                    }
                    Some(Err(_)) => access.broken = true,
                    None => {}
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Drives `connection` to its end, shutting it down gracefully once it has been idle for
/// `idle` (HTTP/1.1 closes, h2c sends GOAWAY). A client that still holds the connection
/// another `idle` later is dropped. A connection is idle while no request is being answered
/// and no response body is being sent.
pub(super) async fn close_when_idle<C>(
    connection: C,
    activity: &Activity,
    idle: Duration,
    shut_down: impl FnOnce(Pin<&mut C>),
) -> Result<(), BoxError>
where
    C: Future<Output = Result<(), BoxError>>,
{
    tokio::pin!(connection);
    loop {
        tokio::select! {
            result = connection.as_mut() => return result,
            () = tokio::time::sleep_until(activity.idle_at(idle).into()) => {
                if activity.is_idle(idle) {
                    break;
                }
            }
        }
    }
    shut_down(connection.as_mut());
    match tokio::time::timeout(idle, connection).await {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}

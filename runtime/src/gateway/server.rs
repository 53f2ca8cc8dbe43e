//! The serving loop, in the library so the daemon, `skiff run --listen` and the containerd
//! shim share one implementation.
//!
//! Per connection it enforces the head and body limits, the header timeout (slowloris) and an
//! idle timeout; per request it assigns the request id, counts into the process's metrics
//! ([`crate::metrics`]: responses by status, in flight, refusals) and writes one access log
//! line on the `skiff::access` tracing target when the response head is ready.

use crate::instance::{Body, BoxError, HttpHandler, text_response};
use crate::metrics;
use http::{HeaderValue, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The tracing target of access log lines; `skiff serve` enables it at info by default.
pub const ACCESS_LOG: &str = "skiff::access";

/// The request id header: kept when the client sent a well-formed one, assigned otherwise.
const REQUEST_ID: &str = "x-request-id";

/// Limits of the HTTP front door. Each default is stated on its field.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest request head (request line plus headers) in bytes (default 64 KiB).
    pub max_header_bytes: usize,
    /// Largest request body in bytes; larger requests get 413 (default 10 MiB).
    pub max_body_bytes: u64,
    /// Time a client has to send its request head; slower ones are cut off (default 10 s).
    pub header_timeout: Duration,
    /// Time from request to response head; slower handlers answer 504 (default 60 s).
    pub request_timeout: Duration,
    /// Time a connection may stay open with no request being answered; then it is closed
    /// (HTTP/1.1) or sent GOAWAY (h2c) (default 60 s).
    pub idle_timeout: Duration,
    /// Open connections at most; further clients wait in the accept backlog (default 1024).
    pub max_connections: usize,
    /// Requests in flight at most; beyond that 503 with Retry-After (default 1000).
    pub max_in_flight: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 << 10,
            max_body_bytes: 10 << 20,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_in_flight: 1000,
        }
    }
}

struct Shared<H> {
    handler: Arc<H>,
    config: GatewayConfig,
    in_flight: Arc<Semaphore>,
    /// Assigned request ids count up from a random start, so two daemons' ids rarely meet.
    next_request_id: AtomicU64,
}

/// Serves `handler` on `listener` until `shutdown` resolves.
pub async fn serve<H: HttpHandler>(
    listener: TcpListener,
    handler: Arc<H>,
    config: GatewayConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let connections = Arc::new(Semaphore::new(config.max_connections));
    let shared = Arc::new(Shared {
        handler,
        in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
        config,
        next_request_id: AtomicU64::new(random_seed()),
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_buf_size(shared.config.max_header_bytes.max(8192))
        .header_read_timeout(shared.config.header_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(shared.config.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => return Ok(()),
            permit = connections.clone().acquire_owned() => permit.expect("semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off briefly rather than spin or die.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (builder, shared) = (builder.clone(), shared.clone());
        let idle = shared.config.idle_timeout;
        tokio::spawn(async move {
            let activity = Arc::new(Activity::new());
            let service = {
                let activity = activity.clone();
                hyper::service::service_fn(move |request| {
                    let (shared, activity) = (shared.clone(), activity.clone());
                    async move {
                        let answering = activity.begin();
                        let response = shared.answer(request, peer).await;
                        Ok::<_, std::convert::Infallible>(
                            response.map(|body| Streaming { body, answering }),
                        )
                    }
                })
            };
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(e) =
                close_when_idle(connection, &activity, idle, |c| c.graceful_shutdown()).await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
}

/// When a connection last had something to do: requests being answered now and the time the
/// last one began or ended.
struct Activity {
    opened: Instant,
    answering: AtomicUsize,
    /// Milliseconds after `opened`.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
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
    fn begin(self: &Arc<Self>) -> Answering {
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
struct Answering(Arc<Activity>);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.touch();
        self.0.answering.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its connection busy (not idle) until it ends, so a long
/// download is never taken for an idle connection.
struct Streaming {
    body: Body,
    answering: Answering,
}

impl hyper::body::Body for Streaming {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if polled.is_ready() {
            self.answering.0.touch();
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
async fn close_when_idle<C>(
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

impl<H: HttpHandler> Shared<H> {
    async fn answer(
        &self,
        mut request: http::Request<Incoming>,
        peer: SocketAddr,
    ) -> http::Response<Body> {
        let started = Instant::now();
        let id = self.request_id(&request);
        request.headers_mut().insert(REQUEST_ID, id.clone());
        let (method, version) = (request.method().clone(), request.version());
        let path = request.uri().path().to_string();
        let host = request
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().host())
            .unwrap_or("-")
            .to_string();
        let in_flight = metrics::global().gateway_in_flight();
        let mut response = self.limited(request).await;
        drop(in_flight);
        response.headers_mut().insert(REQUEST_ID, id.clone());
        let status = response.status().as_u16();
        metrics::global().gateway_response(status);
        let bytes = response.body().size_hint().exact();
        tracing::info!(
            target: ACCESS_LOG,
            id = id.to_str().unwrap_or("-"),
            %peer,
            %method,
            host,
            path,
            ?version,
            status,
            bytes,
            duration_ms = started.elapsed().as_secs_f64() * 1e3,
        );
        response
    }

    /// The client's `x-request-id` when it is 1 to 128 characters of `[A-Za-z0-9._:-]`;
    /// a fresh one otherwise.
    fn request_id(&self, request: &http::Request<Incoming>) -> HeaderValue {
        if let Some(sent) = request.headers().get(REQUEST_ID)
            && well_formed_id(sent.as_bytes())
        {
            return sent.clone();
        }
        let id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{id:016x}")).expect("hex digits are a valid header")
    }

    async fn limited(&self, request: http::Request<Incoming>) -> http::Response<Body> {
        let Ok(_slot) = self.in_flight.try_acquire() else {
            metrics::global().gateway_refusal("busy");
            let mut response = text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "server busy; retry shortly\n",
            );
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        };
        let max_body = self.config.max_body_bytes;
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > max_body) {
            metrics::global().gateway_refusal("body_too_large");
            return text_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body larger than the limit of {max_body} bytes\n"),
            );
        }
        let request = request.map(|body| {
            Limited::new(body, usize::try_from(max_body).unwrap_or(usize::MAX))
                .map_err(|e: BoxError| e)
                .boxed_unsync()
        });
        match tokio::time::timeout(self.config.request_timeout, self.handler.handle(request)).await
        {
            Ok(response) => response,
            Err(_) => {
                metrics::global().gateway_refusal("timeout");
                text_response(StatusCode::GATEWAY_TIMEOUT, "the request timed out\n")
            }
        }
    }
}

fn well_formed_id(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(b))
}

/// A random start for request ids, from the standard library's per-process hash keys.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_short_and_plain() {
        assert!(well_formed_id(b"abc-123_x.y:z"));
        assert!(well_formed_id(&[b'a'; 128]));
        assert!(!well_formed_id(b""));
        assert!(!well_formed_id(&[b'a'; 129]));
        assert!(!well_formed_id(b"a b"));
        assert!(!well_formed_id(b"<script>"));
    }
}

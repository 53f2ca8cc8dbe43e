//! The serving loop, in the library so the daemon, `skiff run --listen` and the containerd
//! shim share one implementation.
//!
//! Per connection it enforces the head and body limits, the header timeout (slowloris) and an
//! idle timeout; per request it assigns the request id, counts into the process's metrics
//! ([`crate::metrics`]: responses by status, in flight, refusals) and starts the access log
//! line, written when the response body ends.

use super::access::{AccessLine, REQUEST_ID, RequestIds};
use super::connection::{Activity, Streaming, close_when_idle};
use crate::instance::{Body, BoxError, ClientAddr, HttpHandler, text_response};
use crate::metrics;
use http::{HeaderValue, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

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
    request_ids: RequestIds,
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
        request_ids: RequestIds::new(),
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
                hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
                    request.extensions_mut().insert(ClientAddr(peer));
                    let (shared, activity) = (shared.clone(), activity.clone());
                    async move {
                        let answering = activity.begin();
                        let (response, access) = shared.answer(request, peer).await;
                        Ok::<_, std::convert::Infallible>(
                            response.map(|body| Streaming::new(body, answering, access)),
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

impl<H: HttpHandler> Shared<H> {
    /// Answers `request`; the access line, when that log is on, to write when its response
    /// body ends.
    async fn answer(
        &self,
        mut request: http::Request<Incoming>,
        peer: SocketAddr,
    ) -> (http::Response<Body>, Option<Box<AccessLine>>) {
        let id = self.request_ids.assign(&request);
        request.headers_mut().insert(REQUEST_ID, id.clone());
        let access = AccessLine::start(&request, &id, peer);
        let in_flight = metrics::global().gateway_in_flight();
        let mut response = self.limited(request).await;
        drop(in_flight);
        response.headers_mut().insert(REQUEST_ID, id);
        metrics::global().gateway_response(response.status().as_u16());
        let access = access.map(|mut line| {
            line.status = response.status().as_u16();
            line
        });
        (response, access)
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

//! The control API on TCP: hyper's connection loop with a header timeout and a cap on open
//! connections, which `axum::serve` has neither of. The unix socket, reachable only by its
//! owner, keeps `axum::serve`; a TCP port is reachable by anyone who can route to it, so a
//! client that opens connections and never finishes a request must not exhaust the daemon.
//! The bearer token ([`super::auth`]) is checked by the router's middleware once a request
//! head is complete.

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_service::Service;

/// What one TCP control listener allows.
#[derive(Debug, Clone)]
pub struct TcpLimits {
    /// Time a client has to send a request head (default 10 s).
    pub header_timeout: Duration,
    /// Open connections at most; more wait in the accept backlog (default 64).
    pub max_connections: usize,
}

impl Default for TcpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            max_connections: 64,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves; connections already open finish on
/// their own (an event stream ends when the daemon stops).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: TcpLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 << 10);
    let builder = Arc::new(builder.http1_only());
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
                Err(error) => {
                    tracing::warn!(%error, "control api: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (builder, app) = (builder.clone(), app.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let mut app = app.clone();
                async move { app.call(request).await }
            });
            if let Err(error) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, %error, "control api connection ended with an error");
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(limits: TcpLimits) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        tokio::spawn(serve(listener, app, limits, std::future::pending()));
        addr
    }

    /// Reads until the server closes; what it sent. Bounded: a minute at most.
    async fn until_closed(stream: &mut tokio::net::TcpStream) -> String {
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut answer))
            .await
            .expect("the server kept the connection open")
            .ok();
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn a_request_head_that_never_ends_is_cut_off() {
        let addr = start(TcpLimits {
            header_timeout: Duration::from_millis(200),
            ..TcpLimits::default()
        })
        .await;
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        let answer = until_closed(&mut slow).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );

        let mut good = tokio::net::TcpStream::connect(addr).await.unwrap();
        good.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = until_closed(&mut good).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ok"), "{answer}");
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_wait_for_a_free_one() {
        let addr = start(TcpLimits {
            header_timeout: Duration::from_secs(30),
            max_connections: 1,
        })
        .await;
        let mut holder = tokio::net::TcpStream::connect(addr).await.unwrap();
        holder
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 12];
        holder.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");
        // The only connection is kept alive, so the next client is not served yet...
        let mut waiting = tokio::net::TcpStream::connect(addr).await.unwrap();
        waiting
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut byte = [0u8; 1];
        let early = tokio::time::timeout(Duration::from_millis(300), waiting.read(&mut byte)).await;
        assert!(
            early.is_err(),
            "a second connection was served past the cap"
        );
        // ...until the first goes away.
        drop(holder);
        let answer = until_closed(&mut waiting).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}

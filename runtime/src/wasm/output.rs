//! A guest's stdout and stderr captured into a sink the embedder gives, chunk by chunk as the
//! guest writes them: how the daemon keeps a log per in-process instance (a Wasm service's
//! replica, a Wasm job's run) instead of mixing their output into its own.
//!
//! Writes are synchronous and bounded by what the guest hands over at once (at most
//! [`WRITE_MAX`] per call): nothing is buffered here, so a chatty guest costs the sink's
//! writes, never memory. This module does not know where the bytes go.

use bytes::Bytes;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The most bytes a guest may write in one call.
const WRITE_MAX: usize = 64 << 10;

/// Which of the guest's streams a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fd {
    Stdout,
    Stderr,
}

/// Where captured output goes. Called on the guest's thread: it should not block for long.
pub trait OutputSink: Send + Sync + 'static {
    fn write(&self, fd: Fd, bytes: &[u8]);
}

/// A guest's stdout and stderr, both into one sink.
#[derive(Clone)]
pub struct Capture(pub Arc<dyn OutputSink>);

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Capture(..)")
    }
}

impl Capture {
    /// The guest's stream `fd`, for `WasiCtxBuilder::stdout` / `stderr`.
    pub(crate) fn stream(&self, fd: Fd) -> CaptureStream {
        CaptureStream {
            sink: Arc::clone(&self.0),
            fd,
        }
    }
}

/// One captured stream, as WASI preview 2 (and preview 1 through it) writes to it.
#[derive(Clone)]
pub(crate) struct CaptureStream {
    sink: Arc<dyn OutputSink>,
    fd: Fd,
}

impl IsTerminal for CaptureStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CaptureStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CaptureStream {
    async fn ready(&mut self) {}
}

impl OutputStream for CaptureStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.sink.write(self.fd, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_MAX)
    }
}

impl AsyncWrite for CaptureStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = buf.len().min(WRITE_MAX);
        self.sink.write(self.fd, &buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

//! Request ids and access log lines.
//!
//! Every request gets an `x-request-id`: the client's own when it is well formed (1 to 128
//! characters of `[A-Za-z0-9._:-]`), a fresh one otherwise; the function sees it and the
//! response carries it. When its response body ends (or the connection drops it), one line
//! goes to the [`ACCESS_LOG`] tracing target at info: id, peer, method, host, path, version,
//! status, bytes of body sent, and the time from request head to the body's end.

use http::HeaderValue;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The tracing target of access log lines; `skiff serve` enables it at info by default.
pub const ACCESS_LOG: &str = "skiff::access";

/// The request id header.
pub(super) const REQUEST_ID: &str = "x-request-id";

/// Assigns request ids: counting up from a random start, so two daemons' ids rarely meet.
pub(super) struct RequestIds {
    next: AtomicU64,
}

impl RequestIds {
    pub(super) fn new() -> Self {
        Self {
            next: AtomicU64::new(random_seed()),
        }
    }

    /// The client's id when well formed, a fresh one otherwise.
    pub(super) fn assign<B>(&self, request: &http::Request<B>) -> HeaderValue {
        if let Some(sent) = request.headers().get(REQUEST_ID)
            && well_formed_id(sent.as_bytes())
        {
            return sent.clone();
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{id:016x}")).expect("hex digits are a valid header")
    }
}

/// One request's access line, filled in as it is answered.
pub(super) struct AccessLine {
    started: Instant,
    id: HeaderValue,
    peer: SocketAddr,
    method: http::Method,
    version: http::Version,
    host: String,
    path: String,
    pub(super) status: u16,
    pub(super) bytes: u64,
    /// The body failed while it was sent.
    pub(super) broken: bool,
}

impl AccessLine {
    /// The line for `request`, or `None` when the access log is off (nothing is copied then).
    pub(super) fn start<B>(
        request: &http::Request<B>,
        id: &HeaderValue,
        peer: SocketAddr,
    ) -> Option<Box<Self>> {
        if !tracing::enabled!(target: ACCESS_LOG, tracing::Level::INFO) {
            return None;
        }
        let host = request
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().authority().map(|a| a.as_str()))
            .unwrap_or("-");
        Some(Box::new(Self {
            started: Instant::now(),
            id: id.clone(),
            peer,
            method: request.method().clone(),
            version: request.version(),
            host: host.to_string(),
            path: request.uri().path().to_string(),
            status: 0,
            bytes: 0,
            broken: false,
        }))
    }

    pub(super) fn write(&self) {
        tracing::info!(
            target: ACCESS_LOG,
            id = self.id.to_str().unwrap_or("-"),
            peer = %self.peer,
            method = %self.method,
            host = self.host,
            path = self.path,
            version = ?self.version,
            status = self.status,
            bytes = self.bytes,
            broken = self.broken,
            duration_ms = self.started.elapsed().as_secs_f64() * 1e3,
        );
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

    #[test]
    fn a_client_id_is_kept_only_when_well_formed() {
        let ids = RequestIds::new();
        let with = |id: &str| {
            let request = http::Request::builder()
                .header(REQUEST_ID, id)
                .body(())
                .unwrap();
            ids.assign(&request)
        };
        assert_eq!(with("trace-1"), "trace-1");
        let fresh = with("a b");
        assert_eq!(fresh.len(), 16);
        assert_ne!(with("a b"), fresh, "fresh ids differ");
    }
}

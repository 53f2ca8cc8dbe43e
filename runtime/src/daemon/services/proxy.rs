//! The gateway's side of a routed service: the healthy instances' addresses, kept by the
//! supervisors (one set per generation, so two versions serve side by side during a rollout),
//! and forwarding one request to one of them, round robin.
//!
//! A request keeps its method, path, query, headers and streaming body; the proxy adds
//! `X-Forwarded-For`, `X-Forwarded-Host` and `X-Forwarded-Proto` and drops hop-by-hop
//! headers. No healthy instance is a 503 with Retry-After; an upstream that fails is a 502.
//! Each backend counts its requests in flight until their response body ends, so an instance
//! taken out of the set is stopped only once it finished what it was given ([`ServiceTarget::in_flight`]).
//! The service address's TCP relay picks from the same set ([`ServiceTarget::pick_for_port`]).

use crate::daemon::body::Guarded;
use crate::instance::{Body, BoxError, ClientAddr, text_response};
use http::{HeaderName, HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// How long connecting to an instance may take before the request gets a 502.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A routed service as the gateway sees it.
#[derive(Debug)]
pub struct ServiceTarget {
    /// `app/service`, for messages.
    pub name: String,
    routed: RwLock<Routed>,
    next: AtomicUsize,
    /// Requests in flight per instance address, routed or not.
    in_flight: Mutex<HashMap<SocketAddr, Arc<AtomicUsize>>>,
}

/// The healthy instances by generation, and all of them in one list to pick from.
#[derive(Debug, Default)]
struct Routed {
    by_generation: BTreeMap<u64, Vec<SocketAddr>>,
    all: Vec<(SocketAddr, Arc<AtomicUsize>)>,
}

/// One request (or relayed connection) to one backend: its count in flight, given back when
/// dropped.
pub struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ServiceTarget {
    pub fn new(name: String) -> Self {
        ServiceTarget {
            name,
            routed: RwLock::new(Routed::default()),
            next: AtomicUsize::new(0),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces the addresses of `generation`'s instances that requests may go to.
    pub fn set_healthy(&self, generation: u64, addresses: Vec<SocketAddr>) {
        let mut counters = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let mut routed = self.routed.write().unwrap_or_else(|e| e.into_inner());
        if addresses.is_empty() {
            routed.by_generation.remove(&generation);
        } else {
            routed.by_generation.insert(generation, addresses);
        }
        let all = (routed.by_generation.values().flatten())
            .map(|&address| {
                let counter = counters.entry(address).or_default();
                (address, Arc::clone(counter))
            })
            .collect();
        routed.all = all;
    }

    /// Every routed address, all generations.
    pub fn healthy(&self) -> Vec<SocketAddr> {
        let routed = self.routed.read().unwrap_or_else(|e| e.into_inner());
        routed.all.iter().map(|(address, _)| *address).collect()
    }

    /// Requests sent to `address` whose response has not ended yet.
    pub fn in_flight(&self, address: SocketAddr) -> usize {
        let counters = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        counters
            .get(&address)
            .map_or(0, |count| count.load(Ordering::Acquire))
    }

    /// Drops the count of an instance that is gone (an unrouted one with nothing in flight).
    pub fn forget(&self, address: SocketAddr) {
        let routed = self.routed.read().unwrap_or_else(|e| e.into_inner());
        if routed.all.iter().any(|(a, _)| *a == address) {
            return;
        }
        let mut counters = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if counters
            .get(&address)
            .is_some_and(|count| count.load(Ordering::Acquire) == 0)
        {
            counters.remove(&address);
        }
    }

    /// The next healthy address, round robin, counted in flight. The count is taken under the
    /// same lock that unrouting takes, so once an address is unrouted its count only falls.
    fn pick(&self) -> Option<(SocketAddr, Counted)> {
        let routed = self.routed.read().unwrap_or_else(|e| e.into_inner());
        if routed.all.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let (address, count) = &routed.all[n % routed.all.len()];
        count.fetch_add(1, Ordering::AcqRel);
        Some((*address, Counted(Arc::clone(count))))
    }

    /// A healthy instance's address with `port` instead of the routed one, counted in flight
    /// on that instance like a request, so draining it waits for this too: the service
    /// address's relay (`names`) sends a TCP connection there.
    pub fn pick_for_port(&self, port: u16) -> Option<(SocketAddr, Counted)> {
        self.pick()
            .map(|(address, counted)| (SocketAddr::new(address.ip(), port), counted))
    }

    /// Forwards `request` to a healthy instance.
    pub async fn handle(&self, request: http::Request<Body>) -> http::Response<Body> {
        let Some((upstream, counted)) = self.pick() else {
            let mut response = text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "service {} has no healthy instance; retry shortly, or see `skiff ps` for why\n",
                    self.name
                ),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        };
        match forward(request, upstream).await {
            Ok(response) => {
                let (parts, body) = response.into_parts();
                http::Response::from_parts(parts, Guarded::wrap(body, counted))
            }
            Err(error) => {
                tracing::debug!(service = self.name, %upstream, %error, "upstream failed");
                text_response(
                    StatusCode::BAD_GATEWAY,
                    format!("service {} failed to answer: {error}\n", self.name),
                )
            }
        }
    }
}

/// Headers that describe one connection, not the request: never forwarded (RFC 9110 7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

async fn forward(
    request: http::Request<Body>,
    upstream: SocketAddr,
) -> Result<http::Response<Body>, BoxError> {
    let (mut parts, body) = request.into_parts();
    let client = parts.extensions.get::<ClientAddr>().map(|c| c.0.ip());
    let host = parts.headers.get(header::HOST).cloned().or_else(|| {
        let authority = parts.uri.authority()?;
        HeaderValue::from_str(authority.as_str()).ok()
    });
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::TRANSFER_ENCODING);
    if let Some(client) = client {
        let forwarded_for = match parts.headers.get("x-forwarded-for") {
            Some(earlier) => format!("{}, {client}", earlier.to_str().unwrap_or_default()),
            None => client.to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
            parts.headers.insert("x-forwarded-for", value);
        }
    }
    if let Some(host) = host {
        parts.headers.insert("x-forwarded-host", host.clone());
        parts.headers.insert(header::HOST, host);
    }
    parts
        .headers
        .insert("x-forwarded-proto", HeaderValue::from_static("http"));
    // HTTP/1.1 to the instance, origin-form URI, whatever the client spoke.
    parts.version = http::Version::HTTP_11;
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    parts.uri = path.parse()?;

    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(upstream))
        .await
        .map_err(|_| format!("connecting to {upstream} timed out"))??;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "upstream connection ended with an error");
        }
    });
    let response = sender
        .send_request(http::Request::from_parts(parts, body))
        .await?;
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(http::Response::from_parts(
        parts,
        body.map_err(BoxError::from).boxed_unsync(),
    ))
}

fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    // Headers a `Connection` header names are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_over_the_healthy_and_none_without() {
        let target = ServiceTarget::new("a/web".into());
        assert!(target.pick().is_none());
        let (a, b): (SocketAddr, SocketAddr) = (
            "10.0.0.1:80".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
        );
        target.set_healthy(1, vec![a]);
        target.set_healthy(2, vec![b]);
        let picks: Vec<_> = (0..4).map(|_| target.pick().unwrap().0).collect();
        assert_eq!(picks, [a, b, a, b], "both generations serve");
        target.set_healthy(1, Vec::new());
        assert_eq!(target.healthy(), [b]);
    }

    #[test]
    fn a_pick_for_another_port_counts_on_the_same_instance() {
        let target = ServiceTarget::new("a/cache".into());
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        target.set_healthy(1, vec![a]);
        let (picked, held) = target.pick_for_port(6379).unwrap();
        assert_eq!(picked, "10.0.0.1:6379".parse().unwrap());
        assert_eq!(target.in_flight(a), 1, "a drain of 10.0.0.1 waits for it");
        drop(held);
        assert_eq!(target.in_flight(a), 0);
        target.set_healthy(1, Vec::new());
        assert!(target.pick_for_port(6379).is_none());
    }

    #[test]
    fn a_request_counts_in_flight_until_dropped_even_once_unrouted() {
        let target = ServiceTarget::new("a/web".into());
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        target.set_healthy(1, vec![a]);
        let (_, held) = target.pick().unwrap();
        assert_eq!(target.in_flight(a), 1);
        target.set_healthy(1, Vec::new());
        target.forget(a);
        assert_eq!(target.in_flight(a), 1, "kept while a request is in flight");
        drop(held);
        assert_eq!(target.in_flight(a), 0);
        target.forget(a);
        assert!(target.in_flight.lock().unwrap().is_empty());
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("x-secret"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("5"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key("x-kept"));
    }
}

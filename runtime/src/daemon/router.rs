//! The gateway's routing table: which function answers a request, by Host and path prefix.
//!
//! The table is immutable once built; a deploy builds a new one and swaps it in whole, so a
//! request sees either the old routes or the new ones, never half of each. The hot path takes
//! a read lock only long enough to clone an `Arc` (never across an await), matches, takes a
//! slot from the function's [`FunctionSlots`](crate::sched::function::FunctionSlots), finds
//! the function warm or cold-starts it ([`FunctionTarget::ready`]) and runs the request in a
//! fresh instance. The slot is held until the response body ends or is dropped
//! ([`Guarded`]), so a body the guest still streams counts against `max × concurrency`.

use super::body::{Guarded, InFlight};
use super::services::proxy::ServiceTarget;
use super::target::{ColdStartError, FunctionTarget};
use crate::instance::{Body, HttpHandler, text_response};
use http::{HeaderValue, StatusCode};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// One function's or routed service's place in the table.
#[derive(Clone)]
pub struct Route {
    pub app: String,
    /// The function's or service's name.
    pub function: String,
    /// Path prefix, as the manifest wrote it (always starting with `/`).
    pub prefix: String,
    /// Lower-case host without port; `None` matches any host.
    pub host: Option<String>,
    pub target: Target,
}

/// What answers a route: a Wasm function, or a service's healthy instances.
#[derive(Clone)]
pub enum Target {
    Function(Arc<FunctionTarget>),
    Service(Arc<ServiceTarget>),
}

impl Route {
    fn matches(&self, host: Option<&str>, path: &str) -> bool {
        let host_ok = match &self.host {
            None => true,
            Some(want) => host.is_some_and(|h| h.eq_ignore_ascii_case(want)),
        };
        host_ok && prefix_matches(&self.prefix, path)
    }

    /// Longer prefixes first; for the same prefix, a route naming a host first.
    fn rank(&self) -> (usize, bool) {
        (self.prefix.trim_end_matches('/').len(), self.host.is_some())
    }
}

/// `/api` matches `/api`, `/api/` and `/api/x`, not `/apix`; `/` matches everything.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Every deployed app's routes, and the table built from them, best match first.
#[derive(Default)]
struct Routes {
    apps: BTreeMap<String, Vec<Route>>,
    table: Vec<Route>,
}

impl Routes {
    fn with(&self, app: &str, routes: Option<Vec<Route>>) -> Routes {
        let mut apps = self.apps.clone();
        match routes {
            Some(routes) => apps.insert(app.to_string(), routes),
            None => apps.remove(app),
        };
        let mut table: Vec<Route> = apps.values().flatten().cloned().collect();
        table.sort_by_key(|route| std::cmp::Reverse(route.rank()));
        Routes { apps, table }
    }

    fn find(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        self.table.iter().find(|route| route.matches(host, path))
    }
}

/// The gateway's handler: routes every request to a deployed function.
#[derive(Default)]
pub struct Router {
    routes: RwLock<Arc<Routes>>,
}

impl Router {
    fn current(&self) -> Arc<Routes> {
        Arc::clone(&self.routes.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The app's running functions, to reuse those a redeploy leaves unchanged.
    pub fn app_routes(&self, app: &str) -> Vec<Route> {
        self.current().apps.get(app).cloned().unwrap_or_default()
    }

    /// Every routed function.
    pub fn targets(&self) -> Vec<Arc<FunctionTarget>> {
        (self.current().table.iter())
            .filter_map(|route| match &route.target {
                Target::Function(target) => Some(Arc::clone(target)),
                Target::Service(_) => None,
            })
            .collect()
    }

    /// Another app's route with the same prefix and host, which would make routing ambiguous.
    pub fn conflict(&self, app: &str, prefix: &str, host: Option<&str>) -> Option<Route> {
        let prefix = prefix.trim_end_matches('/');
        self.current()
            .table
            .iter()
            .find(|r| {
                r.app != app
                    && r.prefix.trim_end_matches('/') == prefix
                    && r.host.as_deref() == host
            })
            .cloned()
    }

    /// Replaces the app's routes (all of them at once); `None` removes the app.
    pub fn set_app(&self, app: &str, routes: Option<Vec<Route>>) {
        let mut current = self.routes.write().unwrap_or_else(|e| e.into_inner());
        *current = Arc::new(current.with(app, routes));
    }
}

/// The request's host, lower-case and without port: the Host header, or the URI's authority
/// (HTTP/2).
fn request_host(request: &http::Request<Body>) -> Option<String> {
    let host = request
        .headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))?;
    let without_port = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    Some(without_port.to_ascii_lowercase())
}

impl HttpHandler for Router {
    async fn handle(&self, request: http::Request<Body>) -> http::Response<Body> {
        let host = request_host(&request);
        let path = request.uri().path().to_string();
        let Some(target) = self
            .current()
            .find(host.as_deref(), &path)
            .map(|route| route.target.clone())
        else {
            return text_response(
                StatusCode::NOT_FOUND,
                format!("nothing is routed at {path}; see `skiff apps`\n"),
            );
        };
        let target = match target {
            Target::Function(target) => target,
            Target::Service(service) => return service.handle(request).await,
        };
        let slot = match target.slots.acquire(target.queue_timeout).await {
            Ok(slot) => slot,
            Err(busy) => {
                tracing::debug!(error = %busy, path, "function busy");
                let text = format!("function {} is busy; retry shortly\n", target.name);
                return unavailable(&target, text, busy.retry_after());
            }
        };
        let in_flight = InFlight::new(&target.metrics.in_flight);
        let warm = match target.ready().await {
            Ok(warm) => warm,
            Err(error) => {
                tracing::warn!(%error, path, "cold start failed");
                // Capacity is the client's business; why linking failed (paths...) is the log's.
                let text = match error {
                    ColdStartError::NoCapacity { .. } => format!("{error}\n"),
                    ColdStartError::Prepare(_) => format!(
                        "function {} could not start; the daemon's log says why\n",
                        target.name
                    ),
                };
                return unavailable(&target, text, Duration::from_secs(1));
            }
        };
        let response = warm.function.handle(request).await;
        target.metrics.request(response.status().as_u16());
        response.map(|body| Guarded::wrap(body, (slot, in_flight, warm)))
    }
}

/// 503 with `Retry-After`, counted.
fn unavailable(target: &FunctionTarget, text: String, retry: Duration) -> http::Response<Body> {
    target.metrics.request(503);
    let mut response = text_response(StatusCode::SERVICE_UNAVAILABLE, text);
    let seconds = retry.as_secs_f64().ceil().max(1.0) as u64;
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/x"));
        assert!(prefix_matches("/api/", "/api/x"));
        assert!(!prefix_matches("/api", "/apix"));
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/", "/"));
    }

    #[test]
    fn hosts_lose_their_port_and_case() {
        let request = http::Request::builder()
            .uri("/x")
            .header("host", "Shop.Local:8080")
            .body(crate::instance::Body::default())
            .unwrap();
        assert_eq!(request_host(&request).as_deref(), Some("shop.local"));
    }
}

//! The daemon's Prometheus metrics, one registry per process.
//!
//! Every part of `skiff serve` that has something to count reports here through
//! [`global()`]: the gateway and router (requests, in flight), the function path (cold starts,
//! instantiation latency), the supervisors (instances by kind), the scheduler (pending,
//! decisions, evictions). The control API renders [`Metrics::encode`] at `/metrics`, as
//! Prometheus' text format.
//!
//! Hot paths do not build label sets per request: [`Metrics::workload`] hands out a
//! [`WorkloadMetrics`] once, when a workload is prepared, whose handles share the registry's
//! atomics. Label values are `Arc<str>`, so a handle clones no string.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// One workload of one app.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkloadLabels {
    pub app: Arc<str>,
    pub workload: Arc<str>,
}

/// A request's workload and the status it was answered with.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub app: Arc<str>,
    pub workload: Arc<str>,
    pub status: u16,
}

/// Instances of a workload by executor: `wasm` or `linux`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabels {
    pub app: Arc<str>,
    pub workload: Arc<str>,
    pub kind: &'static str,
}

/// What the scheduler decided: `admitted`, `pending`, `rejected`, `scaled_up`,
/// `scaled_down`, `restarted`, `adopted`...
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub decision: &'static str,
}

/// What was evicted under memory pressure: `idle_pool` or `code_cache`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EvictionLabels {
    pub what: &'static str,
}

/// A response's status, for what the gateway answered.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: u16,
}

/// Why the gateway answered a request itself: `busy` (503), `body_too_large` (413),
/// `timeout` (504).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub reason: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Instantiation takes tens of microseconds warm and milliseconds cold: 10 µs to ~5 s.
fn instantiation_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_01, 2.5, 15))
}

/// Every metric skiff exports. Names get the `skiff_` prefix when encoded.
pub struct Metrics {
    registry: Registry,
    pub cold_starts: Family<WorkloadLabels, Counter>,
    pub instantiation_seconds: HistogramFamily<WorkloadLabels>,
    pub requests: Family<RequestLabels, Counter>,
    pub in_flight: Family<WorkloadLabels, Gauge>,
    pub instances: Family<InstanceLabels, Gauge>,
    pub pending: Gauge,
    pub decisions: Family<DecisionLabels, Counter>,
    pub evictions: Family<EvictionLabels, Counter>,
    /// Every response the gateway sent, whoever made it (a function, the router's 404, the
    /// gateway's own refusals).
    pub gateway_responses: Family<StatusLabels, Counter>,
    pub gateway_refusals: Family<RefusalLabels, Counter>,
    pub gateway_in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("skiff");
        let metrics = Metrics {
            cold_starts: Family::default(),
            instantiation_seconds: Family::new_with_constructor(instantiation_histogram),
            requests: Family::default(),
            in_flight: Family::default(),
            instances: Family::default(),
            pending: Gauge::default(),
            decisions: Family::default(),
            evictions: Family::default(),
            gateway_responses: Family::default(),
            gateway_refusals: Family::default(),
            gateway_in_flight: Gauge::default(),
            registry: Registry::default(),
        };
        // The registry keeps clones; they share the atomics of the fields above.
        registry.register(
            "cold_starts",
            "Requests that found their function at zero instances",
            metrics.cold_starts.clone(),
        );
        registry.register(
            "instantiation_seconds",
            "Time to create a fresh instance for a request",
            metrics.instantiation_seconds.clone(),
        );
        registry.register(
            "requests",
            "Requests answered, by workload and status",
            metrics.requests.clone(),
        );
        registry.register(
            "in_flight",
            "Requests being answered now, by workload",
            metrics.in_flight.clone(),
        );
        registry.register(
            "instances",
            "Running instances, by workload and kind (wasm or linux)",
            metrics.instances.clone(),
        );
        registry.register(
            "pending",
            "Instances admitted but waiting for capacity",
            metrics.pending.clone(),
        );
        registry.register(
            "scheduler_decisions",
            "Scheduler decisions, by kind",
            metrics.decisions.clone(),
        );
        registry.register(
            "evictions",
            "Idle pools and compiled code dropped under memory pressure",
            metrics.evictions.clone(),
        );
        registry.register(
            "gateway_responses",
            "Responses the gateway sent, by status",
            metrics.gateway_responses.clone(),
        );
        registry.register(
            "gateway_refusals",
            "Requests the gateway answered itself (busy, body_too_large, timeout)",
            metrics.gateway_refusals.clone(),
        );
        registry.register(
            "gateway_in_flight",
            "Requests the gateway is answering now",
            metrics.gateway_in_flight.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Handles for one workload, to keep with it and use on its hot path.
    pub fn workload(&self, app: &str, workload: &str) -> WorkloadMetrics {
        let labels = WorkloadLabels {
            app: Arc::from(app),
            workload: Arc::from(workload),
        };
        WorkloadMetrics {
            cold_starts: self.cold_starts.get_or_create_owned(&labels),
            instantiation: self.instantiation_seconds.get_or_create_owned(&labels),
            in_flight: self.in_flight.get_or_create_owned(&labels),
            requests: self.requests.clone(),
            labels,
        }
    }

    /// Counts one scheduler decision.
    pub fn decision(&self, decision: &'static str) {
        self.decisions
            .get_or_create(&DecisionLabels { decision })
            .inc();
    }

    /// Counts one eviction.
    pub fn eviction(&self, what: &'static str) {
        self.evictions.get_or_create(&EvictionLabels { what }).inc();
    }

    /// Counts one response of the gateway.
    pub fn gateway_response(&self, status: u16) {
        self.gateway_responses
            .get_or_create(&StatusLabels { status })
            .inc();
    }

    /// Counts one request the gateway refused itself.
    pub fn gateway_refusal(&self, reason: &'static str) {
        self.gateway_refusals
            .get_or_create(&RefusalLabels { reason })
            .inc();
    }

    /// One more request in the gateway until the guard drops (a dropped request included).
    pub fn gateway_in_flight(&self) -> InFlight {
        self.gateway_in_flight.inc();
        InFlight(self.gateway_in_flight.clone())
    }

    /// Sets the instance count of a workload.
    pub fn set_instances(&self, app: &str, workload: &str, kind: &'static str, count: i64) {
        let labels = InstanceLabels {
            app: Arc::from(app),
            workload: Arc::from(workload),
            kind,
        };
        self.instances.get_or_create(&labels).set(count);
    }

    /// Drops every series of a removed workload, so `/metrics` does not report it forever.
    pub fn forget(&self, app: &str, workload: &str) {
        let labels = WorkloadLabels {
            app: Arc::from(app),
            workload: Arc::from(workload),
        };
        self.cold_starts.remove(&labels);
        self.instantiation_seconds.remove(&labels);
        self.in_flight.remove(&labels);
        for kind in ["wasm", "linux"] {
            self.instances.remove(&InstanceLabels {
                app: labels.app.clone(),
                workload: labels.workload.clone(),
                kind,
            });
        }
    }

    /// Prometheus' text exposition format (`text/plain; version=0.0.4` compatible; the
    /// OpenMetrics `# EOF` trailer included).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// One workload's metric handles; cloning shares the counters.
#[derive(Clone, Debug)]
pub struct WorkloadMetrics {
    labels: WorkloadLabels,
    pub cold_starts: Counter,
    pub instantiation: Histogram,
    pub in_flight: Gauge,
    requests: Family<RequestLabels, Counter>,
}

impl WorkloadMetrics {
    /// Counts an answered request by status.
    pub fn request(&self, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                app: self.labels.app.clone(),
                workload: self.labels.workload.clone(),
                status,
            })
            .inc();
    }

    pub fn instantiated(&self, took: Duration) {
        self.instantiation.observe(took.as_secs_f64());
    }
}

/// A request counted in a gauge until dropped.
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_handles_count_into_the_registry() {
        let metrics = Metrics::new();
        let shop = metrics.workload("shop", "api");
        shop.cold_starts.inc();
        shop.request(200);
        shop.request(200);
        shop.request(503);
        shop.instantiated(Duration::from_micros(300));
        metrics.decision("admitted");
        metrics.set_instances("shop", "cache", "linux", 2);
        let text = metrics.encode();
        assert!(
            text.contains(r#"skiff_cold_starts_total{app="shop",workload="api"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"skiff_requests_total{app="shop",workload="api",status="200"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"skiff_instantiation_seconds_count{app="shop",workload="api"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"skiff_scheduler_decisions_total{decision="admitted"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"skiff_instances{app="shop",workload="cache",kind="linux"} 2"#),
            "{text}"
        );
    }

    #[test]
    fn the_gateway_counts_responses_refusals_and_what_is_in_flight() {
        let metrics = Metrics::new();
        metrics.gateway_response(200);
        metrics.gateway_response(200);
        metrics.gateway_refusal("busy");
        let held = metrics.gateway_in_flight();
        let dropped = metrics.gateway_in_flight();
        drop(dropped);
        let text = metrics.encode();
        for series in [
            r#"skiff_gateway_responses_total{status="200"} 2"#,
            r#"skiff_gateway_refusals_total{reason="busy"} 1"#,
            "skiff_gateway_in_flight 1",
        ] {
            assert!(text.contains(series), "{series} missing:\n{text}");
        }
        drop(held);
        assert!(metrics.encode().contains("skiff_gateway_in_flight 0"));
    }

    #[test]
    fn forgotten_workloads_leave_the_text() {
        let metrics = Metrics::new();
        metrics.workload("shop", "api").cold_starts.inc();
        metrics.forget("shop", "api");
        assert!(!metrics.encode().contains(r#"workload="api""#));
    }
}

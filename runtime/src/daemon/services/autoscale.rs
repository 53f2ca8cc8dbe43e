//! CPU-utilisation scaling of a service: its replicas' CPU time (a Linux service's current
//! generation's cgroups, a Wasm service's instances' counters), sampled every `interval`,
//! becomes per mille of the CPU request per replica, and [`Hpa`] answers
//! `ceil(current × observed / target)` within min and max, smoothed by [`Stabiliser`] so
//! replicas come down only after `window` of lower load (Kubernetes' horizontal pod
//! autoscaler, on one node). The Linux controller and the Wasm supervisor sample and resize
//! their own way; the decision and how it is told are here, once.

use super::Context;
use crate::app::{ServiceScale, ServiceSpec};
use crate::sched::service::{Hpa, Stabiliser};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How the node's autoscaling is tuned (`skiff serve --autoscale-*`).
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// Time between CPU samples.
    pub interval: Duration,
    /// How long load must stay lower before replicas come down.
    pub window: Duration,
}

impl Default for Tuning {
    /// Kubernetes' horizontal pod autoscaler: 15 s sync, 5 min scale-down stabilisation.
    fn default() -> Self {
        Tuning {
            interval: Duration::from_secs(15),
            window: Duration::from_secs(300),
        }
    }
}

/// Samples CPU and recommends replicas for an autoscaled service.
pub struct Autoscaler {
    pub hpa: Hpa,
    pub stabiliser: Stabiliser,
    /// The CPU request of one replica, in millicores.
    request_millis: u64,
    pub interval: Duration,
    /// When the next sample is due.
    pub next: Instant,
    /// CPU time per container at the last sample.
    last: Option<(Instant, HashMap<String, u64>)>,
}

impl Autoscaler {
    /// The autoscaler of a service with `min`/`max`/`cpu_target` and a CPU request; `None`
    /// for one without (a fixed count, or nothing to measure utilisation against).
    pub fn of(spec: &ServiceSpec, tuning: Tuning) -> Option<Self> {
        let Some(ServiceScale::Auto {
            min,
            max,
            cpu_target,
        }) = spec.scale()
        else {
            return None;
        };
        let request_millis = spec.cpu.map(|cpu| u64::from(cpu.millicores()))?;
        Some(Autoscaler {
            hpa: Hpa::new(min, max, u64::from(cpu_target.0) * 10),
            stabiliser: Stabiliser::new(tuning.window),
            request_millis,
            interval: tuning.interval,
            next: Instant::now() + tuning.interval,
            last: None,
        })
    }

    /// Whether a sample is due at `now`; if so, the next one is `interval` later.
    pub fn due(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now + self.interval;
        true
    }

    /// The replicas to run instead of `current`, given the CPU time per replica sampled
    /// `now`; `None` to keep them (too early to tell, or the answer is the same).
    pub fn decide(
        &mut self,
        now: Instant,
        current: u32,
        sample: HashMap<String, u64>,
    ) -> Option<Scaled> {
        let observed = self.observe(now, sample)?;
        let desired = self.hpa.desired(current, observed);
        let replicas = self.stabiliser.recommend(now, desired);
        if replicas == current {
            return None;
        }
        let (decision, verb) = match replicas > current {
            true => ("scaled_up", "up"),
            false => ("scaled_down", "down"),
        };
        let message = format!(
            "scaled {verb} from {current} to {replicas} replicas: CPU at {}% of the request, \
             target {}%",
            observed / 10,
            self.hpa.target / 10
        );
        Some(Scaled {
            replicas,
            decision,
            message,
        })
    }

    /// Per mille of the request the replicas present in both samples used on average since
    /// the last one; `None` until two samples cover one replica.
    pub fn observe(&mut self, now: Instant, sample: HashMap<String, u64>) -> Option<u64> {
        let last = self.last.replace((now, sample));
        let (then, before) = last?;
        let (_, sample) = self.last.as_ref()?;
        let elapsed = now.saturating_duration_since(then).as_micros() as u64;
        let (mut used, mut replicas) = (0u64, 0u64);
        for (id, usec) in sample {
            if let Some(earlier) = before.get(id) {
                used += usec.saturating_sub(*earlier);
                replicas += 1;
            }
        }
        if replicas == 0 || elapsed == 0 || self.request_millis == 0 {
            return None;
        }
        // used / elapsed is in CPUs; × 1000 → millicores; / request × 1000 → per mille.
        let per_mille = u128::from(used) * 1_000_000
            / (u128::from(elapsed) * u128::from(replicas) * u128::from(self.request_millis));
        Some(u64::try_from(per_mille).unwrap_or(u64::MAX))
    }
}

/// An autoscaling decision: the replicas to run, and how it is told.
#[derive(Debug)]
pub struct Scaled {
    pub replicas: u32,
    /// `scaled_up` or `scaled_down`, as the decisions metric counts it.
    decision: &'static str,
    /// The `autoscaled` event's message.
    pub message: String,
}

impl Scaled {
    /// Counts the decision, stores the replicas as the workload's scale (a restarted daemon
    /// starts where it left off) and tells it as an `autoscaled` event; the caller resizes.
    pub fn record(self, cx: &Context, app: &str, name: &str) {
        crate::metrics::global().decision(self.decision);
        if let Err(error) = cx.store.set_scale(app, name, Some(self.replicas)) {
            tracing::warn!(%error, "the autoscaled replicas were not stored");
        }
        cx.event(app, name, None, "autoscaled", self.message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utilisation_is_per_mille_of_the_request_over_replicas_in_both_samples() {
        let mut scaler = Autoscaler {
            hpa: Hpa::new(1, 4, 500),
            stabiliser: Stabiliser::new(Duration::from_secs(60)),
            request_millis: 200,
            interval: Duration::from_secs(1),
            next: Instant::now(),
            last: None,
        };
        let t0 = Instant::now();
        let sample = |pairs: &[(&str, u64)]| {
            pairs
                .iter()
                .map(|(id, usec)| (id.to_string(), *usec))
                .collect::<HashMap<_, _>>()
        };
        assert_eq!(scaler.observe(t0, sample(&[("a", 0), ("b", 0)])), None);
        // In 1 s, a used 0.2 CPU (its whole request) and b 0.1; c is new, not counted.
        let t1 = t0 + Duration::from_secs(1);
        let observed = scaler.observe(t1, sample(&[("a", 200_000), ("b", 100_000), ("c", 5)]));
        assert_eq!(observed, Some(750));
        assert_eq!(scaler.hpa.desired(2, 750), 3, "ceil(2 × 750 / 500)");
    }

    #[test]
    fn a_decision_says_how_far_and_why_and_none_when_unchanged() {
        let spec: ServiceSpec =
            toml::from_str("image = \"x\"\ncpu = \"100m\"\ncpu_target = \"50%\"\nmin = 1\nmax = 3")
                .unwrap();
        let tuning = Tuning {
            interval: Duration::from_secs(1),
            window: Duration::from_secs(60),
        };
        let mut scaler = Autoscaler::of(&spec, tuning).expect("autoscaled");
        assert!(
            !scaler.due(Instant::now()),
            "the first sample is an interval away"
        );
        let t0 = Instant::now();
        let one = |usec: u64| HashMap::from([("a".to_string(), usec)]);
        assert!(
            scaler.decide(t0, 1, one(0)).is_none(),
            "one sample tells nothing"
        );
        // 0.1 CPU over 1 s: all of the 100m request, twice the 50% target.
        let t1 = t0 + Duration::from_secs(1);
        let scaled = scaler.decide(t1, 1, one(100_000)).expect("scaled");
        assert_eq!(scaled.replicas, 2);
        assert_eq!(scaled.decision, "scaled_up");
        assert_eq!(
            scaled.message,
            "scaled up from 1 to 2 replicas: CPU at 100% of the request, target 50%"
        );
        let t2 = t1 + Duration::from_secs(1);
        assert!(scaler.decide(t2, 2, one(150_000)).is_none(), "on target");
        let fixed: ServiceSpec = toml::from_str("image = \"x\"\nreplicas = 2").unwrap();
        assert!(Autoscaler::of(&fixed, tuning).is_none());
    }
}

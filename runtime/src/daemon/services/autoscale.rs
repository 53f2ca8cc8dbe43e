//! CPU-utilisation scaling of a Linux service: the current generation's cgroup CPU time,
//! sampled every `interval`, becomes per mille of the CPU request per replica, and [`Hpa`]
//! answers `ceil(current × observed / target)` within min and max, smoothed by [`Stabiliser`]
//! so replicas come down only after `window` of lower load (Kubernetes' horizontal pod
//! autoscaler, on one node).

use super::supervisor::ServiceRun;
use crate::app::ServiceScale;
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
    pub fn of(run: &ServiceRun, tuning: Tuning) -> Option<Self> {
        let Some(ServiceScale::Auto {
            min,
            max,
            cpu_target,
        }) = run.spec.scale()
        else {
            return None;
        };
        let request_millis = run.spec.cpu.map(|cpu| u64::from(cpu.millicores()))?;
        Some(Autoscaler {
            hpa: Hpa::new(min, max, u64::from(cpu_target.0) * 10),
            stabiliser: Stabiliser::new(tuning.window),
            request_millis,
            interval: tuning.interval,
            next: Instant::now() + tuning.interval,
            last: None,
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
}

//! Rules for services: how many replicas CPU utilisation calls for, and when to restart one.
//!
//! [`Hpa`] is Kubernetes' horizontal pod autoscaler rule, `desired = ceil(current × observed /
//! target)` within min and max, with its 10 % tolerance band so small wobbles change nothing.
//! [`Stabiliser`] keeps the highest recommendation of a window (five minutes in Kubernetes), so
//! replicas go up at once but come down only when load stayed down. [`Backoff`] says how long to
//! wait before restarting an instance that exited, per its [`RestartPolicy`], and
//! [`RestartCounter`] keeps the attempts, forgetting them after a long enough healthy run.
//! Measuring CPU and restarting are the caller's job: these are pure functions of their inputs.

use std::{
    collections::VecDeque,
    str::FromStr,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// A restart policy that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error("unknown restart policy `{policy}`; write always, on-failure or never")]
    RestartPolicy { policy: String },
}

/// Scales replicas on utilisation. Utilisations are in any one unit, as long as `target` and
/// the observed value agree (per mille of the CPU request, say: `700` for `cpu_target = "70%"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Hpa {
    pub min: u32,
    pub max: u32,
    pub target: u64,
    /// No change while `|observed / target - 1|` is within this, in per mille. Default 100
    /// (10 %, as Kubernetes' `--horizontal-pod-autoscaler-tolerance`).
    pub tolerance_permille: u64,
}

impl Hpa {
    /// A rule with the default 10 % tolerance.
    pub fn new(min: u32, max: u32, target: u64) -> Self {
        Hpa {
            min,
            max,
            target,
            tolerance_permille: 100,
        }
    }

    /// Replicas for `current` replicas running at `observed` average utilisation. Integer
    /// arithmetic throughout, so `ceil` never rounds a float's error up. With no replicas
    /// running (nothing to measure) or a zero target, it keeps `current`, clamped to min/max;
    /// if `min > max`, `max` wins.
    pub fn desired(&self, current: u32, observed: u64) -> u32 {
        let clamp = |n: u32| n.max(self.min).min(self.max);
        if current == 0 || self.target == 0 {
            return clamp(current);
        }
        let (observed, target) = (u128::from(observed), u128::from(self.target));
        if observed.abs_diff(target) * 1000 <= target * u128::from(self.tolerance_permille) {
            return clamp(current);
        }
        let desired = (u128::from(current) * observed).div_ceil(target);
        clamp(u32::try_from(desired).unwrap_or(u32::MAX))
    }
}

/// Smooths scale-down: the answer is the highest recommendation seen within `window`, so a
/// dip shorter than the window never removes replicas, while a rise applies at once.
#[derive(Debug, Clone)]
pub struct Stabiliser {
    window: Duration,
    recent: VecDeque<(Instant, u32)>,
}

impl Stabiliser {
    pub fn new(window: Duration) -> Self {
        Stabiliser {
            window,
            recent: VecDeque::new(),
        }
    }

    /// Records `desired` at `now` and returns the replicas to run.
    pub fn recommend(&mut self, now: Instant, desired: u32) -> u32 {
        while let Some(&(at, _)) = self.recent.front() {
            if now.saturating_duration_since(at) < self.window {
                break;
            }
            self.recent.pop_front();
        }
        self.recent.push_back((now, desired));
        self.recent.iter().map(|&(_, n)| n).max().unwrap_or(desired)
    }
}

/// When an exited instance is restarted: the manifest's `restart = "..."`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Whatever the exit code. The default for services.
    #[default]
    Always,
    /// Only after a non-zero exit code (a signal counts as one).
    OnFailure,
    Never,
}

impl std::fmt::Display for RestartPolicy {
    /// As the manifest writes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        })
    }
}

impl FromStr for RestartPolicy {
    type Err = ServiceError;

    fn from_str(text: &str) -> Result<Self, ServiceError> {
        match text {
            "always" => Ok(RestartPolicy::Always),
            "on-failure" => Ok(RestartPolicy::OnFailure),
            "never" => Ok(RestartPolicy::Never),
            _ => Err(ServiceError::RestartPolicy {
                policy: text.to_string(),
            }),
        }
    }
}

/// Exponential restart back-off. The defaults ([`Backoff::default`]) are Kubernetes':
/// 1 s, doubling, at most 5 min, forgotten after 10 min of running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Backoff {
    /// The wait before the first restart. Default 1 s.
    pub initial: Duration,
    /// The longest wait. Default 5 min.
    pub max: Duration,
    /// How much each failed attempt multiplies the wait. Default 2.
    pub factor: u32,
    /// A run at least this long resets the attempts to zero. Default 10 min.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            factor: 2,
            reset_after: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// The wait before restarting an instance that exited with `exit_code`, after `attempts`
    /// restarts already made; `None` when `policy` says not to restart.
    pub fn next_restart(
        &self,
        exit_code: i32,
        policy: RestartPolicy,
        attempts: u32,
    ) -> Option<Duration> {
        let restart = match policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Never => false,
        };
        restart.then(|| self.delay(attempts))
    }

    /// `initial × factor^attempts`, at most `max`.
    pub fn delay(&self, attempts: u32) -> Duration {
        let factor = self.factor.max(1);
        let mut delay = self.initial;
        for _ in 0..attempts {
            if delay >= self.max {
                break;
            }
            delay = delay.saturating_mul(factor);
        }
        delay.min(self.max)
    }
}

/// One instance's restart history: the attempts so far and when it last started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestartCounter {
    pub attempts: u32,
    pub started: Option<Instant>,
}

impl RestartCounter {
    pub fn started(&mut self, now: Instant) {
        self.started = Some(now);
    }

    /// The instance exited at `now`: the wait before restarting it, or `None` to leave it
    /// stopped. A run of at least `backoff.reset_after` forgets earlier failures first.
    pub fn exited(
        &mut self,
        now: Instant,
        exit_code: i32,
        policy: RestartPolicy,
        backoff: &Backoff,
    ) -> Option<Duration> {
        let ran = self
            .started
            .take()
            .map(|at| now.saturating_duration_since(at));
        if ran.is_some_and(|ran| ran >= backoff.reset_after) {
            self.attempts = 0;
        }
        let wait = backoff.next_restart(exit_code, policy, self.attempts)?;
        self.attempts = self.attempts.saturating_add(1);
        Some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn hpa_scales_by_the_ratio_rounding_up() {
        let hpa = Hpa::new(1, 10, 700);
        assert_eq!(hpa.desired(3, 1400), 6);
        assert_eq!(hpa.desired(3, 350), 2, "ceil(1.5)");
        assert_eq!(hpa.desired(3, 701 + 70), 4, "just past the band: ceil(3.3)");
        assert_eq!(hpa.desired(4, 0), 1, "no load: down to min");
    }

    #[test]
    fn hpa_ignores_changes_within_the_tolerance_band() {
        let hpa = Hpa::new(1, 10, 700);
        assert_eq!(hpa.desired(3, 770), 3, "+10 % exactly");
        assert_eq!(hpa.desired(3, 630), 3, "-10 % exactly");
        assert_eq!(
            hpa.desired(3, 629),
            3,
            "ceil(3 × 629 / 700) = ceil(2.7) = 3"
        );
        assert_eq!(hpa.desired(10, 629), 9);
        let exact = Hpa {
            tolerance_permille: 0,
            ..hpa
        };
        assert_eq!(exact.desired(3, 701), 4);
    }

    #[test]
    fn hpa_clamps_to_min_and_max() {
        let hpa = Hpa::new(2, 5, 500);
        assert_eq!(hpa.desired(4, 5000), 5);
        assert_eq!(hpa.desired(4, 10), 2);
        assert_eq!(hpa.desired(9, 500), 5, "in the band but above max");
        assert_eq!(hpa.desired(0, 900), 2, "nothing running: min");
        assert_eq!(
            Hpa::new(1, 5, 0).desired(3, 900),
            3,
            "zero target keeps current"
        );
        assert_eq!(Hpa::new(6, 4, 500).desired(3, 500), 4, "max wins over min");
        assert_eq!(
            Hpa::new(1, u32::MAX, 1).desired(u32::MAX, u64::MAX),
            u32::MAX
        );
    }

    #[test]
    fn the_stabiliser_raises_at_once_and_lowers_after_the_window() {
        let start = Instant::now();
        let mut window = Stabiliser::new(secs(300));
        assert_eq!(window.recommend(start, 5), 5);
        assert_eq!(window.recommend(start + secs(10), 8), 8, "up at once");
        assert_eq!(window.recommend(start + secs(60), 2), 8, "down is held");
        assert_eq!(window.recommend(start + secs(309), 2), 8);
        assert_eq!(
            window.recommend(start + secs(310), 2),
            2,
            "the 8 left the window"
        );
    }

    #[test]
    fn restart_policies_read_as_the_manifest_writes_them() {
        assert_eq!("on-failure".parse(), Ok(RestartPolicy::OnFailure));
        assert_eq!("always".parse(), Ok(RestartPolicy::Always));
        assert_eq!("never".parse(), Ok(RestartPolicy::Never));
        let error = "sometimes".parse::<RestartPolicy>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown restart policy `sometimes`; write always, on-failure or never"
        );
    }

    #[test]
    fn back_off_doubles_from_one_second_to_five_minutes() {
        let backoff = Backoff::default();
        let waits: Vec<_> = (0..12)
            .map(|n| backoff.next_restart(1, RestartPolicy::Always, n).unwrap())
            .collect();
        let expected = [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300].map(secs);
        assert_eq!(waits, expected);
        assert_eq!(backoff.delay(u32::MAX), secs(300), "no overflow");
    }

    #[test]
    fn each_policy_decides_whether_to_restart() {
        let backoff = Backoff::default();
        assert_eq!(
            backoff.next_restart(0, RestartPolicy::Always, 0),
            Some(secs(1))
        );
        assert_eq!(backoff.next_restart(0, RestartPolicy::OnFailure, 0), None);
        assert_eq!(
            backoff.next_restart(137, RestartPolicy::OnFailure, 2),
            Some(secs(4))
        );
        assert_eq!(backoff.next_restart(1, RestartPolicy::Never, 0), None);
    }

    #[test]
    fn a_long_healthy_run_resets_the_back_off() {
        let backoff = Backoff::default();
        let mut counter = RestartCounter::default();
        let mut now = Instant::now();
        let mut waits = Vec::new();
        for _ in 0..4 {
            counter.started(now);
            now += secs(5);
            waits.push(
                counter
                    .exited(now, 1, RestartPolicy::Always, &backoff)
                    .unwrap(),
            );
        }
        assert_eq!(waits, [1, 2, 4, 8].map(secs));
        counter.started(now);
        now += secs(600);
        let wait = counter.exited(now, 1, RestartPolicy::Always, &backoff);
        assert_eq!(wait, Some(secs(1)), "ten minutes up: forgiven");
        assert_eq!(counter.attempts, 1);
    }

    #[test]
    fn a_clean_exit_under_on_failure_stays_stopped_and_counts_nothing() {
        let mut counter = RestartCounter::default();
        counter.started(Instant::now());
        let wait = counter.exited(
            Instant::now(),
            0,
            RestartPolicy::OnFailure,
            &Backoff::default(),
        );
        assert_eq!(wait, None);
        assert_eq!(counter.attempts, 0);
    }

    #[test]
    fn restart_policies_print_as_the_manifest_writes_them() {
        for policy in [
            RestartPolicy::Always,
            RestartPolicy::OnFailure,
            RestartPolicy::Never,
        ] {
            assert_eq!(policy.to_string().parse::<RestartPolicy>(), Ok(policy));
        }
        assert_eq!(RestartPolicy::OnFailure.to_string(), "on-failure");
    }
}

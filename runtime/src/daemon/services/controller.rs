//! One service over its versions: the task that owns a service's supervisors (one per
//! generation), rolls a new generation out, rolls it back when it fails, applies `skiff
//! scale` and scales on CPU utilisation.
//!
//! A rollout ([`Rollout`]) is surge 1, unavailable 0: the new generation gets one more
//! replica, and only once that one is healthy (routed by the gateway beside the old ones) does
//! an old replica drain and stop. It fails when the new generation's instances exit or fail
//! their checks [`FAILED_EXITS`] times, turn unhealthy, or a step takes longer than its
//! deadline ([`step_deadline`]); then the new generation is stopped, the old ones get their
//! replicas back and the stored spec is put back ([`Store::restore_workload`]), so `skiff ps`,
//! the next deploy's diff and a restarted daemon all see the version that runs. A deploy in
//! the middle of a rollout supersedes it: every generation but the newest counts as old.
//!
//! Autoscaling ([`Autoscaler`]) pauses while a rollout runs; its answer is stored as the
//! workload's scale, so a restarted daemon starts where it left off.
//!
//! [`Store::restore_workload`]: crate::state::Store::restore_workload

use super::Context;
use super::autoscale::Autoscaler;
pub use super::autoscale::Tuning;
use super::status::{self, Progress};
use super::supervisor::{self, ServiceRun};
use crate::app::ServiceSpec;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// How often a rollout's progress is looked at.
const ROLLOUT_TICK: Duration = Duration::from_millis(100);

/// Exits (or failed starts) of the new generation that fail its rollout.
pub const FAILED_EXITS: u32 = 3;

/// Commands a service's controller takes; sent by [`super::Workloads`].
pub enum Command {
    /// Roll out a new generation with this many replicas. Boxed: a run is large, scales
    /// are small.
    Deploy { run: Box<ServiceRun>, replicas: u32 },
    /// `skiff scale`: replicas of the current generation.
    Scale(u32),
}

/// The longest one rollout step may take: a start, the start-up grace of its checks, and
/// enough failed checks to call it unhealthy, plus 10 s; at most 5 min.
pub fn step_deadline(spec: &ServiceSpec) -> Duration {
    let checks = match &spec.health {
        Some(health) => {
            let one = health.interval + health.timeout;
            one.saturating_mul(2 * (health.retries.max(1) + 1))
        }
        None => Duration::ZERO,
    };
    (Duration::from_secs(10) + checks).min(Duration::from_secs(300))
}

/// One generation's supervisor.
struct Generation {
    run: ServiceRun,
    replicas: watch::Sender<u32>,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl Generation {
    fn spawn(cx: &Arc<Context>, run: ServiceRun, replicas: u32) -> Self {
        let (replicas, wanted) = watch::channel(replicas);
        let (stop, stopped) = watch::channel(false);
        let handle = tokio::spawn(supervisor::supervise(
            Arc::clone(cx),
            run.clone(),
            wanted,
            stopped,
        ));
        Generation {
            run,
            replicas,
            stop,
            handle,
        }
    }

    fn want(&self) -> u32 {
        *self.replicas.borrow()
    }

    fn set(&self, replicas: u32) {
        self.replicas.send_if_modified(|now| {
            let changed = *now != replicas;
            *now = replicas;
            changed
        });
    }

    fn progress(&self) -> Progress {
        status::get(&self.run.progress)
    }

    /// Stops it; the handle ends once its containers are gone.
    fn retire(self) -> JoinHandle<()> {
        let _ = self.stop.send(true);
        self.handle
    }
}

/// A rollout in progress: the new generation is the controller's current one.
#[derive(Debug)]
struct Rollout {
    /// Each old generation's replicas when the rollout began, to give back on failure.
    before: Vec<(u64, u32)>,
    /// When the current step fails.
    deadline: Instant,
}

impl Rollout {
    /// A rollout away from `old` as they run now.
    fn from(old: &[Generation], deadline: Instant) -> Self {
        Rollout {
            before: old.iter().map(|g| (g.run.generation, g.want())).collect(),
            deadline,
        }
    }
}

/// What a look at a rollout decides.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Not yet: the new replica is not healthy.
    Wait,
    /// Old replicas down to `old`, new up to `new`.
    Step {
        old: u32,
        new: u32,
    },
    /// Every replica is new and healthy.
    Done,
    Failed(String),
}

/// The rule of a surge-1, unavailable-0 rollout to `want` replicas, given the new
/// generation's wanted and healthy replicas and exits so far.
fn judge(want: u32, new_want: u32, progress: &Progress, past_deadline: bool) -> Verdict {
    if progress.exits >= FAILED_EXITS {
        return Verdict::Failed(format!("its instances exited {} times", progress.exits));
    }
    if let Some(sick) = progress.instances.iter().find(|i| i.health == "unhealthy") {
        return Verdict::Failed(format!(
            "instance {} failed its health check",
            supervisor::short(&sick.container)
        ));
    }
    let healthy = progress
        .instances
        .iter()
        .filter(|i| i.health == "healthy")
        .count() as u32;
    if healthy < new_want.min(want) {
        return match past_deadline {
            true => Verdict::Failed(format!(
                "{healthy} of {new_want} new instances healthy by the step's deadline"
            )),
            false => Verdict::Wait,
        };
    }
    if new_want >= want {
        return Verdict::Done;
    }
    Verdict::Step {
        old: want - new_want,
        new: new_want + 1,
    }
}

/// What a controller shares with [`super::Workloads`].
pub struct Shared {
    /// What `skiff ps` shows.
    pub view: View,
    /// The generation in charge, written on a rollout and on a rollback.
    pub generation: Arc<AtomicU64>,
    pub tuning: Tuning,
}

/// A service as `skiff ps` sees it, put together when read from the supervisors' own
/// progress: a supervisor publishes its progress before it changes the gateway's routes, so
/// whatever the gateway routes to is already in the view.
#[derive(Clone, Default)]
pub struct View(Arc<Mutex<Parts>>);

#[derive(Default)]
struct Parts {
    current: Option<(u64, status::Shared)>,
    old: Vec<status::Shared>,
    rolling_out: bool,
    want: u32,
}

impl View {
    pub fn progress(&self) -> Progress {
        let parts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some((generation, current)) = &parts.current else {
            return Progress::default();
        };
        let mut progress = status::get(current);
        progress.desired = parts.want;
        if parts.rolling_out {
            let new = progress
                .instances
                .iter()
                .filter(|i| i.health == "healthy")
                .count();
            progress.state = format!(
                "rolling out generation {generation} ({new}/{} new)",
                parts.want
            );
            for old in &parts.old {
                progress.instances.extend(status::get(old).instances);
            }
        }
        progress
    }

    fn set(&self, parts: Parts) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = parts;
    }
}

/// A rollout a daemon restarted in the middle of: the old generation's containers still
/// running, taken over to be replaced as before the crash.
pub struct Resume {
    /// The old version, adopting its running containers.
    pub old: ServiceRun,
}

/// Runs one service until `stop`: starts `first` with `replicas` (or, resuming a rollout,
/// with the instances it adopts beside the old generation's), then follows `commands`.
pub async fn control(
    cx: Arc<Context>,
    shared: Shared,
    first: ServiceRun,
    replicas: u32,
    resume: Option<Resume>,
    mut commands: mpsc::Receiver<Command>,
    mut stop: watch::Receiver<bool>,
) {
    let tuning = shared.tuning;
    let (mut old, mut rollout, mut start_with) = (Vec::new(), None, replicas);
    if let Some(Resume { old: run }) = resume {
        let (kept, adopted) = (run.adopt.len() as u32, first.adopt.len() as u32);
        cx.event(
            &first.app,
            &first.name,
            None,
            "rolling-out",
            format!(
                "resuming the rollout of generation {} after a restart: {adopted} new and {kept} \
                 old (generation {}) instances running",
                first.generation, run.generation
            ),
        );
        rollout = Some(Rollout {
            before: vec![(run.generation, kept)],
            deadline: Instant::now() + step_deadline(&first.spec),
        });
        start_with = adopted.min(replicas);
        old.push(Generation::spawn(&cx, run, kept));
    }
    let mut control = Controller {
        autoscaler: Autoscaler::of(&first.spec, tuning),
        current: Generation::spawn(&cx, first, start_with),
        want: replicas,
        old,
        rollout,
        retiring: Vec::new(),
        tuning,
        generation: Arc::clone(&shared.generation),
        cx,
    };
    let view = shared.view;
    control.publish(&view);
    let mut tick = tokio::time::interval(ROLLOUT_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            command = commands.recv() => match command {
                Some(Command::Deploy { run, replicas }) => control.deploy(*run, replicas),
                Some(Command::Scale(replicas)) => control.scale(replicas),
                None => break,
            },
            _ = tick.tick() => {}
        }
        if control.rollout.is_some() {
            control.advance();
        } else {
            control.autoscale().await;
        }
        control.publish(&view);
    }
    let mut handles = std::mem::take(&mut control.retiring);
    handles.extend(control.old.drain(..).map(Generation::retire));
    handles.push(control.current.retire());
    for handle in handles {
        let _ = handle.await;
    }
    view.set(Parts::default());
}

struct Controller {
    cx: Arc<Context>,
    tuning: Tuning,
    /// The newest generation: the one rolling out, or the one that runs.
    current: Generation,
    /// Replicas wanted in all.
    want: u32,
    /// Older generations still running during a rollout.
    old: Vec<Generation>,
    rollout: Option<Rollout>,
    /// Generations stopping, awaited when the controller ends.
    retiring: Vec<JoinHandle<()>>,
    autoscaler: Option<Autoscaler>,
    /// The generation in charge, as [`super::Workloads`] reads it.
    generation: Arc<AtomicU64>,
}

impl Controller {
    fn deploy(&mut self, run: ServiceRun, replicas: u32) {
        let generation = run.generation;
        self.generation.store(generation, Ordering::Release);
        let deadline = Instant::now() + step_deadline(&run.spec);
        self.autoscaler = Autoscaler::of(&run.spec, self.tuning);
        let next = Generation::spawn(&self.cx, run, 0);
        let previous = std::mem::replace(&mut self.current, next);
        self.old.push(previous);
        self.want = replicas;
        self.rollout = Some(Rollout::from(&self.old, deadline));
        self.event(
            "rolling-out",
            format!("rolling out generation {generation} to {replicas} replicas, one at a time"),
        );
        self.advance();
    }

    fn scale(&mut self, replicas: u32) {
        self.want = replicas;
        if self.rollout.is_none() {
            self.current.set(replicas);
        }
        // During a rollout the next step reads `want`.
    }

    /// Takes the rollout one step further if its new replica is healthy; finishes or rolls
    /// back.
    fn advance(&mut self) {
        let Some(deadline) = self.rollout.as_ref().map(|r| r.deadline) else {
            return;
        };
        let now = Instant::now();
        let progress = self.current.progress();
        match judge(self.want, self.current.want(), &progress, now > deadline) {
            Verdict::Wait => {}
            Verdict::Step { old, new } => {
                self.shrink_old(old);
                self.current.set(new);
                if let Some(rollout) = &mut self.rollout {
                    rollout.deadline = now + step_deadline(&self.current.run.spec);
                }
            }
            Verdict::Done => {
                self.shrink_old(0);
                self.current.set(self.want);
                self.retiring
                    .extend(self.old.drain(..).map(Generation::retire));
                self.rollout = None;
                let run = &self.current.run;
                let generation = run.generation;
                if let Err(error) = self
                    .cx
                    .store
                    .finish_rollout(&run.app, &run.name, generation)
                {
                    tracing::warn!(%error, "the rollout's end was not stored");
                }
                self.event(
                    "rolled-out",
                    format!("generation {generation} serves all {} replicas", self.want),
                );
            }
            Verdict::Failed(why) => self.roll_back(why),
        }
    }

    /// Old generations down to `total` replicas in all, the oldest first.
    fn shrink_old(&self, total: u32) {
        let mut excess = self.old.iter().map(Generation::want).sum::<u32>();
        excess = excess.saturating_sub(total);
        for generation in &self.old {
            let cut = generation.want().min(excess);
            generation.set(generation.want() - cut);
            excess -= cut;
        }
    }

    /// The new generation failed: it stops, the old ones get their replicas back, and the one
    /// that had the most (the newest on a tie) is current again, in the store too.
    fn roll_back(&mut self, why: String) {
        let Some(rollout) = self.rollout.take() else {
            return;
        };
        let failed = self.current.run.generation;
        for generation in &self.old {
            let before = rollout
                .before
                .iter()
                .find(|(g, _)| *g == generation.run.generation)
                .map_or(0, |(_, n)| *n);
            generation.set(before);
        }
        let back = (0..self.old.len())
            .max_by_key(|&i| (self.old[i].want(), i))
            .expect("a rollout has an old generation");
        let previous = self.old.remove(back);
        self.want = previous.want();
        let failed_generation = std::mem::replace(&mut self.current, previous);
        self.retiring.push(failed_generation.retire());
        self.autoscaler = Autoscaler::of(&self.current.run.spec, self.tuning);
        let run = &self.current.run;
        self.generation.store(run.generation, Ordering::Release);
        let message = format!(
            "generation {failed} rolled back to generation {}: {why}",
            run.generation
        );
        match serde_json::to_value(&run.spec) {
            Ok(spec) => {
                if let Err(error) =
                    (self.cx.store).restore_workload(&run.app, &run.name, run.generation, &spec)
                {
                    tracing::error!(%error, "the rolled-back spec was not stored");
                }
            }
            Err(error) => tracing::error!(%error, "the rolled-back spec does not serialise"),
        }
        crate::metrics::global().decision("rolled_back");
        self.event("rolled-back", message);
        // Generations other than the one back in charge converge to it.
        if self.old.iter().any(|g| g.want() > 0) {
            let deadline = Instant::now() + step_deadline(&self.current.run.spec);
            self.rollout = Some(Rollout::from(&self.old, deadline));
        } else {
            self.retiring
                .extend(self.old.drain(..).map(Generation::retire));
        }
    }

    /// One autoscaling decision when one is due.
    async fn autoscale(&mut self) {
        let Some(scaler) = &mut self.autoscaler else {
            return;
        };
        let now = Instant::now();
        if !scaler.due(now) {
            return;
        }
        let instances = self.current.progress().instances;
        let sample = tokio::task::spawn_blocking(move || status::cpu_by_container(&instances))
            .await
            .unwrap_or_default();
        let Some(scaled) = scaler.decide(now, self.current.want(), sample) else {
            return;
        };
        self.want = scaled.replicas;
        self.current.set(scaled.replicas);
        let run = &self.current.run;
        scaled.record(&self.cx, &run.app, &run.name);
    }

    /// Tells the view which supervisors make up the service now.
    fn publish(&self, view: &View) {
        view.set(Parts {
            current: Some((
                self.current.run.generation,
                Arc::clone(&self.current.run.progress),
            )),
            old: (self.old.iter())
                .map(|g| Arc::clone(&g.run.progress))
                .collect(),
            rolling_out: self.rollout.is_some(),
            want: self.want,
        });
    }

    fn event(&self, kind: &str, message: String) {
        let run = &self.current.run;
        self.cx.event(&run.app, &run.name, None, kind, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::services::status::InstanceProgress;

    fn progress(health: &[&'static str], exits: u32) -> Progress {
        Progress {
            instances: health
                .iter()
                .enumerate()
                .map(|(i, health)| InstanceProgress {
                    container: format!("c{i}"),
                    health,
                    address: None,
                })
                .collect(),
            exits,
            ..Progress::default()
        }
    }

    #[test]
    fn a_rollout_adds_one_new_replica_per_healthy_one_and_ends_when_all_are_new() {
        assert_eq!(
            judge(3, 0, &progress(&[], 0), false),
            Verdict::Step { old: 3, new: 1 },
            "the first new replica starts before any old one stops"
        );
        assert_eq!(
            judge(3, 1, &progress(&["starting"], 0), false),
            Verdict::Wait
        );
        assert_eq!(
            judge(3, 1, &progress(&["healthy"], 0), false),
            Verdict::Step { old: 2, new: 2 }
        );
        assert_eq!(
            judge(3, 3, &progress(&["healthy"; 3], 0), false),
            Verdict::Done
        );
    }

    #[test]
    fn a_rollout_fails_on_exits_an_unhealthy_instance_or_the_deadline() {
        assert!(matches!(
            judge(2, 1, &progress(&[], FAILED_EXITS), false),
            Verdict::Failed(why) if why.contains("exited 3 times")
        ));
        assert!(matches!(
            judge(2, 1, &progress(&["unhealthy"], 0), false),
            Verdict::Failed(why) if why.contains("c0 failed its health check")
        ));
        assert!(matches!(
            judge(2, 1, &progress(&["starting"], 0), true),
            Verdict::Failed(why) if why.contains("0 of 1 new instances healthy")
        ));
        assert_eq!(
            judge(2, 1, &progress(&["healthy"], 0), true),
            Verdict::Step { old: 1, new: 2 },
            "a healthy step is taken even late"
        );
    }

    #[test]
    fn a_steps_deadline_grows_with_the_checks_and_is_capped() {
        let spec = |health: &str| -> ServiceSpec {
            toml::from_str(&format!("image = \"x\"\n{health}")).unwrap()
        };
        assert_eq!(step_deadline(&spec("")), Duration::from_secs(10));
        let checked =
            spec("health = { tcp = 80, interval = \"1s\", timeout = \"1s\", retries = 2 }");
        assert_eq!(step_deadline(&checked), Duration::from_secs(22));
        let slow = spec("health = { tcp = 80, interval = \"1h\" }");
        assert_eq!(step_deadline(&slow), Duration::from_secs(300));
    }
}

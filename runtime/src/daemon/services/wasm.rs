//! Wasm services: `replicas` in-process instances of a `wasi:cli/run` command (a component,
//! or a WASI preview-1 module's `_start`), each a tokio task, kept running by one supervisor
//! task per service the way Linux replicas are ([`super::supervisor`]): restarted per the
//! `restart` policy with the same [`Backoff`] and [`RestartCounter`], reserved in the node's
//! ledger, told as events and instance rows ([`InstanceKind::Wasm`]).
//!
//! At deploy, [`resolve`] refuses what a Wasm service cannot do, so nothing is stored: exec
//! health checks (there is no shell beside it). It also compiles the program and checks that
//! it is a command, and that its volumes exist.
//!
//! An instance gets the spec's env, `command` as its arguments after argv[0] (the service's
//! name), its volumes as preopens, stdout and stderr to its own log ([`crate::daemon::logs`],
//! one per replica, kept across restarts, gone with the row), and `memory_limit` (else
//! `memory`) enforced by the store's limiter. With `ports`, each replica gets a loopback
//! address of its own ([`loopback`]; instances share the daemon's network, so replicas and
//! services asking for one port would collide on 127.0.0.1), is told it as `HOST` and its
//! first port as `PORT`, and may bind and listen there on its ports (`wasi:sockets`), nothing
//! else; it is routed by the gateway (`route`) once its health check passes: the spec's
//! `http` or `tcp` check against that address, or a TCP connect to its first port. Without
//! ports it has no socket, and counts as healthy while it runs. Stopping (app removed or
//! redeployed) drops the instances' futures: a guest computing is interrupted at its next
//! epoch tick, one blocked in a host call at once; the wait for them is bounded.
//!
//! Its instances' CPU is their own, though they run on the daemon's threads: each runs
//! [`CpuMetered`], counted into its replica's counter (kept across restarts; `skiff ps` sums
//! the running ones) and capped at `cpu_limit` (else `cpu`) per 100 ms, as a cgroup would.
//!
//! The number of replicas comes from a watch, as a Linux supervisor's does (`skiff scale`
//! changes it live): more start at once, the highest ones beyond it are dropped. With `min`,
//! `max` and `cpu_target` the supervisor also samples its running replicas' counters every
//! autoscaling interval and resizes to the [`Autoscaler`]'s answer, as a Linux service's
//! controller does.
//!
//! No instance outlives the daemon, so there is nothing to adopt after a restart: rows left
//! by a previous daemon are removed and the instances started afresh.

mod loopback;
mod resolve;

pub use loopback::LoopbackPool;

pub use resolve::{WasmService, WasmServiceError, check, resolve};

use super::autoscale::{Autoscaler, Tuning};
use super::health::{self, Health, Tracker};
use super::proxy::ServiceTarget;
use super::status::{self, InstanceProgress, Progress};
use super::{Context, service_port, service_requests};
use crate::app::{HealthSpec, ServiceSpec};
use crate::daemon::logs;
use crate::sched::key::{InstanceKey, Kind};
use crate::sched::ledger::Reservation;
use crate::sched::service::{Backoff, RestartCounter};
use crate::state::{InstanceKind, InstanceRecord, InstanceState, InstanceUpdate};
use crate::wasm::command;
use crate::wasm::cpu::{CpuCounter, CpuMetered};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::{AbortHandle, Id, JoinSet};

/// How soon an instance the node had no room for asks the ledger again.
const CAPACITY_RETRY: Duration = Duration::from_secs(1);

/// How long a stop waits for the instances' tasks to end after dropping them; a guest is
/// interrupted at its next epoch tick, so this is only reached if the runtime is stuck.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// What a Wasm service's supervisor runs.
pub struct WasmServiceRun {
    pub app: String,
    pub name: String,
    pub generation: u64,
    pub spec: ServiceSpec,
    pub service: WasmService,
    pub progress: status::Shared,
    /// The gateway's side of its route, when it has one.
    pub target: Option<Arc<ServiceTarget>>,
    /// How an autoscaled service samples and settles.
    pub tuning: Tuning,
}

/// The instance row of a replica of a generation: one per replica, updated as it restarts.
pub fn instance_id(app: &str, service: &str, generation: u64, replica: u32) -> String {
    format!("wasm.{app}.{service}.{generation}.{replica}")
}

/// One replica's place: the instance running in it, or when to start one.
struct Slot {
    replica: u32,
    running: Option<Running>,
    counter: RestartCounter,
    /// When to start an instance; `None` when the restart policy says never again.
    start_at: Option<Instant>,
    /// Why no instance runs here, for `skiff ps`.
    pending: String,
    /// CPU time its instances used, in microseconds: one counter over restarts, so samples
    /// only grow.
    cpu: CpuCounter,
    /// Its own loopback address, when the service listens; kept over restarts.
    address: Option<loopback::Lease>,
}

impl Slot {
    fn new(replica: u32, address: Option<loopback::Lease>) -> Self {
        Slot {
            replica,
            running: None,
            counter: RestartCounter::default(),
            start_at: Some(Instant::now()),
            pending: format!("replica {replica} starting"),
            cpu: CpuCounter::default(),
            address,
        }
    }

    /// Where its instance listens: its own loopback address.
    fn ip(&self) -> IpAddr {
        (self.address.as_ref())
            .map_or(Ipv4Addr::LOCALHOST, |lease| lease.address)
            .into()
    }
}

struct Running {
    /// Its tokio task, to know which replica a finished task was.
    task: Id,
    /// To end it when its replica is scaled away.
    abort: AbortHandle,
    /// Its requests in the node's ledger, given back when this is dropped.
    _reservation: Reservation,
    tracker: Tracker,
    started: Instant,
    next_check: Instant,
}

/// How one instance ended: its exit code, and the failure behind it (a trap, an exhausted
/// memory limit) when it did not exit by itself.
type Ended = (i32, Option<String>);

/// Runs until `stop` turns true (or its sender is gone), then drops every instance, waits
/// (bounded) for them to end and forgets their rows. `replicas` says how many to keep, and
/// may change at any time (`skiff scale`).
pub async fn supervise(
    cx: Arc<Context>,
    run: WasmServiceRun,
    mut replicas: watch::Receiver<u32>,
    mut stop: watch::Receiver<bool>,
) {
    let health = health_of(&run.spec);
    let mut autoscaler = Autoscaler::of(&run.spec, run.tuning);
    let sup = Supervisor { cx, run, health };
    sup.forget_stale();
    let want = *replicas.borrow_and_update();
    let mut slots: Vec<Slot> = (0..want)
        .map(|replica| Slot::new(replica, sup.address()))
        .collect();
    let mut instances: JoinSet<Ended> = JoinSet::new();
    loop {
        if let Some(scaler) = &mut autoscaler {
            sup.autoscale(scaler, &mut slots);
        }
        for slot in &mut slots {
            if slot.running.is_none() && slot.start_at.is_some_and(|at| at <= Instant::now()) {
                sup.start(slot, &mut instances);
            }
        }
        for slot in &mut slots {
            sup.check_health(slot).await;
        }
        sup.publish(&slots);
        let next_start = (slots.iter())
            .filter_map(|s| match &s.running {
                None => s.start_at,
                Some(running) => sup.health.as_ref().map(|_| running.next_check),
            })
            .min();
        let wake = next_start
            .into_iter()
            .chain(autoscaler.as_ref().map(|s| s.next))
            .min();
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            changed = replicas.changed() => {
                if changed.is_err() {
                    break;
                }
                let want = *replicas.borrow_and_update();
                sup.resize(&mut slots, want);
            }
            Some(joined) = instances.join_next_with_id() => {
                let (task, ended) = match joined {
                    Ok((task, ended)) => (task, ended),
                    Err(error) => (error.id(), (1, Some(format!("its task failed: {error}")))),
                };
                if let Some(slot) = slots
                    .iter_mut()
                    .find(|s| s.running.as_ref().is_some_and(|r| r.task == task))
                {
                    sup.exited(slot, ended);
                }
            }
            _ = sleep_until(wake), if wake.is_some() => {}
        }
    }
    if let Some(target) = &sup.run.target {
        target.set_healthy(sup.run.generation, Vec::new());
    }
    instances.abort_all();
    let drained = async { while instances.join_next().await.is_some() {} };
    if tokio::time::timeout(STOP_WAIT, drained).await.is_err() {
        tracing::warn!(
            app = sup.run.app,
            service = sup.run.name,
            "wasm instances did not end in time; left to the runtime"
        );
    }
    status::set(&sup.run.progress, Progress::default());
    for slot in &mut slots {
        let id = sup.instance(slot.replica);
        if slot.running.take().is_some() {
            sup.event(Some(&id), "stopped", "stopped".into());
        }
        sup.forget(&id);
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
    }
}

/// Tells a listening instance where: `HOST` (its own loopback address) and `PORT` (its first
/// port), unless the spec's env already names them.
fn tell_where(env: &mut Vec<(String, String)>, address: Ipv4Addr, port: u16) {
    for (key, value) in [("HOST", address.to_string()), ("PORT", port.to_string())] {
        if !env.iter().any(|(k, _)| k == key) {
            env.push((key.to_string(), value));
        }
    }
}

struct Supervisor {
    cx: Arc<Context>,
    run: WasmServiceRun,
    /// How an instance is checked: the spec's check, or a connect to its first port.
    health: Option<HealthSpec>,
}

/// A Wasm service's check: the spec's, else (with ports) a TCP connect to the first one every
/// 2 s; none without ports (healthy while running).
fn health_of(spec: &ServiceSpec) -> Option<HealthSpec> {
    spec.health.clone().or_else(|| {
        let port = *spec.ports.first()?;
        Some(HealthSpec {
            tcp: Some(port),
            http: None,
            port: None,
            exec: None,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            retries: 3,
        })
    })
}

impl Supervisor {
    /// A loopback address of its own for a new replica's slot, when the service listens.
    fn address(&self) -> Option<loopback::Lease> {
        if self.run.spec.ports.is_empty() {
            return None;
        }
        let lease = self.cx.loopback.lease();
        if lease.is_none() {
            tracing::error!("every loopback address for Wasm instances is in use");
        }
        lease
    }

    fn instance(&self, replica: u32) -> String {
        instance_id(&self.run.app, &self.run.name, self.run.generation, replica)
    }

    /// Removes the rows of this service's Wasm instances a previous daemon (or generation)
    /// left: none of those instances runs any more.
    fn forget_stale(&self) {
        let rows = (self.cx.store).list_instances(Some(&self.run.app), Some(&self.run.name));
        for row in rows.into_iter().flatten() {
            if row.kind == InstanceKind::Wasm {
                self.forget(&row.id);
            }
        }
    }

    /// Removes an instance's row, then its log: nothing reads a log without its row.
    fn forget(&self, id: &str) {
        if let Err(error) = self.cx.store.remove_instance(id) {
            tracing::warn!(%error, instance = id, "instance not forgotten");
        }
        logs::remove_wasm_log(&self.cx.data_dir, id);
    }

    /// Keeps `want` replicas: new slots start at once; the highest ones beyond `want` are
    /// dropped (interrupted at their next epoch tick) and forgotten.
    fn resize(&self, slots: &mut Vec<Slot>, want: u32) {
        let before = slots.len();
        slots.sort_by_key(|slot| slot.replica);
        while slots.len() > want as usize {
            let slot = slots.pop().expect("longer than want");
            let id = self.instance(slot.replica);
            if let Some(running) = slot.running {
                running.abort.abort();
                self.event(
                    Some(&id),
                    "stopped",
                    format!("replica {} stopped (scaled down)", slot.replica),
                );
            }
            self.forget(&id);
        }
        let mut replica = 0;
        while slots.len() < want as usize {
            while slots.iter().any(|slot| slot.replica == replica) {
                replica += 1;
            }
            slots.push(Slot::new(replica, self.address()));
        }
        if slots.len() != before {
            let message = format!(
                "generation {}: {before} -> {} replicas",
                self.run.generation,
                slots.len()
            );
            self.event(None, "scaled", message);
        }
    }

    /// Reserves one instance's requests in the node's ledger, under a key of its own.
    fn reserve(&self) -> Result<Reservation, String> {
        static INSTANCES: AtomicU32 = AtomicU32::new(0);
        let key = InstanceKey::new(
            Kind::Service,
            &self.run.app,
            &self.run.name,
            INSTANCES.fetch_add(1, Ordering::Relaxed),
        );
        (self.cx.ledger).reserve_or_retry(&key, service_requests(&self.run.spec))
    }

    /// Starts the replica's instance as a task of `instances`, once the node has room.
    fn start(&self, slot: &mut Slot, instances: &mut JoinSet<Ended>) {
        let reservation = match self.reserve() {
            Ok(reservation) => reservation,
            Err(reason) => return self.wait_for_capacity(slot, reason),
        };
        let id = self.instance(slot.replica);
        self.record_running(&id);
        let (cx, service) = (Arc::clone(&self.cx), self.run.service.clone());
        let mut caps = service.caps.clone();
        caps.stdio = logs::capture(&cx.data_dir, &id);
        if let (Some(lease), Some(&port)) = (&slot.address, caps.listen.first()) {
            caps.listen_on = Some(lease.address.into());
            tell_where(&mut caps.env, lease.address, port);
        }
        let (cpu, quota) = (Arc::clone(&slot.cpu), cpu_quota(&self.run.spec));
        let abort = instances.spawn(async move {
            let ran = command::run(&cx.engine, &service.program, &caps, &service.limits);
            match CpuMetered::new(ran, cpu, quota).await {
                Ok(code) => (code, None),
                Err(error) => (error.exit_code(), Some(error.to_string())),
            }
        });
        self.event(
            Some(&id),
            "started",
            format!("replica {} started in-process (wasm)", slot.replica),
        );
        slot.counter.started(Instant::now());
        let mut tracker = Tracker::default();
        if self.health.is_none() {
            tracker.record(true, 1);
        }
        slot.running = Some(Running {
            task: abort.id(),
            abort,
            _reservation: reservation,
            tracker,
            started: Instant::now(),
            next_check: Instant::now() + health::STARTING_INTERVAL,
        });
    }

    /// The replica's row says running: inserted the first time, updated on a restart.
    fn record_running(&self, id: &str) {
        let running = InstanceUpdate::to(InstanceState::Running).reason("running");
        if let Ok(Some(_)) = self.cx.store.get_instance(id) {
            return self.update(id, running);
        }
        let mut row = InstanceRecord::new(
            id,
            &self.run.app,
            &self.run.name,
            InstanceKind::Wasm,
            self.run.generation,
        );
        row.state = InstanceState::Running;
        if let Err(error) = self.cx.store.insert_instance(&row) {
            tracing::warn!(%error, instance = id, "instance not recorded");
        }
    }

    /// No room on the node now: ask again shortly; tell `skiff ps` and the events why, once
    /// per reason.
    fn wait_for_capacity(&self, slot: &mut Slot, reason: String) {
        let pending = format!("pending: {reason}");
        if slot.pending != pending {
            let message = format!("replica {} {pending}", slot.replica);
            self.event(None, "pending", message);
            slot.pending = pending;
        }
        slot.start_at = Some(Instant::now() + CAPACITY_RETRY);
    }

    /// The replica's instance ended: record it, then restart it after the back-off, or not,
    /// per the restart policy.
    fn exited(&self, slot: &mut Slot, (code, failure): Ended) {
        slot.running = None;
        let id = self.instance(slot.replica);
        if let Some(failure) = failure {
            self.event(Some(&id), "trapped", failure);
        }
        let reason = format!("exited with code {code}");
        self.update(
            &id,
            InstanceUpdate::to(InstanceState::Exited).reason(&reason),
        );
        self.event(Some(&id), "exited", reason.clone());
        let policy = self.run.spec.restart;
        let wait = (slot.counter).exited(Instant::now(), code, policy, &Backoff::default());
        slot.start_at = wait.map(|wait| Instant::now() + wait);
        let (kind, message) = status::restart_told(slot.replica, wait, policy, &reason);
        slot.pending = message.clone();
        self.event(None, kind, message);
    }

    /// Runs the replica's health check when due, against 127.0.0.1: quick checks whose
    /// failures do not count until the first pass or `interval × retries`, then the spec's pace.
    async fn check_health(&self, slot: &mut Slot) {
        let address = slot.ip();
        let (Some(spec), Some(running)) = (&self.health, &mut slot.running) else {
            return;
        };
        if running.next_check > Instant::now() {
            return;
        }
        let target = health::Target { address, pid: 0 };
        let outcome = health::check(spec, target).await;
        let (next, changed) =
            health::after_check(&mut running.tracker, spec, running.started, &outcome);
        running.next_check = Instant::now() + next;
        let id = self.instance(slot.replica);
        health::tell(
            &self.cx,
            (&self.run.app, &self.run.name, &id),
            changed,
            outcome,
        );
    }

    /// One autoscaling decision when one is due: the running replicas' CPU counters are
    /// sampled, and the replicas resized to the answer, which is stored and told.
    fn autoscale(&self, scaler: &mut Autoscaler, slots: &mut Vec<Slot>) {
        let now = Instant::now();
        if !scaler.due(now) {
            return;
        }
        let sample = (slots.iter())
            .filter(|slot| slot.running.is_some())
            .map(|slot| {
                (
                    self.instance(slot.replica),
                    slot.cpu.load(Ordering::Relaxed),
                )
            })
            .collect();
        let Some(scaled) = scaler.decide(now, slots.len() as u32, sample) else {
            return;
        };
        let replicas = scaled.replicas;
        scaled.record(&self.cx, &self.run.app, &self.run.name);
        self.resize(slots, replicas);
    }

    /// Tells `skiff ps` how things are, then the gateway where to route (healthy instances
    /// only; a service without ports is healthy while it runs).
    // `..Progress::default()`: fields beside these (more come as Linux services grow, such
    // as rollout counters) keep their defaults.
    #[allow(clippy::needless_update)]
    fn publish(&self, slots: &[Slot]) {
        let instances: Vec<InstanceProgress> = (slots.iter())
            .filter_map(|s| Some((s, s.running.as_ref()?)))
            .map(|(s, running)| InstanceProgress {
                container: self.instance(s.replica),
                health: match running.tracker.health {
                    Health::Starting => "starting",
                    Health::Healthy => "healthy",
                    Health::Unhealthy => "unhealthy",
                },
                address: service_port(&self.run.spec)
                    .map(|port| SocketAddr::new(s.ip(), port).to_string()),
            })
            .collect();
        let healthy = instances.iter().filter(|i| i.health == "healthy").count();
        let waiting = slots.iter().filter(|s| s.running.is_none());
        let restarting = waiting.clone().any(|s| s.start_at.is_some());
        status::set(
            &self.run.progress,
            Progress {
                state: state(healthy, slots.len(), restarting).to_string(),
                desired: slots.len() as u32,
                instances,
                pending: waiting.map(|s| s.pending.clone()).collect(),
                cpu: (slots.iter())
                    .filter(|s| s.running.is_some())
                    .map(|s| Arc::clone(&s.cpu))
                    .collect(),
                ..Progress::default()
            },
        );
        // After the status: whatever the gateway routes to, `skiff ps` already shows.
        if let (Some(target), Some(port)) = (&self.run.target, service_port(&self.run.spec)) {
            let routed = (slots.iter())
                .filter(|s| {
                    let running = s.running.as_ref();
                    running.is_some_and(|r| r.tracker.health == Health::Healthy)
                })
                .map(|s| SocketAddr::new(s.ip(), port))
                .collect();
            target.set_healthy(self.run.generation, routed);
        }
    }

    fn update(&self, id: &str, update: InstanceUpdate) {
        if let Err(error) = self.cx.store.update_instance_state(id, &update) {
            tracing::warn!(%error, instance = id, "instance state not recorded");
        }
    }

    fn event(&self, instance: Option<&str>, kind: &str, message: String) {
        self.cx
            .event(&self.run.app, &self.run.name, instance, kind, message);
    }
}

/// An instance's CPU quota in millicores: its `cpu_limit`, else its request `cpu`, as a Linux
/// container's cgroup gets; none without either.
fn cpu_quota(spec: &ServiceSpec) -> Option<u32> {
    spec.cpu_limit.or(spec.cpu).map(|cpu| cpu.millicores())
}

/// A service's state from its running instances, those it wants, and whether any of the
/// missing ones will be started again.
fn state(running: usize, desired: usize, restarting: bool) -> &'static str {
    match (running, restarting) {
        (r, _) if r == desired => "running",
        (0, false) => "stopped",
        (0, true) => "pending",
        _ => "degraded",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_says_whether_missing_instances_come_back() {
        assert_eq!(state(2, 2, false), "running");
        assert_eq!(state(0, 0, false), "running");
        assert_eq!(state(1, 2, true), "degraded");
        assert_eq!(state(0, 2, true), "pending");
        assert_eq!(state(0, 2, false), "stopped");
    }
}

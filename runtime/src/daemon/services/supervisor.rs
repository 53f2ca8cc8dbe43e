//! One generation of one service: a tokio task that keeps as many containers running as its
//! `replicas` watch says, restarts those that exit per the restart policy with exponential
//! back-off, health-checks them, and tells the gateway which ones are healthy.
//!
//! Exits are found by polling each container's record and monitor every [`TICK`]; the
//! container's monitor is what records the exit code. A health check runs when due, not on the
//! tick: while an instance has not passed one yet it is checked every [`health::STARTING_INTERVAL`]
//! (failures then do not count, for `interval × retries`), so a fresh instance is routed as
//! soon as it answers. Fewer replicas drain the highest ones: out of the gateway at once, then
//! stopped when their requests in flight ended (at most [`DRAIN`]). Every change is an event
//! and a row in the store's instances, so `skiff ps` and a restarted daemon see what this task
//! saw.

use super::health::{self, Health, Tracker};
use super::instance::{self, STOP_GRACE, Workload};
use super::proxy::ServiceTarget;
use super::status::{self, InstanceProgress, Progress};
use super::{Context, service_port, service_requests};
use crate::app::ServiceSpec;
use crate::linux::container::{ContainerRecord, Containers, Owner};
use crate::linux::hosts::ExtraHost;
use crate::oci::images::ImageRecord;
use crate::sched::key::{InstanceKey, Kind};
use crate::sched::ledger::Reservation;
use crate::sched::service::{Backoff, RestartCounter};
use crate::state::{InstanceKind, InstanceRecord, InstanceState, InstanceUpdate};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How often exits are looked for.
const TICK: Duration = Duration::from_millis(250);

/// How soon an instance the node had no room for asks the ledger again.
const CAPACITY_RETRY: Duration = Duration::from_secs(1);

/// The longest a drained instance waits for its requests in flight before it is stopped.
pub const DRAIN: Duration = Duration::from_secs(30);

/// What a supervisor runs.
#[derive(Clone)]
pub struct ServiceRun {
    pub app: String,
    pub name: String,
    /// The workload's generation; its containers carry it in their owner.
    pub generation: u64,
    pub spec: ServiceSpec,
    pub image: ImageRecord,
    pub target: Arc<ServiceTarget>,
    pub progress: status::Shared,
    /// Running containers of this workload and generation to take over, one per replica.
    pub adopt: Vec<ContainerRecord>,
    /// The app's service names, for its containers' `/etc/hosts`.
    pub hosts: Vec<ExtraHost>,
}

/// One replica's place: the container running in it, or when to start one.
struct Slot {
    replica: u32,
    running: Option<Running>,
    counter: RestartCounter,
    /// When to start a container; `None` when the restart policy says never again.
    start_at: Option<Instant>,
    /// Why no container runs here, for `skiff ps`.
    pending: String,
}

impl Slot {
    fn new(replica: u32) -> Self {
        Slot {
            replica,
            running: None,
            counter: RestartCounter::default(),
            start_at: Some(Instant::now()),
            pending: format!("replica {replica} starting"),
        }
    }

    /// When this slot next needs a look (a health check or a start), if sooner than a tick.
    fn due(&self) -> Option<Instant> {
        match &self.running {
            Some(running) => Some(running.next_check),
            None => self.start_at,
        }
    }
}

struct Running {
    record: ContainerRecord,
    tracker: Tracker,
    started: Instant,
    next_check: Instant,
    /// Its requests in the node's ledger, given back when this is dropped (the container is
    /// gone). `None` for an adopted container the node no longer has room for.
    reservation: Option<Reservation>,
}

impl Running {
    fn new(record: ContainerRecord, spec: &ServiceSpec, reservation: Option<Reservation>) -> Self {
        let mut tracker = Tracker::default();
        let mut next_check = Instant::now();
        match &spec.health {
            // No check: healthy once running.
            None => {
                tracker.record(true, 1);
                next_check += Duration::from_secs(3600);
            }
            // The first check a moment after the start, not before the process could listen.
            Some(_) => next_check += health::STARTING_INTERVAL,
        }
        Running {
            record,
            tracker,
            started: Instant::now(),
            next_check,
            reservation,
        }
    }

    fn address(&self) -> Option<IpAddr> {
        self.record.address.as_deref()?.parse().ok()
    }
}

/// Runs until `stop` turns true, then stops and removes every container it runs. `replicas`
/// says how many to keep, and may change at any time (`skiff scale`, autoscaling, rollouts).
pub async fn supervise(
    cx: Arc<Context>,
    run: ServiceRun,
    mut replicas: watch::Receiver<u32>,
    mut stop: watch::Receiver<bool>,
) {
    let want = *replicas.borrow_and_update();
    let adopted = (run.adopt.iter()).filter_map(|c| c.owner.as_ref().map(|o| o.replica));
    let mut slots: Vec<Slot> = replica_numbers(adopted, want)
        .into_iter()
        .map(Slot::new)
        .collect();
    let mut sup = Supervisor {
        cx,
        run,
        exits: 0,
        drains: JoinSet::new(),
    };
    for extra in sup.adopt(&mut slots) {
        // A replica beyond the count, or a second one for the same replica.
        let (data_dir, id) = (sup.cx.data_dir.clone(), extra.id.clone());
        let _ = tokio::task::spawn_blocking(move || {
            instance::stop_and_remove(&data_dir, &id, STOP_GRACE)
        })
        .await;
    }
    sup.publish(&slots);
    loop {
        let now = Instant::now();
        let wake = (slots.iter().filter_map(Slot::due))
            .min()
            .unwrap_or(now + TICK)
            .clamp(now, now + TICK);
        tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {}
            _ = stop.wait_for(|stop| *stop) => break,
            changed = replicas.changed() => {
                if changed.is_err() {
                    break;
                }
                let want = *replicas.borrow_and_update();
                sup.resize(&mut slots, want);
            }
        }
        for slot in &mut slots {
            sup.step(slot).await;
        }
        sup.publish(&slots);
        while sup.drains.try_join_next().is_some() {}
    }
    // Out of the gateway first; each instance then finishes what it was given.
    sup.run.target.set_healthy(sup.run.generation, Vec::new());
    for slot in &mut slots {
        if let Some(running) = slot.running.take() {
            sup.drain(running, slot.replica, "stopped");
        }
    }
    while sup.drains.join_next().await.is_some() {}
    status::set(&sup.run.progress, Progress::default());
}

/// The replica numbers of `want` slots: those of the containers to adopt first (a drained
/// replica 0 leaves replica 1 running, which keeps its number), then the lowest free ones.
fn replica_numbers(adopted: impl IntoIterator<Item = u32>, want: u32) -> Vec<u32> {
    let mut numbers: Vec<u32> = adopted.into_iter().collect();
    numbers.sort_unstable();
    numbers.dedup();
    numbers.truncate(want as usize);
    let mut next = 0;
    while numbers.len() < want as usize {
        if !numbers.contains(&next) {
            numbers.push(next);
        }
        next += 1;
    }
    numbers
}

struct Supervisor {
    cx: Arc<Context>,
    run: ServiceRun,
    /// Exits and failed starts since this generation began, for the rollout's verdict.
    exits: u32,
    /// Instances being drained, each by a task of its own.
    drains: JoinSet<()>,
}

impl Supervisor {
    /// Takes over the containers a previous daemon started, one per replica; returns those
    /// left over, to be stopped.
    fn adopt(&self, slots: &mut [Slot]) -> Vec<ContainerRecord> {
        let mut extra = Vec::new();
        // Those the last daemon saw healthy are routed at once, not after a first check: a
        // restart should not cost a service its traffic. Their checks go on as before.
        let was_healthy: Vec<String> = (self.cx.store)
            .list_instances(Some(&self.run.app), Some(&self.run.name))
            .unwrap_or_default()
            .into_iter()
            .filter(|i| i.reason.as_deref() == Some("healthy"))
            .map(|i| i.id)
            .collect();
        for record in &self.run.adopt {
            let replica = record.owner.as_ref().map_or(u32::MAX, |o| o.replica);
            let Some(slot) = slots
                .iter_mut()
                .find(|s| s.replica == replica && s.running.is_none())
            else {
                extra.push(record.clone());
                continue;
            };
            let mut instance = InstanceRecord::new(
                &record.id,
                &self.run.app,
                &self.run.name,
                InstanceKind::Linux,
                self.run.generation,
            );
            instance.state = InstanceState::Running;
            if let Err(error) = self.cx.store.insert_instance(&instance) {
                tracing::debug!(%error, "instance already recorded");
            }
            let healthy = was_healthy.contains(&record.id);
            let reason = if healthy { "healthy" } else { "adopted" };
            self.update(&record.id, running_update(record).reason(reason));
            self.event(
                Some(&record.id),
                "adopted",
                format!("container {} adopted after a restart", short(&record.id)),
            );
            // It runs already: a node that shrank meanwhile is said, not enforced.
            let reservation = self
                .reserve()
                .inspect_err(|reason| {
                    tracing::warn!(container = record.id, reason, "adopted over capacity")
                })
                .ok();
            slot.counter.started(Instant::now());
            let mut running = Running::new(record.clone(), &self.run.spec, reservation);
            if healthy {
                running.tracker.record(true, 1);
            }
            slot.running = Some(running);
        }
        extra
    }

    /// Keeps `want` replicas: new slots start at once, the highest ones beyond `want` drain.
    fn resize(&mut self, slots: &mut Vec<Slot>, want: u32) {
        let before = slots.len();
        slots.sort_by_key(|slot| slot.replica);
        let mut leaving = Vec::new();
        while slots.len() > want as usize {
            let slot = slots.pop().expect("longer than want");
            leaving.extend(slot.running.map(|running| (running, slot.replica)));
        }
        let mut replica = 0;
        while slots.len() < want as usize {
            while slots.iter().any(|slot| slot.replica == replica) {
                replica += 1;
            }
            slots.push(Slot::new(replica));
        }
        if slots.len() != before {
            self.event(
                None,
                "scaled",
                format!(
                    "generation {}: {before} -> {} replicas",
                    self.run.generation,
                    slots.len()
                ),
            );
        }
        // Out of the gateway before anything waits for its requests to end.
        self.publish(slots);
        for (running, replica) in leaving {
            self.drain(running, replica, "scaled down");
        }
    }

    /// Stops `running`, which the gateway no longer routes to (the caller unrouted it), in a
    /// task of its own once its requests in flight ended, or after [`DRAIN`].
    fn drain(&mut self, running: Running, replica: u32, reason: &'static str) {
        let cx = Arc::clone(&self.cx);
        let target = Arc::clone(&self.run.target);
        let port = service_port(&self.run.spec);
        let (app, name) = (self.run.app.clone(), self.run.name.clone());
        self.drains.spawn(async move {
            let address = running
                .address()
                .zip(port)
                .map(|(ip, port)| SocketAddr::new(ip, port));
            if let Some(address) = address {
                let deadline = Instant::now() + DRAIN;
                while target.in_flight(address) > 0 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            let id = running.record.id.clone();
            let update = InstanceUpdate::to(InstanceState::Exited).reason(reason);
            if let Err(error) = cx.store.update_instance_state(&id, &update) {
                tracing::warn!(%error, instance = id, "instance state not recorded");
            }
            let (data_dir, container) = (cx.data_dir.clone(), id.clone());
            let _ = tokio::task::spawn_blocking(move || {
                instance::stop_and_remove(&data_dir, &container, STOP_GRACE)
            })
            .await;
            if let Err(error) = cx.store.remove_instance(&id) {
                tracing::warn!(%error, "instance not forgotten");
            }
            if let Some(address) = address {
                target.forget(address);
            }
            drop(running.reservation);
            cx.event(
                &app,
                &name,
                Some(&id),
                "stopped",
                format!("replica {replica} drained and stopped ({reason})"),
            );
        });
    }

    /// One look at one replica: reap an exit, run a due health check, start a due container.
    async fn step(&mut self, slot: &mut Slot) {
        if let Some(running) = &slot.running {
            let id = running.record.id.clone();
            let exited = {
                let data_dir = self.cx.data_dir.clone();
                tokio::task::spawn_blocking(move || {
                    instance::exit_code(&Containers::open(&data_dir), &id)
                })
                .await
                .unwrap_or(None)
            };
            if let Some(code) = exited {
                let running = slot.running.take().expect("checked above");
                self.exited(slot, &running.record, code).await;
            }
        }
        if let Some(running) = &mut slot.running {
            self.check_health(running).await;
        } else if slot.start_at.is_some_and(|at| at <= Instant::now()) {
            self.start(slot).await;
        }
    }

    async fn exited(&mut self, slot: &mut Slot, record: &ContainerRecord, code: i32) {
        self.exits += 1;
        let reason = format!("exited with code {code}");
        self.event(Some(&record.id), "exited", reason.clone());
        self.remove(record, InstanceState::Exited, &reason).await;
        let wait = slot.counter.exited(
            Instant::now(),
            code,
            self.run.spec.restart,
            &Backoff::default(),
        );
        self.restart_after(slot, wait, &reason);
    }

    fn restart_after(&self, slot: &mut Slot, wait: Option<Duration>, reason: &str) {
        slot.start_at = wait.map(|wait| Instant::now() + wait);
        let (kind, message) =
            status::restart_told(slot.replica, wait, self.run.spec.restart, reason);
        slot.pending = message.clone();
        self.event(None, kind, message);
    }

    /// Reserves one instance's requests in the node's ledger, under a key of its own (two
    /// generations' instances of one replica coexist during a rollout).
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

    async fn start(&mut self, slot: &mut Slot) {
        let reservation = match self.reserve() {
            Ok(reservation) => reservation,
            Err(reason) => return self.wait_for_capacity(slot, reason),
        };
        let owner = Owner {
            app: self.run.app.clone(),
            workload: self.run.name.clone(),
            generation: self.run.generation,
            replica: slot.replica,
        };
        let (data_dir, image) = (self.cx.data_dir.clone(), self.run.image.clone());
        let workload = Workload {
            extra_hosts: self.run.hosts.clone(),
            ..Workload::from(&self.run.spec)
        };
        let launched = tokio::task::spawn_blocking(move || {
            instance::launch(&data_dir, &image, &workload, owner)
        })
        .await;
        let record = match launched {
            Ok(Ok(record)) => record,
            Ok(Err(error)) => return self.failed_start(slot, error.to_string()),
            Err(error) => return self.failed_start(slot, error.to_string()),
        };
        let instance = InstanceRecord::new(
            &record.id,
            &self.run.app,
            &self.run.name,
            InstanceKind::Linux,
            self.run.generation,
        );
        if let Err(error) = self.cx.store.insert_instance(&instance) {
            tracing::warn!(%error, "instance not recorded");
        }
        self.update(&record.id, running_update(&record));
        self.event(
            Some(&record.id),
            "started",
            format!(
                "replica {} started as container {} at {}",
                slot.replica,
                short(&record.id),
                record.address.as_deref().unwrap_or("no address")
            ),
        );
        slot.counter.started(Instant::now());
        slot.running = Some(Running::new(record, &self.run.spec, Some(reservation)));
    }

    /// No room on the node now: ask again shortly; tell `skiff ps` and the events why, once
    /// per reason.
    fn wait_for_capacity(&self, slot: &mut Slot, reason: String) {
        let pending = format!("pending: {reason}");
        if slot.pending != pending {
            self.event(
                None,
                "pending",
                format!("replica {} {pending}", slot.replica),
            );
            slot.pending = pending;
        }
        slot.start_at = Some(Instant::now() + CAPACITY_RETRY);
    }

    fn failed_start(&mut self, slot: &mut Slot, error: String) {
        self.exits += 1;
        self.event(None, "failed", format!("cannot start: {error}"));
        let wait = slot.counter.exited(
            Instant::now(),
            1,
            self.run.spec.restart,
            &Backoff::default(),
        );
        self.restart_after(slot, wait, &format!("cannot start: {error}"));
    }

    async fn check_health(&self, running: &mut Running) {
        let Some(spec) = &self.run.spec.health else {
            return;
        };
        if running.next_check > Instant::now() {
            return;
        }
        let (Some(address), Some(pid)) = (running.address(), running.record.pid) else {
            running.next_check = Instant::now() + spec.interval;
            return;
        };
        let outcome = health::check(spec, health::Target { address, pid }).await;
        let (next, changed) =
            health::after_check(&mut running.tracker, spec, running.started, &outcome);
        running.next_check = Instant::now() + next;
        let id = running.record.id.as_str();
        health::tell(
            &self.cx,
            (&self.run.app, &self.run.name, id),
            changed,
            outcome,
        );
    }

    /// Tells the gateway which instances are healthy, and `skiff ps` how things are.
    fn publish(&self, slots: &[Slot]) {
        let running = || slots.iter().filter_map(|s| s.running.as_ref());
        let instances: Vec<InstanceProgress> = running()
            .map(|r| InstanceProgress {
                container: r.record.id.clone(),
                health: match r.tracker.health {
                    Health::Starting => "starting",
                    Health::Healthy => "healthy",
                    Health::Unhealthy => "unhealthy",
                },
                address: r.record.address.clone(),
            })
            .collect();
        let healthy = instances.iter().filter(|i| i.health == "healthy").count();
        let state = match (healthy, slots.len()) {
            (h, n) if h == n => "running",
            (0, _) if instances.is_empty() => "pending",
            (0, _) => "starting",
            _ => "degraded",
        };
        let pending = slots
            .iter()
            .filter(|s| s.running.is_none())
            .map(|s| s.pending.clone())
            .collect();
        status::set(
            &self.run.progress,
            Progress {
                state: state.to_string(),
                desired: slots.len() as u32,
                instances,
                pending,
                exits: self.exits,
                ..Progress::default()
            },
        );
        // After the status: whatever the gateway routes to, `skiff ps` already shows.
        if let Some(port) = service_port(&self.run.spec) {
            let healthy = running()
                .filter(|r| r.tracker.health == Health::Healthy)
                .filter_map(|r| r.address())
                .map(|ip| SocketAddr::new(ip, port))
                .collect();
            self.run.target.set_healthy(self.run.generation, healthy);
        }
    }

    /// Stops (if need be) and removes the container, and forgets its instance.
    async fn remove(&self, record: &ContainerRecord, state: InstanceState, reason: &str) {
        self.update(&record.id, InstanceUpdate::to(state).reason(reason));
        let (data_dir, id) = (self.cx.data_dir.clone(), record.id.clone());
        let _ = tokio::task::spawn_blocking(move || {
            instance::stop_and_remove(&data_dir, &id, STOP_GRACE)
        })
        .await;
        if let Err(error) = self.cx.store.remove_instance(&record.id) {
            tracing::warn!(%error, "instance not forgotten");
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

fn running_update(record: &ContainerRecord) -> InstanceUpdate {
    let mut update = InstanceUpdate::to(InstanceState::Running).container_id(&record.id);
    if let (Some(pid), Some(start)) = (record.pid, record.pid_start) {
        update = update.process(pid, start);
    }
    if let Some(address) = &record.address {
        update = update.address(address);
    }
    update
}

pub fn short(id: &str) -> &str {
    crate::linux::container::short_id(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adopted_replicas_keep_their_numbers_and_the_rest_take_the_lowest_free() {
        assert_eq!(replica_numbers([], 3), [0, 1, 2]);
        assert_eq!(replica_numbers([1], 1), [1], "replica 0 was drained");
        assert_eq!(replica_numbers([2], 3), [2, 0, 1]);
        assert_eq!(replica_numbers([4, 1], 1), [1]);
        assert_eq!(replica_numbers([0], 0), Vec::<u32>::new());
    }
}

//! Wasm services: `replicas` in-process instances of a `wasi:cli/run` command (a component,
//! or a WASI preview-1 module's `_start`), each a tokio task, kept running by one supervisor
//! task per service the way Linux replicas are ([`super::supervisor`]): restarted per the
//! `restart` policy with the same [`Backoff`] and [`RestartCounter`], reserved in the node's
//! ledger, told as events and instance rows ([`InstanceKind::Wasm`]).
//!
//! At deploy, [`resolve`] refuses what a Wasm service cannot do in this version, so nothing is
//! stored: publishing or routing ports and HTTP, TCP or exec health checks (it serves no
//! port, and an instance is healthy while it runs), autoscaling and a CPU limit (its CPU is
//! the daemon's, neither measured nor capped per instance). It also compiles the program and
//! checks that it is a command, and that its volumes exist.
//!
//! An instance gets the spec's env, `command` as its arguments after argv[0] (the service's
//! name), its volumes as preopens, stdout and stderr to the daemon's log, no sockets, and
//! `memory_limit` (else `memory`) enforced by the store's limiter. Stopping (app removed or
//! redeployed) drops the instances' futures: a guest computing is interrupted at its next
//! epoch tick, one blocked in a host call at once; the wait for them is bounded.
//!
//! No instance outlives the daemon, so there is nothing to adopt after a restart: rows left
//! by a previous daemon are removed and the instances started afresh.

use super::status::{self, InstanceProgress, Progress};
use super::{Context, service_requests};
use crate::app::{ServiceSpec, VolumeSource};
use crate::daemon::functions::volume_dir;
use crate::oci::images::ImageRecord;
use crate::oci::local::{ImagesError, LocalImages};
use crate::sched::key::{InstanceKey, Kind};
use crate::sched::ledger::Reservation;
use crate::sched::service::{Backoff, RestartCounter};
use crate::state::{InstanceKind, InstanceRecord, InstanceState, InstanceUpdate};
use crate::wasm::capabilities::{Capabilities, Preopen, Stdio};
use crate::wasm::engine::WasmEngine;
use crate::wasm::limits::Limits;
use crate::wasm::{Program, WasmError, WasmKind, command};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::{Id, JoinSet};

/// How soon an instance the node had no room for asks the ledger again.
const CAPACITY_RETRY: Duration = Duration::from_secs(1);

/// How long a stop waits for the instances' tasks to end after dropping them; a guest is
/// interrupted at its next epoch tick, so this is only reached if the runtime is stuck.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Why a Wasm service cannot be deployed; nothing is stored.
#[derive(Debug, thiserror::Error)]
pub enum WasmServiceError {
    #[error(
        "service {workload}: {image} is a Wasm image, and a Wasm service cannot use `{key}` in \
         this version (it publishes no ports); serve HTTP from Wasm as a [function], or remove \
         `{key}`"
    )]
    Unreachable {
        workload: String,
        image: String,
        key: &'static str,
    },
    #[error(
        "service {workload}: {image} is a Wasm image, and a Wasm service cannot have {check} \
         health check (it publishes no ports); serve HTTP from Wasm as a [function], or remove \
         `health`: a Wasm instance counts as healthy while it runs"
    )]
    NetworkHealth {
        workload: String,
        image: String,
        check: &'static str,
    },
    #[error(
        "service {workload}: {image} is a Wasm image, and a Wasm service cannot have an exec \
         health check (there is no shell beside it to run a command in); remove `health`: a \
         Wasm instance counts as healthy while it runs"
    )]
    ExecHealth { workload: String, image: String },
    #[error(
        "service {workload}: {image} is a Wasm image, and a Wasm service cannot use `{key}` in \
         this version (its instances run inside the daemon, whose CPU is not measured or \
         limited per instance); remove `{key}` and set `replicas`, or `cpu` to reserve CPU"
    )]
    CpuControl {
        workload: String,
        image: String,
        key: &'static str,
    },
    #[error("service {workload}: image {image}: {error}")]
    Image {
        workload: String,
        image: String,
        error: Box<ImagesError>,
    },
    #[error("service {workload}: {error}")]
    Code {
        workload: String,
        error: Box<WasmError>,
    },
    #[error(
        "service {workload}: cannot create volume directory {path}: {error}; check the data \
         dir's permissions"
    )]
    Volume {
        workload: String,
        path: PathBuf,
        error: std::io::Error,
    },
}

/// A Wasm service ready to run: its compiled command and what each instance may touch.
#[derive(Clone)]
pub struct WasmService {
    pub program: Program,
    pub caps: Capabilities,
    pub limits: Limits,
}

/// Checks a Wasm service's spec, compiles its image's code and checks it is a command,
/// creates its named volumes and checks its host ones. Blocking.
pub fn resolve(
    engine: &WasmEngine,
    images: &LocalImages,
    data_dir: &Path,
    app: &str,
    name: &str,
    spec: &ServiceSpec,
    record: &ImageRecord,
) -> Result<WasmService, WasmServiceError> {
    let workload = format!("{app}/{name}");
    check(&workload, spec)?;
    let code = |error| WasmServiceError::Code {
        workload: workload.clone(),
        error: Box::new(error),
    };
    let bytes = images
        .wasm_bytes(record)
        .map_err(|error| WasmServiceError::Image {
            workload: workload.clone(),
            image: spec.image.clone(),
            error: Box::new(error),
        })?;
    let kind = WasmKind::detect(&bytes).ok_or_else(|| {
        code(WasmError::Invalid {
            name: record.name.clone(),
            reason: "its Wasm layer does not start with `\\0asm`".into(),
        })
    })?;
    let program = engine
        .load_bytes(record.name.clone(), kind, &bytes)
        .map_err(code)?;
    command::check(engine, &program).map_err(code)?;
    let caps = capabilities(data_dir, app, name, spec).map_err(|(path, error)| {
        WasmServiceError::Volume {
            workload: workload.clone(),
            path,
            error,
        }
    })?;
    caps.validate().map_err(code)?;
    let limits = Limits {
        memory: spec.memory_limit.or(spec.memory),
        timeout: None,
    };
    Ok(WasmService {
        program,
        caps,
        limits,
    })
}

/// Refuses the keys a Wasm service cannot honour in this version (see the module docs).
pub fn check(workload: &str, spec: &ServiceSpec) -> Result<(), WasmServiceError> {
    let (workload, image) = (workload.to_string(), spec.image.clone());
    let unreachable = [
        ("ports", !spec.ports.is_empty()),
        ("route", spec.route.is_some()),
        ("route_port", spec.route_port.is_some()),
    ];
    if let Some((key, _)) = unreachable.iter().find(|(_, set)| *set) {
        return Err(WasmServiceError::Unreachable {
            workload,
            image,
            key,
        });
    }
    if let Some(health) = &spec.health {
        let check = match (&health.http, &health.tcp) {
            (Some(_), _) => "an http",
            (None, Some(_)) => "a tcp",
            (None, None) => return Err(WasmServiceError::ExecHealth { workload, image }),
        };
        return Err(WasmServiceError::NetworkHealth {
            workload,
            image,
            check,
        });
    }
    let cpu_control = [
        ("min", spec.min.is_some()),
        ("max", spec.max.is_some()),
        ("cpu_target", spec.cpu_target.is_some()),
        ("cpu_limit", spec.cpu_limit.is_some()),
    ];
    if let Some((key, _)) = cpu_control.iter().find(|(_, set)| *set) {
        return Err(WasmServiceError::CpuControl {
            workload,
            image,
            key,
        });
    }
    Ok(())
}

/// env, `command` after argv[0], volumes as preopens (named ones created under
/// `<data>/volumes/<app>/<name>`), stdout and stderr to the daemon's log; nothing else.
fn capabilities(
    data_dir: &Path,
    app: &str,
    name: &str,
    spec: &ServiceSpec,
) -> Result<Capabilities, (PathBuf, std::io::Error)> {
    let mut preopens = Vec::new();
    for volume in &spec.volumes {
        let host = match &volume.source {
            VolumeSource::Host(path) => path.clone(),
            VolumeSource::Named(volume) => {
                let path = volume_dir(data_dir, app, volume);
                std::fs::create_dir_all(&path).map_err(|error| (path.clone(), error))?;
                path
            }
        };
        preopens.push(Preopen {
            host,
            guest: volume.guest.clone(),
            read_only: volume.read_only,
        });
    }
    Ok(Capabilities {
        args: std::iter::once(name.to_string())
            .chain(spec.command.iter().cloned())
            .collect(),
        env: spec.env.clone().into_iter().collect(),
        preopens,
        stdio: Stdio::Log,
        outbound: Default::default(),
    })
}

/// What a Wasm service's supervisor runs.
pub struct WasmServiceRun {
    pub app: String,
    pub name: String,
    pub generation: u64,
    pub spec: ServiceSpec,
    /// Instances to keep: `skiff scale`'s override, else `replicas`.
    pub replicas: u32,
    pub service: WasmService,
    pub progress: status::Shared,
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
}

struct Running {
    /// Its tokio task, to know which replica a finished task was.
    task: Id,
    /// Its requests in the node's ledger, given back when this is dropped.
    _reservation: Reservation,
}

/// How one instance ended: its exit code, and the failure behind it (a trap, an exhausted
/// memory limit) when it did not exit by itself.
type Ended = (i32, Option<String>);

/// Runs until `stop` turns true (or its sender is gone), then drops every instance, waits
/// (bounded) for them to end and forgets their rows.
pub async fn supervise(cx: Arc<Context>, run: WasmServiceRun, mut stop: watch::Receiver<bool>) {
    let sup = Supervisor { cx, run };
    sup.forget_stale();
    let mut slots: Vec<Slot> = (0..sup.run.replicas)
        .map(|replica| Slot {
            replica,
            running: None,
            counter: RestartCounter::default(),
            start_at: Some(Instant::now()),
            pending: format!("replica {replica} starting"),
        })
        .collect();
    let mut instances: JoinSet<Ended> = JoinSet::new();
    loop {
        for slot in &mut slots {
            if slot.running.is_none() && slot.start_at.is_some_and(|at| at <= Instant::now()) {
                sup.start(slot, &mut instances);
            }
        }
        sup.publish(&slots);
        let next_start = (slots.iter())
            .filter(|s| s.running.is_none())
            .filter_map(|s| s.start_at)
            .min();
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
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
            _ = sleep_until(next_start), if next_start.is_some() => {}
        }
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
        if let Err(error) = sup.cx.store.remove_instance(&id) {
            tracing::warn!(%error, instance = id, "instance not forgotten");
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
    }
}

struct Supervisor {
    cx: Arc<Context>,
    run: WasmServiceRun,
}

impl Supervisor {
    fn instance(&self, replica: u32) -> String {
        instance_id(&self.run.app, &self.run.name, self.run.generation, replica)
    }

    /// Removes the rows of this service's Wasm instances a previous daemon (or generation)
    /// left: none of those instances runs any more.
    fn forget_stale(&self) {
        let rows = (self.cx.store).list_instances(Some(&self.run.app), Some(&self.run.name));
        for row in rows.into_iter().flatten() {
            if row.kind == InstanceKind::Wasm
                && let Err(error) = self.cx.store.remove_instance(&row.id)
            {
                tracing::warn!(%error, instance = row.id, "stale instance not forgotten");
            }
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
        let task = instances.spawn(async move {
            let ran = command::run(&cx.engine, &service.program, &service.caps, &service.limits);
            match ran.await {
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
        slot.running = Some(Running {
            task: task.id(),
            _reservation: reservation,
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
        let (kind, message) = match wait {
            Some(wait) => (
                "restarting",
                format!(
                    "replica {} restarting in {}s ({reason})",
                    slot.replica,
                    wait.as_secs_f64().ceil()
                ),
            ),
            None => (
                "stopped",
                format!(
                    "replica {} not restarted (restart = {policy}, {reason})",
                    slot.replica
                ),
            ),
        };
        slot.pending = message.clone();
        self.event(None, kind, message);
    }

    /// Tells `skiff ps` how things are; a running instance counts as healthy.
    fn publish(&self, slots: &[Slot]) {
        let instances: Vec<InstanceProgress> = (slots.iter())
            .filter(|s| s.running.is_some())
            .map(|s| InstanceProgress {
                container: self.instance(s.replica),
                health: "healthy",
                address: None,
            })
            .collect();
        let waiting = slots.iter().filter(|s| s.running.is_none());
        let restarting = waiting.clone().any(|s| s.start_at.is_some());
        status::set(
            &self.run.progress,
            Progress {
                state: state(instances.len(), slots.len(), restarting).to_string(),
                desired: slots.len() as u32,
                instances,
                pending: waiting.map(|s| s.pending.clone()).collect(),
                ..Progress::default()
            },
        );
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

    fn service(toml: &str) -> ServiceSpec {
        toml::from_str(&format!("image = \"w:1\"\n{toml}")).unwrap()
    }

    fn refused(toml: &str) -> String {
        check("shop/worker", &service(toml))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_plain_command_service_passes() {
        let spec = service(
            "replicas = 2\nmemory = \"64MiB\"\ncpu = \"250m\"\nrestart = \"on-failure\"\n\
             env = { A = \"1\" }\ncommand = [\"--serve\"]",
        );
        check("shop/worker", &spec).unwrap();
    }

    #[test]
    fn ports_routes_and_network_checks_are_refused_pointing_at_functions() {
        for (toml, key) in [
            ("ports = [80]", "`ports`"),
            ("route = \"/w\"", "`route`"),
            ("route_port = 80", "`route_port`"),
            (
                "health = { http = \"/h\", port = 80 }",
                "an http health check",
            ),
            ("health = { tcp = 80 }", "a tcp health check"),
        ] {
            let message = refused(toml);
            assert!(
                message.starts_with("service shop/worker: w:1 is a Wasm image")
                    && message.contains(key)
                    && message.contains("serve HTTP from Wasm as a [function]"),
                "{toml}: {message}"
            );
        }
    }

    #[test]
    fn exec_checks_autoscaling_and_cpu_limits_are_refused() {
        let message = refused("health = { exec = [\"true\"] }");
        assert!(message.contains("exec health check"), "{message}");
        assert!(message.contains("remove `health`"), "{message}");
        for key in [
            "min = 1\nmax = 3",
            "max = 3",
            "cpu_target = \"50%\"\nmax = 2",
        ] {
            let message = refused(key);
            assert!(message.contains("set `replicas`"), "{key}: {message}");
        }
        assert!(refused("cpu_limit = 1").contains("`cpu_limit`"));
    }

    #[test]
    fn capabilities_pass_command_after_the_name_and_create_named_volumes() {
        let data = tempfile::tempdir().unwrap();
        let spec = service(
            "command = [\"--once\", \"x\"]\nenv = { B = \"2\", A = \"1\" }\n\
             volumes = [\"cache:/cache\", \"/srv/static:/static:ro\"]",
        );
        let caps = capabilities(data.path(), "shop", "worker", &spec).unwrap();
        assert_eq!(caps.args, ["worker", "--once", "x"]);
        assert_eq!(
            caps.env,
            [("A".into(), "1".into()), ("B".into(), "2".into())]
        );
        let named = volume_dir(data.path(), "shop", "cache");
        assert!(named.is_dir());
        assert_eq!(caps.preopens[0].host, named);
        assert_eq!(caps.preopens[1].host, Path::new("/srv/static"));
        assert!(caps.preopens[1].read_only);
        assert_eq!(caps.stdio, Stdio::Log);
    }

    #[test]
    fn state_says_whether_missing_instances_come_back() {
        assert_eq!(state(2, 2, false), "running");
        assert_eq!(state(0, 0, false), "running");
        assert_eq!(state(1, 2, true), "degraded");
        assert_eq!(state(0, 2, true), "pending");
        assert_eq!(state(0, 2, false), "stopped");
    }
}

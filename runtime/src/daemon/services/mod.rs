//! Services and jobs run by the daemon, as Linux containers (Wasm services and jobs run
//! in-process: [`wasm`], [`jobs`]).
//!
//! [`Workloads`] keeps one tokio task per service ([`controller`], which runs a [`supervisor`]
//! per generation) and per unfinished job ([`jobs`]). A redeploy hands a changed service's
//! new generation to its controller, which rolls it out replica by replica and rolls it back
//! if it fails; it retires the tasks of removed workloads and of changed jobs (stopping their
//! containers) and starts new ones; unchanged ones keep running. Containers carry their owner (app, workload, generation, replica) in
//! their record, so a daemon restarted after `kill -9` adopts those still running instead of
//! starting more, and removes the rest. Routed services are reached through [`proxy`]; the
//! app's own workloads reach its services by name through [`names`].

pub mod autoscale;
pub mod controller;
pub mod health;
pub mod instance;
pub mod jobs;
pub mod names;
pub mod proxy;
mod resolve;
pub mod status;
pub mod supervisor;
pub mod wasm;

pub use resolve::{JobCode, Resolved};

use super::capacity::NodeLedger;
use crate::app::{AppSpec, ServiceScale, ServiceSpec};
use crate::linux::container::ContainerRecord;
use crate::oci::local::{ImagesError, LocalImages};
use crate::sched::capacity::Requests;
use crate::state::{self, AppRecord, Store, WorkloadKind};
use crate::wasm::WasmError;
use crate::wasm::engine::WasmEngine;
use names::ServiceNames;
use proxy::ServiceTarget;
use std::collections::{BTreeMap, btree_map};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Commands a service's controller holds before a sender has to wait; deploys and scales
/// come one at a time (the daemon's change lock), so this is never reached in practice.
const COMMANDS: usize = 16;

/// A service or job the daemon cannot run; nothing is stored when a deploy hits one.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error(
        "{kind} {workload}: image {image} is not in the local store; get it with `skiff pull \
         {image}` (or `skiff load -i FILE`), then deploy again"
    )]
    ImageMissing {
        kind: &'static str,
        workload: String,
        image: String,
    },
    #[error("cannot open the local image store: {error}")]
    Store { error: Box<ImagesError> },
    #[error("{kind} {workload}: image {image}: {error}")]
    Images {
        kind: &'static str,
        workload: String,
        image: String,
        error: Box<ImagesError>,
    },
    #[error(transparent)]
    WasmService(#[from] wasm::WasmServiceError),
    #[error("job {workload}: {error}")]
    Wasm {
        workload: String,
        error: Box<WasmError>,
    },
}

/// What the supervisors and job runners share.
pub struct Context {
    pub data_dir: PathBuf,
    pub store: Arc<Store>,
    /// Runs Wasm jobs.
    pub engine: Arc<WasmEngine>,
    /// The node's one ledger: every service instance reserves its requests before it starts.
    pub ledger: Arc<NodeLedger>,
    /// Wasm service instances' own loopback addresses.
    pub loopback: Arc<wasm::LoopbackPool>,
}

impl Context {
    /// Appends an event about a workload; losing one is logged, never fails the caller.
    pub fn event(
        &self,
        app: &str,
        workload: &str,
        instance: Option<&str>,
        kind: &str,
        message: String,
    ) {
        tracing::info!(app, workload, instance, kind, message, "workload event");
        let event = state::NewEvent {
            app: Some(app.to_string()),
            workload: Some(workload.to_string()),
            instance: instance.map(str::to_string),
            kind: kind.to_string(),
            message,
        };
        if let Err(error) = self.store.append_event(&event) {
            tracing::warn!(%error, app, workload, "event not recorded");
        }
    }
}

/// What one instance of a service asks the node's ledger for: its CPU and memory requests
/// (`cpu`, `memory`; limits default to them, see the manifest).
pub fn service_requests(spec: &ServiceSpec) -> Requests {
    Requests {
        cpu_millis: spec.cpu.map_or(0, |cpu| u64::from(cpu.millicores())),
        memory_bytes: spec.memory.map_or(0, |memory| memory.0),
        ..Requests::ZERO
    }
}

/// The port the gateway forwards a service's route to: `route_port`, else its first port.
pub fn service_port(spec: &ServiceSpec) -> Option<u16> {
    spec.route_port.or_else(|| spec.ports.first().copied())
}

/// A routed service, for the gateway's table.
pub struct ServiceRoute {
    pub name: String,
    pub prefix: String,
    pub target: Arc<ServiceTarget>,
}

/// Where a task's progress is read.
enum Progress {
    /// A Linux service's controller: its supervisors' progress, put together when read.
    Service(controller::View),
    /// What a job's runner or a Wasm service's supervisor publishes.
    Published(status::Shared),
}

impl Progress {
    fn get(&self) -> status::Progress {
        match self {
            Progress::Service(view) => view.progress(),
            Progress::Published(shared) => status::get(shared),
        }
    }
}

/// One running task: a service's controller or a job's runner.
struct Task {
    /// The generation it runs: the newest handed to it, or for a service the one a failed
    /// rollout went back to (its controller writes it then).
    generation: Arc<AtomicU64>,
    progress: Progress,
    target: Option<Arc<ServiceTarget>>,
    /// A service's controller takes new generations and scales here; `None` for a job.
    commands: Option<mpsc::Sender<controller::Command>>,
    /// A Wasm service's supervisor takes its replicas here (it has no controller).
    replicas: Option<watch::Sender<u32>>,
    /// Its executor, for `skiff ps`: `linux` or `wasm`.
    runtime: &'static str,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

/// The daemon's running services and jobs, by (app, workload).
pub struct Workloads {
    cx: Arc<Context>,
    tuning: controller::Tuning,
    /// The apps' service addresses, by which their workloads reach each other.
    names: Arc<ServiceNames>,
    tasks: Mutex<BTreeMap<(String, String), Task>>,
}

impl Workloads {
    pub fn new(
        data_dir: PathBuf,
        store: Arc<Store>,
        engine: Arc<WasmEngine>,
        ledger: Arc<NodeLedger>,
        names: Arc<ServiceNames>,
        tuning: controller::Tuning,
    ) -> Self {
        Workloads {
            tuning,
            names,
            cx: Arc::new(Context {
                data_dir,
                store,
                engine,
                ledger,
                loopback: Arc::default(),
            }),
            tasks: Mutex::new(BTreeMap::new()),
        }
    }

    /// Stops the app's tasks whose workload is gone from `record` (all of them when it is
    /// `None`) and those of jobs that changed generation; await the handles for their
    /// containers to be gone. A changed service keeps its task: [`Workloads::start`] hands
    /// it the new generation to roll out.
    pub fn retire(&self, app: &str, record: Option<&AppRecord>) -> Vec<JoinHandle<()>> {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let keys: Vec<(String, String)> = tasks
            .iter()
            .filter(|((a, name), task)| {
                let stored = generation(record, name);
                let service = record.is_some_and(|r| is_service(r, name));
                a == app
                    && match (&task.commands, service) {
                        (Some(_), true) => stored.is_none(),
                        _ => stored != Some(task.generation.load(Ordering::Acquire)),
                    }
            })
            .map(|(key, _)| key.clone())
            .collect();
        keys.into_iter()
            .filter_map(|key| tasks.remove(&key))
            .map(|task| {
                let _ = task.stop.send(true);
                task.handle
            })
            .collect()
    }

    /// Starts a task for each of the app's services and unfinished jobs that has none,
    /// adopting running containers of the same workload and generation from `owned` (their
    /// ids go to `claimed`). Returns the routes of its routed services.
    pub fn start(
        &self,
        spec: &AppSpec,
        record: &AppRecord,
        resolved: &Resolved,
        owned: &[ContainerRecord],
        claimed: &mut Vec<String>,
    ) -> Vec<ServiceRoute> {
        let app = &spec.name;
        let hosts = self
            .names
            .lease(app, &named_services(spec, record, resolved));
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let mut routes = Vec::new();
        let mut adoptable = |name: &str, generation: u64| -> Vec<ContainerRecord> {
            let mine: Vec<ContainerRecord> = owned
                .iter()
                .filter(|c| {
                    c.owner.as_ref().is_some_and(|o| {
                        &o.app == app && o.workload == name && o.generation == generation
                    }) && instance::is_running(c)
                })
                .cloned()
                .collect();
            claimed.extend(mine.iter().map(|c| c.id.clone()));
            mine
        };
        for (name, service) in &spec.services {
            if let (Some(generation), Some(code)) = (
                generation(Some(record), name),
                resolved.wasm_services.get(name),
            ) {
                let key = (app.clone(), name.clone());
                if let btree_map::Entry::Vacant(vacant) = tasks.entry(key.clone()) {
                    let progress = status::Shared::default();
                    let target = (service.route.as_ref())
                        .map(|_| Arc::new(ServiceTarget::new(format!("{app}/{name}"))));
                    let run = wasm::WasmServiceRun {
                        target: target.clone(),
                        progress: Arc::clone(&progress),
                        app: app.clone(),
                        name: name.clone(),
                        generation,
                        spec: service.clone(),
                        service: code.clone(),
                        tuning: self.tuning,
                    };
                    let (stop, stopped) = watch::channel(false);
                    let (scale, wanted) = watch::channel(replicas(record, name, service));
                    let handle =
                        tokio::spawn(wasm::supervise(Arc::clone(&self.cx), run, wanted, stopped));
                    let task = Task {
                        generation: Arc::new(AtomicU64::new(generation)),
                        progress: Progress::Published(progress),
                        target,
                        commands: None,
                        replicas: Some(scale),
                        runtime: "wasm",
                        stop,
                        handle,
                    };
                    vacant.insert(task);
                }
                if let (Some(prefix), Some(target)) = (&service.route, &tasks[&key].target) {
                    routes.push(ServiceRoute {
                        name: name.clone(),
                        prefix: prefix.clone(),
                        target: Arc::clone(target),
                    });
                }
                continue;
            }
            let (Some(generation), Some(image)) =
                (generation(Some(record), name), resolved.services.get(name))
            else {
                continue;
            };
            let key = (app.clone(), name.clone());
            let replicas = replicas(record, name, service);
            let run = |target: &Arc<ServiceTarget>, adopt| supervisor::ServiceRun {
                progress: status::Shared::default(),
                app: app.clone(),
                name: name.clone(),
                generation,
                spec: service.clone(),
                image: image.clone(),
                target: Arc::clone(target),
                adopt,
                hosts: hosts.clone(),
            };
            match tasks.get_mut(&key) {
                Some(task) if task.generation.load(Ordering::Acquire) == generation => {}
                Some(task) => {
                    let target = task.target.clone().expect("a service's task has a target");
                    let deploy = controller::Command::Deploy {
                        run: Box::new(run(&target, adoptable(name, generation))),
                        replicas,
                    };
                    let sent = task.commands.as_ref().map(|c| c.try_send(deploy));
                    if let Some(Err(error)) = sent {
                        tracing::error!(%error, "service {app}/{name}: generation {generation} not handed over");
                    }
                    task.generation.store(generation, Ordering::Release);
                }
                None => {
                    let target = Arc::new(ServiceTarget::new(format!("{app}/{name}")));
                    let resume = self
                        .resumable(record, name, &target, owned, &hosts)
                        .map(|old| {
                            let adopt = adoptable(name, old.generation);
                            controller::Resume {
                                old: supervisor::ServiceRun { adopt, ..old },
                            }
                        });
                    let view = controller::View::default();
                    let (commands, received) = mpsc::channel(COMMANDS);
                    let (stop, stopped) = watch::channel(false);
                    let running = Arc::new(AtomicU64::new(generation));
                    let handle = tokio::spawn(controller::control(
                        Arc::clone(&self.cx),
                        controller::Shared {
                            view: view.clone(),
                            generation: Arc::clone(&running),
                            tuning: self.tuning,
                        },
                        run(&target, adoptable(name, generation)),
                        replicas,
                        resume,
                        received,
                        stopped,
                    ));
                    tasks.insert(
                        key.clone(),
                        Task {
                            generation: running,
                            progress: Progress::Service(view),
                            target: Some(target),
                            commands: Some(commands),
                            replicas: None,
                            runtime: "linux",
                            stop,
                            handle,
                        },
                    );
                }
            }
            if let Some(target) = &tasks[&key].target {
                self.names.serve(app, name, target);
            }
            if let (Some(prefix), Some(target)) = (&service.route, &tasks[&key].target) {
                routes.push(ServiceRoute {
                    name: name.clone(),
                    prefix: prefix.clone(),
                    target: Arc::clone(target),
                });
            }
        }
        for (name, job) in &spec.jobs {
            let (Some(generation), Some(code)) =
                (generation(Some(record), name), resolved.jobs.get(name))
            else {
                continue;
            };
            let key = (app.clone(), name.clone());
            if tasks.contains_key(&key) {
                continue;
            }
            if let Some(outcome) = jobs::finished(&self.cx, app, name, generation) {
                tracing::info!(
                    "job {app}/{name} generation {generation} already finished ({outcome})"
                );
                continue;
            }
            let progress = status::Shared::default();
            let run = jobs::JobRun {
                progress: Arc::clone(&progress),
                app: app.clone(),
                name: name.clone(),
                generation,
                spec: job.clone(),
                code: code.clone(),
                adopt: adoptable(name, generation).into_iter().next(),
                hosts: hosts.clone(),
            };
            let (stop, stopped) = watch::channel(false);
            let handle = tokio::spawn(jobs::run_job(Arc::clone(&self.cx), run, stopped));
            tasks.insert(
                key,
                Task {
                    generation: Arc::new(AtomicU64::new(generation)),
                    progress: Progress::Published(progress),
                    target: None,
                    commands: None,
                    replicas: None,
                    runtime: match code {
                        JobCode::Linux(_) => "linux",
                        JobCode::Wasm(_) => "wasm",
                    },
                    stop,
                    handle,
                },
            );
        }
        routes
    }

    /// The old version of a service whose rollout a restarted daemon finds unfinished: its
    /// stored previous spec and image, when containers of that generation still run (without
    /// them, or without its image, there is nothing to resume and they are removed). Its
    /// `adopt` is left for the caller to fill, claiming them. Blocking (reads the image store).
    fn resumable(
        &self,
        record: &AppRecord,
        name: &str,
        target: &Arc<ServiceTarget>,
        owned: &[ContainerRecord],
        hosts: &[crate::linux::hosts::ExtraHost],
    ) -> Option<supervisor::ServiceRun> {
        let previous = (record.workloads.iter())
            .find(|w| w.name == name)?
            .previous
            .as_ref()?;
        let running = owned.iter().any(|c| {
            c.owner.as_ref().is_some_and(|o| {
                o.app == record.name && o.workload == name && o.generation == previous.generation
            }) && instance::is_running(c)
        });
        if !running {
            return None;
        }
        let spec: ServiceSpec = serde_json::from_value(previous.spec.clone())
            .inspect_err(|error| tracing::warn!(%error, "previous spec unreadable"))
            .ok()?;
        let images = LocalImages::open(&self.cx.data_dir).ok()?;
        let image = (images.get(&spec.image))
            .inspect_err(|error| tracing::warn!(%error, "previous image gone"))
            .ok()?;
        Some(supervisor::ServiceRun {
            app: record.name.clone(),
            name: name.to_string(),
            generation: previous.generation,
            spec,
            image,
            target: Arc::clone(target),
            progress: status::Shared::default(),
            adopt: Vec::new(),
            hosts: hosts.to_vec(),
        })
    }

    /// Sets a running service's replicas (`skiff scale`); false when `app/workload` is not a
    /// service this daemon runs.
    pub fn set_replicas(&self, app: &str, workload: &str, replicas: u32) -> bool {
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let key = (app.to_string(), workload.to_string());
        if let Some(wasm) = tasks.get(&key).and_then(|task| task.replicas.as_ref()) {
            return wasm.send(replicas).is_ok();
        }
        let Some(commands) = tasks.get(&key).and_then(|task| task.commands.as_ref()) else {
            return false;
        };
        match commands.try_send(controller::Command::Scale(replicas)) {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(%error, "service {app}/{workload}: scale not handed over");
                false
            }
        }
    }

    /// Forgets the app's instance rows and Wasm instances' logs, and releases its service
    /// addresses (its tasks are retired first).
    pub fn forget(&self, app: &str) {
        self.names.remove_app(app);
        if let Ok(rows) = self.cx.store.list_instances(Some(app), None) {
            for row in rows {
                let _ = self.cx.store.remove_instance(&row.id);
                if row.kind == state::InstanceKind::Wasm {
                    crate::daemon::logs::remove_wasm_log(&self.cx.data_dir, &row.id);
                }
            }
        }
    }

    /// Every stored service and job with what its task reports, CPU and memory included.
    /// Blocking: reads the containers' cgroups.
    pub fn status(&self, apps: &[AppRecord]) -> Vec<status::WorkloadStatus> {
        let mut listed = Vec::new();
        {
            let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
            for app in apps {
                for workload in &app.workloads {
                    let kind = match workload.kind {
                        WorkloadKind::Service => "service",
                        WorkloadKind::Job => "job",
                        WorkloadKind::Function => continue,
                    };
                    let key = (app.name.clone(), workload.name.clone());
                    let (runtime, progress) = match tasks.get(&key) {
                        Some(task) => (task.runtime, task.progress.get()),
                        None => (
                            "linux",
                            self.idle_progress(&app.name, &workload.name, workload.generation),
                        ),
                    };
                    listed.push((
                        app.name.clone(),
                        workload.name.clone(),
                        kind,
                        runtime,
                        progress,
                    ));
                }
            }
        }
        listed
            .into_iter()
            .map(|(app, workload, kind, runtime, progress)| {
                // Wasm instances live inside the daemon: no cgroup of their own to read, but
                // each one's CPU is counted as it runs; their memory is the daemon's.
                let (cpu_usec, memory_bytes) = match runtime {
                    "wasm" => (status::in_process_cpu(&progress), 0),
                    _ => status::measure(&progress.instances),
                };
                let ready = progress
                    .instances
                    .iter()
                    .filter(|i| i.health == "healthy")
                    .count() as u32;
                status::WorkloadStatus {
                    app,
                    workload,
                    kind,
                    runtime,
                    state: progress.state,
                    ready,
                    desired: progress.desired,
                    cpu_usec,
                    memory_bytes,
                    instances: progress.instances,
                    pending: progress.pending,
                }
            })
            .collect()
    }

    /// A workload without a task: a finished job, or one this daemon could not run.
    fn idle_progress(&self, app: &str, workload: &str, generation: u64) -> status::Progress {
        match jobs::finished(&self.cx, app, workload, generation) {
            Some(outcome) => jobs::finished_progress(&outcome),
            None => status::Progress {
                state: "not running".into(),
                pending: vec!["not run by this daemon; see its log".into()],
                ..status::Progress::default()
            },
        }
    }

    /// The apps' service addresses.
    pub fn names(&self) -> &ServiceNames {
        &self.names
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.cx.data_dir
    }
}

/// Instances a service keeps: `skiff scale`'s override, else `replicas`, else `min`.
fn replicas(record: &AppRecord, name: &str, spec: &ServiceSpec) -> u32 {
    let scaled = record
        .workloads
        .iter()
        .find(|w| w.name == name)
        .and_then(|w| w.scale);
    scaled.unwrap_or(match spec.scale() {
        Some(ServiceScale::Fixed(n)) => n,
        Some(ServiceScale::Auto { min, .. }) => min,
        None => 1,
    })
}

/// The app's Linux services with ports, which get a service address, with their ports.
fn named_services(
    spec: &AppSpec,
    record: &AppRecord,
    resolved: &Resolved,
) -> Vec<(String, Vec<u16>)> {
    (spec.services.iter())
        .filter(|(name, service)| {
            !service.ports.is_empty()
                && resolved.services.contains_key(*name)
                && generation(Some(record), name).is_some()
        })
        .map(|(name, service)| (name.clone(), service.ports.clone()))
        .collect()
}

fn is_service(record: &AppRecord, name: &str) -> bool {
    (record.workloads.iter()).any(|w| w.name == name && w.kind == WorkloadKind::Service)
}

/// The stored generation of a service or job, `None` when the app does not have it.
fn generation(record: Option<&AppRecord>, name: &str) -> Option<u64> {
    record?
        .workloads
        .iter()
        .find(|w| w.name == name && matches!(w.kind, WorkloadKind::Service | WorkloadKind::Job))
        .map(|w| w.generation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StoredWorkload;
    use std::time::SystemTime;

    fn app(workloads: Vec<StoredWorkload>) -> AppRecord {
        AppRecord {
            name: "shop".into(),
            generation: 4,
            spec: serde_json::Value::Null,
            created: SystemTime::now(),
            updated: SystemTime::now(),
            workloads,
        }
    }

    fn workload(name: &str, kind: WorkloadKind, scale: Option<u32>) -> StoredWorkload {
        StoredWorkload {
            name: name.into(),
            kind,
            generation: 2,
            spec: serde_json::Value::Null,
            scale,
            previous: None,
        }
    }

    fn service(toml: &str) -> ServiceSpec {
        toml::from_str(&format!("image = \"x\"\n{toml}")).unwrap()
    }

    #[test]
    fn replicas_come_from_scale_then_replicas_then_min() {
        let record = app(vec![
            workload("web", WorkloadKind::Service, None),
            workload("scaled", WorkloadKind::Service, Some(5)),
        ]);
        assert_eq!(replicas(&record, "web", &service("")), 1);
        assert_eq!(replicas(&record, "web", &service("replicas = 3")), 3);
        assert_eq!(replicas(&record, "web", &service("min = 2\nmax = 4")), 2);
        assert_eq!(replicas(&record, "scaled", &service("replicas = 3")), 5);
    }

    #[test]
    fn generations_are_those_of_services_and_jobs_only() {
        let record = app(vec![
            workload("api", WorkloadKind::Function, None),
            workload("web", WorkloadKind::Service, None),
            workload("migrate", WorkloadKind::Job, None),
        ]);
        assert_eq!(generation(Some(&record), "web"), Some(2));
        assert_eq!(generation(Some(&record), "migrate"), Some(2));
        assert_eq!(generation(Some(&record), "api"), None);
        assert_eq!(generation(None, "web"), None);
    }
}

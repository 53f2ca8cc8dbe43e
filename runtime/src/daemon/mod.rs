//! The daemon behind `skiff serve`: deployed apps, from the state store to the gateway.
//!
//! Step in the flow: the control API hands it manifests; it validates them (`app`), stores
//! them in one transaction (`state`), prepares their functions through the shared engine
//! (`wasm`) and swaps the gateway's routes ([`router`]). On start it reads every app back from
//! the store and serves it again, which is what makes a `kill -9` and a restart lose nothing.
//!
//! Functions scale per request and to zero ([`target`]); every warm function holds memory in
//! the node's one ledger ([`capacity`], `Daemon::ledger`), which also refuses at deploy what
//! could never fit. Services and jobs run under [`services`]: Linux ones as containers,
//! supervised, health-checked, routed through the gateway and adopted again after a restart;
//! Wasm ones in-process. The daemon does not own the sockets (the CLI binds them) nor the
//! HTTP surface (`api`).

pub mod body;
pub mod capacity;
pub mod containers;
mod control;
pub mod functions;
pub mod logs;
pub mod router;
pub mod services;
pub mod target;

pub use control::{EVENTS_KEPT, MAX_SERVICE_REPLICAS, ScaleChange};

use crate::app::{self, AppDiff, AppSpec, FunctionSpec, ManifestError};
use crate::oci::local::ImagesError;
use crate::sched::capacity::Resource;
use crate::sched::key::{InstanceKey, Kind};
use crate::sched::ledger::Rejection;
use crate::state::{self, AppRecord, StateError, Store, WorkloadRecord};
use crate::wasm::WasmError;
use crate::wasm::engine::{EngineConfig, WasmEngine};
use capacity::NodeLedger;
use functions::Preparer;
use router::{Route, Router, Target};
use services::names::ServiceNames;
use services::{ServiceRoute, WorkloadError, Workloads};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use target::FunctionTarget;

/// Why the daemon refused or failed a request. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),

    #[error(
        "the manifest names app `{manifest}` but was sent for app `{url}`; deploy it as `{manifest}`"
    )]
    NameMismatch { url: String, manifest: String },

    #[error("base directory {base} must be absolute; `skiff deploy -f` sends the manifest's own")]
    RelativeBase { base: PathBuf },

    #[error("function {app}/{function}: {error}")]
    Function {
        app: String,
        function: String,
        /// Boxed: a `WasmError` is large and errors are rare.
        error: Box<WasmError>,
    },

    #[error("function {app}/{function}: {error}")]
    Image {
        app: String,
        function: String,
        error: Box<ImagesError>,
    },

    #[error("cannot create volume directory {path}: {error}; check the data dir's permissions")]
    Volume {
        path: PathBuf,
        error: std::io::Error,
    },

    #[error(transparent)]
    Workload(#[from] WorkloadError),

    #[error(
        "route {route}{} of {workload} is already served by {owner}; pick another \
         route or host, or remove that app with `skiff apps rm`",
        host.as_deref().map(|h| format!(" on host {h}")).unwrap_or_default()
    )]
    RouteTaken {
        /// `function APP/NAME` or `service APP/NAME`.
        workload: String,
        route: String,
        host: Option<String>,
        owner: String,
    },

    #[error("no app named {name} is deployed; see `skiff apps`")]
    NotFound { name: String },

    #[error("app {app} has no workload {workload}; check the name against the app's skiff.toml")]
    WorkloadNotFound { app: String, workload: String },

    #[error("{app}/{workload} is a job; jobs run to completion and are not scaled")]
    NotScalable { app: String, workload: String },

    #[error(
        "{app}/{workload} cannot be scaled to {replicas}: its max is {max}; raise `max` in the \
         manifest and deploy it first"
    )]
    ScaleAboveMax {
        app: String,
        workload: String,
        replicas: u32,
        max: u32,
    },

    #[error("stored spec of app {app} is unreadable ({detail}); deploy the app again")]
    Spec { app: String, detail: String },

    #[error("the wasm engine: {0}")]
    Engine(Box<WasmError>),

    #[error(
        "function {app}/{function} asks for {asked} of memory (memory × max(min, 1)) but the \
         node has {allocatable} for workloads after the reserve; lower `memory` or `min` in the \
         manifest, or the reserve (`skiff serve --reserve-memory`); nothing was changed"
    )]
    TooLarge {
        app: String,
        function: String,
        asked: crate::sched::capacity::Bytes,
        allocatable: crate::sched::capacity::Bytes,
    },

    /// A service or job instance larger than the node: its message names the manifest key.
    #[error("{error}")]
    NeverFits {
        error: crate::sched::ledger::Rejection,
    },

    #[error("cannot size the node: {0}")]
    Capacity(#[from] crate::sched::capacity::CapacityError),

    #[error(transparent)]
    State(#[from] StateError),

    #[error("a deploy task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

pub type Result<T, E = DaemonError> = std::result::Result<T, E>;

/// How the daemon is set up; filled by `skiff serve`.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Where state, images, compiled code and named volumes live.
    pub data_dir: PathBuf,
    /// Requests that may wait per function when all its slots are busy; one more gets 503.
    pub function_queue: usize,
    /// Instances the pooling allocator reserves room for, across all functions.
    pub pool_instances: u32,
    /// What the node keeps back from workloads.
    pub reserve: crate::sched::capacity::Reserve,
    /// Pretend the machine has this much memory (tests and benchmarks of pressure).
    pub capacity_memory: Option<u64>,
    /// How services with a `cpu_target` are autoscaled.
    pub autoscale: services::controller::Tuning,
}

/// What a deploy did.
#[derive(Debug, Clone)]
pub struct Deployed {
    pub app: String,
    pub generation: u64,
    pub diff: AppDiff,
}

/// The running daemon's state: the store, the engine and the gateway's routes.
pub struct Daemon {
    store: Arc<Store>,
    preparer: Arc<Preparer>,
    workloads: Workloads,
    router: Arc<Router>,
    capacity: Arc<NodeLedger>,
    /// `skiff run -d`, `ps`, `logs`, `stop` and `rm` through the daemon.
    containers: containers::ContainerHost,
    /// One deploy, removal or scale at a time, so the diff, the store and the routes agree.
    changes: tokio::sync::Mutex<()>,
    /// Announces stored `skiff scale` changes to the supervisors (see `control`).
    scales: tokio::sync::broadcast::Sender<ScaleChange>,
}

impl Daemon {
    /// Opens the state store and builds the engine (pooling allocator, compile cache under
    /// `<data>/cache/wasm`). Serves nothing until [`Daemon::restore`].
    pub fn open(config: &DaemonConfig) -> Result<Self> {
        let store = Arc::new(Store::open(&config.data_dir)?);
        let engine_config = EngineConfig {
            pool_instances: Some(config.pool_instances),
            ..EngineConfig::default()
        };
        let engine = WasmEngine::new(&engine_config, config.data_dir.join("cache/wasm"))
            .map_err(|e| DaemonError::Engine(Box::new(e)))?;
        let engine = Arc::new(engine);
        let capacity = Arc::new(NodeLedger::new(node_capacity(config)?, Arc::clone(&engine)));
        let router = Arc::new(Router::default());
        capacity.set_router(&router);
        let names = Arc::new(ServiceNames::new(&config.data_dir));
        tracing::info!(node = ?capacity.node(), "node sized");
        Ok(Self {
            workloads: Workloads::new(
                config.data_dir.clone(),
                Arc::clone(&store),
                Arc::clone(&engine),
                Arc::clone(&capacity),
                Arc::clone(&names),
                config.autoscale,
            ),
            containers: containers::ContainerHost::new(
                config.data_dir.clone(),
                Arc::clone(&capacity),
                Arc::clone(&store),
            ),
            store,
            preparer: Arc::new(Preparer {
                engine,
                data_dir: config.data_dir.clone(),
                queue: config.function_queue,
                ledger: Arc::clone(&capacity),
                names,
            }),
            router,
            capacity,
            changes: tokio::sync::Mutex::new(()),
            scales: control::scale_channel(),
        })
    }

    /// Lets the daemon start containers for `skiff run -d`; `skiff serve` installs the CLI's
    /// reading of `run`'s flags.
    pub fn set_container_runner(&self, runner: Box<dyn containers::ContainerRunner>) {
        self.containers.set_runner(runner);
    }

    /// Admits and starts a detached container; its id. Blocking.
    pub fn run_container(
        &self,
        request: &containers::RunRequest,
    ) -> std::result::Result<String, containers::RunRefused> {
        self.containers.run(request)
    }

    /// The containers `skiff ps`, `logs`, `stop` and `rm` reach through the daemon.
    pub fn containers(&self) -> &containers::ContainerHost {
        &self.containers
    }

    /// Where this daemon keeps its state, images and containers.
    pub fn data_dir(&self) -> &Path {
        &self.preparer.data_dir
    }

    /// The node's one ledger, for every executor (see [`capacity`]).
    pub fn ledger(&self) -> &Arc<NodeLedger> {
        &self.capacity
    }

    /// What waits for capacity now, with the reason.
    pub fn pending(&self) -> Vec<crate::sched::ledger::PendingView> {
        self.capacity.pending()
    }

    /// Starts the background work of a serving daemon: scaling idle functions to zero.
    pub fn start(self: &Arc<Self>) {
        capacity::spawn_reaper(self);
    }

    /// The app's running functions: warm or at zero, and instances now.
    pub fn function_status(&self, app: &str) -> Vec<target::FunctionStatus> {
        (self.router.app_routes(app).iter())
            .filter_map(|route| match &route.target {
                Target::Function(target) => Some(target.status()),
                Target::Service(_) => None,
            })
            .collect()
    }

    /// The gateway's handler.
    pub fn router(&self) -> Arc<Router> {
        Arc::clone(&self.router)
    }

    /// Serves every stored app again. A function that cannot be prepared any more (its file
    /// is gone, say) is logged and skipped; the rest of its app is served. Services and jobs
    /// adopt their containers still running; every other container a workload owned is
    /// stopped and removed. Returns the number of functions served. Call it on a thread of
    /// tokio's blocking pool: it starts the workloads' tasks.
    #[tracing::instrument(skip_all)]
    pub fn restore(&self) -> Result<usize> {
        let mut served = 0;
        let owned = services::instance::owned(self.workloads.data_dir());
        let mut claimed = Vec::new();
        for record in self.store.list_apps()? {
            let spec = match stored_spec(&record) {
                Ok(spec) => spec,
                Err(error) => {
                    tracing::error!(%error, "app not served");
                    continue;
                }
            };
            let mut routes = Vec::new();
            for (name, function) in &spec.functions {
                let function = &scaled(function, stored_scale(&record, name));
                match self.preparer.prepare(&spec.name, name, function) {
                    Ok(target) => routes.push(route(&spec.name, name, function, Arc::new(target))),
                    Err(error) => tracing::error!(%error, "function not served"),
                }
            }
            served += routes.len();
            match self.workloads.resolve(&spec) {
                Ok(images) => {
                    let services =
                        self.workloads
                            .start(&spec, &record, &images, &owned, &mut claimed);
                    routes.extend(service_routes(&spec.name, services));
                }
                Err(error) => tracing::error!(%error, "services and jobs not run"),
            }
            self.router.set_app(&spec.name, Some(routes));
            tracing::info!(
                app = spec.name,
                generation = record.generation,
                "app restored"
            );
        }
        self.workloads.names().release_unnamed();
        for container in owned.iter().filter(|c| !claimed.contains(&c.id)) {
            tracing::info!(container = container.id, owner = ?container.owner, "removing a container no workload adopted");
            services::instance::stop_and_remove(
                self.workloads.data_dir(),
                &container.id,
                services::instance::STOP_GRACE,
            );
        }
        Ok(served)
    }

    /// Validates `manifest` (relative paths against `base`, `file` naming it in messages),
    /// prepares its new and changed functions, stores it in one transaction and swaps its
    /// routes in. Nothing is stored or changed when any step before the store fails.
    #[tracing::instrument(skip_all, fields(app = name), err)]
    pub async fn deploy(
        self: &Arc<Self>,
        name: &str,
        manifest: &str,
        base: &Path,
        file: &str,
    ) -> Result<Deployed> {
        let _one_at_a_time = self.changes.lock().await;
        let spec = AppSpec::parse(manifest, base, file)?;
        if spec.name != name {
            return Err(DaemonError::NameMismatch {
                url: name.to_string(),
                manifest: spec.name,
            });
        }
        // An unreadable stored spec is replaced by this deploy, as its error message says.
        let existing = self.store.get_app(name)?;
        let old = existing.as_ref().and_then(|record| {
            stored_spec(record)
                .inspect_err(|error| tracing::warn!(%error, "replacing it"))
                .ok()
        });
        // `skiff scale` overrides outlive deploys: a function's warm minimum is kept.
        let scales: BTreeMap<String, u32> = (existing.iter())
            .flat_map(|record| &record.workloads)
            .filter_map(|w| Some((w.name.clone(), w.scale?)))
            .collect();
        let diff = app::diff(old.as_ref(), &spec);
        self.check_routes(&spec)?;
        self.check_fits(&spec)?;
        let images = {
            let (daemon, spec) = (Arc::clone(self), spec.clone());
            tokio::task::spawn_blocking(move || daemon.workloads.resolve(&spec)).await??
        };
        let mut routes = {
            let (daemon, spec, old) = (Arc::clone(self), spec.clone(), old.clone());
            tokio::task::spawn_blocking(move || daemon.prepare_app(&spec, old.as_ref(), &scales))
                .await??
        };
        let (app_json, workloads) = records(&spec)?;
        let outcome = {
            let (daemon, name) = (Arc::clone(self), name.to_string());
            tokio::task::spawn_blocking(move || daemon.store.put_app(&name, &app_json, &workloads))
                .await??
        };
        let record = self.app(name)?;
        for retired in self.workloads.retire(name, Some(&record)) {
            let _ = retired.await;
        }
        let services = self
            .workloads
            .start(&spec, &record, &images, &[], &mut Vec::new());
        routes.extend(service_routes(name, services));
        self.router.set_app(name, Some(routes));
        if !outcome.is_noop() {
            self.record(
                name,
                "deployed",
                format!("generation {}", outcome.generation),
            );
        }
        Ok(Deployed {
            app: spec.name,
            generation: outcome.generation,
            diff,
        })
    }

    /// Refuses a route another app already serves with the same host.
    fn check_routes(&self, spec: &AppSpec) -> Result<()> {
        let functions = spec.functions.iter().map(|(name, function)| {
            let host = function.host.as_deref().map(str::to_ascii_lowercase);
            (
                format!("function {}/{name}", spec.name),
                &function.route,
                host,
            )
        });
        let services = spec.services.iter().filter_map(|(name, service)| {
            let route = service.route.as_ref()?;
            Some((format!("service {}/{name}", spec.name), route, None))
        });
        for (workload, route, host) in functions.chain(services) {
            if let Some(owner) = self.router.conflict(&spec.name, route, host.as_deref()) {
                return Err(DaemonError::RouteTaken {
                    workload,
                    route: route.clone(),
                    host,
                    owner: format!("{}/{}", owner.app, owner.function),
                });
            }
        }
        Ok(())
    }

    /// Refuses a function whose warm instances could never fit the node.
    fn check_fits(&self, spec: &AppSpec) -> Result<()> {
        use crate::sched::capacity::Bytes;
        let allocatable = self.capacity.node().allocatable.memory_bytes;
        for (name, function) in &spec.functions {
            let asked = target::Scale::of(function).requests().memory_bytes;
            if asked > allocatable {
                return Err(DaemonError::TooLarge {
                    app: spec.name.clone(),
                    function: name.clone(),
                    asked: Bytes(asked),
                    allocatable: Bytes(allocatable),
                });
            }
        }
        let node = self.capacity.node().allocatable;
        for (name, service) in &spec.services {
            let requests = services::service_requests(service);
            for resource in Resource::ALL {
                let (asked, allocatable) = (requests.get(resource), node.get(resource));
                if asked > allocatable {
                    let key = InstanceKey::new(Kind::Service, &spec.name, name, 0);
                    return Err(DaemonError::NeverFits {
                        error: Rejection::TooLarge {
                            key,
                            resource,
                            asked,
                            allocatable,
                        },
                    });
                }
            }
        }
        Ok(())
    }

    /// The app's routes: running functions whose spec did not change are kept (with their
    /// slots and in-flight requests); the others are prepared afresh.
    fn prepare_app(
        &self,
        spec: &AppSpec,
        old: Option<&AppSpec>,
        scales: &BTreeMap<String, u32>,
    ) -> Result<Vec<Route>> {
        let running = self.router.app_routes(&spec.name);
        let mut routes = Vec::new();
        for (name, function) in &spec.functions {
            let unchanged = old.and_then(|old| old.functions.get(name)) == Some(function);
            let function = &scaled(function, scales.get(name).copied());
            let kept = running
                .iter()
                .find(|r| &r.function == name)
                .filter(|_| unchanged);
            let target = match kept.map(|route| &route.target) {
                Some(Target::Function(target)) if target.scale.min == function.min => {
                    Arc::clone(target)
                }
                _ => Arc::new(self.preparer.prepare(&spec.name, name, function)?),
            };
            routes.push(route(&spec.name, name, function, target));
        }
        Ok(routes)
    }

    /// Every deployed app, by name.
    pub fn apps(&self) -> Result<Vec<AppRecord>> {
        Ok(self.store.list_apps()?)
    }

    /// Every stored service and job as it runs now (blocking: reads cgroups).
    /// Every deployed workload with what it is doing: functions (warm or at zero, instances
    /// now), then services and jobs (with their containers' CPU and memory). Blocking.
    pub fn workloads(&self) -> Result<Vec<services::status::WorkloadStatus>> {
        let apps = self.store.list_apps()?;
        let mut listed = Vec::new();
        for app in &apps {
            for function in self.function_status(&app.name) {
                listed.push(services::status::WorkloadStatus {
                    app: app.name.clone(),
                    workload: function.name,
                    kind: "function",
                    runtime: "wasm",
                    state: match (&function.pending, function.warm) {
                        (Some(_), _) => "pending".to_string(),
                        (None, true) => "warm".to_string(),
                        (None, false) => "scaled to zero".to_string(),
                    },
                    ready: function.instances,
                    desired: function.instances,
                    cpu_usec: 0,
                    memory_bytes: 0,
                    instances: Vec::new(),
                    pending: function.pending.into_iter().collect(),
                });
            }
        }
        listed.extend(self.workloads.status(&apps));
        Ok(listed)
    }

    pub fn app(&self, name: &str) -> Result<AppRecord> {
        self.store
            .get_app(name)?
            .ok_or_else(|| DaemonError::NotFound {
                name: name.to_string(),
            })
    }

    /// Stops serving the app and forgets it. Its named volumes are kept.
    #[tracing::instrument(skip_all, fields(app = name), err)]
    pub async fn remove(self: &Arc<Self>, name: &str) -> Result<()> {
        let _one_at_a_time = self.changes.lock().await;
        let deleted = {
            let (daemon, name) = (Arc::clone(self), name.to_string());
            tokio::task::spawn_blocking(move || daemon.store.delete_app(&name)).await??
        };
        if !deleted {
            return Err(DaemonError::NotFound {
                name: name.to_string(),
            });
        }
        for route in self.router.app_routes(name) {
            crate::metrics::global().forget(name, &route.function);
        }
        self.router.set_app(name, None);
        for retired in self.workloads.retire(name, None) {
            let _ = retired.await;
        }
        self.workloads.forget(name);
        self.record(name, "removed", "app removed".to_string());
        Ok(())
    }

    /// Appends an event about `app`; losing one is logged, never fails the change it tells of.
    fn record(&self, app: &str, kind: &str, message: String) {
        let event = state::NewEvent {
            app: Some(app.to_string()),
            workload: None,
            instance: None,
            kind: kind.to_string(),
            message,
        };
        if let Err(error) = self.store.append_event(&event) {
            tracing::warn!(%error, app, "event not recorded");
        }
        tracing::info!(app, kind, "app changed");
    }
}

/// The machine as detected (or with a test's memory), minus the configured reserve.
fn node_capacity(config: &DaemonConfig) -> Result<crate::sched::capacity::NodeCapacity> {
    use crate::sched::capacity::NodeCapacity;
    let detected = NodeCapacity::detect(&config.reserve)?;
    Ok(match config.capacity_memory {
        Some(memory_bytes) => {
            let total = crate::sched::capacity::Capacity {
                memory_bytes,
                ..detected.total
            };
            NodeCapacity::new(total, &config.reserve)
        }
        None => detected,
    })
}

/// A function with its warm minimum as `skiff scale` set it, if it did.
fn scaled(function: &FunctionSpec, scale: Option<u32>) -> FunctionSpec {
    let mut function = function.clone();
    if let Some(min) = scale {
        function.min = min;
    }
    function
}

fn stored_scale(record: &AppRecord, name: &str) -> Option<u32> {
    (record.workloads.iter())
        .find(|w| w.name == name && w.kind == state::WorkloadKind::Function)
        .and_then(|w| w.scale)
}

fn stored_spec(record: &AppRecord) -> Result<AppSpec> {
    serde_json::from_value(record.spec.clone()).map_err(|e| DaemonError::Spec {
        app: record.name.clone(),
        detail: e.to_string(),
    })
}

/// The app's spec and one record per workload, as the store keeps them.
fn records(spec: &AppSpec) -> Result<(serde_json::Value, Vec<WorkloadRecord>)> {
    let json = |value: Result<serde_json::Value, serde_json::Error>| {
        value.map_err(|e| DaemonError::Spec {
            app: spec.name.clone(),
            detail: e.to_string(),
        })
    };
    let mut workloads = Vec::new();
    for (name, function) in &spec.functions {
        workloads.push(record(
            name,
            state::WorkloadKind::Function,
            json(serde_json::to_value(function))?,
        ));
    }
    for (name, service) in &spec.services {
        workloads.push(record(
            name,
            state::WorkloadKind::Service,
            json(serde_json::to_value(service))?,
        ));
    }
    for (name, job) in &spec.jobs {
        workloads.push(record(
            name,
            state::WorkloadKind::Job,
            json(serde_json::to_value(job))?,
        ));
    }
    Ok((json(serde_json::to_value(spec))?, workloads))
}

fn record(name: &str, kind: state::WorkloadKind, spec: serde_json::Value) -> WorkloadRecord {
    WorkloadRecord {
        name: name.to_string(),
        kind,
        spec,
    }
}

fn route(app: &str, name: &str, function: &FunctionSpec, target: Arc<FunctionTarget>) -> Route {
    Route {
        app: app.to_string(),
        function: name.to_string(),
        prefix: function.route.clone(),
        host: function.host.as_deref().map(str::to_ascii_lowercase),
        target: Target::Function(target),
    }
}

fn service_routes(app: &str, services: Vec<ServiceRoute>) -> impl Iterator<Item = Route> {
    services.into_iter().map(move |service| Route {
        app: app.to_string(),
        function: service.name,
        prefix: service.prefix,
        host: None,
        target: Target::Service(service.target),
    })
}

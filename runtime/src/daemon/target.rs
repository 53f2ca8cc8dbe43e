//! One deployed function's life between requests: warm or at zero.
//!
//! A function's instances are per-request: every request runs in a fresh instance, and the
//! function needs `ceil(in_flight / concurrency)` of them at a time
//! ([`desired_instances`]). What stays between requests is the function's *ready state*:
//! its code linked against the host ([`HttpFunction`], a `ProxyPre`) and its reservation in
//! the node's ledger (`memory × max(min, 1)`). A function with that state is **warm**.
//!
//! - `min > 0`: it is warmed at deploy and kept warm (the reservation is for `min`
//!   instances). When the node cannot hold it now, it waits as pending in the ledger and is
//!   warmed when capacity frees.
//! - `min = 0`: after `idle` with nothing in flight the reaper ([`super::capacity`]) drops the
//!   ready state: the function is at **zero**. The next request is a **cold start**: it takes
//!   a reservation and links again from the engine's compiled code (in memory, else the
//!   on-disk cache by digest, else the wasm itself), counted in `cold_starts` and timed into
//!   the instantiation histogram.
//!
//! Requests that arrive during a cold start hold their slot and wait on the cold-start lock
//! (an async mutex; the linking under it never awaits), so the slot queue bounds them.

use super::DaemonError;
use super::capacity::NodeLedger;
use super::functions::Preparer;
use crate::app::FunctionSpec;
use crate::metrics::{self, WorkloadMetrics};
use crate::sched::capacity::Requests;
use crate::sched::function::{FunctionSlots, desired_instances};
use crate::sched::key::{InstanceKey, Kind};
use crate::sched::ledger::Reservation;
use crate::wasm::capabilities::Capabilities;
use crate::wasm::http::HttpFunction;
use crate::wasm::limits::Limits;
use crate::wasm::{Program, WasmKind};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// What the ledger counts for one instance of a function that sets no `memory`.
pub const DEFAULT_FUNCTION_MEMORY: u64 = 128 << 20;

/// Why a request found no ready function.
#[derive(Debug, thiserror::Error)]
pub enum ColdStartError {
    #[error("function {name} is waiting for capacity ({reason}); retry shortly")]
    NoCapacity { name: String, reason: String },
    #[error(transparent)]
    Prepare(#[from] DaemonError),
}

/// The manifest's scaling knobs of one function.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub min: u32,
    pub max: u32,
    pub concurrency: u32,
    pub idle: Duration,
    /// Bytes one instance may use: the manifest's `memory`, else [`DEFAULT_FUNCTION_MEMORY`].
    pub memory: u64,
}

impl Scale {
    pub fn of(spec: &FunctionSpec) -> Scale {
        Scale {
            min: spec.min,
            max: spec.max,
            concurrency: spec.concurrency,
            idle: spec.idle,
            memory: spec.memory.map_or(DEFAULT_FUNCTION_MEMORY, |m| m.0),
        }
    }

    /// What the function's warm instances reserve: `memory × max(min, 1)`.
    pub fn requests(&self) -> Requests {
        Requests {
            memory_bytes: self.memory.saturating_mul(u64::from(self.min.max(1))),
            ..Requests::ZERO
        }
    }
}

/// One function's state as the control API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FunctionStatus {
    pub name: String,
    /// Linked and holding its reservation; false when at zero.
    pub warm: bool,
    pub instances: u32,
    pub in_flight: usize,
    /// Why its warm instances wait for capacity, when they do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
}

/// A warm function: linked code and the capacity it holds.
pub struct Warm {
    pub function: HttpFunction,
    _reservation: Reservation,
}

/// One function, ready to serve or at zero.
pub struct FunctionTarget {
    pub app: String,
    pub function: String,
    /// `app/function`, for messages.
    pub name: String,
    pub slots: Arc<FunctionSlots>,
    /// How long a request waits in the queue for a slot: the function's own timeout.
    pub queue_timeout: Duration,
    pub metrics: WorkloadMetrics,
    pub scale: Scale,
    /// This target's place in the ledger; the replica number is unique per target, so a
    /// redeployed function's new target never collides with the old one's reservation.
    pub key: InstanceKey,
    pub(super) spec: FunctionSpec,
    pub(super) program: ProgramRef,
    pub(super) caps: Capabilities,
    pub(super) limits: Limits,
    pub(super) preparer: Arc<Preparer>,
    pub(super) ledger: Arc<NodeLedger>,
    warm: RwLock<Option<Arc<Warm>>>,
    cold: tokio::sync::Mutex<()>,
}

/// How to find a function's compiled code again without keeping it.
#[derive(Debug, Clone)]
pub struct ProgramRef {
    pub name: String,
    pub kind: WasmKind,
    pub digest: String,
}

impl ProgramRef {
    pub fn of(program: &Program) -> Self {
        ProgramRef {
            name: program.name().to_string(),
            kind: program.kind(),
            digest: program.digest().to_string(),
        }
    }
}

/// Replica numbers for ledger keys, unique per target in this process.
static TARGETS: AtomicU32 = AtomicU32::new(0);

/// Everything [`FunctionTarget::new`] needs, from the preparer.
pub struct Parts {
    pub app: String,
    pub function: String,
    pub spec: FunctionSpec,
    pub program: Program,
    pub caps: Capabilities,
    pub limits: Limits,
    pub slots: Arc<FunctionSlots>,
    pub preparer: Arc<Preparer>,
    pub ledger: Arc<NodeLedger>,
}

impl FunctionTarget {
    /// A target at zero; the linked code of `program` is kept (warm) only when `min > 0` and
    /// the ledger has room, else dropped.
    pub fn new(parts: Parts) -> Result<Self, DaemonError> {
        let Parts {
            app,
            function,
            spec,
            program,
            caps,
            limits,
            slots,
            preparer,
            ledger,
        } = parts;
        let replica = TARGETS.fetch_add(1, Ordering::Relaxed);
        let target = FunctionTarget {
            name: format!("{app}/{function}"),
            key: InstanceKey::new(Kind::Function, &app, &function, replica),
            metrics: metrics::global().workload(&app, &function),
            queue_timeout: spec.timeout,
            scale: Scale::of(&spec),
            program: ProgramRef::of(&program),
            app,
            function,
            spec,
            caps,
            limits,
            slots,
            preparer,
            ledger,
            warm: RwLock::new(None),
            cold: tokio::sync::Mutex::new(()),
        };
        // Link now either way: a manifest whose function does not link is refused at deploy.
        let linked = target.link(&program)?;
        if target.scale.min > 0 {
            match target
                .ledger
                .reserve(&target.key, target.scale.requests(), true)
            {
                Ok(reservation) => {
                    target.set_warm(linked, reservation);
                }
                Err(reason) => {
                    tracing::info!(function = target.name, %reason, "warm pool pending");
                }
            }
        }
        target.report_instances();
        Ok(target)
    }

    /// The ready state, if warm. Takes a read lock just long enough to clone an `Arc`.
    pub fn current(&self) -> Option<Arc<Warm>> {
        self.warm.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn is_warm(&self) -> bool {
        self.warm
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// The ready state, cold-starting the function when it is at zero.
    pub async fn ready(&self) -> Result<Arc<Warm>, ColdStartError> {
        if let Some(warm) = self.current() {
            return Ok(warm);
        }
        // Awaited only to take the lock; nothing under it awaits.
        let _one_cold_start = self.cold.lock().await;
        if let Some(warm) = self.current() {
            return Ok(warm);
        }
        self.cold_start()
    }

    fn cold_start(&self) -> Result<Arc<Warm>, ColdStartError> {
        let started = Instant::now();
        let wait = self.scale.min > 0;
        let reservation = (self.ledger)
            .reserve(&self.key, self.scale.requests(), wait)
            .map_err(|reason| ColdStartError::NoCapacity {
                name: self.name.clone(),
                reason,
            })?;
        let program = self.program()?;
        let linked = self.link(&program)?;
        let warm = self.set_warm(linked, reservation);
        self.metrics.cold_starts.inc();
        self.metrics.instantiated(started.elapsed());
        metrics::global().decision("cold_start");
        Ok(warm)
    }

    /// Warms the function with a reservation the ledger handed it from the pending queue.
    pub fn adopt(&self, reservation: Reservation) -> Result<(), DaemonError> {
        if self.is_warm() {
            return Ok(());
        }
        let program = self.program()?;
        let linked = self.link(&program)?;
        self.set_warm(linked, reservation);
        Ok(())
    }

    /// Drops the ready state if nothing is in flight: the function goes to zero. Returns
    /// whether it did.
    pub fn scale_to_zero(&self) -> bool {
        let mut warm = self.warm.write().unwrap_or_else(|e| e.into_inner());
        if warm.is_none() || self.slots.in_flight() > 0 || self.slots.waiting() > 0 {
            return false;
        }
        *warm = None;
        drop(warm);
        metrics::global().decision("scaled_to_zero");
        self.report_instances();
        true
    }

    /// Marks the reservation idle (evictable) or busy, as the reaper sees it.
    pub fn mark_idle(&self, idle: bool) {
        if let Some(warm) = self.current() {
            warm._reservation.set_idle(idle);
        }
    }

    /// True when warm, `min = 0`, and nothing ran for the idle window.
    pub fn should_scale_to_zero(&self, now: Instant) -> bool {
        self.scale.min == 0 && self.is_warm() && self.slots.is_idle(now, self.scale.idle)
    }

    /// Instances the function has now: `ceil(in_flight / concurrency)` within `min..=max`
    /// while warm, 0 at zero.
    pub fn instances(&self) -> u32 {
        if !self.is_warm() {
            return 0;
        }
        let (min, max) = (self.scale.min.max(1), self.scale.max.max(1));
        desired_instances(self.slots.in_flight(), self.scale.concurrency, min, max)
    }

    /// How the function is doing, for `GET /v1/apps/{name}`.
    pub fn status(&self) -> FunctionStatus {
        FunctionStatus {
            name: self.function.clone(),
            warm: self.is_warm(),
            instances: self.instances(),
            in_flight: self.slots.in_flight(),
            pending: (self.ledger.pending().into_iter())
                .find(|waiter| waiter.key == self.key)
                .map(|waiter| waiter.reason),
        }
    }

    pub fn report_instances(&self) {
        let count = i64::from(self.instances());
        metrics::global().set_instances(&self.app, &self.function, "wasm", count);
    }

    fn set_warm(&self, function: HttpFunction, reservation: Reservation) -> Arc<Warm> {
        let warm = Arc::new(Warm {
            function,
            _reservation: reservation,
        });
        *self.warm.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&warm));
        self.report_instances();
        warm
    }

    /// The compiled code: from the engine by digest, else from the wasm again.
    fn program(&self) -> Result<Program, DaemonError> {
        let found = self.preparer.engine.load_digest(
            &self.program.name,
            self.program.kind,
            &self.program.digest,
        );
        match found {
            Some(program) => Ok(program),
            None => self.preparer.load(&self.app, &self.function, &self.spec),
        }
    }

    fn link(&self, program: &Program) -> Result<HttpFunction, DaemonError> {
        let engine = Arc::clone(&self.preparer.engine);
        HttpFunction::prepare(engine, program, self.caps.clone(), self.limits).map_err(|error| {
            DaemonError::Function {
                app: self.app.clone(),
                function: self.function.clone(),
                error: Box::new(error),
            }
        })
    }
}

impl Drop for FunctionTarget {
    fn drop(&mut self) {
        self.ledger.forget(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::services::names::ServiceNames;
    use crate::sched::capacity::{Capacity, NodeCapacity, Reserve};
    use crate::sched::function::SlotsConfig;
    use crate::wasm::engine::{EngineConfig, WasmEngine};
    use std::path::Path;

    fn hello() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../samples/target/wasm32-wasip2/release/http_hello.wasm")
    }

    fn target(dir: &Path, memory: u64, function: &str) -> FunctionTarget {
        let engine = WasmEngine::new(&EngineConfig::default(), dir.join("cache")).unwrap();
        let engine = Arc::new(engine);
        let total = Capacity {
            cpu_millis: 1000,
            memory_bytes: memory,
            pids: 1000,
        };
        let reserve = Reserve {
            memory_percent: 0,
            memory_bytes: 0,
            cpu_millis: 0,
            pids: 0,
        };
        let ledger = Arc::new(NodeLedger::new(
            NodeCapacity::new(total, &reserve),
            Arc::clone(&engine),
        ));
        let preparer = Arc::new(Preparer {
            engine,
            data_dir: dir.to_path_buf(),
            queue: 0,
            ledger: Arc::clone(&ledger),
            names: Arc::new(ServiceNames::new(dir)),
        });
        let spec: FunctionSpec = toml::from_str(&format!(
            "file = {:?}\nroute = \"/\"\nmemory = \"16MiB\"\n",
            hello()
        ))
        .unwrap();
        let program = preparer.engine.load_file(&hello()).unwrap();
        FunctionTarget::new(Parts {
            app: "unit".into(),
            function: function.into(),
            caps: Capabilities::default(),
            limits: Limits::default(),
            slots: FunctionSlots::new(SlotsConfig {
                max: 8,
                queue: 0,
                retry_after: Duration::from_secs(1),
            }),
            spec,
            program,
            preparer,
            ledger,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn a_cold_start_warms_and_scale_to_zero_frees_the_reservation() {
        let dir = tempfile::tempdir().unwrap();
        let target = target(dir.path(), 1 << 30, "cold");
        assert!(!target.is_warm(), "min = 0 starts at zero");
        let cold_starts = target.metrics.cold_starts.get();
        let used = || target.ledger.ledger().snapshot().used.memory_bytes;
        assert_eq!(used(), 0);
        let warm = target.ready().await.unwrap();
        assert!(target.is_warm());
        assert_eq!(used(), 16 << 20, "memory × max(min, 1)");
        assert_eq!(target.metrics.cold_starts.get(), cold_starts + 1);
        assert_eq!(target.instances(), 1);
        let slot = target.slots.try_acquire().unwrap();
        assert!(!target.scale_to_zero(), "not while a request is in flight");
        drop((slot, warm));
        assert!(target.scale_to_zero());
        assert_eq!(
            (target.is_warm(), used(), target.instances()),
            (false, 0, 0)
        );
    }

    #[tokio::test]
    async fn a_cold_start_that_cannot_fit_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let target = target(dir.path(), 24 << 20, "small");
        let other = InstanceKey::new(Kind::Service, "unit", "db", 0);
        let busy = Requests {
            memory_bytes: 16 << 20,
            ..Requests::ZERO
        };
        let _held = target.ledger.reserve(&other, busy, false).unwrap();
        let Err(error) = target.ready().await else {
            panic!("16 MiB cannot fit the 8 MiB left");
        };
        assert!(error.to_string().contains("unit/small"), "{error}");
        assert!(
            error.to_string().contains("waiting for 16 MiB of memory"),
            "{error}"
        );
        assert!(target.ledger.pending().is_empty(), "min = 0 does not wait");
    }
}

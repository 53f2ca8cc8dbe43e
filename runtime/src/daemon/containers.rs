//! Containers the CLI starts through the daemon (`skiff run -d` while `skiff serve` runs):
//! the same detached containers `skiff run -d` makes alone, but admitted through the node's
//! one ledger first, so their memory and CPU count beside apps' workloads, and told in the
//! events.
//!
//! Reading `skiff run`'s flags is the CLI's business: `skiff serve` hands the daemon a
//! [`ContainerRunner`] that parses them and launches, and the daemon wraps it with admission
//! and a watcher that gives the reservation back when the container exits.

use super::capacity::NodeLedger;
use crate::linux::container::{Containers, Status};
use crate::sched::capacity::{Requests, Resource};
use crate::sched::key::{InstanceKey, Kind};
use crate::sched::ledger::Reservation;
use crate::state::{NewEvent, Store};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How often a watched container's record is read for its exit.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// A `skiff run -d` the daemon was asked for: its arguments after `run`, and the directory
/// relative paths in them (`-v ./data:/data`, `--env-file`) start from.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub args: Vec<String>,
    pub cwd: PathBuf,
}

/// What a [`ContainerRunner`] read from a request before launching it.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The container's name, for messages and events.
    pub name: String,
    /// What it asks of the node: `-m` and `--cpus`.
    pub requests: Requests,
}

/// Why a container was not started; `status` is the HTTP status the API answers with.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RunRefused {
    pub status: u16,
    pub message: String,
}

impl RunRefused {
    pub fn bad_request(message: impl Into<String>) -> Self {
        RunRefused {
            status: 400,
            message: message.into(),
        }
    }
}

/// Parses a request (`plan`) and launches it detached (`launch`), returning its id. Blocking.
pub trait ContainerRunner: Send + Sync {
    fn plan(&self, request: &RunRequest, data_dir: &Path) -> Result<Planned, RunRefused>;
    fn launch(&self, request: &RunRequest, data_dir: &Path) -> Result<String, RunRefused>;
}

/// The daemon's side: the runner `skiff serve` installed, and admission around it.
pub struct ContainerHost {
    runner: OnceLock<Box<dyn ContainerRunner>>,
    data_dir: PathBuf,
    ledger: Arc<NodeLedger>,
    store: Arc<Store>,
}

impl ContainerHost {
    pub fn new(data_dir: PathBuf, ledger: Arc<NodeLedger>, store: Arc<Store>) -> Self {
        ContainerHost {
            runner: OnceLock::new(),
            data_dir,
            ledger,
            store,
        }
    }

    pub fn set_runner(&self, runner: Box<dyn ContainerRunner>) {
        let _ = self.runner.set(runner);
    }

    /// Admits and starts one container; its id. A container the node has no room for now is
    /// refused with the reason (a `run -d` does not wait). Blocking.
    pub fn run(&self, request: &RunRequest) -> Result<String, RunRefused> {
        let Some(runner) = self.runner.get() else {
            return Err(RunRefused {
                status: 501,
                message: "this daemon does not start containers; run skiff without the daemon"
                    .into(),
            });
        };
        let planned = runner.plan(request, &self.data_dir)?;
        let node = self.ledger.node().allocatable;
        if let Some(resource) = node.short_of(&planned.requests).first() {
            return Err(RunRefused {
                status: 422,
                message: format!(
                    "container {} asks for {}, more than the node's {} after the reserve; \
                     lower {}",
                    planned.name,
                    resource.describe(planned.requests.get(*resource)),
                    resource.amount(node.get(*resource)),
                    match resource {
                        Resource::Cpu => "--cpus",
                        Resource::Memory => "-m",
                        Resource::Pids => "--pids-limit",
                    }
                ),
            });
        }
        static CONTAINERS: AtomicU32 = AtomicU32::new(0);
        let key = InstanceKey::new(
            Kind::Service,
            "-",
            &planned.name,
            CONTAINERS.fetch_add(1, Ordering::Relaxed),
        );
        let reservation = self
            .ledger
            .reserve_or_retry(&key, planned.requests)
            .map_err(|reason| RunRefused {
                status: 503,
                message: format!(
                    "container {} does not fit the node now ({reason}); lower -m/--cpus, or \
                     make room (skiff ps shows what runs)",
                    planned.name
                ),
            })?;
        let id = runner.launch(request, &self.data_dir)?;
        tracing::info!(
            container = planned.name,
            id,
            "container started for skiff run -d"
        );
        self.event(&planned.name, "started", format!("container {id} started"));
        self.watch(id.clone(), reservation);
        Ok(id)
    }

    /// Holds the reservation until the container has exited or is gone.
    fn watch(&self, id: String, reservation: Reservation) {
        let data_dir = self.data_dir.clone();
        std::thread::spawn(move || {
            let containers = Containers::open(&data_dir);
            loop {
                match containers.load(&id) {
                    Ok(record) if record.status != Status::Exited => {}
                    _ => break,
                }
                std::thread::sleep(WATCH_EVERY);
            }
            drop(reservation);
        });
    }

    fn event(&self, name: &str, kind: &str, message: String) {
        let event = NewEvent {
            app: None,
            workload: None,
            instance: Some(name.to_string()),
            kind: kind.to_string(),
            message,
        };
        if let Err(error) = self.store.append_event(&event) {
            tracing::warn!(%error, "event not recorded");
        }
    }
}

//! Containers the CLI handles through the daemon while `skiff serve` runs: `skiff run -d`
//! starts the same detached containers it makes alone, but admitted through the node's one
//! ledger first, so their memory and CPU count beside apps' workloads, and told in the
//! events; `ps`, `logs`, `stop` and `rm` list, read, stop and remove them here.
//!
//! Reading `skiff run`'s flags is the CLI's business: `skiff serve` hands the daemon a
//! [`ContainerRunner`] that parses them and launches, and the daemon wraps it with admission.
//! A started container's reservation is held in one place ([`ContainerHost`]'s `held`) until a
//! watcher sees it exit or `stop`/`rm` here gives it back, whichever comes first: taken out of
//! the map once, it is dropped (released) once. Stopping and removing themselves are
//! `linux::stop`'s, the same code the CLI runs alone.

use super::capacity::NodeLedger;
use crate::linux::container::{ContainerError, ContainerRecord, Containers, Status};
use crate::linux::logs::LogReader;
use crate::linux::stop::{self, StopError};
use crate::sched::capacity::{Requests, Resource};
use crate::sched::key::{InstanceKey, Kind};
use crate::sched::ledger::Reservation;
use crate::state::{NewEvent, Store};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
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
    /// The reservations of containers started here, by id, until they exit or are stopped or
    /// removed here.
    held: Arc<Mutex<HashMap<String, Reservation>>>,
}

impl ContainerHost {
    pub fn new(data_dir: PathBuf, ledger: Arc<NodeLedger>, store: Arc<Store>) -> Self {
        ContainerHost {
            runner: OnceLock::new(),
            data_dir,
            ledger,
            store,
            held: Arc::default(),
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
        lock(&self.held).insert(id.clone(), reservation);
        self.watch(id.clone());
        Ok(id)
    }

    /// The containers `skiff ps` lists: running ones, or all. Blocking.
    pub fn list(&self, all: bool) -> Result<Vec<ContainerRecord>, ContainerError> {
        let mut records = Containers::open(&self.data_dir).list()?;
        records.retain(|c| all || c.status != Status::Exited);
        Ok(records)
    }

    /// The container a user names (name, id or unique id prefix). Blocking.
    pub fn find(&self, name: &str) -> Result<ContainerRecord, ContainerError> {
        Containers::open(&self.data_dir).find(name)
    }

    /// `skiff logs [-f]`: the log of the container `name` names, from the start. Blocking.
    pub fn logs(&self, name: &str, follow: bool) -> Result<LogReader, ContainerError> {
        let containers = Containers::open(&self.data_dir);
        let record = containers.find(name)?;
        LogReader::open(&containers, &record.id, follow)
    }

    /// `skiff stop`: stops the container `name` names and gives its reservation back. Blocking
    /// for at most `grace` (capped) and the wait after SIGKILL.
    pub fn stop(&self, name: &str, grace: Duration) -> Result<ContainerRecord, StopError> {
        let record = stop::stop_named(&Containers::open(&self.data_dir), name, grace)?;
        self.release(&record.id);
        tracing::info!(
            container = record.name,
            id = record.id,
            "container stopped for skiff stop"
        );
        self.event(
            &record.name,
            "stopped",
            format!("container {} stopped", record.id),
        );
        Ok(record)
    }

    /// `skiff rm [-f]`: removes the container `name` names and gives its reservation back.
    /// Blocking, as [`ContainerHost::stop`].
    pub fn remove(&self, name: &str, force: bool) -> Result<ContainerRecord, StopError> {
        let record = stop::remove_named(&Containers::open(&self.data_dir), name, force)?;
        self.release(&record.id);
        tracing::info!(
            container = record.name,
            id = record.id,
            "container removed for skiff rm"
        );
        self.event(
            &record.name,
            "removed",
            format!("container {} removed", record.id),
        );
        Ok(record)
    }

    /// Gives back the reservation of container `id`, when it holds one still.
    fn release(&self, id: &str) {
        let reservation = lock(&self.held).remove(id);
        drop(reservation);
    }

    /// Gives the reservation back once the container has exited or is gone, unless `stop` or
    /// `rm` here did first (then the watch ends too).
    fn watch(&self, id: String) {
        let data_dir = self.data_dir.clone();
        let held = Arc::clone(&self.held);
        std::thread::spawn(move || {
            let containers = Containers::open(&data_dir);
            loop {
                if !lock(&held).contains_key(&id) {
                    return;
                }
                match containers.current(&id) {
                    Ok(record) if record.status != Status::Exited => {}
                    _ => break,
                }
                std::thread::sleep(WATCH_EVERY);
            }
            let reservation = lock(&held).remove(&id);
            drop(reservation);
        });
    }

    /// How many started containers hold a reservation now (tests).
    #[cfg(test)]
    fn held(&self) -> usize {
        lock(&self.held).len()
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

/// The map's lock; a panic elsewhere while holding it leaves a map still worth using.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::container::Owner;
    use crate::sched::capacity::{Capacity, NodeCapacity, Reserve};
    use crate::wasm::engine::{EngineConfig, WasmEngine};

    /// Writes a running record (its monitor: this test process) in place of a real launch.
    struct FakeRunner;

    impl ContainerRunner for FakeRunner {
        fn plan(&self, request: &RunRequest, _: &Path) -> Result<Planned, RunRefused> {
            Ok(Planned {
                name: request.args[0].clone(),
                requests: Requests {
                    memory_bytes: 600 << 20,
                    ..Requests::ZERO
                },
            })
        }

        fn launch(&self, request: &RunRequest, data_dir: &Path) -> Result<String, RunRefused> {
            let name = &request.args[0];
            let record = ContainerRecord {
                id: format!("{name}-id"),
                name: name.clone(),
                image: "busybox".into(),
                command: vec![],
                created: 0,
                status: Status::Running,
                pid: None,
                pid_start: None,
                monitor_pid: Some(std::process::id() as i32),
                exit_code: None,
                oom_killed: false,
                finished: None,
                ports: vec![],
                address: None,
                auto_remove: false,
                owner: (name == "owned").then(|| Owner {
                    app: "shop".into(),
                    workload: "web".into(),
                    generation: 1,
                    replica: 0,
                }),
            };
            Containers::open(data_dir).create(&record).unwrap();
            Ok(record.id)
        }
    }

    fn host(dir: &Path) -> ContainerHost {
        let engine =
            Arc::new(WasmEngine::new(&EngineConfig::default(), dir.join("cache")).unwrap());
        let total = Capacity {
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
            pids: 1000,
        };
        let reserve = Reserve {
            memory_percent: 0,
            memory_bytes: 0,
            cpu_millis: 0,
            pids: 0,
        };
        let ledger = Arc::new(NodeLedger::new(NodeCapacity::new(total, &reserve), engine));
        let store = Arc::new(Store::open(dir).unwrap());
        let host = ContainerHost::new(dir.to_path_buf(), ledger, store);
        host.set_runner(Box::new(FakeRunner));
        host
    }

    fn run(host: &ContainerHost, name: &str) -> Result<String, RunRefused> {
        host.run(&RunRequest {
            args: vec![name.into()],
            cwd: "/".into(),
        })
    }

    fn used_memory(host: &ContainerHost) -> u64 {
        host.ledger.ledger().snapshot().used.memory_bytes
    }

    #[test]
    fn stop_and_rm_give_the_reservation_back_once() {
        let dir = tempfile::tempdir().unwrap();
        let host = host(dir.path());
        run(&host, "web1").unwrap();
        assert_eq!((host.held(), used_memory(&host)), (1, 600 << 20));
        let refused = run(&host, "web2").unwrap_err();
        assert_eq!(refused.status, 503, "{}", refused.message);

        // Stopped here: the room is back at once, and the watcher has nothing left to free.
        host.stop("web1", Duration::ZERO).unwrap();
        assert_eq!((host.held(), used_memory(&host)), (0, 0));
        run(&host, "web2").unwrap();
        assert_eq!(used_memory(&host), 600 << 20);

        // A running container is removed only with force; then its room is back too.
        let running = host.remove("web2", false).unwrap_err();
        assert!(matches!(running, StopError::Running { .. }), "{running}");
        assert_eq!(used_memory(&host), 600 << 20, "refused: nothing given back");
        host.remove("web2", true).unwrap();
        assert_eq!((host.held(), used_memory(&host)), (0, 0));
        assert!(host.find("web2").is_err());
        assert_eq!(host.list(true).unwrap().len(), 1, "web1 is still listed");
        assert_eq!(
            host.list(false).unwrap().len(),
            1,
            "its record still says running"
        );
    }

    #[test]
    fn an_app_owned_container_or_an_unknown_name_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let host = host(dir.path());
        let id = run(&host, "owned").unwrap();
        for refused in [
            host.stop("owned", Duration::ZERO).unwrap_err(),
            host.remove("owned", false).unwrap_err(),
        ] {
            assert!(
                matches!(
                    refused,
                    StopError::Container(ContainerError::Managed { .. })
                ),
                "{refused}"
            );
        }
        let unknown = host.stop("nope", Duration::ZERO).unwrap_err();
        assert!(
            unknown.to_string().contains("see `skiff ps -a`"),
            "{unknown}"
        );
        assert_eq!((host.held(), used_memory(&host)), (1, 600 << 20));
        assert_eq!(host.find(&id).unwrap().name, "owned");
    }
}

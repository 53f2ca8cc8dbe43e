//! One container of a service or job: how the daemon launches it (owned, on the bridge, with
//! the workload's limits), tells whether it exited, and stops and removes it.
//!
//! Everything here blocks (files, `/proc`, waiting for a monitor); the supervisor calls it
//! on tokio's blocking pool.

use crate::app::{ServiceSpec, VolumeSource, VolumeSpec};
use crate::daemon::functions::volume_dir;
use crate::linux::cgroups::{CgroupPath, CgroupRoot};
use crate::linux::container::{
    ContainerError, ContainerRecord, Containers, Owner, Status, pid_alive, same_process,
};
use crate::linux::hosts::ExtraHost;
use crate::linux::launch::{self, Launch, LaunchError};
use crate::linux::net::NetworkMode;
use crate::linux::spec::{RunOptions, Volume};
use crate::linux::unpack::UnpackLimits;
use crate::oci::images::ImageRecord;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Layers larger than this once unpacked are refused, as `skiff run`'s default.
const MAX_LAYER_SIZE: u64 = 16 << 30;

/// How long a container has to exit after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// How long a monitor has to record an exit and clean up after SIGKILL.
const MONITOR_WAIT: Duration = Duration::from_secs(10);

/// What a workload's container runs, whatever its kind.
#[derive(Debug, Clone)]
pub struct Workload {
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
    pub volumes: Vec<VolumeSpec>,
    /// The app's service names for its `/etc/hosts` (see `names`).
    pub extra_hosts: Vec<ExtraHost>,
}

impl From<&ServiceSpec> for Workload {
    fn from(spec: &ServiceSpec) -> Self {
        Workload {
            command: spec.command.clone(),
            env: spec.env.clone(),
            memory: spec.memory_limit.or(spec.memory).map(|m| m.0),
            cpus: spec
                .cpu_limit
                .or(spec.cpu)
                .map(|c| f64::from(c.millicores()) / 1000.0),
            volumes: spec.volumes.clone(),
            extra_hosts: Vec::new(),
        }
    }
}

/// Launches one container of `owner`'s workload on the bridge and returns its record as the
/// monitor left it once running (with pid and address). The monitor is reaped by a thread of
/// its own, so the container outlives neither more nor less than it would under `skiff run -d`.
pub fn launch(
    data_dir: &Path,
    image: &ImageRecord,
    workload: &Workload,
    owner: Owner,
) -> Result<ContainerRecord, LaunchError> {
    let mut volumes = Vec::new();
    for volume in &workload.volumes {
        let host = match &volume.source {
            VolumeSource::Host(path) => path.clone(),
            VolumeSource::Named(name) => {
                let path = volume_dir(data_dir, &owner.app, name);
                std::fs::create_dir_all(&path).map_err(|error| LaunchError::Io {
                    path: path.clone(),
                    error,
                })?;
                path
            }
        };
        volumes.push(Volume {
            host,
            container: PathBuf::from(&volume.guest),
            read_only: volume.read_only,
        });
    }
    let request = Launch {
        image: image.clone(),
        name: Some(format!(
            "{}.{}.{}-{}",
            owner.app,
            owner.workload,
            owner.replica,
            &crate::linux::container::new_id()[..8]
        )),
        options: RunOptions {
            command: workload.command.clone(),
            entrypoint: None,
            env: workload
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            workdir: None,
            hostname: None,
            memory: workload.memory,
            cpus: workload.cpus,
            pids_limit: None,
            volumes,
            host_network: false,
            extra_hosts: workload.extra_hosts.clone(),
        },
        user: None,
        network: NetworkMode::Bridge,
        publish: Vec::new(),
        auto_remove: false,
        limits: UnpackLimits {
            max_expanded_bytes: MAX_LAYER_SIZE,
        },
        owner: Some(owner),
    };
    let created = launch::create(data_dir, &request)?;
    let started = launch::start_detached(data_dir, &created);
    let mut monitor = match started {
        Ok(monitor) => monitor,
        Err(error) => {
            let _ = Containers::open(data_dir).remove_dir(&created.id);
            return Err(error);
        }
    };
    std::thread::Builder::new()
        .name("skiff-reap-monitor".into())
        .spawn(move || monitor.wait())
        .map_err(|error| LaunchError::Spawn { error })?;
    Ok(Containers::open(data_dir).load(&created.id)?)
}

/// The exit code when the container has exited (-1 when nobody could record it), `None`
/// while it runs. A container whose pid died counts as running until its monitor records the
/// exit, so the code is known; a dead monitor means exited.
pub fn exit_code(containers: &Containers, id: &str) -> Option<i32> {
    match containers.load(id) {
        Err(ContainerError::Unknown { .. }) => Some(-1),
        Err(error) => {
            tracing::warn!(%error, container = id, "cannot read the container's record");
            None
        }
        Ok(record) if record.status == Status::Exited => Some(record.exit_code.unwrap_or(-1)),
        Ok(record) => match record.monitor_pid {
            Some(monitor) if !pid_alive(monitor) => Some(record.exit_code.unwrap_or(-1)),
            _ => None,
        },
    }
}

/// True when the recorded container still runs: its monitor and its pid 1 are alive.
pub fn is_running(record: &ContainerRecord) -> bool {
    record.status == Status::Running
        && record.monitor_pid.is_some_and(pid_alive)
        && record
            .pid
            .is_some_and(|pid| same_process(pid, record.pid_start))
}

/// Stops the container (SIGTERM, then SIGKILL after `grace`), waits for its monitor to clean
/// up and removes its directory. Bounded: gives up with a warning when the monitor hangs. A
/// container whose monitor died is cleaned up here: its cgroup's processes killed, the cgroup
/// removed.
pub fn stop_and_remove(data_dir: &Path, id: &str, grace: Duration) {
    let containers = Containers::open(data_dir);
    if let Ok(record) = containers.load(id) {
        if let Some(raw) = record.pid.filter(|_| record.status == Status::Running)
            && same_process(raw, record.pid_start)
        {
            let pid = Pid::from_raw(raw);
            let _ = kill(pid, Signal::SIGTERM);
            let gone = || !same_process(raw, record.pid_start);
            if !wait_for(grace, gone) {
                let _ = kill(pid, Signal::SIGKILL);
                wait_for(MONITOR_WAIT, gone);
            }
        }
        let monitor_gone = || record.monitor_pid.is_none_or(|m| !pid_alive(m));
        if !wait_for(MONITOR_WAIT, monitor_gone) {
            tracing::warn!(
                container = id,
                "its monitor did not exit; removing it anyway"
            );
        }
        remove_cgroup(id);
    }
    if let Err(error) = containers.remove_dir(id) {
        tracing::warn!(%error, container = id, "container not removed");
    }
}

/// Kills what is left in the container's cgroup and removes it: the monitor's job, done here
/// when the monitor died first. A cgroup already gone is fine.
fn remove_cgroup(id: &str) {
    let Ok(path) = CgroupPath::new(&format!("skiff/{id}")) else {
        return;
    };
    let Ok(root) = CgroupRoot::detect() else {
        return;
    };
    let cgroup = root.open(&path);
    if let Err(error) = cgroup.kill_all().and_then(|()| cgroup.remove()) {
        tracing::warn!(%error, container = id, "cgroup not removed");
    }
}

/// Polls `done` every 20 ms for at most `limit`; whether it came true.
fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every container some workload owns.
pub fn owned(data_dir: &Path) -> Vec<ContainerRecord> {
    match Containers::open(data_dir).list() {
        Ok(all) => all.into_iter().filter(|c| c.owner.is_some()).collect(),
        Err(error) => {
            tracing::warn!(%error, "cannot list containers");
            Vec::new()
        }
    }
}

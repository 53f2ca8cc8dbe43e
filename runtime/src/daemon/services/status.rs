//! What each service and job is doing, for `skiff ps` (`GET /v1/workloads`): the tasks
//! publish their [`Progress`] as they go; [`measure`] adds CPU and memory from the
//! containers' cgroups, [`in_process_cpu`] the CPU of Wasm instances, which have none.

use crate::linux::cgroups::{CgroupPath, CgroupRoot};
use crate::wasm::cpu::CpuCounter;
use serde::Serialize;
use std::sync::{Arc, Mutex};

/// A task's view of its workload, replaced whole as it changes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    /// `running`, `starting`, `degraded`, `stopped`, `succeeded`, `failed: ...`, ...
    pub state: String,
    /// Instances wanted: the service's replicas, 1 for a running job, 0 for a finished one.
    pub desired: u32,
    pub instances: Vec<InstanceProgress>,
    /// Why wanted instances do not run, one line each.
    pub pending: Vec<String>,
    /// Exits and failed starts since the task began (a rollout's sign of a bad version).
    #[serde(skip)]
    pub exits: u32,
    /// The CPU counters of its running in-process (Wasm) instances, read when listed.
    #[serde(skip)]
    pub cpu: Vec<CpuCounter>,
}

/// One running container.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceProgress {
    pub container: String,
    /// `starting`, `healthy` or `unhealthy`; only healthy ones are routed.
    pub health: &'static str,
    pub address: Option<String>,
}

/// Shared between a task (writer) and the API (reader).
pub type Shared = Arc<Mutex<Progress>>;

pub fn set(shared: &Shared, progress: Progress) {
    *shared.lock().unwrap_or_else(|e| e.into_inner()) = progress;
}

pub fn get(shared: &Shared) -> Progress {
    shared.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// One workload as `GET /v1/workloads` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadStatus {
    pub app: String,
    pub workload: String,
    /// `function`, `service` or `job`.
    pub kind: &'static str,
    /// The executor: `wasm` or `linux`.
    pub runtime: &'static str,
    pub state: String,
    /// Healthy instances (services) or running ones (jobs).
    pub ready: u32,
    pub desired: u32,
    /// CPU time its running containers used, in microseconds.
    pub cpu_usec: u64,
    /// Memory its running containers hold now, in bytes.
    pub memory_bytes: u64,
    pub instances: Vec<InstanceProgress>,
    pub pending: Vec<String>,
}

/// CPU time and memory of the containers, summed; a container without stats counts 0.
pub fn measure(containers: &[InstanceProgress]) -> (u64, u64) {
    let Ok(root) = CgroupRoot::detect() else {
        return (0, 0);
    };
    let mut totals = (0, 0);
    for instance in containers {
        let Ok(path) = CgroupPath::new(&format!("skiff/{}", instance.container)) else {
            continue;
        };
        if let Ok(stats) = root.open(&path).stats() {
            totals.0 += stats.cpu_usec;
            totals.1 += stats.memory_bytes;
        }
    }
    totals
}

/// CPU time the in-process instances used, summed, in microseconds.
pub fn in_process_cpu(progress: &Progress) -> u64 {
    (progress.cpu.iter())
        .map(|used| used.load(std::sync::atomic::Ordering::Relaxed))
        .fold(0, u64::saturating_add)
}

/// CPU time of each container, by id; containers without stats are left out.
pub fn cpu_by_container(containers: &[InstanceProgress]) -> std::collections::HashMap<String, u64> {
    let Ok(root) = CgroupRoot::detect() else {
        return Default::default();
    };
    containers
        .iter()
        .filter_map(|instance| {
            let path = CgroupPath::new(&format!("skiff/{}", instance.container)).ok()?;
            let stats = root.open(&path).stats().ok()?;
            Some((instance.container.clone(), stats.cpu_usec))
        })
        .collect()
}

/// What a replica's exit is told as, event kind and message: restarting after `wait`, or not
/// restarted per its `policy` (`wait` is `None`).
pub fn restart_told(
    replica: u32,
    wait: Option<std::time::Duration>,
    policy: crate::sched::service::RestartPolicy,
    reason: &str,
) -> (&'static str, String) {
    match wait {
        Some(wait) => (
            "restarting",
            format!(
                "replica {replica} restarting in {}s ({reason})",
                wait.as_secs_f64().ceil()
            ),
        ),
        None => (
            "stopped",
            format!("replica {replica} not restarted (restart = {policy}, {reason})"),
        ),
    }
}

//! The cgroup v2 manager: one directory in the unified hierarchy, with memory, cpu and pids
//! enabled in `cgroup.subtree_control` of every cgroup above it.

use super::{
    CgroupError, CgroupManager, CgroupPath, CgroupStats, Result, cpu, kill_procs, memory,
    mkdir_all, pids, read_optional, remove_tree, write,
};
use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;
use std::path::{Path, PathBuf};

/// The controllers enabled along the path, in the order written to `cgroup.subtree_control`.
const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

/// One container's cgroup in the unified hierarchy.
#[derive(Debug)]
pub struct V2Manager {
    path: CgroupPath,
    dir: PathBuf,
}

impl V2Manager {
    /// The manager, touching nothing.
    pub fn open(root: &Path, path: &CgroupPath) -> Self {
        Self {
            path: path.clone(),
            dir: root.join(path.as_path()),
        }
    }

    /// Makes each directory on the path and enables, in every cgroup above the leaf, those of
    /// memory, cpu and pids that its own parent offers. The leaf gets none: on v2 only a
    /// cgroup without enabled children may hold processes.
    pub fn create(root: &Path, path: &CgroupPath) -> Result<Self> {
        let mut available = offered(root)?;
        let mut dir = root.to_path_buf();
        for component in path.as_path().components() {
            let enable: Vec<&str> = CONTROLLERS
                .into_iter()
                .filter(|c| available.iter().any(|a| a == c))
                .collect();
            let enabled = enabled(&dir)?;
            let missing: Vec<String> = enable
                .iter()
                .filter(|c| !enabled.iter().any(|e| e == *c))
                .map(|c| format!("+{c}"))
                .collect();
            if !missing.is_empty() {
                write(&dir, "cgroup.subtree_control", missing.join(" "))?;
            }
            // What this cgroup's children now see in their cgroup.controllers.
            available = enable.into_iter().map(String::from).collect();
            dir.push(component);
            mkdir_all(&dir)?;
        }
        Ok(Self::open(root, path))
    }
}

/// The controllers a cgroup may enable for its children: its `cgroup.controllers`.
fn offered(dir: &Path) -> Result<Vec<String>> {
    let text = read_optional(dir, "cgroup.controllers")?.ok_or_else(|| CgroupError::Read {
        path: dir.join("cgroup.controllers"),
        error: std::io::ErrorKind::NotFound.into(),
    })?;
    Ok(text.split_whitespace().map(String::from).collect())
}

/// The controllers a cgroup has enabled for its children: its `cgroup.subtree_control`.
fn enabled(dir: &Path) -> Result<Vec<String>> {
    let text = read_optional(dir, "cgroup.subtree_control")?.unwrap_or_default();
    Ok(text.split_whitespace().map(String::from).collect())
}

impl V2Manager {
    /// The limits need these controllers; `cgroup.controllers` of the leaf must list them.
    fn require(&self, controller: &'static str) -> Result<()> {
        let Some(text) = read_optional(&self.dir, "cgroup.controllers")? else {
            return Ok(()); // not a real cgroupfs (a test's fake): the write will tell
        };
        if text.split_whitespace().any(|c| c == controller) {
            Ok(())
        } else {
            Err(CgroupError::V2ControllerMissing {
                controller,
                path: self.dir.clone(),
            })
        }
    }
}

impl CgroupManager for V2Manager {
    #[tracing::instrument(skip_all, fields(path = %self.path), err)]
    fn apply(&self, resources: &LinuxResources) -> Result<()> {
        if let Some(m) = resources.memory() {
            self.require("memory")?;
            memory::apply_v2(&self.dir, m)?;
        }
        if let Some(c) = resources.cpu() {
            self.require("cpu")?;
            cpu::apply_v2(&self.dir, c)?;
        }
        if let Some(p) = resources.pids() {
            self.require("pids")?;
            pids::apply(&self.dir, p)?;
        }
        Ok(())
    }

    fn add_task(&self, pid: Pid) -> Result<()> {
        write(&self.dir, "cgroup.procs", pid).map_err(|e| match e {
            CgroupError::Write { path, error, .. } => CgroupError::AddTask {
                pid: pid.as_raw(),
                path,
                error,
            },
            other => other,
        })
    }

    fn stats(&self) -> Result<CgroupStats> {
        let (memory_bytes, oom_kills) = memory::stats_v2(&self.dir)?;
        Ok(CgroupStats {
            oom_kills,
            memory_bytes,
            pids: pids::current(&self.dir)?,
            cpu_usec: cpu::usage_v2(&self.dir)?,
        })
    }

    #[tracing::instrument(skip_all, fields(path = %self.path), err)]
    fn remove(&self) -> Result<()> {
        remove_tree(&self.dir)
    }

    /// `cgroup.kill` (Linux 5.14) kills the whole subtree atomically, even processes forking
    /// meanwhile; older kernels get a SIGKILL per listed pid.
    fn kill_all(&self) -> Result<()> {
        if !self.dir.exists() {
            return Ok(());
        }
        let has_kill = self.dir.join("cgroup.kill").exists();
        if has_kill {
            write(&self.dir, "cgroup.kill", 1)?;
        }
        kill_procs(std::slice::from_ref(&self.dir), !has_kill)
    }
}

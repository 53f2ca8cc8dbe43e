//! (being written) cgroups v1 and v2 behind one trait. Placeholder API for the launcher.

use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;

#[derive(Debug, thiserror::Error)]
#[error("cgroups are not implemented yet")]
pub struct CgroupError;

#[derive(Debug, Default, Clone)]
pub struct CgroupStats {
    pub oom_kills: u64,
    pub memory_bytes: u64,
    pub pids: u64,
}

pub trait CgroupManager: Send + Sync {
    fn apply(&self, resources: &LinuxResources) -> Result<(), CgroupError>;
    fn add_task(&self, pid: Pid) -> Result<(), CgroupError>;
    fn stats(&self) -> Result<CgroupStats, CgroupError>;
    fn kill_all(&self) -> Result<(), CgroupError>;
    fn remove(&self) -> Result<(), CgroupError>;
}

pub fn open(_path: &str) -> Result<Box<dyn CgroupManager>, CgroupError> {
    Err(CgroupError)
}

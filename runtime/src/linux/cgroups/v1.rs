//! The cgroup v1 manager: one directory per controller hierarchy (memory, cpu, cpuacct,
//! pids), each found from its mount in `/proc/self/mountinfo`. Used on v1 and hybrid hosts.

use super::{
    CgroupError, CgroupManager, CgroupPath, CgroupStats, Result, cpu, kill_procs, memory,
    mkdir_all, pids, remove_tree, write,
};
use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;
use std::path::{Path, PathBuf};

/// The v1 controllers skiff joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Controller {
    Memory,
    Cpu,
    CpuAcct,
    Pids,
}

impl Controller {
    pub const ALL: [Controller; 4] = [Self::Memory, Self::Cpu, Self::CpuAcct, Self::Pids];

    /// The name in `/proc/cgroups` and in a v1 mount's options.
    pub fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Cpu => "cpu",
            Self::CpuAcct => "cpuacct",
            Self::Pids => "pids",
        }
    }
}

/// Where each v1 controller's hierarchy is mounted; a controller may be missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mounts(Vec<(Controller, PathBuf)>);

impl Mounts {
    pub fn new(mounts: impl IntoIterator<Item = (Controller, PathBuf)>) -> Self {
        Self(mounts.into_iter().collect())
    }

    /// Each controller at `root/<name>`, the usual layout under `/sys/fs/cgroup`.
    pub fn under(root: &Path) -> Self {
        Self::new(Controller::ALL.map(|c| (c, root.join(c.name()))))
    }

    /// The `cgroup` mounts in a `/proc/self/mountinfo` text. A hierarchy mounted with several
    /// controllers (`cpu,cpuacct`) gives each of them the same mount point.
    pub fn from_mountinfo(text: &str) -> Self {
        let mut mounts = Vec::new();
        for line in text.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mut right = right.split(' ');
            let (Some("cgroup"), Some(_source), Some(options)) =
                (right.next(), right.next(), right.next())
            else {
                continue;
            };
            let Some(mount_point) = left.split(' ').nth(4) else {
                continue;
            };
            for option in options.split(',') {
                let controller = Controller::ALL.into_iter().find(|c| c.name() == option);
                if let Some(c) = controller
                    && !mounts.iter().any(|(m, _)| *m == c)
                {
                    mounts.push((c, PathBuf::from(unescape(mount_point))));
                }
            }
        }
        Self(mounts)
    }

    pub fn get(&self, controller: Controller) -> Option<&Path> {
        self.0
            .iter()
            .find(|(c, _)| *c == controller)
            .map(|(_, p)| p.as_path())
    }
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal escapes.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(byte) => {
                out.push(byte as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// One container's cgroup in each mounted v1 hierarchy.
#[derive(Debug)]
pub struct V1Manager {
    path: CgroupPath,
    /// The cgroup's directory per mounted controller.
    dirs: Vec<(Controller, PathBuf)>,
}

impl V1Manager {
    /// The manager, touching nothing.
    pub fn open(mounts: &Mounts, path: &CgroupPath) -> Self {
        let dirs = mounts
            .0
            .iter()
            .map(|(c, mount)| (*c, mount.join(path.as_path())))
            .collect();
        Self {
            path: path.clone(),
            dirs,
        }
    }

    /// Makes the cgroup's directory in every mounted hierarchy.
    pub fn create(mounts: &Mounts, path: &CgroupPath) -> Result<Self> {
        let manager = Self::open(mounts, path);
        for dir in manager.unique_dirs() {
            mkdir_all(&dir)?;
        }
        Ok(manager)
    }

    fn dir(&self, controller: Controller) -> Result<&Path> {
        self.find(controller)
            .ok_or_else(|| CgroupError::V1ControllerMissing {
                controller: controller.name(),
                path: self.path.as_path().into(),
            })
    }

    fn find(&self, controller: Controller) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| *c == controller)
            .map(|(_, d)| d.as_path())
    }

    /// Each directory once: co-mounted controllers (`cpu,cpuacct`) share one.
    fn unique_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for (_, dir) in &self.dirs {
            if !dirs.contains(dir) {
                dirs.push(dir.clone());
            }
        }
        dirs
    }
}

impl CgroupManager for V1Manager {
    #[tracing::instrument(skip_all, fields(path = %self.path), err)]
    fn apply(&self, resources: &LinuxResources) -> Result<()> {
        if let Some(m) = resources.memory() {
            memory::apply_v1(self.dir(Controller::Memory)?, m)?;
        }
        if let Some(c) = resources.cpu() {
            cpu::apply_v1(self.dir(Controller::Cpu)?, c)?;
        }
        if let Some(p) = resources.pids() {
            pids::apply(self.dir(Controller::Pids)?, p)?;
        }
        Ok(())
    }

    fn add_task(&self, pid: Pid) -> Result<()> {
        for (controller, dir) in &self.dirs {
            if self.find(*controller) != Some(dir.as_path()) {
                continue; // co-mounted with an earlier controller: already joined
            }
            match write(dir, "cgroup.procs", pid) {
                Ok(()) => {}
                Err(CgroupError::Write { error, path, .. }) => {
                    let einval = error.raw_os_error() == Some(nix::libc::EINVAL);
                    if einval && *controller == Controller::Cpu && is_realtime(pid) {
                        return Err(CgroupError::RealtimeTask {
                            pid: pid.as_raw(),
                            path: dir.clone(),
                        });
                    }
                    return Err(CgroupError::AddTask {
                        pid: pid.as_raw(),
                        path,
                        error,
                    });
                }
                Err(other) => return Err(other),
            }
        }
        Ok(())
    }

    fn stats(&self) -> Result<CgroupStats> {
        let (memory_bytes, oom_kills) = match self.find(Controller::Memory) {
            Some(dir) => memory::stats_v1(dir)?,
            None => (0, 0),
        };
        let pids = match self.find(Controller::Pids) {
            Some(dir) => pids::current(dir)?,
            None => 0,
        };
        let cpu_usec = match self.find(Controller::CpuAcct) {
            Some(dir) => cpu::usage_v1(dir)?,
            None => 0,
        };
        Ok(CgroupStats {
            oom_kills,
            memory_bytes,
            pids,
            cpu_usec,
        })
    }

    #[tracing::instrument(skip_all, fields(path = %self.path), err)]
    fn remove(&self) -> Result<()> {
        let mut first_error = None;
        for dir in self.unique_dirs() {
            if let Err(e) = remove_tree(&dir) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn kill_all(&self) -> Result<()> {
        kill_procs(&self.unique_dirs(), true)
    }
}

/// Whether `pid` runs under SCHED_FIFO or SCHED_RR: field 41 of `/proc/<pid>/stat`.
fn is_realtime(pid: Pid) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some((_, after_comm)) = stat.rsplit_once(')') else {
        return false;
    };
    // after_comm starts at field 3 (state); policy is field 41.
    let policy = after_comm.split_whitespace().nth(41 - 3);
    matches!(policy, Some("1") | Some("2"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn mountinfo_gives_each_controller_its_mount() {
        let m = Mounts::from_mountinfo(HYBRID);
        assert_eq!(
            m.get(Controller::Memory).unwrap(),
            Path::new("/sys/fs/cgroup/memory")
        );
        assert_eq!(
            m.get(Controller::Cpu).unwrap(),
            Path::new("/sys/fs/cgroup/cpu")
        );
        assert_eq!(
            m.get(Controller::CpuAcct).unwrap(),
            Path::new("/sys/fs/cgroup/cpuacct")
        );
        assert_eq!(
            m.get(Controller::Pids).unwrap(),
            Path::new("/sys/fs/cgroup/pids")
        );
    }

    #[test]
    fn comounted_cpu_and_cpuacct_share_a_directory() {
        let text = "25 20 0:22 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                    26 20 0:23 / /mnt/my\\040cgroups rw - cgroup cgroup rw,memory\n";
        let m = Mounts::from_mountinfo(text);
        assert_eq!(m.get(Controller::Cpu), m.get(Controller::CpuAcct));
        assert_eq!(
            m.get(Controller::Memory).unwrap(),
            Path::new("/mnt/my cgroups")
        );
        assert_eq!(m.get(Controller::Pids), None);
        let manager = V1Manager::open(&m, &CgroupPath::new("skiff/c").unwrap());
        assert_eq!(manager.unique_dirs().len(), 2);
    }
}

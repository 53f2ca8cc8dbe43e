//! Memory, CPU and pids limits for one container, through cgroup v1 or v2 behind one trait.
//!
//! The step in the flow: after the container's process exists and before it execs, the
//! executor (or `skiff oci create`) calls [`create`] with the container's cgroup path,
//! [`CgroupManager::apply`] with the runtime spec's `linux.resources`, then
//! [`CgroupManager::add_task`]; at the end [`CgroupManager::kill_all`] and
//! [`CgroupManager::remove`].
//!
//! What it owns: the version detection ([`CgroupRoot::detect`]: `statfs` of `/sys/fs/cgroup`,
//! v1 mounts from `/proc/self/mountinfo`), one manager per version ([`v1`], [`v2`]) and one file
//! per controller ([`memory`], [`cpu`], [`pids`]) holding the files and unit conversions for both
//! versions. On a hybrid host (v1 hierarchies plus a `cgroup2` mount at `unified`) the v1
//! hierarchies are used, since that is where the memory, cpu and pids controllers live.
//!
//! What it does not do: devices, block I/O, hugetlb, cpusets, systemd's `slice:prefix:name`
//! paths, or choosing where a container's cgroup goes; the caller names the path.

pub mod cpu;
pub mod memory;
pub mod pids;
pub mod v1;
pub mod v2;

#[cfg(test)]
mod fake_tests;
#[cfg(test)]
mod kernel_tests;

use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Where cgroupfs is mounted on a normal host.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

/// How often, and how long apart, `remove` retries a busy cgroup and `kill_all` re-reads
/// `cgroup.procs`: 50 × 10 ms.
const RETRIES: u32 = 50;
const RETRY_PAUSE: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup path {path:?} is empty; give a path like skiff/<container-id>")]
    EmptyPath { path: String },

    #[error("cgroup path {path:?} has a `..` component; give a path inside the hierarchy")]
    ParentComponent { path: String },

    #[error("cannot statfs {path}: {error}; mount cgroupfs there or run on a Linux host")]
    Detect { path: PathBuf, error: io::Error },

    #[error("{path} is neither cgroup2 nor a tmpfs of cgroup v1 hierarchies; mount cgroupfs there")]
    NotCgroupFs { path: PathBuf },

    #[error("cannot read {path}: {error}; check that /proc is mounted")]
    Mountinfo { path: PathBuf, error: io::Error },

    #[error(
        "cgroup v1 controller {controller} is not mounted (looked in {path}); mount it or \
         drop the {controller} limit"
    )]
    V1ControllerMissing {
        controller: &'static str,
        path: PathBuf,
    },

    #[error(
        "cgroup v2 controller {controller} is not enabled for {path}; add it to the parent's \
         cgroup.subtree_control or drop the {controller} limit"
    )]
    V2ControllerMissing {
        controller: &'static str,
        path: PathBuf,
    },

    #[error("cannot create cgroup {path}: {error}; check that cgroupfs is writable (root)")]
    Create { path: PathBuf, error: io::Error },

    #[error("cannot write {value:?} to {path}: {error}; check the value fits this kernel")]
    Write {
        path: PathBuf,
        value: String,
        error: io::Error,
    },

    #[error("cannot read {path}: {error}; check the cgroup still exists")]
    Read { path: PathBuf, error: io::Error },

    #[error("{path} holds {content:?}, not a number; is this a cgroup file?")]
    Parse { path: PathBuf, content: String },

    #[error(
        "pid {pid} runs under real-time scheduling, which the kernel refuses in v1 cpu cgroup \
         {path} (EINVAL); run it as SCHED_OTHER or give the cgroup a cpu.rt_runtime_us budget"
    )]
    RealtimeTask { pid: i32, path: PathBuf },

    #[error("cannot add pid {pid} to {path}: {error}; check that the process still runs")]
    AddTask {
        pid: i32,
        path: PathBuf,
        error: io::Error,
    },

    #[error("cannot kill pid {pid} in {path}: {error}")]
    Kill {
        pid: i32,
        path: PathBuf,
        error: nix::Error,
    },

    #[error(
        "{count} processes are still in {path} after SIGKILL; they may be stuck in the \
         kernel (state D), wait and retry"
    )]
    Survivors { path: PathBuf, count: usize },

    #[error(
        "cgroup {path} is still busy after {RETRIES} tries to remove it; kill its processes \
         first (kill_all) or check for child cgroups made by someone else"
    )]
    Busy { path: PathBuf },

    #[error("cannot remove cgroup {path}: {error}")]
    Remove { path: PathBuf, error: io::Error },
}

pub type Result<T, E = CgroupError> = std::result::Result<T, E>;

/// One container's cgroup: limits in, processes in, numbers out, then gone.
pub trait CgroupManager: Send + Sync {
    /// Writes the memory, cpu and pids limits of `resources`; other fields are ignored.
    fn apply(&self, resources: &LinuxResources) -> Result<()>;
    /// Moves the process `pid` (all its threads) into the cgroup.
    fn add_task(&self, pid: Pid) -> Result<()>;
    /// Memory in use, OOM kills so far and tasks now in the cgroup.
    fn stats(&self) -> Result<CgroupStats>;
    /// Deletes the cgroup and any child cgroups, deepest first; a missing cgroup is fine.
    fn remove(&self) -> Result<()>;
    /// SIGKILLs every process in the cgroup (v2 `cgroup.kill` when present) and waits,
    /// bounded, for `cgroup.procs` to empty. Zombies must still be reaped by their parent.
    fn kill_all(&self) -> Result<()>;
}

/// What [`CgroupManager::stats`] reports. A controller that is not there reads as 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// Processes the kernel OOM-killed in this cgroup (v1 `memory.oom_control` `oom_kill`,
    /// v2 `memory.events` `oom_kill`).
    pub oom_kills: u64,
    /// Memory charged now (v1 `memory.usage_in_bytes`, v2 `memory.current`).
    pub memory_bytes: u64,
    /// Tasks now in the cgroup (`pids.current`).
    pub pids: u64,
    /// CPU time used so far, in microseconds (v1 `cpuacct.usage` / 1000, v2 `cpu.stat`
    /// `usage_usec`).
    pub cpu_usec: u64,
}

/// A cgroup's place below the hierarchy root, e.g. `skiff/<container-id>`, or an OCI
/// `cgroupsPath` such as `/libpod_parent/libpod-abc` (taken relative to the root too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupPath(PathBuf);

impl CgroupPath {
    /// Refuses `..` and paths with no component; drops `.`, empty components and a leading `/`.
    pub fn new(path: &str) -> Result<Self> {
        let mut relative = PathBuf::new();
        for component in Path::new(path).components() {
            match component {
                Component::Normal(name) => relative.push(name),
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir | Component::Prefix(_) => {
                    return Err(CgroupError::ParentComponent { path: path.into() });
                }
            }
        }
        if relative.as_os_str().is_empty() {
            return Err(CgroupError::EmptyPath { path: path.into() });
        }
        Ok(Self(relative))
    }

    /// The path relative to a hierarchy root, never empty, never absolute.
    pub fn as_path(&self) -> &Path {
        &self.0
    }
}

impl fmt::Display for CgroupPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.display().fmt(f)
    }
}

/// cgroup version in use for resource control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// Where the hierarchies are: one cgroup2 root, or a mount point per v1 controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupRoot {
    V1(v1::Mounts),
    V2(PathBuf),
}

impl CgroupRoot {
    /// Looks at the real host: `/sys/fs/cgroup` is cgroup2 (v2), or a tmpfs of v1 hierarchies
    /// (v1 or hybrid, whose v1 mounts are read from `/proc/self/mountinfo`).
    pub fn detect() -> Result<Self> {
        Self::detect_at(Path::new(DEFAULT_ROOT), Path::new("/proc/self/mountinfo"))
    }

    /// [`detect`](Self::detect) with other paths for the cgroupfs and the mountinfo file.
    pub fn detect_at(root: &Path, mountinfo: &Path) -> Result<Self> {
        use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, TMPFS_MAGIC, statfs};
        let fs = statfs(root).map_err(|e| CgroupError::Detect {
            path: root.into(),
            error: e.into(),
        })?;
        if fs.filesystem_type() == CGROUP2_SUPER_MAGIC {
            return Ok(Self::V2(root.into()));
        }
        if fs.filesystem_type() != TMPFS_MAGIC {
            return Err(CgroupError::NotCgroupFs { path: root.into() });
        }
        let text = std::fs::read_to_string(mountinfo).map_err(|error| CgroupError::Mountinfo {
            path: mountinfo.into(),
            error,
        })?;
        Ok(Self::V1(v1::Mounts::from_mountinfo(&text)))
    }

    pub fn version(&self) -> CgroupVersion {
        match self {
            Self::V1(_) => CgroupVersion::V1,
            Self::V2(_) => CgroupVersion::V2,
        }
    }

    /// Makes the cgroup's directories (and, on v2, enables memory, cpu and pids along the
    /// path) and returns its manager. An existing cgroup is reused.
    pub fn create(&self, path: &CgroupPath) -> Result<Box<dyn CgroupManager>> {
        Ok(match self {
            Self::V1(mounts) => Box::new(v1::V1Manager::create(mounts, path)?),
            Self::V2(root) => Box::new(v2::V2Manager::create(root, path)?),
        })
    }

    /// The manager of a cgroup that may already exist, touching nothing: for `stats`,
    /// `kill_all` and `remove` of a container made earlier.
    pub fn open(&self, path: &CgroupPath) -> Box<dyn CgroupManager> {
        match self {
            Self::V1(mounts) => Box::new(v1::V1Manager::open(mounts, path)),
            Self::V2(root) => Box::new(v2::V2Manager::open(root, path)),
        }
    }
}

/// [`CgroupRoot::detect`], then [`CgroupRoot::create`].
pub fn create(path: &CgroupPath) -> Result<Box<dyn CgroupManager>> {
    CgroupRoot::detect()?.create(path)
}

// Small file helpers shared by the managers and controllers.

/// Writes `value` to the existing file `dir/file`, as one `write`.
fn write(dir: &Path, file: &str, value: impl fmt::Display) -> Result<()> {
    use std::io::Write;
    let path = dir.join(file);
    let value = value.to_string();
    tracing::debug!(path = %path.display(), value, "cgroup write");
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|error| CgroupError::Write { path, value, error })
}

/// Like [`write`], but a missing file is skipped (an optional knob, such as swap).
fn write_if_present(dir: &Path, file: &str, value: impl fmt::Display) -> Result<bool> {
    if !dir.join(file).exists() {
        tracing::debug!(dir = %dir.display(), file, "cgroup file absent; skipped");
        return Ok(false);
    }
    write(dir, file, value).map(|()| true)
}

/// The file's contents; `None` if it does not exist.
fn read_optional(dir: &Path, file: &str) -> Result<Option<String>> {
    let path = dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(CgroupError::Read { path, error }),
    }
}

/// A file holding one number; a missing file reads as 0.
fn read_u64(dir: &Path, file: &str) -> Result<u64> {
    let Some(text) = read_optional(dir, file)? else {
        return Ok(0);
    };
    parse_u64(&dir.join(file), text.trim())
}

/// The value of `key` in a flat-keyed file such as `memory.events`; absent reads as 0.
fn read_keyed(dir: &Path, file: &str, key: &str) -> Result<u64> {
    let Some(text) = read_optional(dir, file)? else {
        return Ok(0);
    };
    let value = text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then_some(v.trim())
    });
    value.map_or(Ok(0), |v| parse_u64(&dir.join(file), v))
}

fn parse_u64(path: &Path, text: &str) -> Result<u64> {
    text.parse().map_err(|_| CgroupError::Parse {
        path: path.into(),
        content: text.into(),
    })
}

/// The pids listed in `dir/cgroup.procs`; a missing cgroup lists none.
fn procs(dir: &Path) -> Result<Vec<Pid>> {
    let Some(text) = read_optional(dir, "cgroup.procs")? else {
        return Ok(Vec::new());
    };
    text.lines()
        .map(|line| {
            parse_u64(&dir.join("cgroup.procs"), line.trim()).map(|p| Pid::from_raw(p as i32))
        })
        .collect()
}

/// `mkdir -p`, saying which directory failed.
fn mkdir_all(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|error| CgroupError::Create {
        path: path.into(),
        error,
    })
}

/// Sends SIGKILL to every process in `dirs` until none is left, re-reading `cgroup.procs`
/// up to [`RETRIES`] times; the v1 fallback and the v2 one when `cgroup.kill` is missing.
fn kill_procs(dirs: &[PathBuf], signal_each: bool) -> Result<()> {
    use nix::sys::signal::{Signal, kill};
    let mut left = (PathBuf::new(), 0);
    for _ in 0..RETRIES {
        left = (PathBuf::new(), 0);
        for dir in dirs {
            let pids = procs(dir)?;
            if pids.is_empty() {
                continue;
            }
            left = (dir.clone(), pids.len());
            if !signal_each {
                continue;
            }
            for pid in pids {
                match kill(pid, Signal::SIGKILL) {
                    Ok(()) | Err(nix::Error::ESRCH) => {}
                    Err(error) => {
                        return Err(CgroupError::Kill {
                            pid: pid.as_raw(),
                            path: dir.clone(),
                            error,
                        });
                    }
                }
            }
        }
        if left.1 == 0 {
            return Ok(());
        }
        std::thread::sleep(RETRY_PAUSE);
    }
    Err(CgroupError::Survivors {
        path: left.0,
        count: left.1,
    })
}

/// Removes `dir` and every cgroup below it, deepest first, retrying a busy one; a missing
/// `dir` is fine.
fn remove_tree(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => {
            return Err(CgroupError::Read {
                path: dir.into(),
                error,
            });
        }
    };
    for entry in entries {
        let entry = entry.map_err(|error| CgroupError::Read {
            path: dir.into(),
            error,
        })?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path())?;
        }
    }
    rmdir_retrying(dir)
}

fn rmdir_retrying(dir: &Path) -> Result<()> {
    for _ in 0..RETRIES {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(error) if error.raw_os_error() == Some(nix::libc::EBUSY) => {
                std::thread::sleep(RETRY_PAUSE);
            }
            Err(error) => {
                return Err(CgroupError::Remove {
                    path: dir.into(),
                    error,
                });
            }
        }
    }
    Err(CgroupError::Busy { path: dir.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_path_is_relative_and_refuses_parent() {
        let p = |s: &str| CgroupPath::new(s).map(|p| p.as_path().to_path_buf());
        assert_eq!(p("skiff/abc").unwrap(), Path::new("skiff/abc"));
        assert_eq!(
            p("/libpod_parent/libpod-abc").unwrap(),
            Path::new("libpod_parent/libpod-abc")
        );
        assert_eq!(p("a//./b/").unwrap(), Path::new("a/b"));
        assert!(matches!(p(""), Err(CgroupError::EmptyPath { .. })));
        assert!(matches!(p("/"), Err(CgroupError::EmptyPath { .. })));
        assert!(matches!(
            p("a/../../etc"),
            Err(CgroupError::ParentComponent { .. })
        ));
        assert!(matches!(p(".."), Err(CgroupError::ParentComponent { .. })));
    }

    #[test]
    fn keyed_files_read_one_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
        )
        .unwrap();
        assert_eq!(
            read_keyed(dir.path(), "memory.oom_control", "oom_kill").unwrap(),
            3
        );
        assert_eq!(
            read_keyed(dir.path(), "memory.oom_control", "nope").unwrap(),
            0
        );
        assert_eq!(read_keyed(dir.path(), "missing", "oom_kill").unwrap(), 0);
    }

    #[test]
    fn removing_a_missing_cgroup_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        remove_tree(&dir.path().join("gone")).unwrap();
    }
}

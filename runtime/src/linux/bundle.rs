//! The OCI runtime lifecycle on a bundle (a directory with `config.json` and a root
//! filesystem), as runc and crun implement it: `create` leaves the container's pid 1 waiting
//! on an exec fifo, `start` opens the fifo, `state` reports the runtime-spec state, `kill`
//! signals pid 1, `delete` removes what `create` made.
//!
//! State lives under a root directory (`--root`, default `/run/skiff-oci`), one directory per
//! container id. Whoever called `create` (conmon, containerd's shim) is pid 1's subreaper and
//! reaps it; skiff keeps no process behind.

use super::cgroups::{self, CgroupPath};
use super::container::{pid_alive, pid_start_time};
use super::process::{InitConfig, Launch};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The default state root, as runc uses `/run/runc`.
pub const DEFAULT_ROOT: &str = "/run/skiff-oci";
/// How long `start` waits between checks that pid 1 is still alive.
const POLL_SLICE_MS: u16 = 50;
/// How long `start` waits for pid 1 to take the fifo.
const START_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("container {id} already exists; delete it first or pick another id")]
    Exists { id: String },
    #[error("container {id} does not exist")]
    Unknown { id: String },
    #[error("invalid container id {id:?}; use letters, digits, `_`, `.`, `+` and `-`")]
    BadId { id: String },
    #[error("cannot read {path}: {detail}; check the bundle")]
    Config { path: PathBuf, detail: String },
    #[error("{path} is runtime-spec version {version}; skiff runs 1.x bundles")]
    Version { path: PathBuf, version: String },
    #[error("container {id} is {status}, not created; `start` runs a created container once")]
    NotCreated { id: String, status: Status },
    #[error("container {id} is still running; stop it first or use `delete --force`")]
    Running { id: String },
    #[error("container {id} is not running")]
    NotRunning { id: String },
    #[error("container {id}'s init process went away before it started")]
    Vanished { id: String },
    #[error("{what}: {error}")]
    Io { what: String, error: std::io::Error },
    #[error("cgroup: {0}")]
    Cgroup(#[from] cgroups::CgroupError),
    #[error(transparent)]
    Process(#[from] super::process::ProcessError),
    #[error("unknown signal {0}; give a name (TERM, SIGKILL) or a number")]
    Signal(String),
}

type Result<T, E = BundleError> = std::result::Result<T, E>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BundleError {
    let what = what.into();
    move |error| BundleError::Io { what, error }
}

/// The runtime-spec status values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
        })
    }
}

/// What skiff remembers of a container it created.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Saved {
    id: String,
    bundle: PathBuf,
    pid: i32,
    pid_start: Option<u64>,
    cgroup: String,
    created: String,
    annotations: HashMap<String, String>,
}

/// The state document `skiff oci state` prints (runtime-spec "State").
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub oci_version: String,
    pub id: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    pub bundle: PathBuf,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
    pub created: String,
}

/// The containers under one state root.
pub struct Runtime {
    root: PathBuf,
}

impl Runtime {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    fn dir(&self, id: &str) -> Result<PathBuf> {
        let valid = !id.is_empty()
            && id.len() <= 1024
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.+-".contains(c))
            && !id.starts_with('.');
        if !valid {
            return Err(BundleError::BadId { id: id.into() });
        }
        Ok(self.root.join(id))
    }

    /// `create`: pid 1 set up and waiting on the exec fifo; its pid written to `pid_file`.
    pub fn create(&self, id: &str, bundle: &Path, pid_file: Option<&Path>) -> Result<i32> {
        let dir = self.dir(id)?;
        let bundle =
            std::fs::canonicalize(bundle).map_err(io(format!("bundle {}", bundle.display())))?;
        let mut spec = load_spec(&bundle)?;
        resolve_root(&mut spec, &bundle);
        std::fs::create_dir_all(&self.root)
            .map_err(io(format!("state root {}", self.root.display())))?;
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(BundleError::Exists { id: id.into() });
            }
            Err(e) => return Err(io(format!("state dir {}", dir.display()))(e)),
        }
        let created = self.launch(id, &dir, &bundle, spec, pid_file);
        if created.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        created
    }

    fn launch(
        &self,
        id: &str,
        dir: &Path,
        bundle: &Path,
        spec: Spec,
        pid_file: Option<&Path>,
    ) -> Result<i32> {
        let fifo = dir.join("exec.fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|e| io("cannot make the exec fifo")(e.into()))?;
        let cgroup_name = cgroup_path(&spec, id);
        let cgroup = cgroups::create(&CgroupPath::new(&cgroup_name)?)?;
        let resources = spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().clone())
            .unwrap_or_default();
        let launched = (|| -> Result<i32> {
            cgroup.apply(&resources)?;
            let mut launch = Launch::fork_or_spawn()?;
            if let Err(e) = cgroup.add_task(launch.pid) {
                launch.abort();
                return Err(e.into());
            }
            let annotations = spec.annotations().clone().unwrap_or_default();
            let pid = launch.configure(InitConfig {
                spec,
                overlay: None,
                user: None,
                reaper: false,
                exec_fifo: Some(fifo.clone()),
            });
            launch.reap();
            let pid = pid?;
            launch.network_ready()?;
            launch.detach();
            let saved = Saved {
                id: id.into(),
                bundle: bundle.to_path_buf(),
                pid,
                pid_start: pid_start_time(pid),
                cgroup: cgroup_name.clone(),
                created: now_rfc3339(),
                annotations,
            };
            save(dir, &saved)?;
            if let Some(pid_file) = pid_file {
                write_atomic(pid_file, pid.to_string().as_bytes())?;
            }
            Ok(pid)
        })();
        if launched.is_err() {
            let _ = cgroup.kill_all();
            let _ = cgroup.remove();
        }
        launched
    }

    /// `start`: lets pid 1 exec the process.
    pub fn start(&self, id: &str) -> Result<()> {
        let state = self.state(id)?;
        if state.status != Status::Created {
            return Err(BundleError::NotCreated {
                id: id.into(),
                status: state.status,
            });
        }
        let fifo = self.dir(id)?.join("exec.fifo");
        // Non-blocking, so a pid 1 that died cannot hang `start`; then wait for its byte.
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(&fifo)
            .map_err(io("cannot open the exec fifo"))?;
        let deadline = Instant::now() + START_WAIT;
        let mut byte = [0u8; 1];
        loop {
            use std::io::Read;
            match file.read(&mut byte) {
                Ok(1) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(io("cannot read the exec fifo")(e)),
            }
            let saved = load(&self.dir(id)?, id)?;
            if !pid_alive(saved.pid) || Instant::now() >= deadline {
                return Err(BundleError::Vanished { id: id.into() });
            }
            // Until pid 1 writes; woken at once when it does, checked again after a while.
            use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
            use std::os::fd::AsFd;
            let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(POLL_SLICE_MS));
        }
        let _ = std::fs::remove_file(&fifo);
        Ok(())
    }

    /// `state`: the runtime-spec state, with the status observed now.
    pub fn state(&self, id: &str) -> Result<State> {
        let dir = self.dir(id)?;
        let saved = load(&dir, id)?;
        let alive = pid_alive(saved.pid)
            && (saved.pid_start.is_none() || pid_start_time(saved.pid) == saved.pid_start);
        let status = match (alive, dir.join("exec.fifo").exists()) {
            (true, true) => Status::Created,
            (true, false) => Status::Running,
            (false, _) => Status::Stopped,
        };
        Ok(State {
            oci_version: "1.2.0".into(),
            id: saved.id,
            status,
            pid: alive.then_some(saved.pid),
            bundle: saved.bundle,
            annotations: saved.annotations,
            created: saved.created,
        })
    }

    /// `run`: create, start, wait and delete, as `runc run` does; the container's exit code
    /// (128 + the signal that ended it). The caller becomes pid 1's subreaper, so it is
    /// reaped here whatever its original parent was.
    pub fn run(&self, id: &str, bundle: &Path, pid_file: Option<&Path>) -> Result<i32> {
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| io("cannot become a subreaper")(e.into()))?;
        let pid = self.create(id, bundle, pid_file)?;
        if let Err(e) = self.start(id) {
            let _ = self.delete(id, true);
            return Err(e);
        }
        let code = wait_exit(pid);
        self.delete(id, true)?;
        Ok(code)
    }

    /// `kill`: a signal to pid 1 (or, with `all`, to every process in the cgroup).
    pub fn kill(&self, id: &str, signal: &str, all: bool) -> Result<()> {
        let signal = parse_signal(signal)?;
        let dir = self.dir(id)?;
        let saved = load(&dir, id)?;
        let state = self.state(id)?;
        if state.status == Status::Stopped {
            return Err(BundleError::NotRunning { id: id.into() });
        }
        if all && signal == nix::sys::signal::Signal::SIGKILL {
            let cgroup = cgroups::CgroupRoot::detect()?.open(&CgroupPath::new(&saved.cgroup)?);
            cgroup.kill_all()?;
            return Ok(());
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(saved.pid), signal)
            .map_err(|e| io(format!("cannot signal pid {}", saved.pid))(e.into()))
    }

    /// `delete`: removes a stopped container (`force` kills a running one first).
    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let dir = self.dir(id)?;
        let saved = match load(&dir, id) {
            Ok(saved) => saved,
            Err(BundleError::Unknown { .. }) if force => return Ok(()),
            Err(e) => return Err(e),
        };
        let status = self.state(id)?.status;
        if status != Status::Stopped && !force {
            return Err(BundleError::Running { id: id.into() });
        }
        let cgroup = cgroups::CgroupRoot::detect()?.open(&CgroupPath::new(&saved.cgroup)?);
        if status != Status::Stopped {
            cgroup.kill_all()?;
        }
        cgroup.remove()?;
        std::fs::remove_dir_all(&dir).map_err(io(format!("cannot remove {}", dir.display())))
    }
}

/// Waits for a child (or adopted orphan) to exit; its exit code, 128 + signal when killed.
fn wait_exit(pid: i32) -> i32 {
    use nix::sys::wait::{WaitStatus, waitpid};
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, signal, _)) => return 128 + signal as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 255,
        }
    }
}

fn load_spec(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    let config = |detail: String| BundleError::Config {
        path: path.clone(),
        detail,
    };
    let bytes = std::fs::read(&path).map_err(|e| config(e.to_string()))?;
    // serde_json directly: its errors name the field, line and column (oci-spec's wrapper
    // says only "serde failed").
    let spec: Spec = serde_json::from_slice(&bytes).map_err(|e| config(e.to_string()))?;
    if !spec.version().starts_with("1.") {
        return Err(BundleError::Version {
            path,
            version: spec.version().clone(),
        });
    }
    Ok(spec)
}

/// A relative `root.path` is relative to the bundle.
fn resolve_root(spec: &mut Spec, bundle: &Path) {
    if let Some(root) = spec.root_mut()
        && root.path().is_relative()
    {
        let absolute = bundle.join(root.path());
        root.set_path(absolute);
    }
}

/// `linux.cgroupsPath`, or `skiff-oci/<id>`. A systemd-style `slice:prefix:name` becomes
/// `slice/prefix-name.scope` under the cgroupfs hierarchy.
fn cgroup_path(spec: &Spec, id: &str) -> String {
    let given = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().clone())
        .map(|p| p.display().to_string());
    match given {
        Some(path) => match path.split(':').collect::<Vec<_>>().as_slice() {
            [slice, prefix, name] => format!("{slice}/{prefix}-{name}.scope"),
            _ => path.trim_start_matches('/').to_string(),
        },
        None => format!("skiff-oci/{id}"),
    }
}

fn save(dir: &Path, saved: &Saved) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(saved).expect("state serialises");
    write_atomic(&dir.join("state.json"), &bytes)
}

fn load(dir: &Path, id: &str) -> Result<Saved> {
    let bytes = std::fs::read(dir.join("state.json")).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => BundleError::Unknown { id: id.into() },
        _ => io("cannot read the container state")(e),
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| io("corrupt container state")(std::io::Error::other(e)))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("skiff-tmp");
    std::fs::write(&tmp, bytes).map_err(io(format!("cannot write {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("cannot write {}", path.display())))
}

fn parse_signal(text: &str) -> Result<nix::sys::signal::Signal> {
    use nix::sys::signal::Signal;
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| BundleError::Signal(text.into()));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse().map_err(|_| BundleError::Signal(text.into()))
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_or_number() {
        use nix::sys::signal::Signal;
        assert_eq!(parse_signal("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("SIGKILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("NOPE").is_err());
    }

    #[test]
    fn cgroup_paths_follow_the_spec() {
        let mut spec = Spec::default();
        assert_eq!(cgroup_path(&spec, "a"), "skiff-oci/a");
        let mut linux = spec.linux().clone().unwrap();
        linux.set_cgroups_path(Some("/libpod_parent/libpod-x".into()));
        spec.set_linux(Some(linux.clone()));
        assert_eq!(cgroup_path(&spec, "a"), "libpod_parent/libpod-x");
        linux.set_cgroups_path(Some("machine.slice:libpod:x".into()));
        spec.set_linux(Some(linux));
        assert_eq!(cgroup_path(&spec, "a"), "machine.slice/libpod-x.scope");
    }

    #[test]
    fn bad_ids_and_missing_bundles_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = Runtime::new(dir.path().join("state"));
        assert!(matches!(
            runtime.create("../x", dir.path(), None),
            Err(BundleError::BadId { .. })
        ));
        std::fs::write(dir.path().join("config.json"), r#"{"ociVersion": "0.9.0"}"#).unwrap();
        let err = runtime.create("ok", dir.path(), None).unwrap_err();
        assert!(err.to_string().contains("skiff runs 1.x bundles"), "{err}");
        assert!(!dir.path().join("state/ok").exists());
        assert!(matches!(
            runtime.state("ok"),
            Err(BundleError::Unknown { .. })
        ));
    }
}

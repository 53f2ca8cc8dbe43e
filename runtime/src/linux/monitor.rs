//! The monitor of a `skiff run` container: the process that launches it, waits for it and
//! cleans up after it, as conmon does for podman. In the foreground it is the `skiff run`
//! process itself; for `-d` it is a detached `skiff` process, so the container outlives the
//! CLI.
//!
//! The monitor is a child subreaper: once stage one of `skiff init` exits, the container's
//! pid 1 becomes its child, and its exit status comes here. The monitor owns the container's
//! cgroup, network attachment and published ports, and writes its record and log.

use super::cgroups::{self, CgroupManager};
use super::container::{self, ContainerRecord, Containers, Status};
use super::net::{self, Attachment, BridgeConfig, NetworkMode, PortMapping, PortProxy};
use super::process::{InitConfig, Launch};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

/// The largest a container's log grows before it is rotated to `container.log.1`.
const MAX_LOG_BYTES: u64 = 64 << 20;

/// Everything the monitor needs, written to `run.json` in the container's directory by
/// `skiff run` before the monitor starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunPlan {
    pub init: InitConfig,
    /// `none`, `host` or `bridge`.
    pub network: String,
    pub ports: Vec<String>,
    /// The cgroup path under each hierarchy, e.g. `skiff/<id>`.
    pub cgroup: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error(transparent)]
    Container(#[from] container::ContainerError),
    #[error(transparent)]
    Cgroup(#[from] cgroups::CgroupError),
    #[error(transparent)]
    Net(#[from] net::NetError),
    #[error(transparent)]
    Process(#[from] super::process::ProcessError),
    #[error("{what}: {error}")]
    Io {
        what: &'static str,
        error: std::io::Error,
    },
    #[error("{0}")]
    Plan(String),
}

type Result<T, E = MonitorError> = std::result::Result<T, E>;

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> MonitorError {
    move |error| MonitorError::Io { what, error }
}

/// How the monitor reports and where the container's output goes besides its log.
pub struct Output {
    /// Copy the container's stdout and stderr to ours (foreground `skiff run`).
    pub mirror: bool,
    /// Forward SIGINT and SIGTERM we receive to the container (foreground `skiff run`).
    pub forward_signals: bool,
}

/// The parts set up so far, torn down in reverse on failure and on exit.
struct Resources {
    cgroup: Option<Box<dyn CgroupManager>>,
    attachment: Option<Attachment>,
    ports: Option<PortProxy>,
    pid: Option<Pid>,
    pumps: Vec<std::thread::JoinHandle<()>>,
}

/// Runs the container described by `<dir>/run.json` to its end. `started` is called once,
/// with the record when the process has exec'd, or with the error that stopped it.
/// Returns the container's exit code.
pub fn run(
    containers: &Containers,
    data_dir: &Path,
    id: &str,
    output: Output,
    started: impl FnOnce(std::result::Result<&ContainerRecord, &MonitorError>),
) -> Result<i32> {
    let dir = containers.dir(id);
    let plan: RunPlan = read_plan(&dir)?;
    let mut record = containers.load(id)?;
    record.monitor_pid = Some(std::process::id() as i32);
    containers.save(&record)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(io("cannot start the async runtime"))?;
    let bridge = BridgeConfig::new(data_dir.join("linux/net"));
    let mut resources = Resources {
        cgroup: None,
        attachment: None,
        ports: None,
        pid: None,
        pumps: Vec::new(),
    };
    let log = Arc::new(Mutex::new(LogFile::open(&dir)?));
    let launched = launch(
        &runtime,
        &bridge,
        &plan,
        &mut record,
        &mut resources,
        &log,
        &output,
    );
    match &launched {
        Ok(()) => {
            record.status = Status::Running;
            containers.save(&record)?;
            started(Ok(&record));
        }
        Err(e) => {
            started(Err(e));
        }
    }
    let (code, failure) = match launched {
        Ok(()) => (
            wait(&runtime, resources.pid.expect("launched"), &output),
            None,
        ),
        Err(e) => (None, Some(e)),
    };
    let oom = resources
        .cgroup
        .as_ref()
        .and_then(|c| c.stats().ok())
        .is_some_and(|s| s.oom_kills > 0);
    let pumps = std::mem::take(&mut resources.pumps);
    teardown(&runtime, &bridge, resources);
    // The streams close once every process of the container is gone.
    for pump in pumps {
        let _ = pump.join();
    }
    log.lock().expect("log lock").flush();
    record.status = Status::Exited;
    record.exit_code = code;
    record.oom_killed = oom && code == Some(137);
    record.finished = Some(container::now());
    if record.auto_remove {
        containers.remove_dir(id)?;
    } else {
        remove_overlay_dirs(&dir);
        containers.save(&record)?;
    }
    if record.oom_killed && output.mirror {
        eprintln!(
            "skiff: container {} was killed: out of memory (raise --memory)",
            record.name
        );
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(code.unwrap_or(125)),
    }
}

/// The snapshot directories the overlay roots of every recorded container use, so pruning
/// keeps them even after their image is removed.
pub fn lowers_in_use(containers: &Containers) -> Result<Vec<PathBuf>> {
    let mut lowers = Vec::new();
    for record in containers.list()? {
        if let Ok(plan) = read_plan(&containers.dir(&record.id))
            && let Some(overlay) = plan.init.overlay
        {
            lowers.extend(overlay.lowers);
        }
    }
    Ok(lowers)
}

fn read_plan(dir: &Path) -> Result<RunPlan> {
    let path = dir.join("run.json");
    let bytes = std::fs::read(&path).map_err(io("cannot read the run plan"))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| MonitorError::Plan(format!("{}: {e}", path.display())))
}

/// Everything up to the exec of the container's process.
fn launch(
    runtime: &tokio::runtime::Runtime,
    bridge: &BridgeConfig,
    plan: &RunPlan,
    record: &mut ContainerRecord,
    resources: &mut Resources,
    log: &Arc<Mutex<LogFile>>,
    output: &Output,
) -> Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| io("cannot become a subreaper")(e.into()))?;
    let mode: NetworkMode = plan.network.parse()?;
    let ports: Vec<PortMapping> = plan
        .ports
        .iter()
        .map(|p| p.parse())
        .collect::<std::result::Result<_, net::NetError>>()?;
    mode.check_ports(&ports)?;

    let cgroup = cgroups::create(&cgroups::CgroupPath::new(&plan.cgroup)?)?;
    let resources_spec = plan
        .init
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().clone())
        .unwrap_or_default();
    cgroup.apply(&resources_spec)?;
    let cgroup = resources.cgroup.insert(cgroup);

    let (out_read, out_write) = std::io::pipe().map_err(io("cannot make a pipe"))?;
    let (err_read, err_write) = std::io::pipe().map_err(io("cannot make a pipe"))?;
    let mut launch = Launch::spawn([Stdio::null(), out_write.into(), err_write.into()])?;
    resources
        .pumps
        .push(pump(out_read, Stream::Stdout, log.clone(), output.mirror));
    resources
        .pumps
        .push(pump(err_read, Stream::Stderr, log.clone(), output.mirror));
    if let Err(e) = cgroup.add_task(launch.pid) {
        launch.abort();
        return Err(e.into());
    }
    let pid = launch.configure(plan.init.clone());
    launch.reap();
    let pid = Pid::from_raw(pid?);
    resources.pid = Some(pid);
    record.pid = Some(pid.as_raw());
    record.pid_start = container::pid_start_time(pid.as_raw());

    match mode {
        NetworkMode::Host => {}
        NetworkMode::None => runtime.block_on(net::loopback_up(pid.as_raw()))?,
        NetworkMode::Bridge => {
            let attachment = runtime.block_on(net::attach(bridge, &record.id, pid.as_raw()))?;
            record.address = Some(attachment.address.to_string());
            let attachment = resources.attachment.insert(attachment);
            if !ports.is_empty() {
                let target = std::net::IpAddr::V4(attachment.address);
                resources.ports = Some(runtime.block_on(net::publish(&ports, target))?);
            }
        }
    }
    launch.network_ready()?;
    launch.start()?;
    Ok(())
}

/// Waits for pid 1 to exit; its exit code (128 + signal when killed).
fn wait(runtime: &tokio::runtime::Runtime, pid: Pid, output: &Output) -> Option<i32> {
    if output.forward_signals {
        runtime.spawn(forward_signals(pid));
    }
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Some(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Some(128 + signal as i32),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "lost the container's pid 1");
                return None;
            }
        }
    }
}

async fn forward_signals(pid: Pid) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    loop {
        let signal = tokio::select! {
            _ = int.recv() => Signal::SIGINT,
            _ = term.recv() => Signal::SIGTERM,
        };
        let _ = kill(pid, signal);
    }
}

fn teardown(runtime: &tokio::runtime::Runtime, bridge: &BridgeConfig, resources: Resources) {
    if let Some(ports) = resources.ports {
        runtime.block_on(ports.shutdown());
    }
    if let Some(cgroup) = &resources.cgroup {
        if let Err(e) = cgroup.kill_all() {
            tracing::warn!(error = %e, "cannot kill the container's processes");
        }
    } else if let Some(pid) = resources.pid {
        let _ = kill(pid, Signal::SIGKILL);
    }
    if let Some(pid) = resources.pid {
        // Reap pid 1 if it has not been (launch failed after it was forked).
        let _ = waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
    }
    if let Some(attachment) = &resources.attachment
        && let Err(e) = runtime.block_on(net::detach(bridge, attachment))
    {
        tracing::warn!(error = %e, "cannot detach the container's network");
    }
    if let Some(cgroup) = &resources.cgroup
        && let Err(e) = cgroup.remove()
    {
        tracing::warn!(error = %e, "cannot remove the container's cgroup");
    }
}

/// The overlay's upper and work dirs go with the container's process; its record and log stay
/// until `skiff rm`.
fn remove_overlay_dirs(dir: &Path) {
    for sub in ["upper", "work", "rootfs"] {
        let path = dir.join(sub);
        if let Err(e) = std::fs::remove_dir_all(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove");
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line of `container.log`: a chunk of output as it arrived.
#[derive(Debug, Serialize, Deserialize)]
pub struct LogEntry {
    pub stream: Stream,
    pub time: u64,
    pub log: String,
}

/// A log of JSON lines ([`LogEntry`]), rotated once past its bound: the file becomes `.1`
/// (replacing the one before), so at most about twice the bound is kept. A container's
/// `container.log`, and the daemon's log of each in-process Wasm instance, read back alike by
/// [`super::logs`].
pub struct LogFile {
    path: PathBuf,
    file: std::fs::File,
    written: u64,
    max_bytes: u64,
}

impl LogFile {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("container.log")
    }

    /// Where a log at `path` goes when it is rotated.
    pub fn rotated(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(".1");
        PathBuf::from(name)
    }

    fn open(dir: &Path) -> Result<Self> {
        Self::append_to(Self::path(dir), MAX_LOG_BYTES).map_err(io("cannot open the container log"))
    }

    /// Appends to the log at `path` (created if need be), rotating it past `max_bytes`.
    pub fn append_to(path: PathBuf, max_bytes: u64) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Self {
            path,
            file,
            written,
            max_bytes,
        })
    }

    /// Records one chunk of output as it arrived; a failed write loses the chunk, never the
    /// writer (a full disk must not stop a workload).
    pub fn append(&mut self, stream: Stream, bytes: &[u8]) {
        let entry = LogEntry {
            stream,
            time: container::now(),
            log: String::from_utf8_lossy(bytes).into_owned(),
        };
        let mut line = serde_json::to_vec(&entry).expect("a log entry serialises");
        line.push(b'\n');
        if self.written + line.len() as u64 > self.max_bytes {
            let _ = std::fs::rename(&self.path, Self::rotated(&self.path));
            if let Ok(file) = std::fs::File::create(&self.path) {
                self.file = file;
                self.written = 0;
            }
        }
        if self.file.write_all(&line).is_ok() {
            self.written += line.len() as u64;
        }
    }

    pub fn flush(&mut self) {
        let _ = self.file.flush();
    }
}

/// Copies one of the container's streams into the log (and to ours) until it closes.
fn pump(
    mut reader: std::io::PipeReader,
    stream: Stream,
    log: Arc<Mutex<LogFile>>,
    mirror: bool,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 64 << 10];
        loop {
            let n = match reader.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = &buffer[..n];
            if mirror {
                let _ = match stream {
                    Stream::Stdout => std::io::stdout().write_all(chunk),
                    Stream::Stderr => std::io::stderr().write_all(chunk),
                };
            }
            log.lock().expect("log lock").append(stream, chunk);
        }
    })
}

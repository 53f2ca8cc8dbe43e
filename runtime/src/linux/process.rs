//! The init stages that turn a spec into a running container process, and the channel the
//! launcher drives them over.
//!
//! The launcher (a `skiff run` monitor or `skiff oci create`) spawns `skiff init`, a fresh
//! single-threaded exec of skiff, with one end of a socket pair. Then:
//!
//! 1. the launcher puts the init process in the container's cgroup and sends the
//!    [`InitConfig`];
//! 2. stage one enters the namespaces and forks: the child is pid 1 of the new pid namespace.
//!    Stage one reports the child's pid and exits, so pid 1 is reparented to the launcher (a
//!    subreaper) or to whoever called `skiff oci create`;
//! 3. the launcher sets up the network of that pid's namespace and says so;
//! 4. pid 1 builds the root ([`super::rootfs`]), sets the hostname, resolves the user and the
//!    executable, and reports `Created`;
//! 5. on start (a message, or the OCI exec fifo opened by `skiff oci start`), pid 1 drops
//!    privileges and execs the process, or, for `skiff run`, forks it and stays as a
//!    signal-forwarding reaper ([`super::reaper`]).
//!
//! Any failure before exec goes back over the channel as a message the launcher shows.

use super::exec::Exec;
use super::namespaces;
use super::rootfs::{self, Overlay};
use super::syscall::{LinuxSyscall, Syscall};
use nix::unistd::Pid;
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The environment variable that tells `skiff init` which fd is its channel.
const CHANNEL_FD_ENV: &str = "_SKIFF_INIT_FD";
/// The longest message accepted on the channel: a spec is a few KiB.
const MAX_MESSAGE: usize = 4 << 20;

/// What the init process needs besides the spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitConfig {
    pub spec: Spec,
    /// `skiff run`'s overlay root; `None` for a bundle's prepared root.
    pub overlay: Option<Overlay>,
    /// A user name to resolve in the container's `/etc/passwd` (overrides the spec's ids).
    pub user: Option<String>,
    /// skiff stays as pid 1, forwarding signals and reaping orphans (`skiff run`).
    pub reaper: bool,
    /// Wait for `skiff oci start` by opening this fifo; `None` waits for a `Start` message.
    pub exec_fifo: Option<PathBuf>,
}

/// One message on the channel.
#[derive(Debug, Serialize, Deserialize)]
pub enum Message {
    Config(Box<InitConfig>),
    /// Pid 1's pid as the launcher sees it.
    Pid(i32),
    NetworkReady,
    Created,
    Start,
    Error(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start skiff's init process: {error}")]
    Spawn { error: std::io::Error },
    #[error("the container's init process went away during {stage}; see the messages above")]
    Lost { stage: &'static str },
    #[error("{0}")]
    Container(String),
    #[error("unexpected message from the init process during {stage}: {message}")]
    Protocol {
        stage: &'static str,
        message: String,
    },
    #[error("init channel: {error}")]
    Channel { error: std::io::Error },
}

type Result<T, E = ProcessError> = std::result::Result<T, E>;

/// Newline-delimited JSON over a unix stream, bounded per message.
pub struct Channel {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Channel {
    fn new(stream: UnixStream) -> std::io::Result<Self> {
        Ok(Self {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
        })
    }

    pub fn send(&mut self, message: &Message) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.writer.write_all(&line)
    }

    /// The next message; `None` when the other side closed the channel.
    pub fn receive(&mut self) -> std::io::Result<Option<Message>> {
        let mut line = Vec::new();
        let read = (&mut self.reader)
            .take(MAX_MESSAGE as u64)
            .read_until(b'\n', &mut line)?;
        if read == 0 {
            return Ok(None);
        }
        serde_json::from_slice(&line)
            .map(Some)
            .map_err(std::io::Error::other)
    }
}

/// The launcher's handle on an init process being set up.
pub struct Launch {
    /// Stage one of the init process.
    pub pid: Pid,
    channel: Channel,
}

impl Launch {
    /// Spawns `skiff init` with `stdio` for the container (stdin, stdout, stderr).
    pub fn spawn(stdio: [Stdio; 3]) -> Result<Self> {
        let spawn = |error| ProcessError::Spawn { error };
        let (ours, theirs) = UnixStream::pair().map_err(spawn)?;
        let theirs = OwnedFd::from(theirs);
        set_cloexec(&theirs, false).map_err(spawn)?;
        let [stdin, stdout, stderr] = stdio;
        let _child: Child = Command::new("/proc/self/exe")
            .arg("init")
            .env(CHANNEL_FD_ENV, theirs.as_raw_fd().to_string())
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(spawn)?;
        drop(theirs);
        Ok(Self {
            pid: Pid::from_raw(_child.id() as i32),
            channel: Channel::new(ours).map_err(spawn)?,
        })
    }

    /// Like [`Launch::spawn`] with the caller's stdio, but a single-threaded caller (`skiff
    /// oci`) forks instead of exec'ing skiff again, which saves a large binary's exec per
    /// container. A caller with other threads falls back to `spawn`.
    pub fn fork_or_spawn() -> Result<Self> {
        if !single_threaded() {
            return Self::spawn([Stdio::inherit(), Stdio::inherit(), Stdio::inherit()]);
        }
        let spawn = |error| ProcessError::Spawn { error };
        let (ours, theirs) = UnixStream::pair().map_err(spawn)?;
        match fork().map_err(|e| spawn(e.into()))? {
            nix::unistd::ForkResult::Child => {
                drop(ours);
                let code = match Channel::new(theirs) {
                    Ok(channel) => init_with(channel),
                    Err(_) => 125,
                };
                std::process::exit(code)
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(theirs);
                Ok(Self {
                    pid: child,
                    channel: Channel::new(ours).map_err(spawn)?,
                })
            }
        }
    }

    /// Reaps stage one (it exits once pid 1 is forked, or on failure).
    pub fn reap(&self) {
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }

    /// Kills and reaps stage one (the launcher failed before configuring it).
    pub fn abort(&self) {
        let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
        self.reap();
    }

    /// Sends the config; returns pid 1's pid.
    pub fn configure(&mut self, config: InitConfig) -> Result<i32> {
        self.send(&Message::Config(Box::new(config)))?;
        match self.expect("entering namespaces")? {
            Message::Pid(pid) => Ok(pid),
            other => Err(protocol("entering namespaces", other)),
        }
    }

    /// Lets pid 1 build its root; returns once the container is created.
    pub fn network_ready(&mut self) -> Result<()> {
        self.send(&Message::NetworkReady)?;
        match self.expect("building the root")? {
            Message::Created => Ok(()),
            other => Err(protocol("building the root", other)),
        }
    }

    /// Starts the process (run mode) and waits until it has exec'd: the channel closes on
    /// exec, or carries the error that stopped it.
    pub fn start(mut self) -> Result<()> {
        self.send(&Message::Start)?;
        self.until_exec()
    }

    /// Waits for exec without sending anything (OCI mode: the fifo starts the process).
    pub fn until_exec(mut self) -> Result<()> {
        match self.channel.receive() {
            Ok(None) => Ok(()),
            Ok(Some(Message::Error(e))) => Err(ProcessError::Container(e)),
            Ok(Some(other)) => Err(protocol("starting", other)),
            Err(error) => Err(ProcessError::Channel { error }),
        }
    }

    /// Drops the channel: pid 1 carries on alone (OCI create, after `Created`).
    pub fn detach(self) {}

    fn send(&mut self, message: &Message) -> Result<()> {
        // A closed channel means the init side failed; its error message comes next.
        if self.channel.send(message).is_err() {
            return Err(self.failure("sending to the init process"));
        }
        Ok(())
    }

    fn expect(&mut self, stage: &'static str) -> Result<Message> {
        match self.channel.receive() {
            Ok(Some(Message::Error(e))) => Err(ProcessError::Container(e)),
            Ok(Some(message)) => Ok(message),
            Ok(None) => Err(ProcessError::Lost { stage }),
            Err(error) => Err(ProcessError::Channel { error }),
        }
    }

    fn failure(&mut self, stage: &'static str) -> ProcessError {
        match self.channel.receive() {
            Ok(Some(Message::Error(e))) => ProcessError::Container(e),
            _ => ProcessError::Lost { stage },
        }
    }
}

fn protocol(stage: &'static str, message: Message) -> ProcessError {
    ProcessError::Protocol {
        stage,
        message: format!("{message:?}"),
    }
}

fn set_cloexec(fd: &OwnedFd, on: bool) -> std::io::Result<()> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    let flags = if on {
        FdFlag::FD_CLOEXEC
    } else {
        FdFlag::empty()
    };
    fcntl(fd, FcntlArg::F_SETFD(flags))
        .map(drop)
        .map_err(std::io::Error::from)
}

/// `skiff init`: runs in the fresh process the launcher spawned. Returns the exit code of
/// stage one; pid 1 never returns here (it execs, or exits as the reaper).
pub fn init_main() -> i32 {
    match take_channel() {
        Ok(channel) => init_with(channel),
        Err(e) => {
            eprintln!("skiff init: {e}; this command is run by skiff itself, not by hand");
            125
        }
    }
}

/// True when this process has one thread, so a forked child may run normal code.
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| tasks.count() == 1)
        .unwrap_or(false)
}

fn init_with(mut channel: Channel) -> i32 {
    let config = match channel.receive() {
        Ok(Some(Message::Config(config))) => *config,
        _ => return 125,
    };
    stage_one(&LinuxSyscall, channel, &config)
}

fn take_channel() -> std::io::Result<Channel> {
    let fd: i32 = std::env::var(CHANNEL_FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("{CHANNEL_FD_ENV} is not set")))?;
    let owned = take_fd(fd)?;
    set_cloexec(&owned, true)?;
    Channel::new(UnixStream::from(owned))
}

#[allow(unsafe_code)]
fn take_fd(fd: i32) -> std::io::Result<OwnedFd> {
    // The fd must be an open socket before it is taken.
    // SAFETY: the borrow lives only for this check.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let stat = nix::sys::stat::fstat(borrowed).map_err(std::io::Error::from)?;
    if stat.st_mode & nix::libc::S_IFMT != nix::libc::S_IFSOCK {
        return Err(std::io::Error::other(format!("fd {fd} is not a socket")));
    }
    // SAFETY: the launcher passed this fd to us alone (see `Launch::spawn`), it is open, and
    // this is the only place that takes ownership of it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Stage one: namespaces, then fork pid 1.
fn stage_one(sys: &dyn Syscall, mut channel: Channel, config: &InitConfig) -> i32 {
    let forked = namespaces::enter(sys, &super::spec::namespaces(&config.spec))
        .map_err(|e| e.to_string())
        .and_then(|()| fork().map_err(|e| format!("cannot fork the container's init: {e}")));
    match forked {
        Err(e) => {
            let _ = channel.send(&Message::Error(e));
            1
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            let _ = channel.send(&Message::Pid(child.as_raw()));
            0
        }
        Ok(nix::unistd::ForkResult::Child) => std::process::exit(pid_one(sys, channel, config)),
    }
}

#[allow(unsafe_code)]
pub(super) fn fork() -> nix::Result<nix::unistd::ForkResult> {
    // SAFETY: callers fork only from a single-threaded process: `skiff init`, a fresh exec
    // that never starts a second thread, or a launcher that checked (`fork_or_spawn`), so the
    // child may allocate and run normal code after fork.
    unsafe { nix::unistd::fork() }
}

/// Pid 1 of the new pid namespace: build the root, then start the process. Returns the exit
/// code: the reaper's, or 127 when setup failed (the error went to the launcher).
fn pid_one(sys: &dyn Syscall, mut channel: Channel, config: &InitConfig) -> i32 {
    let exec = match prepare_pid_one(sys, &mut channel, config) {
        Ok(exec) => exec,
        Err(e) => {
            let _ = channel.send(&Message::Error(e));
            return 127;
        }
    };
    if config.reaper {
        super::reaper::run(sys, channel, &exec, &config.spec)
    } else {
        let error = exec.exec(sys, &config.spec);
        // After `start` nobody may be listening on the channel (OCI mode): say it on stderr,
        // which the caller (conmon, a shim) collects.
        if channel.send(&Message::Error(error.clone())).is_err() {
            eprintln!("skiff: error: {error}");
        }
        127
    }
}

fn prepare_pid_one(
    sys: &dyn Syscall,
    channel: &mut Channel,
    config: &InitConfig,
) -> Result<Exec, String> {
    match channel.receive() {
        Ok(Some(Message::NetworkReady)) => {}
        _ => return Err("the launcher went away before the network was ready".into()),
    }
    // The fifo is on the host's filesystem: hold it open by path now, reopen it through
    // /proc/self/fd once the root has changed (as runc does).
    let fifo = match &config.exec_fifo {
        Some(path) => Some(open_path(path)?),
        None => None,
    };
    let spec = &config.spec;
    rootfs::prepare(sys, spec, config.overlay.as_ref()).map_err(|e| e.to_string())?;
    rootfs::finish(sys, spec).map_err(|e| e.to_string())?;
    if super::spec::new_namespace(spec, oci_spec::runtime::LinuxNamespaceType::Uts)
        && let Some(hostname) = spec.hostname()
    {
        sys.sethostname(hostname)
            .map_err(|e| format!("cannot set the hostname {hostname}: {e}"))?;
    }
    let exec = Exec::resolve(spec, config.user.as_deref())?;
    channel.send(&Message::Created).map_err(|e| e.to_string())?;
    match &fifo {
        Some(fifo) => wait_for_fifo(fifo)?,
        None => match channel.receive() {
            Ok(Some(Message::Start)) => {}
            _ => return Err("the launcher went away before starting the container".into()),
        },
    }
    Ok(exec)
}

fn open_path(path: &Path) -> Result<std::fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_PATH | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

/// Blocks until `skiff oci start` opens the fifo for reading.
fn wait_for_fifo(fifo: &std::fs::File) -> Result<(), String> {
    let reopened = format!("/proc/self/fd/{}", fifo.as_raw_fd());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(&reopened)
        .map_err(|e| format!("cannot open the exec fifo: {e}"))?;
    file.write_all(b"0")
        .map_err(|e| format!("cannot write the exec fifo: {e}"))
}

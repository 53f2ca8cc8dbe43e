//! Launching one container in the background: prepare the image's snapshots, describe the
//! container as a runtime spec, write its record and run plan, then start a detached
//! `skiff container-monitor` and wait for it to say the container runs.
//!
//! `skiff run` (foreground or `-d`) and the daemon's services and jobs launch through here,
//! so a container started either way is the same on disk and to `skiff ps`, `stop`, `rm`.

use super::container::{self, ContainerError, ContainerRecord, Containers, Owner, Status};
use super::hosts;
use super::monitor::RunPlan;
use super::net::{NetError, NetworkMode, PortMapping};
use super::process::InitConfig;
use super::rootfs::Overlay;
use super::snapshot::{SnapshotError, Snapshots};
use super::spec::{self, RunOptions, SpecError};
use super::unpack::UnpackLimits;
use crate::oci::images::ImageRecord;
use crate::oci::local::{ImagesError, LocalImages};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(
        "{image} is a Linux image, and running Linux containers needs root (skiff has no \
         rootless mode yet); run skiff as root"
    )]
    NotRoot { image: String },
    #[error(transparent)]
    Ports(#[from] NetError),
    #[error(transparent)]
    Images(#[from] ImagesError),
    #[error("cannot prepare {image}: {error}")]
    Prepare { image: String, error: SnapshotError },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot start the container's monitor: {error}")]
    Spawn { error: std::io::Error },
    #[error("the container's monitor stopped before starting it: {log}")]
    MonitorDied { log: String },
    /// The monitor could not start the container; `code` is the exit code `skiff run` gives.
    #[error("{message}")]
    Failed { code: i32, message: String },
}

type Result<T, E = LaunchError> = std::result::Result<T, E>;

/// One container to launch.
#[derive(Debug, Clone)]
pub struct Launch {
    pub image: ImageRecord,
    /// Its name; `None` for `skiff-<first 8 digits of its id>`.
    pub name: Option<String>,
    pub options: RunOptions,
    /// `--user`: overrides the image's `User`.
    pub user: Option<String>,
    pub network: NetworkMode,
    pub publish: Vec<PortMapping>,
    pub auto_remove: bool,
    pub limits: UnpackLimits,
    pub owner: Option<Owner>,
}

/// A container whose record and run plan are written, not started yet.
#[derive(Debug, Clone)]
pub struct Created {
    pub id: String,
    pub dir: PathBuf,
}

/// Writes the container's record (status `created`) and its `run.json` plan.
pub fn create(data_dir: &Path, launch: &Launch) -> Result<Created> {
    let image = &launch.image;
    if !nix::unistd::geteuid().is_root() {
        return Err(LaunchError::NotRoot {
            image: image.name.clone(),
        });
    }
    launch.network.check_ports(&launch.publish)?;
    let images = LocalImages::open(data_dir)?;
    let prepared = Snapshots::open(data_dir)
        .map_err(|error| LaunchError::Prepare {
            image: image.name.clone(),
            error,
        })?
        .prepare(&images, image, &launch.limits)
        .map_err(|error| LaunchError::Prepare {
            image: image.name.clone(),
            error,
        })?;

    let id = container::new_id();
    let short = container::short_id(&id).to_string();
    let containers = Containers::open(data_dir);
    let dir = containers.dir(&id);
    let spec = spec::build(
        &image.name,
        &prepared.config,
        &launch.options,
        dir.join("rootfs"),
        &short,
    )?;
    let record = ContainerRecord {
        id: id.clone(),
        name: launch
            .name
            .clone()
            .unwrap_or_else(|| format!("skiff-{}", &id[..8])),
        image: image.name.clone(),
        command: spec::process_args(&image.name, &prepared.config, &launch.options)?,
        created: container::now(),
        status: Status::Created,
        pid: None,
        pid_start: None,
        monitor_pid: None,
        exit_code: None,
        oom_killed: false,
        finished: None,
        ports: launch.publish.iter().map(|p| p.to_string()).collect(),
        address: None,
        auto_remove: launch.auto_remove,
        owner: launch.owner.clone(),
    };
    containers.create(&record)?;
    let overlay = overlay(&dir, prepared.lowers)?;
    let upper_hosts = overlay.upper.join("etc/hosts");
    hosts::write(&overlay.upper, &launch.options.extra_hosts).map_err(io(&upper_hosts))?;
    let plan = RunPlan {
        init: InitConfig {
            spec,
            overlay: Some(overlay),
            user: spec::user(&prepared.config, launch.user.as_deref()),
            reaper: true,
            exec_fifo: None,
        },
        network: launch.network.to_string(),
        ports: record.ports.clone(),
        cgroup: format!("skiff/{id}"),
    };
    let plan_path = dir.join("run.json");
    let bytes = serde_json::to_vec(&plan).expect("a run plan serialises");
    std::fs::write(&plan_path, bytes).map_err(io(&plan_path))?;
    Ok(Created { id, dir })
}

/// Starts a detached monitor for `created` and waits for it to say the container is running.
/// The monitor is the caller's child: a long-lived caller must wait for it (reap it).
pub fn start_detached(data_dir: &Path, created: &Created) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    let log_path = created.dir.join("monitor.log");
    let log = std::fs::File::create(&log_path).map_err(io(&log_path))?;
    let mut monitor = std::process::Command::new("/proc/self/exe")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("container-monitor")
        .arg(&created.id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        // Its own process group: the terminal's Ctrl-C is not for it.
        .process_group(0)
        .spawn()
        .map_err(|error| LaunchError::Spawn { error })?;
    let stdout = monitor.stdout.take().expect("piped");
    let mut line = String::new();
    // The monitor writes one line, `started ID` or `failed CODE MESSAGE`, or exits.
    let _ = std::io::BufReader::new(stdout).read_line(&mut line);
    match line.trim_end().split_once(' ') {
        Some(("started", _)) => Ok(monitor),
        Some(("failed", rest)) => {
            let _ = monitor.wait();
            let (code, message) = rest.split_once(' ').unwrap_or(("125", rest));
            Err(LaunchError::Failed {
                code: code.parse().unwrap_or(125),
                message: message.to_string(),
            })
        }
        _ => {
            let _ = monitor.wait();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            Err(LaunchError::MonitorDied { log })
        }
    }
}

/// The container's own directories: overlay upper and work dirs and the mount point.
fn overlay(dir: &Path, mut lowers: Vec<PathBuf>) -> Result<Overlay> {
    for sub in ["upper", "work", "rootfs"] {
        let path = dir.join(sub);
        std::fs::create_dir(&path).map_err(io(&path))?;
    }
    if lowers.is_empty() {
        // overlayfs needs a lower dir; an image without layers gets an empty one.
        let empty = dir.join("empty");
        std::fs::create_dir(&empty).map_err(io(&empty))?;
        lowers.push(empty);
    }
    Ok(Overlay {
        lowers,
        upper: dir.join("upper"),
        work: dir.join("work"),
    })
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LaunchError {
    let path = path.to_path_buf();
    move |error| LaunchError::Io { path, error }
}

//! `skiff run IMAGE` for a Linux image: prepare the image's snapshots, describe the container
//! as a runtime spec, then hand it to a monitor: this process in the foreground, a detached
//! `skiff container-monitor` with `-d`.

use super::RunCommand;
use crate::linux::container::{self, ContainerRecord, Containers, Status};
use crate::linux::monitor::{self, MonitorError, Output, RunPlan};
use crate::linux::net::{NetworkMode, PortMapping};
use crate::linux::process::{InitConfig, ProcessError};
use crate::linux::rootfs::Overlay;
use crate::linux::snapshot::Snapshots;
use crate::linux::spec::{self, RunOptions, Volume};
use crate::linux::unpack::UnpackLimits;
use crate::oci::images::ImageRecord;
use crate::oci::local::LocalImages;
use crate::units::ByteSize;
use anyhow::Context;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Exit code when the container's command cannot be found or run, as Docker uses it.
const EXIT_CANNOT_EXEC: i32 = 127;

/// Flags for Linux images only.
#[derive(Debug, clap::Args)]
pub struct LinuxFlags {
    /// Run in the background and print the container's id
    #[arg(short = 'd', long)]
    detach: bool,

    /// Remove the container when it exits
    #[arg(long)]
    rm: bool,

    /// Name the container [default: skiff-<first 8 digits of its id>]
    #[arg(long, value_name = "NAME")]
    name: Option<String>,

    /// Working directory inside the container [default: the image's WorkingDir, else /]
    #[arg(short = 'w', long, value_name = "DIR")]
    workdir: Option<String>,

    /// User to run as: name, uid, name:group or uid:gid [default: the image's User, else root]
    #[arg(short = 'u', long, value_name = "USER")]
    user: Option<String>,

    /// Replace the image's Entrypoint ("" clears it)
    #[arg(long, value_name = "CMD")]
    entrypoint: Option<String>,

    /// The container's hostname [default: the first 12 digits of its id]
    #[arg(long, value_name = "NAME")]
    hostname: Option<String>,

    /// CPUs the container may use, e.g. 0.5 or 2 [default: no limit]
    #[arg(long, value_name = "N")]
    cpus: Option<f64>,

    /// Most processes the container may have [default: no limit]
    #[arg(long, value_name = "N")]
    pids_limit: Option<i64>,

    /// Network: none, host, or bridge (an address on skiff's bridge, outbound NAT)
    #[arg(
        long = "net",
        alias = "network",
        value_name = "MODE",
        default_value = "bridge"
    )]
    net: NetworkMode,

    /// Publish a container port: HOSTPORT:CONTAINERPORT or IP:HOSTPORT:CONTAINERPORT
    #[arg(short = 'p', long = "publish", value_name = "PORTS")]
    publish: Vec<PortMapping>,

    /// Refuse to unpack a layer that expands past this size (a decompression bomb)
    #[arg(
        long,
        env = "SKIFF_MAX_LAYER_SIZE",
        value_name = "SIZE",
        default_value = "16g"
    )]
    max_layer_size: ByteSize,
}

impl LinuxFlags {
    /// Refuses Linux-only flags for a Wasm program.
    pub fn check_unused(&self) -> anyhow::Result<()> {
        let linux_only = [
            (self.detach, "-d"),
            (self.rm, "--rm"),
            (self.name.is_some(), "--name"),
            (self.workdir.is_some(), "--workdir"),
            (self.user.is_some(), "--user"),
            (self.entrypoint.is_some(), "--entrypoint"),
            (self.hostname.is_some(), "--hostname"),
            (self.cpus.is_some(), "--cpus"),
            (self.pids_limit.is_some(), "--pids-limit"),
            (self.net != NetworkMode::Bridge, "--net"),
            (!self.publish.is_empty(), "-p"),
        ];
        if let Some((_, flag)) = linux_only.iter().find(|(set, _)| *set) {
            anyhow::bail!(
                "{flag} is for Linux images; a Wasm program runs in the foreground (use --listen to serve HTTP)"
            );
        }
        Ok(())
    }
}

pub fn run(command: RunCommand, image: ImageRecord, data_dir: &Path) -> anyhow::Result<i32> {
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!(
            "{} is a Linux image, and running Linux containers needs root (skiff has no \
             rootless mode yet); run skiff as root",
            image.name
        );
    }
    let flags = &command.linux;
    flags.net.check_ports(&flags.publish)?;
    let images = LocalImages::open(data_dir)?;
    let prepared = Snapshots::open(data_dir)?
        .prepare(
            &images,
            &image,
            &UnpackLimits {
                max_expanded_bytes: flags.max_layer_size.0,
            },
        )
        .with_context(|| format!("cannot prepare {}", image.name))?;

    let id = container::new_id();
    let short = container::short_id(&id).to_string();
    let options = run_options(&command)?;
    let containers = Containers::open(data_dir);
    let dir = containers.dir(&id);
    let spec = spec::build(
        &image.name,
        &prepared.config,
        &options,
        dir.join("rootfs"),
        &short,
    )?;
    let record = ContainerRecord {
        id: id.clone(),
        name: flags
            .name
            .clone()
            .unwrap_or_else(|| format!("skiff-{}", &id[..8])),
        image: image.name.clone(),
        command: spec::process_args(&image.name, &prepared.config, &options)?,
        created: container::now(),
        status: Status::Created,
        pid: None,
        pid_start: None,
        monitor_pid: None,
        exit_code: None,
        oom_killed: false,
        finished: None,
        ports: flags.publish.iter().map(|p| p.to_string()).collect(),
        address: None,
        auto_remove: flags.rm,
    };
    containers.create(&record)?;
    let plan = RunPlan {
        init: InitConfig {
            spec,
            overlay: Some(overlay(&dir, prepared.lowers)?),
            user: spec::user(&prepared.config, flags.user.as_deref()),
            reaper: true,
            exec_fifo: None,
        },
        network: flags.net.to_string(),
        ports: record.ports.clone(),
        cgroup: format!("skiff/{id}"),
    };
    let plan_path = dir.join("run.json");
    std::fs::write(&plan_path, serde_json::to_vec(&plan)?)
        .with_context(|| format!("cannot write {}", plan_path.display()))?;

    if flags.detach {
        return detach(data_dir, &dir, &id);
    }
    let output = Output {
        mirror: true,
        forward_signals: true,
    };
    match monitor::run(&containers, data_dir, &id, output, |_| {}) {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("skiff: error: {e}");
            Ok(exit_code_for(&e))
        }
    }
}

/// The exit code for a container that could not be started: 127 when its command could not
/// be run (as Docker's), 125 for skiff's own failures.
pub fn exit_code_for(error: &MonitorError) -> i32 {
    match error {
        MonitorError::Process(ProcessError::Container(_)) => EXIT_CANNOT_EXEC,
        _ => 125,
    }
}

fn run_options(command: &RunCommand) -> anyhow::Result<RunOptions> {
    let flags = &command.linux;
    let mut env = Vec::new();
    for file in &command.env_files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read env file {}", file.display()))?;
        env.extend(
            crate::wasm::capabilities::parse_env_file(&text)
                .with_context(|| format!("in env file {}", file.display()))?,
        );
    }
    env.extend(command.env.iter().cloned());
    let mut volumes = Vec::new();
    for preopen in &command.volumes {
        let host = std::fs::canonicalize(&preopen.host).with_context(|| {
            format!(
                "volume source {} does not exist; create it or fix the -v path",
                preopen.host.display()
            )
        })?;
        if !preopen.guest.starts_with('/') {
            anyhow::bail!(
                "volume destination {} is not absolute; write -v HOST:/path/in/container",
                preopen.guest
            );
        }
        volumes.push(Volume {
            host,
            container: PathBuf::from(&preopen.guest),
            read_only: preopen.read_only,
        });
    }
    Ok(RunOptions {
        command: command.args.clone(),
        entrypoint: flags.entrypoint.clone(),
        env,
        workdir: flags.workdir.clone(),
        hostname: flags.hostname.clone(),
        memory: command.memory.map(|m| m.0),
        cpus: flags.cpus,
        pids_limit: flags.pids_limit,
        volumes,
        host_network: flags.net == NetworkMode::Host,
    })
}

/// The container's own directories: overlay upper and work dirs and the mount point.
fn overlay(dir: &Path, mut lowers: Vec<PathBuf>) -> anyhow::Result<Overlay> {
    for sub in ["upper", "work", "rootfs"] {
        std::fs::create_dir(dir.join(sub))
            .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
    }
    if lowers.is_empty() {
        // overlayfs needs a lower dir; an image without layers gets an empty one.
        let empty = dir.join("empty");
        std::fs::create_dir(&empty)?;
        lowers.push(empty);
    }
    Ok(Overlay {
        lowers,
        upper: dir.join("upper"),
        work: dir.join("work"),
    })
}

/// Starts a detached monitor and waits for it to say the container is running.
fn detach(data_dir: &Path, dir: &Path, id: &str) -> anyhow::Result<i32> {
    use std::os::unix::process::CommandExt;
    let log = std::fs::File::create(dir.join("monitor.log"))?;
    let mut monitor = std::process::Command::new("/proc/self/exe")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("container-monitor")
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        // Its own process group: the terminal's Ctrl-C is not for it.
        .process_group(0)
        .spawn()
        .context("cannot start the container's monitor")?;
    let stdout = monitor.stdout.take().expect("piped");
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    match line.trim_end().split_once(' ') {
        Some(("started", _)) => {
            println!("{id}");
            Ok(0)
        }
        Some(("failed", rest)) => {
            let (code, message) = rest.split_once(' ').unwrap_or(("125", rest));
            eprintln!("skiff: error: {message}");
            Ok(code.parse().unwrap_or(125))
        }
        _ => {
            let _ = monitor.wait();
            let log = std::fs::read_to_string(dir.join("monitor.log")).unwrap_or_default();
            anyhow::bail!("the container's monitor stopped before starting it: {log}")
        }
    }
}

//! `skiff run IMAGE` for a Linux image: prepare the image's snapshots, describe the container
//! as a runtime spec, then hand it to a monitor: this process in the foreground, a detached
//! `skiff container-monitor` with `-d`.

use super::RunCommand;
use crate::linux::container::Containers;
use crate::linux::hosts::ExtraHost;
use crate::linux::launch::{self, Launch, LaunchError};
use crate::linux::monitor::{self, MonitorError, Output};
use crate::linux::net::{NetworkMode, PortMapping};
use crate::linux::process::ProcessError;
use crate::linux::spec::{RunOptions, Volume};
use crate::linux::unpack::UnpackLimits;
use crate::oci::images::ImageRecord;
use crate::units::ByteSize;
use anyhow::Context;
use std::path::{Path, PathBuf};

/// Exit code when the container's command cannot be found or run, as Docker uses it.
const EXIT_CANNOT_EXEC: i32 = 127;

/// Flags for Linux images only.
#[derive(Debug, clap::Args)]
pub struct LinuxFlags {
    /// Run in the background and print the container's id
    #[arg(short = 'd', long)]
    pub(super) detach: bool,

    /// Remove the container when it exits
    #[arg(long)]
    rm: bool,

    /// Name the container [default: skiff-<first 8 digits of its id>]
    #[arg(long, value_name = "NAME")]
    pub(super) name: Option<String>,

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
    pub(super) cpus: Option<f64>,

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

    /// Add a line to the container's /etc/hosts: NAME:IP (repeatable)
    #[arg(long = "add-host", value_name = "NAME:IP")]
    add_host: Vec<ExtraHost>,

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
            (!self.add_host.is_empty(), "--add-host"),
        ];
        if let Some((_, flag)) = linux_only.iter().find(|(set, _)| *set) {
            anyhow::bail!(
                "{flag} is for Linux images; a Wasm program runs in the foreground (use --listen to serve HTTP)"
            );
        }
        Ok(())
    }
}

/// How a detached start went.
pub enum Detached {
    /// Running; its id.
    Started(String),
    /// Its command could not start; `code` is what `skiff run` exits with.
    Failed { code: i32, message: String },
}

/// Creates the container and starts it under a detached monitor.
pub fn run_detached(
    command: &RunCommand,
    image: ImageRecord,
    data_dir: &Path,
) -> anyhow::Result<Detached> {
    let created = launch::create(data_dir, &describe(command, image)?)?;
    match launch::start_detached(data_dir, &created) {
        Ok(_monitor) => Ok(Detached::Started(created.id)),
        Err(LaunchError::Failed { code, message }) => Ok(Detached::Failed { code, message }),
        Err(e) => Err(e.into()),
    }
}

fn describe(command: &RunCommand, image: ImageRecord) -> anyhow::Result<Launch> {
    let flags = &command.linux;
    Ok(Launch {
        image,
        name: flags.name.clone(),
        options: run_options(command)?,
        user: flags.user.clone(),
        network: flags.net,
        publish: flags.publish.clone(),
        auto_remove: flags.rm,
        limits: UnpackLimits {
            max_expanded_bytes: flags.max_layer_size.0,
        },
        owner: None,
    })
}

pub fn run(command: RunCommand, image: ImageRecord, data_dir: &Path) -> anyhow::Result<i32> {
    if command.linux.detach {
        return match run_detached(&command, image, data_dir)? {
            Detached::Started(id) => {
                println!("{id}");
                Ok(0)
            }
            Detached::Failed { code, message } => {
                eprintln!("skiff: error: {message}");
                Ok(code)
            }
        };
    }
    let created = launch::create(data_dir, &describe(&command, image)?)?;
    let output = Output {
        mirror: true,
        forward_signals: true,
    };
    let containers = Containers::open(data_dir);
    match monitor::run(&containers, data_dir, &created.id, output, |_| {}) {
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
        extra_hosts: flags.add_host.clone(),
    })
}

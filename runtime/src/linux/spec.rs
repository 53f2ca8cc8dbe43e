//! From an image config and `skiff run` flags to an OCI runtime spec: the one description of
//! a container that the rest of the Linux executor reads, whether it came from `skiff run` or
//! from a bundle's `config.json` (`skiff oci`).
//!
//! Defaults follow runc's and Docker's: pid, mount, uts, ipc, net and cgroup namespaces;
//! `/proc`, a minimal `/dev`, read-only `/sys`; runc's masked and read-only paths; Docker's
//! capability set; `no_new_privs`; skiff's default seccomp filter.

use super::security;
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    LinuxBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder, ProcessBuilder, RootBuilder,
    Spec, UserBuilder,
};
use std::path::PathBuf;

/// Marks a spec built by `skiff run` (Docker's rules apply: a non-root user gets no
/// effective capabilities).
pub const RUN_ANNOTATION: &str = "io.skiff.run";

/// CPU period for `--cpus`, as Docker sets it.
const CPU_PERIOD: u64 = 100_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error(
        "image {image} has no Entrypoint or Cmd; give a command after the image name, e.g. `skiff run {image} sh`"
    )]
    NoCommand { image: String },
    #[error("--cpus {cpus} is out of range; give a positive number of CPUs, e.g. 0.5 or 2")]
    Cpus { cpus: String },
    #[error("--pids-limit {limit} is out of range; give a positive number of processes")]
    Pids { limit: i64 },
    #[error("--workdir {path} is not absolute; give an absolute path inside the container")]
    Workdir { path: String },
    #[error("cannot build the runtime spec: {detail}")]
    Build { detail: String },
}

/// A `-v HOST:CONTAINER[:ro]` bind mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub host: PathBuf,
    pub container: PathBuf,
    pub read_only: bool,
}

/// What `skiff run` lets a user change about an image's process and limits.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Replaces the image's Cmd when not empty.
    pub command: Vec<String>,
    /// Replaces the image's Entrypoint (and drops its Cmd); an empty string clears it.
    pub entrypoint: Option<String>,
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub hostname: Option<String>,
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
    pub pids_limit: Option<i64>,
    pub volumes: Vec<Volume>,
    /// Share the host's network namespace (`--net host`).
    pub host_network: bool,
    /// Names for the container's `/etc/hosts` (`--add-host`); none keeps the image's file.
    pub extra_hosts: Vec<super::hosts::ExtraHost>,
}

/// The process arguments: entrypoint then command, as Docker combines them.
pub fn process_args(
    image: &str,
    config: &ImageConfiguration,
    options: &RunOptions,
) -> Result<Vec<String>, SpecError> {
    let image_config = config.config().as_ref();
    let entrypoint: Vec<String> = match &options.entrypoint {
        Some(e) if e.is_empty() => Vec::new(),
        Some(e) => vec![e.clone()],
        None => image_config
            .and_then(|c| c.entrypoint().clone())
            .unwrap_or_default(),
    };
    let command = if !options.command.is_empty() {
        options.command.clone()
    } else if options.entrypoint.is_some() {
        Vec::new()
    } else {
        image_config
            .and_then(|c| c.cmd().clone())
            .unwrap_or_default()
    };
    let args: Vec<String> = entrypoint.into_iter().chain(command).collect();
    if args.is_empty() {
        return Err(SpecError::NoCommand {
            image: image.into(),
        });
    }
    Ok(args)
}

/// The environment: the image's, then `-e` overrides by name, with a default `PATH`.
pub fn environment(
    config: &ImageConfiguration,
    options: &RunOptions,
    hostname: &str,
) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |name: &str, value: &str| match env.iter_mut().find(|(n, _)| n == name) {
        Some(entry) => entry.1 = value.to_string(),
        None => env.push((name.to_string(), value.to_string())),
    };
    set(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    set("HOSTNAME", hostname);
    let image_env = config
        .config()
        .as_ref()
        .and_then(|c| c.env().clone())
        .unwrap_or_default();
    for entry in &image_env {
        let (name, value) = entry.split_once('=').unwrap_or((entry, ""));
        set(name, value);
    }
    for (name, value) in &options.env {
        set(name, value);
    }
    env.into_iter().map(|(n, v)| format!("{n}={v}")).collect()
}

/// The user the image or `--user` names, still to be resolved against the container's
/// `/etc/passwd`: `uid`, `uid:gid`, `name` or `name:group`. `None` means root.
pub fn user(config: &ImageConfiguration, flag: Option<&str>) -> Option<String> {
    flag.map(str::to_string)
        .or_else(|| config.config().as_ref().and_then(|c| c.user().clone()))
        .filter(|u| !u.is_empty())
}

fn build_error(e: impl std::fmt::Display) -> SpecError {
    SpecError::Build {
        detail: e.to_string(),
    }
}

/// The runtime spec for `skiff run`. `rootfs` is where the overlay root will be mounted.
pub fn build(
    image: &str,
    config: &ImageConfiguration,
    options: &RunOptions,
    rootfs: PathBuf,
    default_hostname: &str,
) -> Result<Spec, SpecError> {
    let hostname = options
        .hostname
        .clone()
        .unwrap_or_else(|| default_hostname.to_string());
    let cwd = match &options.workdir {
        Some(w) if !w.starts_with('/') => return Err(SpecError::Workdir { path: w.clone() }),
        Some(w) => w.clone(),
        None => config
            .config()
            .as_ref()
            .and_then(|c| c.working_dir().clone())
            .filter(|w| w.starts_with('/'))
            .unwrap_or_else(|| "/".into()),
    };
    let process = ProcessBuilder::default()
        .args(process_args(image, config, options)?)
        .env(environment(config, options, &hostname))
        .cwd(cwd)
        .user(
            UserBuilder::default()
                .uid(0u32)
                .gid(0u32)
                .build()
                .map_err(build_error)?,
        )
        .capabilities(security::default_capabilities_spec(false))
        .no_new_privileges(true)
        .build()
        .map_err(build_error)?;

    let mut namespaces = oci_spec::runtime::get_default_namespaces();
    if options.host_network {
        namespaces.retain(|n| n.typ() != LinuxNamespaceType::Network);
    }
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources(options)?)
        .masked_paths(masked_paths())
        .readonly_paths(oci_spec::runtime::get_default_readonly_paths())
        .seccomp(security::default_seccomp())
        .build()
        .map_err(build_error)?;

    let mut mounts = default_mounts();
    for volume in &options.volumes {
        mounts.push(volume_mount(volume)?);
    }

    let mut spec = Spec::default();
    spec.set_version("1.2.0".into())
        .set_hostname(Some(hostname))
        .set_process(Some(process))
        .set_root(Some(
            RootBuilder::default()
                .path(rootfs)
                .readonly(false)
                .build()
                .map_err(build_error)?,
        ))
        .set_mounts(Some(mounts))
        .set_linux(Some(linux))
        .set_annotations(Some(
            [(RUN_ANNOTATION.to_string(), "true".to_string())].into(),
        ));
    Ok(spec)
}

fn resources(options: &RunOptions) -> Result<oci_spec::runtime::LinuxResources, SpecError> {
    let mut builder = LinuxResourcesBuilder::default();
    if let Some(bytes) = options.memory {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        builder = builder.memory(
            LinuxMemoryBuilder::default()
                .limit(bytes)
                .swap(bytes)
                .build()
                .map_err(build_error)?,
        );
    }
    if let Some(cpus) = options.cpus {
        if !(cpus.is_finite() && cpus > 0.0 && cpus <= 4096.0) {
            return Err(SpecError::Cpus {
                cpus: cpus.to_string(),
            });
        }
        let quota = (cpus * CPU_PERIOD as f64).round() as i64;
        builder = builder.cpu(
            LinuxCpuBuilder::default()
                .quota(quota.max(1000))
                .period(CPU_PERIOD)
                .build()
                .map_err(build_error)?,
        );
    }
    if let Some(limit) = options.pids_limit {
        if limit <= 0 {
            return Err(SpecError::Pids { limit });
        }
        builder = builder.pids(
            LinuxPidsBuilder::default()
                .limit(limit)
                .build()
                .map_err(build_error)?,
        );
    }
    builder.build().map_err(build_error)
}

/// runc's masked paths plus the two Docker adds.
fn masked_paths() -> Vec<String> {
    let mut paths = oci_spec::runtime::get_default_maskedpaths();
    paths.extend([
        "/sys/devices/virtual/powercap".into(),
        "/proc/interrupts".into(),
    ]);
    paths
}

/// runc's default mounts, without the cgroup filesystem: the container's cgroup namespace is
/// mounted read-only at `/sys/fs/cgroup` by the rootfs step where the host's layout allows.
fn default_mounts() -> Vec<Mount> {
    oci_spec::runtime::get_default_mounts()
        .into_iter()
        .filter(|m| m.typ().as_deref() != Some("cgroup"))
        .collect()
}

fn volume_mount(volume: &Volume) -> Result<Mount, SpecError> {
    let mut options = vec!["rbind".to_string(), "rprivate".to_string()];
    if volume.read_only {
        options.push("ro".into());
    }
    MountBuilder::default()
        .destination(volume.container.clone())
        .typ("bind")
        .source(volume.host.clone())
        .options(options)
        .build()
        .map_err(build_error)
}

/// Whether the spec asks for a namespace of this type (and it is a new one, not joined).
pub fn new_namespace(spec: &Spec, typ: LinuxNamespaceType) -> bool {
    namespaces(spec)
        .iter()
        .any(|n| n.typ() == typ && n.path().is_none())
}

pub fn namespaces(spec: &Spec) -> Vec<LinuxNamespace> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(
        entrypoint: Option<&[&str]>,
        cmd: Option<&[&str]>,
        env: &[&str],
    ) -> ImageConfiguration {
        let json = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Entrypoint": entrypoint,
                "Cmd": cmd,
                "Env": env,
                "WorkingDir": "/srv",
                "User": "skiff",
            },
            "rootfs": {"type": "layers", "diff_ids": []},
        });
        serde_json::from_value(json).unwrap()
    }

    fn args(config: &ImageConfiguration, options: &RunOptions) -> Result<Vec<String>, SpecError> {
        process_args("img", config, options)
    }

    #[test]
    fn entrypoint_and_cmd_combine_as_docker_does() {
        let config = image(Some(&["/bin/app", "-v"]), Some(&["serve"]), &[]);
        assert_eq!(
            args(&config, &RunOptions::default()).unwrap(),
            ["/bin/app", "-v", "serve"]
        );
        let command = RunOptions {
            command: vec!["check".into()],
            ..Default::default()
        };
        assert_eq!(
            args(&config, &command).unwrap(),
            ["/bin/app", "-v", "check"]
        );
        let entrypoint = RunOptions {
            entrypoint: Some("/bin/sh".into()),
            ..Default::default()
        };
        assert_eq!(args(&config, &entrypoint).unwrap(), ["/bin/sh"]);
        let cleared = RunOptions {
            entrypoint: Some(String::new()),
            command: vec!["true".into()],
            ..Default::default()
        };
        assert_eq!(args(&config, &cleared).unwrap(), ["true"]);
    }

    #[test]
    fn no_command_is_an_error_that_says_what_to_do() {
        let config = image(None, None, &[]);
        let err = args(&config, &RunOptions::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("give a command after the image name")
        );
    }

    #[test]
    fn env_flags_override_the_image_by_name() {
        let config = image(None, Some(&["sh"]), &["PATH=/bin", "A=1", "B=2"]);
        let options = RunOptions {
            env: vec![("B".into(), "3".into()), ("C".into(), "4".into())],
            ..Default::default()
        };
        let env = environment(&config, &options, "box");
        assert_eq!(env, ["PATH=/bin", "HOSTNAME=box", "A=1", "B=3", "C=4"]);
    }

    #[test]
    fn the_spec_has_the_defaults_and_the_limits() {
        let config = image(None, Some(&["sh"]), &[]);
        let options = RunOptions {
            memory: Some(32 << 20),
            cpus: Some(0.5),
            pids_limit: Some(64),
            host_network: true,
            workdir: Some("/tmp".into()),
            ..Default::default()
        };
        let spec = build("img", &config, &options, "/r".into(), "abc").unwrap();
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.cwd(), &PathBuf::from("/tmp"));
        assert_eq!(process.no_new_privileges(), Some(true));
        let resources = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
        assert_eq!(resources.memory().as_ref().unwrap().limit(), Some(32 << 20));
        assert_eq!(resources.cpu().as_ref().unwrap().quota(), Some(50_000));
        assert_eq!(resources.pids().as_ref().unwrap().limit(), 64);
        assert!(!new_namespace(&spec, LinuxNamespaceType::Network));
        assert!(new_namespace(&spec, LinuxNamespaceType::Pid));
        assert!(new_namespace(&spec, LinuxNamespaceType::Cgroup));
        assert_eq!(spec.hostname().as_deref(), Some("abc"));
    }

    #[test]
    fn bad_limits_are_refused() {
        let config = image(None, Some(&["sh"]), &[]);
        for options in [
            RunOptions {
                cpus: Some(0.0),
                ..Default::default()
            },
            RunOptions {
                pids_limit: Some(0),
                ..Default::default()
            },
            RunOptions {
                workdir: Some("relative".into()),
                ..Default::default()
            },
        ] {
            assert!(build("img", &config, &options, "/r".into(), "h").is_err());
        }
    }
}

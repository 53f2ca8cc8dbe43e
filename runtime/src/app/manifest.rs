//! The app manifest's desired state as serde types: [`AppSpec`] and one spec per workload kind.
//!
//! These are the tables of `skiff.toml` (design.md, "Interfaces in detail"): every key a type
//! accepts, and every default, is documented on its field, and unknown keys are errors. The
//! same types serialize to JSON for the state store and read back unchanged. Reading the TOML
//! file is [`super::load`]'s job, the rules that span keys are [`super::validate`]'s.

use super::quantity::{Cpu, Percent, duration, option_byte_size, option_duration};
use crate::units::ByteSize;
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};
/// One app: its name and its workloads by kind, each map keyed by workload name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// `[app] name`: `[a-z0-9-]{1,63}`.
    pub name: String,
    /// `[function.NAME]` tables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub functions: BTreeMap<String, FunctionSpec>,
    /// `[service.NAME]` tables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, ServiceSpec>,
    /// `[job.NAME]` tables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub jobs: BTreeMap<String, JobSpec>,
}

/// The three kinds of workload an app holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkloadKind {
    Function,
    Service,
    Job,
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WorkloadKind::Function => "function",
            WorkloadKind::Service => "service",
            WorkloadKind::Job => "job",
        })
    }
}

/// Where a function's or job's code comes from; exactly one of `image` and `file` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    Image(&'a str),
    File(&'a Path),
}

fn source<'a>(image: &'a Option<String>, file: &'a Option<PathBuf>) -> Option<Source<'a>> {
    match (image, file) {
        (Some(image), None) => Some(Source::Image(image)),
        (None, Some(file)) => Some(Source::File(file)),
        _ => None,
    }
}

/// `[function.NAME]`: a Wasm HTTP handler, instantiated per request or from a warm pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionSpec {
    /// The image reference to pull; exactly one of `image` and `file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A `.wasm` file, relative to the manifest (resolved on load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Path prefix the gateway routes here; the guest sees the full path. Required.
    pub route: String,
    /// Also match the Host header. Default: any host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Warm instances kept. Default 0: scale to zero.
    #[serde(default)]
    pub min: u32,
    /// Instances at most; beyond, requests queue, then get 503. Default 100.
    #[serde(default = "defaults::function_max")]
    pub max: u32,
    /// Requests per instance. Default 1: a fresh instance per request.
    #[serde(default = "defaults::one")]
    pub concurrency: u32,
    /// Memory limit per instance. Default: the node's function default.
    #[serde(
        default,
        with = "option_byte_size",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory: Option<ByteSize>,
    /// Time limit per request. Default 60s.
    #[serde(default = "defaults::function_timeout", with = "duration")]
    pub timeout: Duration,
    /// Idle window before warm instances are dropped. Default 30s.
    #[serde(default = "defaults::idle", with = "duration")]
    pub idle: Duration,
    /// Environment variables. Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Directories to preopen. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeSpec>,
    /// `scheme://host[:port]` URLs the function may call. Default: none (deny).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_outbound_hosts: Vec<String>,
}

impl FunctionSpec {
    /// The image or file; `None` only in a spec that failed validation.
    pub fn source(&self) -> Option<Source<'_>> {
        source(&self.image, &self.file)
    }
}

/// `[service.NAME]`: a long-running Linux image or `wasi:cli` component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// The image reference to pull. Required.
    pub image: String,
    /// Replaces the image's command. Default: the image's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Environment variables. Default: the image's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// A fixed instance count; excludes `min`, `max` and `cpu_target`. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// Autoscaling floor. Default 1 when autoscaling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u32>,
    /// Autoscaling ceiling; required when `min` or `cpu_target` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    /// CPU utilisation to scale on, `"70%"`. Default 70% when autoscaling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_target: Option<Percent>,
    /// CPU request. Default: none reserved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    /// CPU limit. Default: the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<Cpu>,
    /// Memory request. Default: none reserved.
    #[serde(
        default,
        with = "option_byte_size",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory: Option<ByteSize>,
    /// Memory limit. Default: the request.
    #[serde(
        default,
        with = "option_byte_size",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory_limit: Option<ByteSize>,
    /// Ports the service listens on. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// When to restart an exited instance. Default `always`.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// How to tell a ready instance. Default: none (running = ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSpec>,
    /// Expose an HTTP port through the gateway at this path prefix. Default: not exposed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The port `route` goes to. Default: the service's only port (filled in on load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_port: Option<u16>,
    /// Volumes to mount. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeSpec>,
}

/// How many instances of a service run, with the defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceScale {
    Fixed(u32),
    Auto {
        min: u32,
        max: u32,
        cpu_target: Percent,
    },
}

impl ServiceSpec {
    /// `replicas`, or autoscaling between `min` and `max`; `None` only in a spec that failed
    /// validation (autoscaling without `max`).
    pub fn scale(&self) -> Option<ServiceScale> {
        if self.min.is_none() && self.max.is_none() && self.cpu_target.is_none() {
            return Some(ServiceScale::Fixed(self.replicas.unwrap_or(1)));
        }
        Some(ServiceScale::Auto {
            min: self.min.unwrap_or(1),
            max: self.max?,
            cpu_target: self.cpu_target.unwrap_or(Percent(70)),
        })
    }
}

/// `restart = "always" | "on-failure" | "never"`: one type with the scheduler's rule for it.
pub use crate::sched::service::RestartPolicy;

/// `health = { tcp = PORT | http = "/path" | exec = [..], ... }`: exactly one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    /// Ready when this port accepts a TCP connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<u16>,
    /// Ready when a GET of this path answers 2xx or 3xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// The port of the `http` check. Default: the service's only port (filled in on load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Ready when this command, run inside the instance, exits 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<Vec<String>>,
    /// Time between checks. Default 2s.
    #[serde(default = "defaults::health_interval", with = "duration")]
    pub interval: Duration,
    /// Time one check may take. Default 1s.
    #[serde(default = "defaults::health_timeout", with = "duration")]
    pub timeout: Duration,
    /// Failed checks in a row before the instance counts as unhealthy. Default 3.
    #[serde(default = "defaults::health_retries")]
    pub retries: u32,
}

/// `[job.NAME]`: a workload that runs to completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The image reference to pull; exactly one of `image` and `file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A `.wasm` file, relative to the manifest (resolved on load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Replaces the image's command. Default: the image's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Environment variables. Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Runs again after a failure, at most this many times. Default 0.
    #[serde(default)]
    pub retries: u32,
    /// Memory limit. Default: the node's default.
    #[serde(
        default,
        with = "option_byte_size",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory: Option<ByteSize>,
    /// Time limit per run. Default: none.
    #[serde(
        default,
        with = "option_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
}

impl JobSpec {
    /// The image or file; `None` only in a spec that failed validation.
    pub fn source(&self) -> Option<Source<'_>> {
        source(&self.image, &self.file)
    }
}

/// A volume: `NAME:/guest[:ro]` or `./host:/guest[:ro]`, stored and serialized in that form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VolumeSpec {
    pub source: VolumeSource,
    /// Absolute path inside the instance.
    pub guest: String,
    pub read_only: bool,
}

/// What a volume mounts: a named volume the node keeps, or a host directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VolumeSource {
    Named(String),
    /// Relative to the manifest as written; absolute once loaded.
    Host(PathBuf),
}

impl FromStr for VolumeSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let hint = "write NAME:/guest[:ro] or ./host:/guest[:ro]";
        let parts: Vec<&str> = text.split(':').collect();
        let (source, guest, read_only) = match parts[..] {
            [source, guest] => (source, guest, false),
            [source, guest, "ro"] => (source, guest, true),
            [source, guest, "rw"] => (source, guest, false),
            _ => return Err(format!("invalid volume `{text}`; {hint}")),
        };
        if !guest.starts_with('/') {
            return Err(format!(
                "volume `{text}`: the guest path `{guest}` must be absolute; {hint}"
            ));
        }
        let source = if source.starts_with('.') || source.starts_with('/') {
            VolumeSource::Host(PathBuf::from(source))
        } else if super::validate::is_name(source) {
            VolumeSource::Named(source.to_string())
        } else {
            return Err(format!(
                "volume `{text}`: `{source}` is neither a volume name ([a-z0-9-]{{1,63}}) nor a \
                 path starting with ./ or /; {hint}"
            ));
        };
        Ok(VolumeSpec {
            source,
            guest: guest.to_string(),
            read_only,
        })
    }
}

impl fmt::Display for VolumeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            VolumeSource::Named(name) => write!(f, "{name}:{}", self.guest)?,
            VolumeSource::Host(path) => write!(f, "{}:{}", path.display(), self.guest)?,
        }
        if self.read_only {
            f.write_str(":ro")?;
        }
        Ok(())
    }
}

impl Serialize for VolumeSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for VolumeSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

mod defaults {
    use std::time::Duration;

    pub fn one() -> u32 {
        1
    }
    pub fn function_max() -> u32 {
        100
    }
    pub fn function_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn idle() -> Duration {
        Duration::from_secs(30)
    }
    pub fn health_interval() -> Duration {
        Duration::from_secs(2)
    }
    pub fn health_timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub fn health_retries() -> u32 {
        3
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::load::tests::DESIGN_EXAMPLE;

    fn round_trip(app: &AppSpec) -> AppSpec {
        let json = serde_json::to_string(app).unwrap();
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
    }

    #[test]
    fn the_design_example_round_trips_through_json() {
        let app = AppSpec::parse_with(DESIGN_EXAMPLE, Path::new("/srv"), "x", false).unwrap();
        assert_eq!(round_trip(&app), app);
    }

    #[test]
    fn every_field_round_trips_through_json_exactly() {
        let text = r#"
[app]
name = "all"
[function.f]
file = "f.wasm"
route = "/f"
memory = 100001
timeout = "1m 30s 250ms"
idle = 0
volumes = ["/abs:/a:ro", "v:/v"]
[service.s]
image = "s:1"
min = 2
max = 5
cpu_target = 55
cpu = 0.25
cpu_limit = 2
memory = "3GiB"
memory_limit = "3073MiB"
ports = [80, 81]
restart = "on-failure"
health = { http = "/h", port = 81, interval = "1500ms", retries = 1 }
route = "/s"
route_port = 80
[job.j]
image = "j:1"
command = ["migrate", "up"]
env = { A = "1" }
timeout = "2h"
memory = "1k"
"#;
        let app = AppSpec::parse_with(text, Path::new("/srv"), "x", false).unwrap();
        let f = &app.functions["f"];
        assert_eq!(f.memory, Some(ByteSize(100_001)));
        assert_eq!(f.timeout, Duration::from_millis(90_250));
        let s = &app.services["s"];
        assert_eq!((s.cpu, s.cpu_limit), (Some(Cpu(250)), Some(Cpu(2000))));
        assert_eq!(s.restart, RestartPolicy::OnFailure);
        assert_eq!(
            s.scale(),
            Some(ServiceScale::Auto {
                min: 2,
                max: 5,
                cpu_target: Percent(55)
            })
        );
        assert_eq!(round_trip(&app), app);

        let json = serde_json::to_value(&app).unwrap();
        assert_eq!(json["services"]["s"]["memory"], "3GiB");
        assert_eq!(json["services"]["s"]["cpu"], "250m");
        assert_eq!(json["services"]["s"]["restart"], "on-failure");
        assert_eq!(json["functions"]["f"]["timeout"], "1m 30s 250ms");
        assert_eq!(json["functions"]["f"]["volumes"][0], "/abs:/a:ro");
    }

    #[test]
    fn volumes_read_names_and_host_paths() {
        let volume: VolumeSpec = "./static:/static:ro".parse().unwrap();
        assert_eq!(volume.source, VolumeSource::Host(PathBuf::from("./static")));
        assert_eq!((volume.guest.as_str(), volume.read_only), ("/static", true));
        let volume: VolumeSpec = "uploads:/data".parse().unwrap();
        assert_eq!(volume.source, VolumeSource::Named("uploads".into()));
        for bad in ["uploads", "Up_loads:/data", "a:/b:rx", "a:b"] {
            let err = bad.parse::<VolumeSpec>().unwrap_err();
            assert!(err.contains("NAME:/guest[:ro]"), "{err}");
        }
    }
}

//! A Wasm service at deploy: what it cannot do in this version is refused, so nothing is
//! stored (see [`super`]); its image's code is compiled and checked to be a command, and its
//! grants (env, arguments, volumes as preopens) are built once for every instance.

use crate::app::{ServiceSpec, VolumeSource};
use crate::daemon::functions::volume_dir;
use crate::oci::images::ImageRecord;
use crate::oci::local::{ImagesError, LocalImages};
use crate::wasm::capabilities::{Capabilities, Preopen, Stdio};
use crate::wasm::engine::WasmEngine;
use crate::wasm::limits::Limits;
use crate::wasm::{Program, WasmError, WasmKind, command};
use std::path::{Path, PathBuf};

/// Why a Wasm service cannot be deployed; nothing is stored.
#[derive(Debug, thiserror::Error)]
pub enum WasmServiceError {
    #[error(
        "service {workload}: {image} is a Wasm image, and a Wasm service cannot have an exec \
         health check (there is no shell beside it to run a command in); remove `health`: a \
         Wasm instance counts as healthy while it runs"
    )]
    ExecHealth { workload: String, image: String },
    #[error("service {workload}: image {image}: {error}")]
    Image {
        workload: String,
        image: String,
        error: Box<ImagesError>,
    },
    #[error("service {workload}: {error}")]
    Code {
        workload: String,
        error: Box<WasmError>,
    },
    #[error(
        "service {workload}: cannot create volume directory {path}: {error}; check the data \
         dir's permissions"
    )]
    Volume {
        workload: String,
        path: PathBuf,
        error: std::io::Error,
    },
}

/// A Wasm service ready to run: its compiled command and what each instance may touch.
#[derive(Clone)]
pub struct WasmService {
    pub program: Program,
    pub caps: Capabilities,
    pub limits: Limits,
}

/// Checks a Wasm service's spec, compiles its image's code and checks it is a command,
/// creates its named volumes and checks its host ones. Blocking.
pub fn resolve(
    engine: &WasmEngine,
    images: &LocalImages,
    data_dir: &Path,
    app: &str,
    name: &str,
    spec: &ServiceSpec,
    record: &ImageRecord,
) -> Result<WasmService, WasmServiceError> {
    let workload = format!("{app}/{name}");
    check(&workload, spec)?;
    let code = |error| WasmServiceError::Code {
        workload: workload.clone(),
        error: Box::new(error),
    };
    let bytes = images
        .wasm_bytes(record)
        .map_err(|error| WasmServiceError::Image {
            workload: workload.clone(),
            image: spec.image.clone(),
            error: Box::new(error),
        })?;
    let kind = WasmKind::detect(&bytes).ok_or_else(|| {
        code(WasmError::Invalid {
            name: record.name.clone(),
            reason: "its Wasm layer does not start with `\\0asm`".into(),
        })
    })?;
    let program = engine
        .load_bytes(record.name.clone(), kind, &bytes)
        .map_err(code)?;
    command::check(engine, &program).map_err(code)?;
    let caps = capabilities(data_dir, app, name, spec).map_err(|(path, error)| {
        WasmServiceError::Volume {
            workload: workload.clone(),
            path,
            error,
        }
    })?;
    caps.validate().map_err(code)?;
    let limits = Limits {
        memory: spec.memory_limit.or(spec.memory),
        timeout: None,
    };
    Ok(WasmService {
        program,
        caps,
        limits,
    })
}

/// Refuses the keys a Wasm service cannot honour in this version (see the module docs).
pub fn check(workload: &str, spec: &ServiceSpec) -> Result<(), WasmServiceError> {
    let (workload, image) = (workload.to_string(), spec.image.clone());
    if let Some(health) = &spec.health
        && health.http.is_none()
        && health.tcp.is_none()
    {
        return Err(WasmServiceError::ExecHealth { workload, image });
    }
    Ok(())
}

/// env, `command` after argv[0], volumes as preopens (named ones created under
/// `<data>/volumes/<app>/<name>`), stdout and stderr to the daemon's log until each
/// instance gets its own ([`crate::daemon::logs::capture`]); nothing else.
fn capabilities(
    data_dir: &Path,
    app: &str,
    name: &str,
    spec: &ServiceSpec,
) -> Result<Capabilities, (PathBuf, std::io::Error)> {
    let mut preopens = Vec::new();
    for volume in &spec.volumes {
        let host = match &volume.source {
            VolumeSource::Host(path) => path.clone(),
            VolumeSource::Named(volume) => {
                let path = volume_dir(data_dir, app, volume);
                std::fs::create_dir_all(&path).map_err(|error| (path.clone(), error))?;
                path
            }
        };
        preopens.push(Preopen {
            host,
            guest: volume.guest.clone(),
            read_only: volume.read_only,
        });
    }
    Ok(Capabilities {
        args: std::iter::once(name.to_string())
            .chain(spec.command.iter().cloned())
            .collect(),
        env: spec.env.clone().into_iter().collect(),
        preopens,
        stdio: Stdio::Log,
        outbound: Default::default(),
        listen: spec.ports.clone(),
        // Each instance's own address, given when it starts.
        listen_on: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(toml: &str) -> ServiceSpec {
        toml::from_str(&format!("image = \"w:1\"\n{toml}")).unwrap()
    }

    fn refused(toml: &str) -> String {
        check("shop/worker", &service(toml))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_plain_command_service_passes() {
        let spec = service(
            "replicas = 2\nmemory = \"64MiB\"\ncpu = \"250m\"\nrestart = \"on-failure\"\n\
             env = { A = \"1\" }\ncommand = [\"--serve\"]",
        );
        check("shop/worker", &spec).unwrap();
    }

    #[test]
    fn cpu_limits_autoscaling_and_replicas_pass_with_ports_or_without() {
        for toml in [
            "cpu = \"100m\"\ncpu_limit = \"200m\"",
            "cpu = \"100m\"\ncpu_target = \"50%\"\nmin = 1\nmax = 3",
            "ports = [8080]\ncpu_limit = 1",
            "ports = [8080]\nreplicas = 3",
            "ports = [8080]\ncpu = \"100m\"\ncpu_target = \"50%\"\nmin = 1\nmax = 3",
        ] {
            check("shop/worker", &service(toml)).unwrap_or_else(|e| panic!("{toml}: {e}"));
        }
    }

    #[test]
    fn ports_routes_and_network_checks_pass_and_grant_the_ports() {
        for toml in [
            "ports = [8080]\nroute = \"/w\"",
            "ports = [8080]\nhealth = { http = \"/h\", port = 8080 }",
            "ports = [8080]\nhealth = { tcp = 8080 }\nreplicas = 1",
        ] {
            check("shop/worker", &service(toml)).unwrap_or_else(|e| panic!("{toml}: {e}"));
        }
        let data = tempfile::tempdir().unwrap();
        let spec = service("ports = [8080, 9090]");
        let caps = capabilities(data.path(), "shop", "worker", &spec).unwrap();
        assert_eq!(caps.listen, [8080, 9090]);
        let none = capabilities(data.path(), "shop", "worker", &service("")).unwrap();
        assert!(none.listen.is_empty(), "no ports, no sockets");
    }

    #[test]
    fn exec_checks_are_refused() {
        let message = refused("health = { exec = [\"true\"] }");
        assert!(message.contains("exec health check"), "{message}");
        assert!(message.contains("remove `health`"), "{message}");
    }
}

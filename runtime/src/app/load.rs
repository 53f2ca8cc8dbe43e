//! Reading `skiff.toml` into an [`AppSpec`]: parse, resolve paths, validate.
//!
//! Parse errors name `file:line:column`, converted from the byte span toml reports; relative
//! paths are resolved against the manifest's directory; then every rule is checked at once, so
//! a spec that comes out of [`AppSpec::load`] is ready to store and to schedule. This is the
//! only I/O of the app module: reading the manifest and checking that its files exist.

use super::manifest::{AppSpec, FunctionSpec, JobSpec, ServiceSpec, VolumeSource, VolumeSpec};
use super::validate::Problem;
use serde::Deserialize;
use std::{
    collections::BTreeMap,
    io,
    path::{Component, Path, PathBuf},
};

pub type Result<T, E = ManifestError> = std::result::Result<T, E>;

/// Why a manifest could not be read, parsed or accepted.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read app manifest {path}: {error}; check the path given to `skiff deploy -f`")]
    Read { path: PathBuf, error: io::Error },

    #[error("{file}:{line}:{column}: {message}")]
    Parse {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },

    #[error("{}", invalid_message(file, problems))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

fn invalid_message(file: &str, problems: &[Problem]) -> String {
    match problems {
        [one] => format!("{file}: {one}"),
        many => {
            let mut text = format!(
                "{file}: {} problems; fix them and deploy again:",
                many.len()
            );
            for problem in many {
                text.push_str(&format!("\n  {problem}"));
            }
            text
        }
    }
}

/// The file as written: `[app]` plus one table per workload kind.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestDocument {
    app: AppTable,
    #[serde(default)]
    function: BTreeMap<String, FunctionSpec>,
    #[serde(default)]
    service: BTreeMap<String, ServiceSpec>,
    #[serde(default)]
    job: BTreeMap<String, JobSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppTable {
    name: String,
}

impl AppSpec {
    /// Reads, resolves and validates the manifest at `path`, checking that files exist.
    pub fn load(path: &Path) -> Result<AppSpec> {
        let text = std::fs::read_to_string(path).map_err(|error| ManifestError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let base_dir = path.parent().unwrap_or(Path::new("."));
        AppSpec::parse(&text, base_dir, &path.display().to_string())
    }

    /// Parses manifest text whose relative paths are relative to `base_dir`; `file` names the
    /// manifest in messages. Checks that referenced files exist.
    pub fn parse(text: &str, base_dir: &Path, file: &str) -> Result<AppSpec> {
        AppSpec::parse_with(text, base_dir, file, true)
    }

    /// [`AppSpec::parse`], with the check that `file = ...` paths exist made optional (for
    /// manifests read where their files are not, such as a CLI on another machine).
    pub fn parse_with(
        text: &str,
        base_dir: &Path,
        file: &str,
        check_files: bool,
    ) -> Result<AppSpec> {
        let document: ManifestDocument =
            toml::from_str(text).map_err(|error| parse_error(text, file, &error))?;
        let mut app = AppSpec {
            name: document.app.name,
            functions: document.function,
            services: document.service,
            jobs: document.job,
        };
        app.resolve(base_dir);
        app.validate(check_files)
            .map_err(|problems| ManifestError::Invalid {
                file: file.to_string(),
                problems,
            })?;
        Ok(app)
    }

    /// Makes relative paths absolute against `base_dir` and fills the ports a service's route
    /// and HTTP health check default to, so the stored spec says everything it means.
    fn resolve(&mut self, base_dir: &Path) {
        let resolve_volumes = |volumes: &mut Vec<VolumeSpec>| {
            for volume in volumes {
                if let VolumeSource::Host(path) = &mut volume.source {
                    *path = resolve_path(base_dir, path);
                }
            }
        };
        for function in self.functions.values_mut() {
            if let Some(file) = &mut function.file {
                *file = resolve_path(base_dir, file);
            }
            resolve_volumes(&mut function.volumes);
        }
        for job in self.jobs.values_mut() {
            if let Some(file) = &mut job.file {
                *file = resolve_path(base_dir, file);
            }
        }
        for service in self.services.values_mut() {
            resolve_volumes(&mut service.volumes);
            let only_port = match service.ports[..] {
                [port] => Some(port),
                _ => None,
            };
            if service.route.is_some() && service.route_port.is_none() {
                service.route_port = only_port;
            }
            if let Some(health) = &mut service.health
                && health.http.is_some()
                && health.port.is_none()
            {
                health.port = only_port;
            }
        }
    }
}

/// `base_dir/path` without `.` components; absolute paths stay as they are.
fn resolve_path(base_dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    let mut resolved = base_dir.to_path_buf();
    resolved.extend(path.components().filter(|c| *c != Component::CurDir));
    resolved
}

/// Turns toml's error into `file:line:column: message; what to do`.
fn parse_error(text: &str, file: &str, error: &toml::de::Error) -> ManifestError {
    let (line, column) = match error.span() {
        Some(span) => line_column(text, span.start),
        None => (1, 1),
    };
    let message = error.message().trim_end().trim_end_matches('.');
    let hint = if message.starts_with("unknown field") {
        "; check the key's spelling"
    } else if message.starts_with("missing field") {
        "; add it to the table"
    } else if message.starts_with("invalid type") || message.starts_with("invalid value") {
        "; write a value of the expected type"
    } else {
        ""
    };
    ManifestError::Parse {
        file: file.to_string(),
        line,
        column,
        message: format!("{message}{hint}"),
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    (line, before[line_start..].chars().count() + 1)
}

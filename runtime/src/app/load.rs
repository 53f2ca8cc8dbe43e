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
    } else if message.starts_with("duplicate key") {
        "; each table and key may appear once, so remove or rename this one"
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::app::{Cpu, RestartPolicy, ServiceScale, Source};
    use crate::units::ByteSize;
    use std::time::Duration;

    /// design.md's example, verbatim.
    pub(in crate::app) const DESIGN_EXAMPLE: &str = r#"
[app]
name = "shop"                          # [a-z0-9-]{1,63}

[function.api]                         # a Wasm HTTP handler (wasi:http component or WAGI module)
image = "localhost:5000/shop/api:1.2"  # or: file = "build/api.wasm"
route = "/api"                         # path prefix; the guest sees the full path
host = "shop.local"                    # optional: match the Host header too
min = 0                                # warm instances kept; 0 = scale to zero
max = 100                              # instances at most (admission beyond: queue, then 503)
concurrency = 1                        # requests per instance; 1 = a fresh instance per request
memory = "64MiB"
timeout = "10s"
idle = "30s"                           # idle window before warm instances are dropped
env = { LOG_LEVEL = "info" }
volumes = ["uploads:/data", "./static:/static:ro"]   # NAME or HOST path : guest path [:ro]
allowed_outbound_hosts = ["http://cache:6379"]       # deny by default

[service.cache]                        # long-running: a Linux image or a wasi:cli component
image = "localhost:5000/redis:7"
command = ["redis-server", "--save", ""]
replicas = 1                           # or min/max with cpu_target = "70%"
cpu = "500m"                           # request (limit: cpu_limit, default = request)
memory = "128MiB"
ports = [6379]
restart = "always"                     # always | on-failure | never
health = { tcp = 6379, interval = "2s", timeout = "1s", retries = 3 }
                                       # or http = "/healthz" (with port) or exec = ["cmd", ...]
route = "/cache"                       # optional: expose an HTTP port through the gateway

[job.migrate]                          # run to completion
image = "localhost:5000/shop/migrate:1.2"
retries = 3
"#;

    fn parse(text: &str) -> Result<AppSpec> {
        AppSpec::parse_with(text, Path::new("/srv/shop"), "skiff.toml", false)
    }

    #[test]
    fn the_design_example_parses() {
        let app = parse(DESIGN_EXAMPLE).unwrap();
        assert_eq!(app.name, "shop");
        let api = &app.functions["api"];
        assert_eq!(
            api.source(),
            Some(Source::Image("localhost:5000/shop/api:1.2"))
        );
        assert_eq!(api.host.as_deref(), Some("shop.local"));
        assert_eq!(api.memory, Some(ByteSize::mib(64)));
        assert_eq!(api.timeout, Duration::from_secs(10));
        assert_eq!(api.env["LOG_LEVEL"], "info");
        assert_eq!(
            api.volumes[1].source,
            VolumeSource::Host(PathBuf::from("/srv/shop/static")),
            "host paths are resolved against the manifest's directory"
        );
        assert!(api.volumes[1].read_only);
        assert_eq!(api.volumes[0].to_string(), "uploads:/data");

        let cache = &app.services["cache"];
        assert_eq!(cache.scale(), Some(ServiceScale::Fixed(1)));
        assert_eq!(cache.cpu, Some(Cpu(500)));
        assert_eq!(cache.command, ["redis-server", "--save", ""]);
        assert_eq!(cache.route_port, Some(6379), "the only port is the route's");
        assert_eq!(cache.health.as_ref().unwrap().tcp, Some(6379));

        assert_eq!(app.jobs["migrate"].retries, 3);
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let app = parse(
            r#"
[app]
name = "d"
[function.f]
image = "f:1"
route = "/"
[service.s]
image = "s:1"
ports = [80, 81]
health = { http = "/healthz", port = 81 }
[job.j]
image = "j:1"
"#,
        )
        .unwrap();
        let f = &app.functions["f"];
        assert_eq!((f.min, f.max, f.concurrency), (0, 100, 1));
        assert_eq!(f.idle, Duration::from_secs(30));
        assert_eq!(f.timeout, Duration::from_secs(60));
        assert_eq!((f.memory, f.host.as_ref()), (None, None));
        let s = &app.services["s"];
        assert_eq!(s.restart, RestartPolicy::Always);
        assert_eq!(s.scale(), Some(ServiceScale::Fixed(1)));
        let health = s.health.as_ref().unwrap();
        assert_eq!(health.interval, Duration::from_secs(2));
        assert_eq!(health.timeout, Duration::from_secs(1));
        assert_eq!(health.retries, 3);
        let j = &app.jobs["j"];
        assert_eq!((j.retries, j.timeout), (0, None));
    }

    #[test]
    fn an_unknown_key_names_its_line_and_column() {
        let text =
            "[app]\nname = \"shop\"\n\n[function.api]\nroute = \"/api\"\n\n  imag = \"x:1\"\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "skiff.toml:7:3: unknown field `imag`, expected one of `image`, `file`"
            ),
            "{err}"
        );
        assert!(err.ends_with("; check the key's spelling"), "{err}");
    }

    #[test]
    fn a_bad_value_names_its_line_and_says_how_to_write_it() {
        let text = "[app]\nname = \"shop\"\n[job.j]\nimage = \"j:1\"\nmemory = \"lots\"\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(
            err.starts_with("skiff.toml:5:10: invalid size `lots`"),
            "{err}"
        );
        assert!(err.contains("64MiB"), "{err}");

        let text = "[app]\nname = \"shop\"\n[service.s]\nimage = \"s:1\"\nports = [70000]\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.starts_with("skiff.toml:5:"), "{err}");
        assert!(err.contains("70000"), "{err}");

        let text = "[app]\nname = \"a\"\n[function.f]\nimage = \"f:1\"\nroute = \"/\"\nvolumes = [\"data:data\"]\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.starts_with("skiff.toml:6:"), "{err}");
        assert!(err.contains("guest path `data` must be absolute"), "{err}");
    }

    #[test]
    fn a_missing_table_or_key_says_to_add_it() {
        let err = parse("[function.f]\nimage = \"f:1\"\nroute = \"/\"\n").unwrap_err();
        assert!(err.to_string().contains("missing field `app`"), "{err}");
        let err = parse("[app]\nname = \"a\"\n[function.f]\nimage = \"f:1\"\n").unwrap_err();
        assert!(
            err.to_string().contains("missing field `route`; add it"),
            "{err}"
        );
    }

    #[test]
    fn files_are_resolved_against_the_manifest_and_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("build")).unwrap();
        std::fs::write(dir.path().join("build/api.wasm"), b"\0asm").unwrap();
        let manifest = dir.path().join("skiff.toml");
        let text =
            "[app]\nname = \"a\"\n[function.api]\nfile = \"./build/api.wasm\"\nroute = \"/\"\n";
        std::fs::write(&manifest, text).unwrap();
        let app = AppSpec::load(&manifest).unwrap();
        assert_eq!(
            app.functions["api"].file.as_deref(),
            Some(dir.path().join("build/api.wasm").as_path())
        );

        std::fs::write(&manifest, text.replace("api.wasm", "gone.wasm")).unwrap();
        let err = AppSpec::load(&manifest).unwrap_err().to_string();
        assert!(err.contains("[function.api] file: "), "{err}");
        assert!(
            err.contains("build/gone.wasm does not exist; build it"),
            "{err}"
        );
        assert!(err.starts_with(&manifest.display().to_string()), "{err}");
    }

    #[test]
    fn an_unreadable_manifest_says_which_path() {
        let err = AppSpec::load(Path::new("/nonexistent/skiff.toml")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("cannot read app manifest /nonexistent/skiff.toml"),
            "{text}"
        );
        assert!(matches!(err, ManifestError::Read { .. }));
    }

    #[test]
    fn the_shop_sample_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/apps/shop/skiff.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let app = AppSpec::parse_with(&text, path.parent().unwrap(), "skiff.toml", false).unwrap();
        let Some(Source::File(file)) = app.functions["api"].source() else {
            panic!("the sample's api function runs a file");
        };
        assert!(file.ends_with("target/wasm32-wasip2/release/http_hello.wasm"));
        assert_eq!(app.services.len(), 1);
        assert_eq!(app.jobs.len(), 1);
    }

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("é\nx", 3), (2, 1));
        assert_eq!(line_column("éx", 2), (1, 2));
    }
}

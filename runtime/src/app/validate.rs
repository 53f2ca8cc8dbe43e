//! Validation of an [`AppSpec`]: every rule the manifest format states, all problems at once.
//!
//! It runs after parsing and path resolution, before anything is stored or started
//! ("validate before binding"). Each [`Problem`] names its table and key and says what to do.
//! Shapes serde already enforces (types, unknown keys, size and volume syntax) are parse
//! errors with a line and column instead; this module checks what spans keys and tables.

use super::manifest::{AppSpec, FunctionSpec, JobSpec, ServiceSpec, WorkloadKind};
use std::{collections::BTreeMap, fmt, path::Path};

/// One broken rule: `[function.api] route: ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The TOML table: `app`, `function.api`, `service.cache.health`.
    pub table: String,
    /// The key within it, when one key is at fault.
    pub key: Option<&'static str>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key {
            Some(key) => write!(f, "[{}] {key}: {}", self.table, self.message),
            None => write!(f, "[{}] {}", self.table, self.message),
        }
    }
}

/// Whether `name` matches `[a-z0-9-]{1,63}`, the rule for app, workload and volume names.
pub fn is_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl AppSpec {
    /// Checks every rule, returning all problems found. With `check_files`, `file = ...`
    /// paths (already resolved against the manifest's directory) must exist.
    pub fn validate(&self, check_files: bool) -> Result<(), Vec<Problem>> {
        let mut check = Checker {
            problems: Vec::new(),
            check_files,
        };
        if !is_name(&self.name) {
            check.report("app", Some("name"), name_message(&self.name));
        }
        if self.functions.is_empty() && self.services.is_empty() && self.jobs.is_empty() {
            check.report(
                "app",
                None,
                "has no workloads; add a [function.NAME], [service.NAME] or [job.NAME] table",
            );
        }
        check.unique_names(self);
        for (name, function) in &self.functions {
            check.function(&table(WorkloadKind::Function, name), name, function);
        }
        for (name, service) in &self.services {
            check.service(&table(WorkloadKind::Service, name), name, service);
        }
        for (name, job) in &self.jobs {
            check.job(&table(WorkloadKind::Job, name), name, job);
        }
        check.unique_routes(self);
        match check.problems.is_empty() {
            true => Ok(()),
            false => Err(check.problems),
        }
    }
}

fn table(kind: WorkloadKind, name: &str) -> String {
    format!("{kind}.{name}")
}

fn name_message(name: &str) -> String {
    format!(
        "`{name}` is not a valid name; use 1 to 63 lowercase letters, digits and dashes \
         ([a-z0-9-]{{1,63}})"
    )
}

struct Checker {
    problems: Vec<Problem>,
    check_files: bool,
}

impl Checker {
    fn report(&mut self, table: &str, key: Option<&'static str>, message: impl Into<String>) {
        self.problems.push(Problem {
            table: table.to_string(),
            key,
            message: message.into(),
        });
    }

    /// Workloads reach each other by name, so a name may be used by one workload only.
    fn unique_names(&mut self, app: &AppSpec) {
        let mut seen: BTreeMap<&str, WorkloadKind> = BTreeMap::new();
        let names = (app.functions.keys().map(|n| (WorkloadKind::Function, n)))
            .chain(app.services.keys().map(|n| (WorkloadKind::Service, n)))
            .chain(app.jobs.keys().map(|n| (WorkloadKind::Job, n)));
        for (kind, name) in names {
            if let Some(first) = seen.insert(name, kind) {
                self.report(
                    &table(kind, name),
                    None,
                    format!(
                        "the name `{name}` is also used by {first}.{name}; workloads reach each \
                         other by name, so rename one of them"
                    ),
                );
            }
        }
    }

    fn workload_name(&mut self, table: &str, name: &str) {
        if !is_name(name) {
            self.report(table, None, name_message(name));
        }
    }

    fn source(&mut self, table: &str, image: Option<&String>, file: Option<&Path>) {
        match (image, file) {
            (Some(_), Some(_)) => {
                self.report(table, Some("image"), "set either image or file, not both")
            }
            (None, None) => self.report(
                table,
                None,
                "says nothing to run; set image = \"REF\" or file = \"path/to.wasm\"",
            ),
            (Some(image), None) if image.trim().is_empty() => {
                self.report(table, Some("image"), "is empty; write an image reference")
            }
            (None, Some(file)) if self.check_files && !file.is_file() => self.report(
                table,
                Some("file"),
                format!(
                    "{} does not exist; build it or fix the path (relative paths start at the \
                     manifest's directory)",
                    file.display()
                ),
            ),
            _ => {}
        }
    }

    fn route(&mut self, table: &str, route: &str) {
        if !route.starts_with('/') {
            self.report(
                table,
                Some("route"),
                format!("`{route}` must start with `/`; write `/{route}`"),
            );
        }
    }

    fn function(&mut self, table: &str, name: &str, function: &FunctionSpec) {
        self.workload_name(table, name);
        self.source(table, function.image.as_ref(), function.file.as_deref());
        self.route(table, &function.route);
        if function.max < 1 {
            self.report(table, Some("max"), "must be at least 1; raise max");
        }
        if function.min > function.max {
            self.report(
                table,
                Some("min"),
                format!(
                    "{} is above max ({}); lower min or raise max",
                    function.min, function.max
                ),
            );
        }
        if function.concurrency < 1 {
            self.report(
                table,
                Some("concurrency"),
                "must be at least 1 (1 = a fresh instance per request)",
            );
        }
        for host in &function.allowed_outbound_hosts {
            if let Err(why) = outbound_host(host) {
                self.report(
                    table,
                    Some("allowed_outbound_hosts"),
                    format!(
                        "`{host}` {why}; write scheme://host[:port], such as http://cache:6379"
                    ),
                );
            }
        }
    }

    fn service(&mut self, table: &str, name: &str, service: &ServiceSpec) {
        self.workload_name(table, name);
        if service.image.trim().is_empty() {
            self.report(table, Some("image"), "is empty; write an image reference");
        }
        self.service_scale(table, service);
        if service.ports.contains(&0) {
            self.report(table, Some("ports"), "port 0 is not a port; use 1 to 65535");
        }
        if let (Some(cpu), Some(limit)) = (service.cpu, service.cpu_limit)
            && limit < cpu
        {
            self.report(
                table,
                Some("cpu_limit"),
                format!("{limit} is below the request cpu = {cpu}; raise cpu_limit"),
            );
        }
        if let (Some(memory), Some(limit)) = (service.memory, service.memory_limit)
            && limit < memory
        {
            self.report(
                table,
                Some("memory_limit"),
                format!("{limit} is below the request memory = {memory}; raise memory_limit"),
            );
        }
        if let Some(route) = &service.route {
            self.route(table, route);
            match service.route_port {
                None => self.report(
                    table,
                    Some("route_port"),
                    format!(
                        "the service has {} ports, so route needs route_port = PORT",
                        service.ports.len()
                    ),
                ),
                Some(port) if !service.ports.contains(&port) => self.report(
                    table,
                    Some("route_port"),
                    format!("{port} is not one of the service's ports; add it to ports"),
                ),
                Some(_) => {}
            }
        }
        self.health(&format!("{table}.health"), service);
    }

    fn service_scale(&mut self, table: &str, service: &ServiceSpec) {
        let autoscale =
            service.min.is_some() || service.max.is_some() || service.cpu_target.is_some();
        if service.replicas.is_some() && autoscale {
            self.report(
                table,
                Some("replicas"),
                "cannot be combined with min, max or cpu_target; use replicas for a fixed count \
                 or min, max and cpu_target to autoscale",
            );
            return;
        }
        if !autoscale {
            return;
        }
        let min = service.min.unwrap_or(1);
        match service.max {
            None => self.report(
                table,
                Some("max"),
                "is required to autoscale; add max = N, or use replicas = N",
            ),
            Some(0) => self.report(table, Some("max"), "must be at least 1; raise max"),
            Some(max) if max < min => self.report(
                table,
                Some("max"),
                format!("{max} is below min ({min}); raise max"),
            ),
            Some(_) => {}
        }
        if let Some(target) = service.cpu_target
            && !(1..=100).contains(&target.0)
        {
            self.report(
                table,
                Some("cpu_target"),
                format!("{target} is out of range; use 1% to 100%"),
            );
        }
    }

    fn health(&mut self, table: &str, service: &ServiceSpec) {
        let Some(health) = &service.health else {
            return;
        };
        let checks = [
            health.tcp.is_some(),
            health.http.is_some(),
            health.exec.is_some(),
        ];
        if checks.iter().filter(|set| **set).count() != 1 {
            self.report(
                table,
                None,
                "needs exactly one of tcp = PORT, http = \"/path\" or exec = [\"cmd\", ...]",
            );
        }
        if health.tcp == Some(0) || health.port == Some(0) {
            self.report(table, None, "port 0 is not a port; use 1 to 65535");
        }
        if let Some(path) = &health.http {
            if !path.starts_with('/') {
                self.report(
                    table,
                    Some("http"),
                    format!("`{path}` must start with `/`; write `/{path}`"),
                );
            }
            if health.port.is_none() {
                self.report(
                    table,
                    Some("port"),
                    format!(
                        "the service has {} ports, so an http check needs port = PORT",
                        service.ports.len()
                    ),
                );
            }
        }
        if let Some([]) = health.exec.as_deref() {
            self.report(table, Some("exec"), "is empty; write the command to run");
        }
    }

    fn job(&mut self, table: &str, name: &str, job: &JobSpec) {
        self.workload_name(table, name);
        self.source(table, job.image.as_ref(), job.file.as_deref());
    }

    /// The gateway routes by (host, path prefix); two workloads may not claim the same pair.
    fn unique_routes(&mut self, app: &AppSpec) {
        let mut seen: BTreeMap<(Option<&str>, &str), String> = BTreeMap::new();
        let routes =
            (app.functions.iter())
                .map(|(name, f)| {
                    let table = table(WorkloadKind::Function, name);
                    (table, f.host.as_deref(), Some(f.route.as_str()))
                })
                .chain(app.services.iter().map(|(name, s)| {
                    (table(WorkloadKind::Service, name), None, s.route.as_deref())
                }));
        for (table, host, route) in routes {
            let Some(route) = route else { continue };
            if let Some(first) = seen.insert((host, route), table.clone()) {
                let on = host.map_or("any host".to_string(), |h| format!("host {h}"));
                self.report(
                    &table,
                    Some("route"),
                    format!(
                        "`{route}` on {on} is also the route of {first}; give each workload its \
                         own route or host"
                    ),
                );
            }
        }
    }
}

/// Checks a `scheme://host[:port]` URL; the error completes "`URL` ...".
fn outbound_host(text: &str) -> Result<(), &'static str> {
    let uri: http::Uri = text.parse().map_err(|_| "is not a URL")?;
    if uri.scheme().is_none() || uri.authority().is_none() {
        return Err("needs a scheme and a host");
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("needs a host");
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("must not carry credentials");
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err("must not have a path or query");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::app::{AppSpec, ManifestError};
    use std::path::Path;

    /// The problems of `text`, as their messages (files are not checked).
    fn problems(text: &str) -> Vec<String> {
        match AppSpec::parse_with(text, Path::new("/srv/a"), "skiff.toml", false) {
            Err(ManifestError::Invalid { problems, .. }) => {
                problems.iter().map(ToString::to_string).collect()
            }
            other => panic!("expected problems, got {other:?}"),
        }
    }

    /// Asserts `text` has exactly one problem, starting with `expected`.
    fn assert_problem(text: &str, expected: &str) {
        let found = problems(text);
        assert!(
            found.len() == 1 && found[0].starts_with(expected),
            "expected `{expected}`, found {found:#?}"
        );
    }

    const APP: &str = "[app]\nname = \"a\"\n";

    fn function(body: &str) -> String {
        format!("{APP}[function.f]\nimage = \"f:1\"\nroute = \"/f\"\n{body}\n")
    }

    fn service(body: &str) -> String {
        format!("{APP}[service.s]\nimage = \"s:1\"\n{body}\n")
    }

    #[test]
    fn names() {
        assert_problem(
            &function("").replace("name = \"a\"", "name = \"Shop_1\""),
            "[app] name: `Shop_1` is not a valid name; use 1 to 63 lowercase letters",
        );
        assert_problem(
            &function("").replace("[function.f]", "[function.Api]"),
            "[function.Api] `Api` is not a valid name",
        );
        assert_problem(APP, "[app] has no workloads; add a [function.NAME]");
        assert_problem(
            &function("[job.f]\nimage = \"j:1\""),
            "[job.f] the name `f` is also used by function.f; workloads reach each other by name",
        );
    }

    #[test]
    fn exactly_one_of_image_and_file() {
        assert_problem(
            &function("file = \"f.wasm\""),
            "[function.f] image: set either image or file, not both",
        );
        assert_problem(
            &format!("{APP}[job.j]\nretries = 1\n"),
            "[job.j] says nothing to run; set image = \"REF\" or file = \"path/to.wasm\"",
        );
        assert_problem(
            &service("").replace("\"s:1\"", "\" \""),
            "[service.s] image: is empty",
        );
    }

    #[test]
    fn function_scaling() {
        assert_problem(
            &function("min = 5\nmax = 2"),
            "[function.f] min: 5 is above max (2); lower min or raise max",
        );
        assert_problem(&function("max = 0"), "[function.f] max: must be at least 1");
        assert_problem(
            &function("concurrency = 0"),
            "[function.f] concurrency: must be at least 1",
        );
    }

    #[test]
    fn routes_start_with_a_slash_and_are_not_shared() {
        assert_problem(
            &function("").replace("\"/f\"", "\"api\""),
            "[function.f] route: `api` must start with `/`; write `/api`",
        );
        let twice = function("[function.g]\nimage = \"g:1\"\nroute = \"/f\"");
        assert_problem(
            &twice,
            "[function.g] route: `/f` on any host is also the route of function.f",
        );
        let hosts = function("host = \"a.local\"\n[function.g]\nimage = \"g:1\"\nroute = \"/f\"");
        assert!(AppSpec::parse_with(&hosts, Path::new("/"), "x", false).is_ok());
        assert_problem(
            &function("[service.s]\nimage = \"s:1\"\nports = [80]\nroute = \"/f\""),
            "[service.s] route: `/f` on any host is also the route of function.f",
        );
    }

    #[test]
    fn service_scaling() {
        assert_problem(
            &service("replicas = 2\nmin = 1\nmax = 3"),
            "[service.s] replicas: cannot be combined with min, max or cpu_target",
        );
        assert_problem(
            &service("cpu_target = \"70%\""),
            "[service.s] max: is required to autoscale",
        );
        assert_problem(
            &service("min = 3\nmax = 2"),
            "[service.s] max: 2 is below min (3); raise max",
        );
        for target in ["0%", "150%"] {
            assert_problem(
                &service(&format!("max = 3\ncpu_target = \"{target}\"")),
                &format!("[service.s] cpu_target: {target} is out of range; use 1% to 100%"),
            );
        }
    }

    #[test]
    fn service_resources_and_ports() {
        assert_problem(
            &service("ports = [0]"),
            "[service.s] ports: port 0 is not a port",
        );
        assert_problem(
            &service("cpu = \"1\"\ncpu_limit = \"500m\""),
            "[service.s] cpu_limit: 500m is below the request cpu = 1000m; raise cpu_limit",
        );
        assert_problem(
            &service("memory = \"1GiB\"\nmemory_limit = \"512MiB\""),
            "[service.s] memory_limit: 512 MiB is below the request memory = 1 GiB",
        );
        assert_problem(
            &service("ports = [80, 81]\nroute = \"/s\""),
            "[service.s] route_port: the service has 2 ports, so route needs route_port = PORT",
        );
        assert_problem(
            &service("ports = [80]\nroute = \"/s\"\nroute_port = 81"),
            "[service.s] route_port: 81 is not one of the service's ports; add it to ports",
        );
    }

    #[test]
    fn health_checks() {
        assert_problem(
            &service("ports = [80, 81]\nhealth = { http = \"/healthz\" }"),
            "[service.s.health] port: the service has 2 ports, so an http check needs port = PORT",
        );
        assert!(
            problems(&service("health = { interval = \"1s\" }"))[0]
                .starts_with("[service.s.health] needs exactly one of tcp = PORT, http")
        );
        assert!(
            problems(&service("health = { tcp = 80, exec = [\"true\"] }"))[0]
                .starts_with("[service.s.health] needs exactly one of")
        );
        assert_problem(
            &service("ports = [80]\nhealth = { http = \"healthz\" }"),
            "[service.s.health] http: `healthz` must start with `/`",
        );
        assert_problem(
            &service("health = { exec = [] }"),
            "[service.s.health] exec: is empty",
        );
    }

    #[test]
    fn outbound_hosts_are_scheme_host_port_urls() {
        for (host, why) in [
            ("cache:6379", "needs a scheme and a host"),
            ("http://cache:6379/db", "must not have a path or query"),
            ("http://user:pw@cache", "must not carry credentials"),
            ("not a url", "is not a URL"),
        ] {
            assert_problem(
                &function(&format!("allowed_outbound_hosts = [\"{host}\"]")),
                &format!("[function.f] allowed_outbound_hosts: `{host}` {why}; write scheme://"),
            );
        }
        let fine = function("allowed_outbound_hosts = [\"http://cache:6379\", \"https://x.io\"]");
        assert!(AppSpec::parse_with(&fine, Path::new("/"), "x", false).is_ok());
    }

    #[test]
    fn a_deeply_invalid_manifest_reports_every_problem_at_once() {
        let text = r#"
[app]
name = "Bad App"

[function.api]
image = "api:1"
file = "api.wasm"
route = "api"
min = 9
max = 3
concurrency = 0
allowed_outbound_hosts = ["cache"]

[service.db]
image = "db:1"
replicas = 1
cpu_target = "200%"
ports = [0, 80]
health = { http = "/ok" }
"#;
        let err = AppSpec::parse_with(text, Path::new("/"), "app.toml", false).unwrap_err();
        let ManifestError::Invalid { problems, .. } = &err else {
            panic!("expected problems, got {err:?}");
        };
        let tables_and_keys: Vec<(&str, Option<&str>)> =
            problems.iter().map(|p| (p.table.as_str(), p.key)).collect();
        assert_eq!(
            tables_and_keys,
            [
                ("app", Some("name")),
                ("function.api", Some("image")),
                ("function.api", Some("route")),
                ("function.api", Some("min")),
                ("function.api", Some("concurrency")),
                ("function.api", Some("allowed_outbound_hosts")),
                ("service.db", Some("replicas")),
                ("service.db", Some("ports")),
                ("service.db.health", Some("port")),
            ]
        );
        let text = err.to_string();
        assert!(
            text.starts_with("app.toml: 9 problems; fix them and deploy again:\n  [app] name: "),
            "{text}"
        );
    }
}

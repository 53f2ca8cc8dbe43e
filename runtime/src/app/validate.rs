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
        if service.cpu.is_none() {
            self.report(
                table,
                Some("cpu"),
                "is required to autoscale: CPU use is measured against the request; add \
                 cpu = \"250m\" (what one replica needs), or use replicas = N",
            );
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
mod tests;

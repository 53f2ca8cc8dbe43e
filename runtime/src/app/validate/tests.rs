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
        &service("cpu = \"100m\"\ncpu_target = \"70%\""),
        "[service.s] max: is required to autoscale",
    );
    assert_problem(
        &service("cpu = \"100m\"\nmin = 3\nmax = 2"),
        "[service.s] max: 2 is below min (3); raise max",
    );
    assert_problem(
        &service("min = 1\nmax = 3\ncpu_target = \"50%\""),
        "[service.s] cpu: is required to autoscale: CPU use is measured against the request",
    );
    for target in ["0%", "150%"] {
        assert_problem(
            &service(&format!("cpu = 1\nmax = 3\ncpu_target = \"{target}\"")),
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

//! Outbound HTTP from functions under `skiff serve`: denied by default, allowed to exactly the
//! `scheme://host:port` a function's `allowed_outbound_hosts` names. The upstream is a real
//! `skiff run --listen` server on loopback; the caller is the http-misbehave sample's `/fetch`.

use crate::daemon::{Daemon, client, manifest};
use crate::support::*;

#[test]
fn functions_reach_only_the_hosts_they_are_allowed() {
    let skiff = Skiff::new();
    let upstream_data = Skiff::new();
    let upstream = upstream_data.serve([p2("http_hello")]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(p2("http_misbehave"), dir.path().join("fetch.wasm")).unwrap();
    let allowed = format!("http://127.0.0.1:{}", upstream.addr.port());
    let app = format!(
        "[app]\nname = \"egress\"\n\n\
         [function.allowed]\nfile = \"fetch.wasm\"\nroute = \"/allowed\"\n\
         allowed_outbound_hosts = [\"{allowed}\"]\n\n\
         [function.denied]\nfile = \"fetch.wasm\"\nroute = \"/denied\"\n"
    );
    let file = manifest(dir.path(), "skiff.toml", &app);
    let daemon = Daemon::start(&skiff, &[]);
    client(&skiff, &["deploy", "-f", &file]).expect_code(0);

    let fetch = |route: &str, url: &str| get(daemon.gateway, &format!("{route}/fetch?url={url}"));
    let reply = fetch("/allowed", &format!("{allowed}/hello"));
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.body.starts_with("fetched 200: "), "{}", reply.body);

    // Another port of the same host, and a function with no list: refused in the host.
    let other_port = format!("http://127.0.0.1:{}/hello", upstream.addr.port() ^ 1);
    for (route, url) in [
        ("/allowed", other_port.as_str()),
        ("/allowed", "http://localhost:1/"),
        ("/denied", &format!("{allowed}/hello")),
    ] {
        let reply = fetch(route, url);
        assert_eq!(reply.status, 502, "{route} {url}: {reply:?}");
        assert!(
            reply.body.starts_with("denied: ") && reply.body.contains("HttpRequestDenied"),
            "{route} {url}: {}",
            reply.body
        );
    }
}

#[test]
fn an_outbound_host_that_is_not_a_url_is_refused_at_deploy() {
    let skiff = Skiff::new();
    let dir = tempfile::tempdir().unwrap();
    let app = "[app]\nname = \"egress\"\n\n[function.f]\nfile = \"hello.wasm\"\nroute = \"/f\"\n\
               allowed_outbound_hosts = [\"cache:6379\"]\n";
    let file = manifest(dir.path(), "skiff.toml", app);
    let _daemon = Daemon::start(&skiff, &[]);
    client(&skiff, &["deploy", "-f", &file])
        .expect_code(125)
        .stderr_has("allowed_outbound_hosts")
        .stderr_has("write scheme://host[:port]");
    let apps = client(&skiff, &["apps"]);
    assert!(!apps.stdout.contains("egress"), "{}", apps.stdout);
}

//! Workloads of one app reach its services by name: a busybox job `wget`s `http://cache:6379`
//! (named in its `/etc/hosts`), a Wasm function fetches it through the gateway (resolved by
//! the daemon, still only when allowed), before and after the cache is rolled out, scaled
//! and the daemon restarted; another app's workloads cannot name it; removing the app takes
//! its address off the bridge. `skiff run --add-host` writes `/etc/hosts` too.

use super::*;

/// The app: a `cache` answering `version`, a job that fetches it by name and checks the
/// answer, and a function allowed to call it plus one that is not.
fn shop(version: &str) -> String {
    format!(
        r#"[app]
name = "shop"

[service.cache]
image = "{IMAGE}"
command = ["sh", "-c", "mkdir -p /w && echo {version} > /w/index.html && exec httpd -f -p 6379 -h /w"]
ports = [6379]
health = {{ tcp = 6379, interval = "200ms", retries = 2 }}

[job.probe]
image = "{IMAGE}"
command = ["sh", "-c", "grep -q 'cache.shop' /etc/hosts && wget -qO- http://cache:6379/index.html | grep -qx {version}"]
retries = 6

[function.fetch]
file = "fetch.wasm"
route = "/fetch"
allowed_outbound_hosts = ["http://cache:6379"]

[function.nolist]
file = "fetch.wasm"
route = "/nolist"
"#
    )
}

/// Another app, naming `cache` too: nothing of shop's resolves for it.
const OTHER: &str = r#"[app]
name = "other"

[job.probe]
image = "localhost/skiff/busybox:latest"
command = ["sh", "-c", "! grep -q cache /etc/hosts && ! wget -qO- http://cache:6379/index.html"]

[function.fetch]
file = "fetch.wasm"
route = "/other"
allowed_outbound_hosts = ["http://cache:6379"]
"#;

const FETCH: &str = "fetch?url=http://cache:6379/index.html";

/// Polls `route`'s fetch of the cache (bounded) until it answers `version`.
#[track_caller]
fn wait_fetched(netns: &Netns, serve: &Serve, route: &str, version: &str) {
    let deadline = Instant::now() + WAIT;
    let mut last = (0, String::new());
    while Instant::now() < deadline {
        last = get(netns, serve.gateway, &format!("{route}/{FETCH}"));
        if last.0 == 200 && last.1.contains(version) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{route} never fetched {version} from cache: {last:?}\n{}",
        serve.log()
    );
}

/// Waits (bounded) until `skiff ps` says `workload` succeeded.
#[track_caller]
fn wait_succeeded(linux: &Linux, serve: &Serve, workload: &str) {
    let deadline = Instant::now() + WAIT;
    let mut words = Vec::new();
    while Instant::now() < deadline {
        words = ps_line(&client(linux, &["ps"]), workload);
        if words.get(2).map(String::as_str) == Some("succeeded") {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{workload} did not succeed: {words:?}\n{}", serve.log());
}

/// The service address leased to `owner` (`service:APP/NAME`), if any.
fn leased(linux: &Linux, owner: &str) -> Option<String> {
    let dir = linux.data_dir.path().join("linux/net/leases");
    let entries = std::fs::read_dir(dir).ok()?;
    entries.flatten().find_map(|entry| {
        let held = std::fs::read_to_string(entry.path()).ok()?;
        (held.trim() == owner).then(|| entry.file_name().to_string_lossy().into_owned())
    })
}

/// The IPv4 addresses on the namespace's interfaces, as `ip -4 -o addr` lists them.
fn addresses(netns: &Netns) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.path().display()))
        .args(["--", "ip", "-4", "-o", "addr"])
        .output()
        .expect("running ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn workloads_of_one_app_reach_its_service_by_name() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(p2("http_misbehave"), dir.path().join("fetch.wasm")).unwrap();
    let serve = Serve::start(netns, linux);
    deploy(linux, dir.path(), &shop("v1")).expect_code(0);
    wait_fetched(netns, &serve, "/fetch", "v1");
    wait_succeeded(linux, &serve, "shop/probe");
    let address = leased(linux, "service:shop/cache").expect("cache has an address");
    assert!(
        addresses(netns).contains(&format!("inet {address}/32")),
        "{}",
        addresses(netns)
    );

    // Not in the function's allowed_outbound_hosts: denied, name or not.
    let (status, body) = get(netns, serve.gateway, &format!("/nolist/{FETCH}"));
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("HttpRequestDenied"), "{body}");

    // Another app cannot name shop's cache, from Linux or Wasm.
    let other = tempfile::tempdir().unwrap();
    std::fs::copy(p2("http_misbehave"), other.path().join("fetch.wasm")).unwrap();
    deploy(linux, other.path(), OTHER).expect_code(0);
    wait_succeeded(linux, &serve, "other/probe");
    let (status, body) = get(netns, serve.gateway, &format!("/other/{FETCH}"));
    assert!(status != 200 && !body.contains("v1"), "{status} {body}");

    // Rolled out: the name keeps its address and answers with the new version; the job
    // (changed, so run again) reaches it too.
    deploy(linux, dir.path(), &shop("v2")).expect_code(0);
    wait_fetched(netns, &serve, "/fetch", "v2");
    wait_succeeded(linux, &serve, "shop/probe");
    assert_eq!(leased(linux, "service:shop/cache"), Some(address.clone()));

    // Scaled: still answers, from either replica.
    client(linux, &["scale", "shop/cache=2"]).expect_code(0);
    wait_fetched(netns, &serve, "/fetch", "v2");

    // A restarted daemon listens on the same address again.
    serve.kill();
    let serve = Serve::start(netns, linux);
    wait_fetched(netns, &serve, "/fetch", "v2");
    assert_eq!(leased(linux, "service:shop/cache"), Some(address.clone()));

    // Removing the app releases the address, on the bridge and in the leases.
    client(linux, &["apps", "rm", "shop"]).expect_code(0);
    assert_eq!(leased(linux, "service:shop/cache"), None);
    let after = addresses(netns);
    assert!(!after.contains(&format!("inet {address}/")), "{after}");
    client(linux, &["apps", "rm", "other"]).expect_code(0);
}

#[test]
fn run_add_host_names_an_address_in_etc_hosts_and_a_bad_one_is_refused() {
    let Some(env) = env() else { return };
    let linux = &env.linux;
    let ran = linux.sh(&["--add-host", "cache:10.1.2.3"], "cat /etc/hosts");
    ran.expect_code(0);
    assert!(ran.stdout.contains("10.1.2.3\tcache"), "{}", ran.stdout);
    assert!(
        ran.stdout.contains("127.0.0.1\tlocalhost"),
        "{}",
        ran.stdout
    );

    for bad in ["cache", "ca che:10.1.2.3", "cache:10.1.2"] {
        let ran = linux.sh(&["--add-host", bad], "true");
        assert_ne!(ran.code, 0, "{bad}: {}", ran.stdout);
        assert!(ran.stderr.contains("NAME:IP"), "{bad}: {}", ran.stderr);
    }
    assert!(linux.ids().is_empty(), "nothing was created");
}

#[test]
fn a_service_address_nobody_names_is_released_when_the_daemon_starts() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    // As a daemon that died between removing an app and releasing its address leaves it.
    let leases = linux.data_dir.path().join("linux/net/leases");
    std::fs::create_dir_all(&leases).unwrap();
    std::fs::write(leases.join("10.89.0.200"), "service:gone/cache").unwrap();
    let ip = |args: &[&str]| {
        let status = Command::new("ip")
            .args(["-n", netns.path().file_name().unwrap().to_str().unwrap()])
            .args(args)
            .status()
            .expect("running ip");
        assert!(status.success(), "ip {args:?}");
    };
    ip(&["link", "add", "skiff0", "type", "bridge"]);
    ip(&["addr", "add", "10.89.0.200/32", "dev", "skiff0"]);

    let serve = Serve::start(netns, linux);
    serve.wait_log("unused service address released");
    assert_eq!(leased(linux, "service:gone/cache"), None);
    let after = addresses(netns);
    assert!(!after.contains("10.89.0.200"), "{after}");
}

/// Just the cache, answering `version`.
fn cache_only(version: &str) -> String {
    let shop = shop(version);
    let end = shop
        .find("[job.probe]")
        .expect("the probe follows the cache");
    shop[..end].to_string()
}

#[test]
fn a_rollout_waits_for_a_connection_open_through_the_service_address() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(netns, linux);
    deploy(linux, dir.path(), &cache_only("v1")).expect_code(0);
    serve.wait_log("health check passed");
    let address = leased(linux, "service:shop/cache").expect("cache has an address");

    // Half a request to v1's only instance, through the service address.
    let mut held = netns.enter(move || {
        let mut stream = std::net::TcpStream::connect((address.as_str(), 6379)).unwrap();
        stream.write_all(b"GET /index.html HTTP/1.0\r\n").unwrap();
        stream
    });
    deploy(linux, dir.path(), &cache_only("v2")).expect_code(0);
    serve.wait_log("generation 2 serves all 1 replicas");
    assert!(
        !serve.log().contains("drained and stopped"),
        "v1 stopped under an open connection:\n{}",
        serve.log()
    );

    // The rest of the request: v1 still answers it, then drains.
    held.set_read_timeout(Some(WAIT)).unwrap();
    held.write_all(b"\r\n").unwrap();
    let mut response = String::new();
    held.read_to_string(&mut response).unwrap();
    assert!(response.ends_with("v1\n"), "{response}");
    drop(held);
    serve.wait_log("drained and stopped");
    client(linux, &["apps", "rm", "shop"]).expect_code(0);
}

//! Services and jobs run by `skiff serve`: busybox containers deployed through the control
//! API, reached through the gateway, restarted when they die, adopted again after the daemon's
//! own `kill -9`, and refused (changing nothing) when their image or route is wrong.
//!
//! These need root (they start containers); without it each one says why it is skipped. The
//! daemon runs in a network namespace of the test's own ([`Netns`]), so its bridge and NAT
//! never touch the host; the gateway is reached from inside that namespace. Every container
//! is removed when a test ends, pass or fail (the [`Linux`] guard), and the namespace with it.

use crate::linux::{IMAGE, Linux, Netns, linux};
use crate::support::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest any wait here may take before the test fails with what it waited for.
const WAIT: Duration = Duration::from_secs(60);

/// `skiff serve` in `netns`, logging at info level; its stderr and stdout are collected as
/// they come.
struct Serve {
    child: Child,
    gateway: u16,
    log: Arc<Mutex<String>>,
}

impl Serve {
    fn start(netns: &Netns, linux: &Linux) -> Serve {
        let base = linux.command();
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", netns.path().display()))
            .arg("--")
            .arg(base.get_program())
            .args(base.get_args())
            .args(["serve", "--gateway", "127.0.0.1:0", "--socket"])
            .arg(socket(linux))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in base.get_envs() {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        command.env("SKIFF_LOG", "skiff=info");
        let mut child = command.spawn().expect("spawning skiff serve");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut lines = [String::new(), String::new()];
        for line in &mut lines {
            stdout.read_line(line).expect("reading skiff's stdout");
        }
        let Some(gateway) = lines[1].trim().strip_prefix("gateway on http://127.0.0.1:") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "skiff serve did not start: {lines:?}\n{}",
                log.lock().unwrap()
            );
        };
        // Keep reading: Wasm jobs write to the daemon's stdout, which must stay open.
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Serve {
            gateway: gateway.parse().expect("a port"),
            child,
            log,
        }
    }

    /// Waits (bounded) until the daemon's log has `needle`.
    #[track_caller]
    fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.log.lock().unwrap().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the daemon never logged {needle:?}:\n{}", self.log());
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGKILL, as a crash would.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- skiff serve stderr ---\n{}", self.log());
        }
    }
}

/// A data dir with busybox loaded and a network namespace; the containers are removed first
/// (fields drop in order), then the namespace.
struct Env {
    linux: Linux,
    netns: Netns,
}

fn env() -> Option<Env> {
    let linux = linux()?;
    Some(Env {
        linux,
        netns: Netns::new(),
    })
}

fn socket(linux: &Linux) -> PathBuf {
    linux.data_dir.path().join("run/skiff.sock")
}

/// `skiff ARGS` against the daemon.
fn client(linux: &Linux, args: &[&str]) -> Ran {
    Ran::from(
        linux
            .command()
            .env("SKIFF_SOCKET", socket(linux))
            .args(args)
            .output()
            .expect("spawning skiff"),
    )
}

fn deploy(linux: &Linux, dir: &Path, manifest: &str) -> Ran {
    let path = dir.join("skiff.toml");
    std::fs::write(&path, manifest).expect("writing the manifest");
    client(linux, &["deploy", "-f", path.to_str().unwrap()])
}

/// GET `path` from the gateway, inside the namespace: status and body.
fn get(netns: &Netns, port: u16, path: &str) -> (u16, String) {
    send(
        netns,
        port,
        &format!("GET {path} HTTP/1.0\r\nHost: shop.test\r\n\r\n"),
    )
}

/// Sends a raw HTTP/1.0 request to the gateway, inside the namespace: status and body.
fn send(netns: &Netns, port: u16, request: &str) -> (u16, String) {
    let response = send_raw(netns, port, request);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The raw response, head and body, to a raw request sent inside the namespace.
fn send_raw(netns: &Netns, port: u16, request: &str) -> String {
    let request = request.to_string();
    netns.enter(move || {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connecting");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("reading");
        response
    })
}

/// Polls the gateway (bounded) until `path` answers 200; the body.
#[track_caller]
fn wait_served(netns: &Netns, serve: &Serve, path: &str) -> String {
    let deadline = Instant::now() + WAIT;
    let mut last = (0, String::new());
    while Instant::now() < deadline {
        last = get(netns, serve.gateway, path);
        if last.0 == 200 {
            return last.1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{path} was never served: {last:?}\n{}", serve.log());
}

/// The containers some workload owns: (id, pid).
fn owned(linux: &Linux) -> Vec<(String, i64)> {
    linux
        .ids()
        .into_iter()
        .filter_map(|id| {
            // A container being removed right now has no record any more.
            let path = linux.containers_dir().join(&id).join("state.json");
            let record: serde_json::Value =
                serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
            record.get("owner")?;
            (record["status"] == "running").then(|| (id, record["pid"].as_i64().unwrap_or(0)))
        })
        .collect()
}

/// Waits (bounded) until exactly one owned container runs, other than `not`; its id and pid.
#[track_caller]
fn one_running(linux: &Linux, not: Option<&str>) -> (String, i64) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let running = owned(linux);
        if let [(id, pid)] = running.as_slice()
            && Some(id.as_str()) != not
            && *pid > 0
        {
            return (id.clone(), *pid);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("not exactly one new owned container: {:?}", owned(linux));
}

/// The words of `skiff ps`'s line for `workload` (`app/name`).
#[track_caller]
fn ps_line(ps: &Ran, workload: &str) -> Vec<String> {
    ps.expect_code(0);
    ps.stdout
        .lines()
        .find(|l| l.starts_with(&format!("{workload} ")))
        .unwrap_or_else(|| panic!("{workload} not in skiff ps:\n{}", ps.stdout))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn kill_9(pid: i64) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
}

const WEB: &str = r#"[app]
name = "shop"

[service.web]
image = "localhost/skiff/busybox:latest"
command = ["httpd", "-f", "-p", "80", "-h", "/www"]
ports = [80]
route = "/"
"#;

#[test]
fn a_service_is_served_restarted_and_adopted_after_the_daemons_kill_9() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(netns, linux);
    deploy(linux, dir.path(), WEB)
        .expect_code(0)
        .stdout_has("+ service web (new)");
    assert_eq!(
        wait_served(netns, &serve, "/index.html"),
        "hello from busybox httpd\n"
    );
    let (first, pid) = one_running(linux, None);
    let ps = client(linux, &["ps"]);
    let line = ps_line(&ps, "shop/web");
    assert_eq!(
        &line[..4],
        ["shop/web", "service/linux", "running", "1/1"],
        "{}",
        ps.stdout
    );

    // Its process dies: a new container replaces it, and it is served again.
    kill_9(pid);
    let (second, _) = one_running(linux, Some(&first));
    serve.wait_log("restarting in 1s");
    wait_served(netns, &serve, "/index.html");
    assert!(
        !linux.containers_dir().join(&first).exists(),
        "{first} left"
    );

    // The daemon dies: the container lives on and the next daemon adopts it.
    serve.kill();
    let serve = Serve::start(netns, linux);
    serve.wait_log("adopted after a restart");
    assert_eq!(one_running(linux, None).0, second);
    wait_served(netns, &serve, "/");
    assert_eq!(owned(linux).len(), 1, "{:?}", owned(linux));

    // The container dies while no daemon runs: the next daemon replaces it.
    serve.kill();
    let (id, pid) = one_running(linux, None);
    assert_eq!(id, second);
    kill_9(pid);
    let deadline = Instant::now() + WAIT;
    while linux.record(&second)["status"] != "exited" {
        assert!(Instant::now() < deadline, "{second} never exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    let serve = Serve::start(netns, linux);
    let (third, _) = one_running(linux, Some(&second));
    wait_served(netns, &serve, "/");
    assert!(!linux.containers_dir().join(&second).exists());

    // Removing the app stops and removes its containers.
    client(linux, &["apps", "rm", "shop"]).expect_code(0);
    assert!(owned(linux).is_empty(), "{:?}", owned(linux));
    assert!(!linux.containers_dir().join(&third).exists());
    assert_eq!(get(netns, serve.gateway, "/").0, 404);
}

#[test]
fn an_unhealthy_instance_is_not_routed() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(netns, linux);
    let manifest =
        format!("{WEB}health = {{ http = \"/missing\", interval = \"200ms\", retries = 2 }}\n");
    deploy(linux, dir.path(), &manifest).expect_code(0);
    serve.wait_log("unhealthy: GET /missing answered 404");
    let response = send_raw(
        netns,
        serve.gateway,
        "GET /index.html HTTP/1.0\r\nHost: shop.test\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.0 503"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("\r\nretry-after: 1\r\n"),
        "{response}"
    );
    assert!(
        response.contains("service shop/web has no healthy instance"),
        "{response}"
    );
    assert_eq!(owned(linux).len(), 1, "the instance still runs");
    client(linux, &["apps", "rm", "shop"]).expect_code(0);
    assert!(linux.ids().is_empty(), "{:?}", linux.ids());
}

#[test]
fn a_failing_job_is_retried_then_failed_and_a_finished_job_is_not_rerun() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(netns, linux);
    let manifest = format!(
        r#"[app]
name = "batch"

[job.fails]
image = "{IMAGE}"
command = ["sh", "-c", "exit 3"]
retries = 2

[job.works]
image = "{IMAGE}"
command = ["true"]
"#
    );
    deploy(linux, dir.path(), &manifest).expect_code(0);
    serve.wait_log("attempt 1 exited with code 3; retrying in 1s");
    serve.wait_log("attempt 2 exited with code 3; retrying in 2s");
    serve.wait_log("failed: exited with code 3 after 3 attempts");
    serve.wait_log("attempt 1 exited with code 0");
    let ps = client(linux, &["ps"]);
    assert_eq!(ps_line(&ps, "batch/works")[2], "succeeded", "{}", ps.stdout);
    assert!(
        ps.stdout
            .contains("failed: exited with code 3 after 3 attempts"),
        "{}",
        ps.stdout
    );
    assert!(linux.ids().is_empty(), "finished runs are removed");

    serve.kill();
    let serve = Serve::start(netns, linux);
    serve.wait_log("job batch/works generation 1 already finished (succeeded)");
    serve.wait_log("job batch/fails generation 1 already finished (failed: exited with code 3");
    assert!(
        !serve.log().contains("attempt 1 as container"),
        "a finished job ran again:\n{}",
        serve.log()
    );
    client(linux, &["apps", "rm", "batch"]).expect_code(0);
}

#[test]
fn a_missing_image_or_a_taken_route_is_refused_and_nothing_is_started() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let dir = tempfile::tempdir().unwrap();
    let _serve = Serve::start(netns, linux);

    let missing = WEB.replace(IMAGE, "localhost/skiff/nothere:1");
    deploy(linux, dir.path(), &missing)
        .expect_code(125)
        .stderr_has("service shop/web: image localhost/skiff/nothere:1 is not in the local store")
        .stderr_has("skiff pull localhost/skiff/nothere:1");

    std::fs::copy(p2("http_hello"), dir.path().join("hello.wasm")).unwrap();
    std::fs::write(dir.path().join("broken.wasm"), "not wasm").unwrap();
    let wasm_job = "[app]\nname = \"batch\"\n\n[job.once]\nfile = \"broken.wasm\"\n";
    deploy(linux, dir.path(), wasm_job)
        .expect_code(125)
        .stderr_has("job batch/once:")
        .stderr_has("broken.wasm");
    let function =
        "[app]\nname = \"greet\"\n\n[function.hello]\nfile = \"hello.wasm\"\nroute = \"/\"\n";
    deploy(linux, dir.path(), function).expect_code(0);
    deploy(linux, dir.path(), WEB)
        .expect_code(125)
        .stderr_has("route / of service shop/web is already served by greet/hello");

    let apps = client(linux, &["apps"]);
    apps.expect_code(0);
    assert!(!apps.stdout.contains("shop"), "{}", apps.stdout);
    assert!(!apps.stdout.contains("batch"), "{}", apps.stdout);
    assert!(linux.ids().is_empty(), "{:?}", linux.ids());
}

/// A CGI script under busybox httpd on port 8080 that echoes what it was sent.
const ECHO: &str = r#"[app]
name = "echo"

[service.cgi]
image = "localhost/skiff/busybox:latest"
ports = [8080]
route = "/cgi-bin"
health = { tcp = 8080, interval = "200ms" }
cpu = "500m"
memory = "64Mi"
command = ["sh", "-c", '''
mkdir -p /tmp/www/cgi-bin
cat > /tmp/www/cgi-bin/echo <<'EOF'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
echo "$REQUEST_METHOD $REQUEST_URI for=$HTTP_X_FORWARDED_FOR host=$HTTP_X_FORWARDED_HOST custom=$HTTP_X_CUSTOM"
head -c "$CONTENT_LENGTH"
EOF
chmod +x /tmp/www/cgi-bin/echo
exec httpd -f -p 8080 -h /tmp/www
''']
"#;

#[test]
fn the_proxy_keeps_method_path_query_headers_and_body() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(netns, linux);
    deploy(linux, dir.path(), ECHO).expect_code(0);
    serve.wait_log("health check passed");
    let (status, body) = send(
        netns,
        serve.gateway,
        "POST /cgi-bin/echo?x=1&y=2 HTTP/1.0\r\nHost: echo.test\r\nX-Custom: kept\r\n\
         Content-Length: 11\r\n\r\nhello world",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        "POST /cgi-bin/echo?x=1&y=2 for=127.0.0.1 host=echo.test custom=kept\nhello world"
    );
    // The service's cpu and memory are its container's cgroup limits.
    let (id, _) = one_running(linux, None);
    let [memory, cpu, _] = crate::linux::cgroup_dirs(&id).try_into().unwrap();
    let read = |path: PathBuf| std::fs::read_to_string(path).unwrap().trim().to_string();
    assert_eq!(read(memory.join("memory.limit_in_bytes")), "67108864");
    assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "50000");
    client(linux, &["apps", "rm", "echo"]).expect_code(0);
    assert!(linux.ids().is_empty(), "{:?}", linux.ids());
}

#[test]
fn exec_health_checks_decide_routing_and_a_changed_service_is_replaced() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(netns, linux);
    let healthy = format!(
        "{WEB}health = {{ exec = [\"test\", \"-f\", \"/www/index.html\"], interval = \"200ms\" }}\n"
    );
    deploy(linux, dir.path(), &healthy).expect_code(0);
    serve.wait_log("health check passed");
    wait_served(netns, &serve, "/index.html");
    let (first, _) = one_running(linux, None);

    let unhealthy = healthy.replace("/www/index.html", "/nowhere");
    deploy(linux, dir.path(), &unhealthy)
        .expect_code(0)
        .stdout_has("~ service web: health");
    let (second, _) = one_running(linux, Some(&first));
    assert!(
        !linux.containers_dir().join(&first).exists(),
        "{first} left"
    );
    serve.wait_log("unhealthy: [\"test\", \"-f\", \"/nowhere\"] exited with");
    let (status, body) = get(netns, serve.gateway, "/index.html");
    assert_eq!(status, 503, "{body}");
    let ps = client(linux, &["ps"]);
    assert_eq!(
        ps_line(&ps, "shop/web")[2..4],
        ["starting", "0/1"],
        "{}",
        ps.stdout
    );
    client(linux, &["apps", "rm", "shop"]).expect_code(0);
    assert!(!linux.containers_dir().join(&second).exists());
}

#[test]
fn wasm_jobs_run_in_process_and_are_retried() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(netns, linux);
    std::fs::copy(p1("hello"), dir.path().join("hello.wasm")).unwrap();
    let manifest = r#"[app]
name = "wasmjobs"

[job.ok]
file = "hello.wasm"

[job.bad]
file = "hello.wasm"
env = { HELLO_EXIT = "4" }
retries = 1
"#;
    deploy(linux, dir.path(), manifest).expect_code(0);
    serve.wait_log("attempt 1 exited with code 4; retrying in 1s");
    serve.wait_log("failed: exited with code 4 after 2 attempts");
    serve.wait_log("attempt 1 exited with code 0");
    let ps = client(linux, &["ps"]);
    assert_eq!(ps_line(&ps, "wasmjobs/ok")[2], "succeeded", "{}", ps.stdout);
    assert!(linux.ids().is_empty(), "no containers for Wasm jobs");
    client(linux, &["apps", "rm", "wasmjobs"]).expect_code(0);
}

#[test]
fn an_instance_that_does_not_answer_is_a_502() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(netns, linux);
    // No health check: routed once running, though nothing listens on its port.
    let silent = WEB.replace(
        r#"["httpd", "-f", "-p", "80", "-h", "/www"]"#,
        r#"["sleep", "3600"]"#,
    );
    deploy(linux, dir.path(), &silent).expect_code(0);
    serve.wait_log("replica 0 started");
    let deadline = Instant::now() + WAIT;
    let (status, body) = loop {
        let answer = get(netns, serve.gateway, "/");
        if answer.0 != 503 || Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("service shop/web failed to answer"), "{body}");
    client(linux, &["apps", "rm", "shop"]).expect_code(0);
    assert!(linux.ids().is_empty(), "{:?}", linux.ids());
}

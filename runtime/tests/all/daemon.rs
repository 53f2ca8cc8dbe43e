//! `skiff serve` with `deploy -f` and `apps`: functions deployed through the control API and
//! served by the gateway, refused manifests that change nothing, and a `kill -9` after which
//! a restarted daemon serves every app again.

use crate::support::*;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

/// A running `skiff serve` on a socket and a gateway port of its own, killed when dropped.
pub struct Daemon {
    pub gateway: SocketAddr,
    child: Child,
}

impl Daemon {
    pub fn start(skiff: &Skiff, extra: &[&str]) -> Daemon {
        let mut child = skiff
            .command()
            .args(["serve", "--gateway", "127.0.0.1:0", "--socket"])
            .arg(socket(skiff))
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning skiff serve");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut lines = [String::new(), String::new()];
        for line in &mut lines {
            stdout.read_line(line).expect("reading skiff's stdout");
        }
        let control = lines[0].trim().strip_prefix("control api on unix:");
        let gateway = lines[1].trim().strip_prefix("gateway on http://");
        let (Some(control), Some(gateway)) = (control, gateway) else {
            let _ = child.kill();
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .map(|mut s| s.read_to_string(&mut stderr));
            panic!("skiff serve did not start; stdout: {lines:?}\nstderr:\n{stderr}");
        };
        assert_eq!(Path::new(control), socket(skiff));
        Daemon {
            gateway: gateway.parse().expect("an address in the stable line"),
            child,
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(mut self) -> String {
        self.kill_and_log()
    }

    fn kill_and_log(&mut self) -> String {
        crate::support::kill_and_log(&mut self.child)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let stderr = self.kill_and_log();
        if std::thread::panicking() {
            eprintln!("--- skiff serve stderr ---\n{stderr}");
        }
    }
}

pub fn socket(skiff: &Skiff) -> PathBuf {
    skiff.data_dir.path().join("run/skiff.sock")
}

/// `skiff ARGS` against the daemon of `skiff`'s data dir.
pub fn client(skiff: &Skiff, args: &[&str]) -> Ran {
    Ran::from(
        skiff
            .command()
            .env("SKIFF_SOCKET", socket(skiff))
            .args(args)
            .output()
            .expect("spawning skiff"),
    )
}

/// Writes `manifest` to `dir/name`, with http_hello beside it as `hello.wasm`.
pub fn manifest(dir: &Path, name: &str, manifest: &str) -> String {
    std::fs::copy(p2("http_hello"), dir.join("hello.wasm")).expect("copying the sample");
    let path = dir.join(name);
    std::fs::write(&path, manifest).expect("writing the manifest");
    path.to_str().expect("a UTF-8 temp path").to_string()
}

pub const HELLO: &str = r#"[app]
name = "greet"

[function.hello]
file = "hello.wasm"
route = "/hello"
"#;

#[test]
fn a_deployed_function_is_served_until_its_app_is_removed() {
    let skiff = Skiff::new();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&skiff, &[]);
    let file = manifest(dir.path(), "skiff.toml", HELLO);

    client(&skiff, &["deploy", "-f", &file])
        .expect_code(0)
        .stdout_has("+ function hello (new)")
        .stdout_has("app greet deployed (generation 1)");
    let reply = get(daemon.gateway, "/hello/you?x=1");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "Hello from skiff! path=/hello/you?x=1\n");

    client(&skiff, &["deploy", "-f", &file])
        .expect_code(0)
        .stdout_has("= function hello (unchanged)")
        .stdout_has("app greet unchanged (generation 1)");

    let missing = get(daemon.gateway, "/nowhere");
    assert_eq!(missing.status, 404, "{missing:?}");
    assert!(missing.body.contains("/nowhere"), "{}", missing.body);
    assert_eq!(get(daemon.gateway, "/hellothere").status, 404);

    let listed = client(&skiff, &["apps"]);
    listed.expect_code(0);
    let lines: Vec<Vec<&str>> = listed
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        [
            vec!["NAME", "FUNCTIONS", "SERVICES", "JOBS", "GENERATION"],
            vec!["greet", "1", "0", "0", "1"]
        ]
    );

    client(&skiff, &["apps", "rm", "greet"]).expect_code(0);
    assert_eq!(get(daemon.gateway, "/hello").status, 404);
    client(&skiff, &["apps", "rm", "greet"])
        .expect_code(125)
        .stderr_has("no app named greet is deployed");
    assert_eq!(client(&skiff, &["apps"]).stdout.lines().count(), 1);
}

#[test]
fn a_bad_manifest_is_refused_and_changes_nothing() {
    let skiff = Skiff::new();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&skiff, &[]);
    let good = manifest(dir.path(), "skiff.toml", HELLO);
    client(&skiff, &["deploy", "-f", &good]).expect_code(0);

    let bad = manifest(
        dir.path(),
        "bad.toml",
        &format!("{HELLO}memory = \"64MiB\"\nroutes = \"/typo\"\n"),
    );
    client(&skiff, &["deploy", "-f", &bad])
        .expect_code(125)
        .stderr_has("bad.toml:8:")
        .stderr_has("unknown field `routes`")
        .stderr_has("nothing was changed");

    let reply = get(daemon.gateway, "/hello");
    assert_eq!(reply.status, 200, "{reply:?}");
    let listed = client(&skiff, &["apps"]);
    assert!(
        listed
            .stdout
            .lines()
            .nth(1)
            .is_some_and(|l| l.ends_with(" 1")),
        "still generation 1:\n{}",
        listed.stdout
    );
}

#[test]
fn after_kill_9_a_restarted_daemon_serves_every_app_again() {
    let skiff = Skiff::new();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&skiff, &[]);
    let file = manifest(dir.path(), "skiff.toml", HELLO);
    client(&skiff, &["deploy", "-f", &file]).expect_code(0);
    assert_eq!(get(daemon.gateway, "/hello").status, 200);

    daemon.kill();
    assert!(socket(&skiff).exists(), "a killed daemon leaves its socket");

    let restarted = Daemon::start(&skiff, &[]);
    let reply = get(restarted.gateway, "/hello");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "Hello from skiff! path=/hello\n");
    client(&skiff, &["apps"]).expect_code(0).stdout_has("greet");
}

#[test]
fn a_second_daemon_on_a_live_socket_is_refused() {
    let skiff = Skiff::new();
    let _daemon = Daemon::start(&skiff, &[]);
    let second = skiff
        .command()
        .args(["serve", "--gateway", "127.0.0.1:0", "--socket"])
        .arg(socket(&skiff))
        .output()
        .expect("spawning skiff serve");
    Ran::from(second)
        .expect_code(125)
        .stderr_has("another skiff serve is running on");
}

#[test]
fn clients_without_a_daemon_say_how_to_start_one() {
    let skiff = Skiff::new();
    client(&skiff, &["apps"])
        .expect_code(125)
        .stderr_has("no skiff daemon at")
        .stderr_has("start one with `skiff serve`");
}

#[test]
fn a_full_function_answers_503_with_retry_after() {
    let skiff = Skiff::new();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&skiff, &["--function-queue", "0"]);
    let file = manifest(
        dir.path(),
        "skiff.toml",
        &format!(
            "[app]\nname = \"busy\"\n\n[function.slow]\nfile = {:?}\nroute = \"/\"\n\
             max = 1\nconcurrency = 1\ntimeout = \"5s\"\n",
            p2("http_misbehave").to_str().unwrap()
        ),
    );
    client(&skiff, &["deploy", "-f", &file]).expect_code(0);

    // `/loop` spins until its time limit, holding the function's only slot meanwhile. Under
    // load a probe can win the slot first and `/loop` is the one refused: a 503 from either
    // side shows the full function refusing.
    let gateway = daemon.gateway;
    let held = std::thread::spawn(move || get(gateway, "/loop"));
    let mut refused = None;
    for _ in 0..500 {
        let reply = get(gateway, "/ok");
        if reply.status == 503 {
            refused = Some(reply);
            break;
        }
        if held.is_finished() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let held = held.join().unwrap();
    let refused = match refused {
        Some(reply) => {
            assert_eq!(held.status, 504, "the held request ends at its time limit");
            reply
        }
        None => held,
    };
    assert_eq!(
        refused.status, 503,
        "a request while the only slot is held gets 503"
    );
    assert_eq!(refused.headers["retry-after"], "1");
    assert!(
        refused.body.contains("busy/slow is busy"),
        "{}",
        refused.body
    );
    assert_eq!(get(gateway, "/ok").status, 200);
}

/// GET `path` with a Host header of the test's choosing; the status and body.
fn get_with_host(gateway: SocketAddr, host: &str, path: &str) -> (u16, String) {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(gateway).expect("connecting");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("sending");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("reading");
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

#[test]
fn the_longest_prefix_and_the_host_choose_the_function() {
    let skiff = Skiff::new();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&skiff, &[]);
    let greet = manifest(dir.path(), "skiff.toml", HELLO);
    client(&skiff, &["deploy", "-f", &greet]).expect_code(0);
    let wagi = p1("wagi-hello");
    let catch_all = manifest(
        dir.path(),
        "other.toml",
        &format!(
            "[app]\nname = \"other\"\n\n[function.all]\nfile = {wagi:?}\nroute = \"/\"\n\n\
             [function.shop]\nfile = \"hello.wasm\"\nroute = \"/hello\"\nhost = \"Shop.Local\"\n"
        ),
    );
    client(&skiff, &["deploy", "-f", &catch_all])
        .expect_code(0)
        .stdout_has("+ function all (new)")
        .stdout_has("+ function shop (new)");

    let (status, body) = get_with_host(daemon.gateway, "elsewhere", "/x?a=1");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("method=GET path=/x"),
        "the WAGI catch-all: {body}"
    );
    let (status, body) = get_with_host(daemon.gateway, "elsewhere", "/hello/1");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Hello from skiff! path=/hello/1"), "{body}");
    let (status, body) = get_with_host(daemon.gateway, "shop.local:80", "/hello/2");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Hello from skiff! path=/hello/2"), "{body}");

    // The same route and host in another app would be ambiguous.
    let clash = manifest(
        dir.path(),
        "clash.toml",
        "[app]\nname = \"clash\"\n\n[function.f]\nfile = \"hello.wasm\"\nroute = \"/hello/\"\n",
    );
    client(&skiff, &["deploy", "-f", &clash])
        .expect_code(125)
        .stderr_has("already served by greet/hello");
    assert_eq!(client(&skiff, &["apps"]).stdout.lines().count(), 3);
}

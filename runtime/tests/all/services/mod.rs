//! Services and jobs run by `skiff serve`: busybox containers deployed through the control
//! API, reached through the gateway, restarted when they die, adopted again after the daemon's
//! own `kill -9`, and refused (changing nothing) when their image or route is wrong; and the
//! CLI's container verbs (`run -d`, `ps`, `logs`, `stop`, `rm`) going through the daemon.
//!
//! These need root (they start containers); without it each one says why it is skipped. The
//! daemon runs in a network namespace of the test's own ([`Netns`]), so its bridge and NAT
//! never touch the host; the gateway is reached from inside that namespace. Every container
//! is removed when a test ends, pass or fail (the [`Linux`] guard), and the namespace with it.

mod capacity;
mod containers;
mod jobs;
mod logs;
mod names;
mod rollout;
mod sample;
mod serving;
mod wasm;

use crate::linux::{IMAGE, Linux, Netns, linux};
use crate::support::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest any wait here may take before the test fails with what it waited for.
pub const WAIT: Duration = Duration::from_secs(60);

/// `skiff serve` in `netns`, logging at info level; its stderr and stdout are collected as
/// they come.
pub struct Serve {
    child: Child,
    pub gateway: u16,
    log: Arc<Mutex<String>>,
}

impl Serve {
    pub fn start(netns: &Netns, linux: &Linux) -> Serve {
        Serve::start_with(netns, linux, &[])
    }

    /// With more `skiff serve` flags.
    pub fn start_with(netns: &Netns, linux: &Linux, extra: &[&str]) -> Serve {
        let base = linux.command();
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", netns.path().display()))
            .arg("--")
            .arg(base.get_program())
            .args(base.get_args())
            .args(["serve", "--gateway", "127.0.0.1:0", "--socket"])
            .arg(socket(linux))
            .args(extra)
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
    pub fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.log.lock().unwrap().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the daemon never logged {needle:?}:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(mut self) {
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
pub struct Env {
    pub linux: Linux,
    pub netns: Netns,
}

pub fn env() -> Option<Env> {
    let linux = linux()?;
    Some(Env {
        linux,
        netns: Netns::new(),
    })
}

pub fn socket(linux: &Linux) -> PathBuf {
    linux.data_dir.path().join("run/skiff.sock")
}

/// `skiff ARGS` against the daemon.
pub fn client(linux: &Linux, args: &[&str]) -> Ran {
    Ran::from(
        linux
            .command()
            .env("SKIFF_SOCKET", socket(linux))
            .args(args)
            .output()
            .expect("spawning skiff"),
    )
}

pub fn deploy(linux: &Linux, dir: &Path, manifest: &str) -> Ran {
    let path = dir.join("skiff.toml");
    std::fs::write(&path, manifest).expect("writing the manifest");
    client(linux, &["deploy", "-f", path.to_str().unwrap()])
}

/// GET `path` from the gateway, inside the namespace: status and body.
pub fn get(netns: &Netns, port: u16, path: &str) -> (u16, String) {
    send(
        netns,
        port,
        &format!("GET {path} HTTP/1.0\r\nHost: shop.test\r\n\r\n"),
    )
}

/// Sends a raw HTTP/1.0 request to the gateway, inside the namespace: status and body.
pub fn send(netns: &Netns, port: u16, request: &str) -> (u16, String) {
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
pub fn send_raw(netns: &Netns, port: u16, request: &str) -> String {
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
pub fn wait_served(netns: &Netns, serve: &Serve, path: &str) -> String {
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
pub fn owned(linux: &Linux) -> Vec<(String, i64)> {
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
pub fn one_running(linux: &Linux, not: Option<&str>) -> (String, i64) {
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

/// Waits (bounded) until `skiff ps` shows `workload` with `ready` healthy of desired
/// instances (`"2/2"`).
#[track_caller]
pub fn wait_ready(linux: &Linux, workload: &str, ready: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let ps = client(linux, &["ps"]);
        if ps_line(&ps, workload)[3] == ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{workload} never {ready}:\n{}",
            ps.stdout
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (bounded) until the owned running containers are as `done` wants; their ids.
#[track_caller]
pub fn wait_owned(linux: &Linux, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let ids: Vec<String> = owned(linux).into_iter().map(|(id, _)| id).collect();
        if done(&ids) {
            return ids;
        }
        assert!(Instant::now() < deadline, "owned containers stayed {ids:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The words of `skiff ps`'s line for `workload` (`app/name`).
#[track_caller]
pub fn ps_line(ps: &Ran, workload: &str) -> Vec<String> {
    ps.expect_code(0);
    ps.stdout
        .lines()
        .find(|l| l.starts_with(&format!("{workload} ")))
        .unwrap_or_else(|| panic!("{workload} not in skiff ps:\n{}", ps.stdout))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

pub fn kill_9(pid: i64) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
}

pub const WEB: &str = r#"[app]
name = "shop"

[service.web]
image = "localhost/skiff/busybox:latest"
command = ["httpd", "-f", "-p", "80", "-h", "/www"]
ports = [80]
route = "/"
"#;

//! A workload's logs and instances through the daemon: `skiff logs APP/WORKLOAD [-f]` merges
//! its instances' lines, each prefixed with its instance's short id, and follows replicas as
//! they restart; `GET /v1/instances` lists what runs; `skiff rm APP` removes an app unless
//! the name is also a container's, which is refused with nothing changed.

use super::*;

/// A service whose replicas say `ready` once, then `poked` on each SIGUSR1.
const POKED: &str = r#"[app]
name = "shop"

[service.web]
image = "localhost/skiff/busybox:latest"
command = ["sh", "-c", "trap 'echo poked' USR1; echo ready; echo oops >&2; while true; do sleep 1 & wait $!; done"]
replicas = 2
"#;

/// `GET path` on the control API, status and JSON body.
pub fn api_get(linux: &Linux, path: &str) -> (u16, serde_json::Value) {
    let mut stream = std::os::unix::net::UnixStream::connect(socket(linux)).expect("the socket");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: skiff\r\nConnection: close\r\n\r\n"
    )
    .expect("sending");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("reading");
    let status = (answer.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {answer}"));
    (status, body)
}

/// Waits (bounded) until `skiff logs NAME` prints `needle`; what it printed.
#[track_caller]
pub fn wait_logs(linux: &Linux, name: &str, needle: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let ran = client(linux, &["logs", name]);
        ran.expect_code(0);
        let printed = format!("{}{}", ran.stdout, ran.stderr);
        if printed.contains(needle) {
            return printed;
        }
        assert!(Instant::now() < deadline, "never {needle:?}:\n{printed}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `skiff logs -f NAME` running, its stdout and stderr collected; killed when dropped.
pub struct Follower {
    child: Child,
    printed: Arc<Mutex<String>>,
}

impl Follower {
    pub fn start(linux: &Linux, name: &str) -> Follower {
        let mut child = linux
            .command()
            .env("SKIFF_SOCKET", socket(linux))
            .args(["logs", "-f", name])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning skiff logs -f");
        let printed = Arc::new(Mutex::new(String::new()));
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        for stream in [out, err] {
            let sink = Arc::clone(&printed);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut printed = sink.lock().unwrap();
                    printed.push_str(&line);
                    printed.push('\n');
                }
            });
        }
        Follower { child, printed }
    }

    /// Waits (bounded) until it printed `needle`.
    #[track_caller]
    pub fn wait(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.printed.lock().unwrap().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "skiff logs -f never printed {needle:?}:\n{}",
            self.printed()
        );
    }

    pub fn printed(&self) -> String {
        self.printed.lock().unwrap().clone()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded) until `n` owned containers run; their ids and pids.
#[track_caller]
fn running(linux: &Linux, n: usize, not: &[String]) -> Vec<(String, i64)> {
    let deadline = Instant::now() + WAIT;
    loop {
        let owned = owned(linux);
        if owned.len() == n && owned.iter().all(|(id, pid)| *pid > 0 && !not.contains(id)) {
            return owned;
        }
        assert!(Instant::now() < deadline, "never {n} running: {owned:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn workload_logs_prefix_each_replica_and_follow_new_lines_and_restarts() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let dir = tempfile::tempdir().unwrap();
    let _serve = Serve::start(netns, linux);
    deploy(linux, dir.path(), POKED).expect_code(0);
    let replicas = running(linux, 2, &[]);
    let short = |id: &str| id[..12].to_string();

    // Both replicas' lines, each with its prefix; stderr's too.
    for (id, _) in &replicas {
        wait_logs(linux, "shop/web", &format!("{} | ready", short(id)));
        wait_logs(linux, "shop/web", &format!("{} | oops", short(id)));
    }

    // The instances, as recorded.
    let (status, listed) = api_get(linux, "/v1/instances?app=shop");
    assert_eq!(status, 200, "{listed}");
    let instances = listed["instances"].as_array().expect("a list");
    assert_eq!(instances.len(), 2, "{listed}");
    for instance in instances {
        assert_eq!(instance["workload"], "web", "{listed}");
        assert_eq!(instance["kind"], "linux", "{listed}");
        assert_eq!(instance["state"], "running", "{listed}");
        assert!(instance["pid"].as_i64().is_some(), "{listed}");
        let id = instance["id"].as_str().unwrap();
        assert!(replicas.iter().any(|(r, _)| r == id), "{listed}");
    }
    let (status, none) = api_get(linux, "/v1/instances?app=nope");
    assert_eq!(
        (status, none["instances"].as_array().map(Vec::len)),
        (200, Some(0))
    );

    // Following: a line written after it started, then a restarted replica's lines.
    let follower = Follower::start(linux, "shop/web");
    let (first, first_pid) = &replicas[0];
    follower.wait(&format!("{} | ready", short(first)));
    follower.wait(&format!("{} | ready", short(&replicas[1].0)));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(*first_pid as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .expect("poking the replica");
    follower.wait(&format!("{} | poked", short(first)));
    kill_9(*first_pid);
    let after = running(linux, 2, std::slice::from_ref(first));
    let restarted = after
        .iter()
        .find(|(id, _)| *id != replicas[1].0)
        .expect("a new replica");
    follower.wait(&format!("{} | ready", short(&restarted.0)));
    let printed = follower.printed();
    assert_eq!(
        printed
            .matches(&format!("{} | ready", short(first)))
            .count(),
        1,
        "each line once:\n{printed}"
    );
    drop(follower);

    // Unknown names: a clear error with the hint, and nothing changed.
    let unknown = client(linux, &["logs", "shop/nope"]);
    assert_ne!(unknown.code, 0);
    unknown
        .stderr_has("app shop has no service or job named nope")
        .stderr_has("skiff ps");
    client(linux, &["logs", "nope/web"])
        .stderr_has("no app named nope is deployed")
        .stderr_has("skiff ps");
    let (status, _) = api_get(linux, "/v1/logs/nope/web");
    assert_eq!(status, 404);
    client(linux, &["logs", "/web"])
        .expect_code(125)
        .stderr_has("/web is not a workload; write APP/WORKLOAD");
    let (status, answer) = api_get(linux, "/v1/logs/shop/web?follow=maybe");
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = api_get(linux, "/v1/instances?ap=shop");
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["hint"].as_str().unwrap().contains("?app=APP"),
        "{answer}"
    );
    // Without the daemon, a workload's logs are not there to read: said.
    let alone = Ran::from(
        linux
            .command()
            .env("SKIFF_SOCKET", linux.data_dir.path().join("run/none.sock"))
            .args(["logs", "shop/web"])
            .output()
            .expect("spawning skiff"),
    );
    alone.expect_code(125).stderr_has("start `skiff serve`");
    assert_eq!(owned(linux).len(), 2);
    client(linux, &["apps", "rm", "shop"]).expect_code(0);
}

#[test]
fn rm_app_removes_the_app_unless_the_name_is_a_container_too() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let dir = tempfile::tempdir().unwrap();
    let _serve = Serve::start(netns, linux);
    deploy(linux, dir.path(), WEB).expect_code(0);
    running(linux, 1, &[]);
    let started = client(
        linux,
        &[
            "run", "-d", "--net", "none", "--name", "shop", IMAGE, "sleep", "3600",
        ],
    );
    started.expect_code(0);
    let id = started.stdout.trim().to_string();

    // Both an app and a container: refused, naming both ways; nothing changed.
    let refused = client(linux, &["rm", "-f", "shop"]);
    refused
        .expect_code(1)
        .stderr_has("shop is both an app and container")
        .stderr_has("skiff apps rm shop")
        .stderr_has("skiff rm ID");
    client(linux, &["apps"]).expect_code(0).stdout_has("shop");
    client(linux, &["ps"]).stdout_has(&id[..12]);
    assert_eq!(owned(linux).len(), 1, "the app's instance still runs");

    // The container by its id, then the app by its name.
    client(linux, &["rm", "-f", &id]).expect_code(0);
    client(linux, &["rm", "shop"])
        .expect_code(0)
        .stdout_has("shop");
    let apps = client(linux, &["apps"]);
    assert!(!apps.stdout.contains("shop"), "{}", apps.stdout);
    running(linux, 0, &[]);

    // Neither an app nor a container: the container verb's own error.
    client(linux, &["rm", "shop"])
        .expect_code(1)
        .stderr_has("no such container: shop");
}

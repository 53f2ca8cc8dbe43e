//! Changing a running service: a redeploy rolls the new version out one replica at a time
//! under steady load without a failed request, a version that fails its health check is
//! rolled back (the store included), `skiff scale` changes the replicas that run, and a
//! `cpu_target` scales replicas up under load and down after it.

use super::*;
use std::sync::atomic::{AtomicBool, Ordering};

/// A busybox web service answering `version` at /index.html, with a quick health check.
fn versioned(version: &str, health_path: &str) -> String {
    format!(
        r#"[app]
name = "shop"

[service.web]
image = "{IMAGE}"
command = ["sh", "-c", "mkdir -p /tmp/w && echo {version} > /tmp/w/index.html && exec httpd -f -p 80 -h /tmp/w"]
ports = [80]
route = "/"
replicas = 2
health = {{ http = "{health_path}", interval = "200ms", retries = 2 }}
"#
    )
}

/// Requests sent one after another from inside the namespace until stopped: every answer's
/// status and body, in order.
struct Load {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(u16, String)>>,
}

impl Load {
    fn start(netns: &Netns, port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let file = std::fs::File::open(netns.path()).expect("opening the netns");
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let mut answers = Vec::new();
            while !stopping.load(Ordering::SeqCst) {
                answers.push(one_get(port));
                std::thread::sleep(Duration::from_millis(5));
            }
            answers
        });
        Load { stop, thread }
    }

    fn finish(self) -> Vec<(u16, String)> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the load thread")
    }
}

/// One GET /index.html on a connection of its own; status 0 when the connection failed.
fn one_get(port: u16) -> (u16, String) {
    let attempt = || -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        stream.write_all(b"GET /index.html HTTP/1.0\r\nHost: shop.test\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    };
    match attempt() {
        Ok(response) => {
            let status = (response.split_whitespace().nth(1))
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let body = response
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.trim().to_string());
            (status, body.unwrap_or_default())
        }
        Err(error) => (0, error.to_string()),
    }
}

/// The answers that were not a 200, and the bodies of the last few.
fn failures(answers: &[(u16, String)]) -> Vec<&(u16, String)> {
    answers
        .iter()
        .filter(|(status, _)| *status != 200)
        .collect()
}

#[test]
fn a_redeploy_rolls_out_under_load_without_a_failure_and_a_failing_version_rolls_back() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(netns, linux);
    deploy(linux, dir.path(), &versioned("v1", "/index.html")).expect_code(0);
    wait_ready(linux, "shop/web", "2/2");
    let v1: Vec<String> = owned(linux).into_iter().map(|(id, _)| id).collect();
    assert_eq!(v1.len(), 2, "{v1:?}");

    // v2 replaces v1 one replica at a time while requests keep coming.
    let load = Load::start(netns, serve.gateway);
    std::thread::sleep(Duration::from_millis(300));
    deploy(linux, dir.path(), &versioned("v2", "/index.html"))
        .expect_code(0)
        .stdout_has("~ service web");
    serve.wait_log("generation 2 serves all 2 replicas");
    std::thread::sleep(Duration::from_millis(300));
    let answers = load.finish();
    assert!(answers.len() >= 20, "too little load to judge: {answers:?}");
    assert!(
        failures(&answers).is_empty(),
        "failed requests during the rollout: {:?}\n{}",
        failures(&answers),
        serve.log()
    );
    let bodies: Vec<&str> = answers.iter().map(|(_, b)| b.as_str()).collect();
    let first_v2 = bodies
        .iter()
        .position(|b| *b == "v2")
        .expect("v2 never answered");
    assert!(bodies[..first_v2].iter().all(|b| *b == "v1"), "{bodies:?}");
    assert_eq!(*bodies.last().unwrap(), "v2", "{bodies:?}");
    let deadline = Instant::now() + WAIT;
    while owned(linux).len() != 2 || owned(linux).iter().any(|(id, _)| v1.contains(id)) {
        assert!(
            Instant::now() < deadline,
            "v1 left running: {:?}",
            owned(linux)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let v2: Vec<String> = owned(linux).into_iter().map(|(id, _)| id).collect();

    // v3 fails its health check: it is rolled back, v2 serves throughout and stays stored.
    let load = Load::start(netns, serve.gateway);
    deploy(linux, dir.path(), &versioned("v3", "/missing")).expect_code(0);
    serve.wait_log("generation 3 rolled back to generation 2");
    std::thread::sleep(Duration::from_millis(300));
    let answers = load.finish();
    assert!(
        failures(&answers).is_empty(),
        "failed requests during the rollback: {:?}",
        failures(&answers)
    );
    assert!(answers.iter().all(|(_, body)| body == "v2"), "{answers:?}");
    let deadline = Instant::now() + WAIT;
    while owned(linux).iter().map(|(id, _)| id).collect::<Vec<_>>() != v2.iter().collect::<Vec<_>>()
    {
        assert!(
            Instant::now() < deadline,
            "v3 left running: {:?}",
            owned(linux)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let events = client(linux, &["events"]);
    events
        .expect_code(0)
        .stdout_has("GET /missing answered 404");
    // The store holds v2 again: deploying v2 changes nothing.
    deploy(linux, dir.path(), &versioned("v2", "/index.html"))
        .expect_code(0)
        .stdout_has("unchanged");
    // And a restarted daemon adopts the v2 containers rather than starting v3.
    serve.kill();
    let serve = Serve::start(netns, linux);
    serve.wait_log("adopted after a restart");
    assert_eq!(wait_served(netns, &serve, "/index.html").trim(), "v2");
    let mut now: Vec<String> = owned(linux).into_iter().map(|(id, _)| id).collect();
    now.sort();
    let mut v2 = v2;
    v2.sort();
    assert_eq!(now, v2);
    client(linux, &["apps", "rm", "shop"]).expect_code(0);
    assert!(owned(linux).is_empty(), "{:?}", owned(linux));
}

#[test]
fn a_rollout_cut_by_the_daemons_kill_9_resumes_with_the_old_containers_adopted() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(netns, linux);
    deploy(linux, dir.path(), &versioned("v1", "/index.html")).expect_code(0);
    wait_ready(linux, "shop/web", "2/2");
    let v1: Vec<String> = owned(linux).into_iter().map(|(id, _)| id).collect();

    // v2 answers only 4 s after it starts (its checks allow 10 s for that): the daemon dies
    // while its first replica waits.
    let slow = versioned("v2", "/index.html")
        .replace("mkdir -p", "sleep 4 && mkdir -p")
        .replace(
            "interval = \"200ms\", retries = 2",
            "interval = \"500ms\", retries = 20",
        );
    deploy(linux, dir.path(), &slow).expect_code(0);
    serve.wait_log("rolling out generation 2");
    let deadline = Instant::now() + WAIT;
    while owned(linux).len() != 3 {
        assert!(
            Instant::now() < deadline,
            "no v2 replica: {:?}",
            owned(linux)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    serve.kill();

    // The next daemon takes the old containers over and carries on: nothing is removed at
    // the start, v1 serves until v2 is ready, and v2 ends up alone.
    let serve = Serve::start(netns, linux);
    serve.wait_log("resuming the rollout of generation 2 after a restart: 1 new and 2 old");
    for id in &v1 {
        serve.wait_log(&format!("container {} adopted after a restart", &id[..12]));
    }
    assert!(
        !serve
            .log()
            .contains("removing a container no workload adopted"),
        "{}",
        serve.log()
    );
    // Only v1 can answer yet (v2 sleeps), and it does.
    assert_eq!(wait_served(netns, &serve, "/index.html").trim(), "v1");
    serve.wait_log("generation 2 serves all 2 replicas");
    wait_owned(linux, |ids| {
        ids.len() == 2 && !ids.iter().any(|id| v1.contains(id))
    });
    assert_eq!(get(netns, serve.gateway, "/index.html").1.trim(), "v2");
    client(linux, &["apps", "rm", "shop"]).expect_code(0);
    assert!(owned(linux).is_empty(), "{:?}", owned(linux));
}

#[test]
fn skiff_scale_changes_the_replicas_a_service_runs() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(netns, linux);
    deploy(linux, dir.path(), WEB).expect_code(0);
    wait_served(netns, &serve, "/index.html");
    client(linux, &["scale", "shop/web=3"]).expect_code(0);
    wait_ready(linux, "shop/web", "3/3");
    assert_eq!(owned(linux).len(), 3, "{:?}", owned(linux));
    client(linux, &["scale", "shop/web=1"]).expect_code(0);
    wait_ready(linux, "shop/web", "1/1");
    wait_owned(linux, |ids| ids.len() == 1);
    serve.wait_log("drained and stopped (scaled down)");
    assert_eq!(get(netns, serve.gateway, "/index.html").0, 200);
    client(linux, &["apps", "rm", "shop"]).expect_code(0);
}

#[test]
fn a_cpu_target_scales_up_under_load_and_down_after_it() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start_with(
        netns,
        linux,
        &["--autoscale-interval", "1s", "--autoscale-window", "3s"],
    );
    // Each replica spins for its first 6 s, then idles: load that comes and goes.
    let manifest = format!(
        r#"[app]
name = "shop"

[service.burn]
image = "{IMAGE}"
command = ["sh", "-c", "end=$(($(date +%s) + 6)); while [ $(date +%s) -lt $end ]; do :; done; exec sleep 3600"]
cpu = "100m"
cpu_target = "50%"
min = 1
max = 3
"#
    );
    deploy(linux, dir.path(), &manifest).expect_code(0);
    // One spinning replica is at 100% of its request, twice the target: 2 (or 3, when a
    // sample catches a little more than the quota).
    serve.wait_log("scaled up from 1 to ");
    serve.wait_log("to 1 replicas: CPU at");
    let events = client(linux, &["events"]);
    events
        .expect_code(0)
        .stdout_has("scaled up from 1 to ")
        .stdout_has("target 50%");
    wait_owned(linux, |ids| ids.len() == 1);
    client(linux, &["apps", "rm", "shop"]).expect_code(0);
}

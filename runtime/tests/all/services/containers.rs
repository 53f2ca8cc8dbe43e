//! The CLI's container verbs through the daemon: with `skiff serve` running on the data dir,
//! `ps`, `logs [-f]`, `stop` and `rm` of a `run -d` container go through its control API
//! (its access log shows each request) and answer exactly as they do alone; stopping gives
//! the container's room in the ledger back at once. An instance of an app's workload is
//! refused by stop and rm and keeps running; an unknown name changes nothing.

use super::*;
use crate::linux::full_id;

/// 1 GiB less 10% and no fixed reserve: room for one 600 MiB container, not two.
const SMALL_NODE: &[&str] = &["--capacity-memory", "1GiB", "--reserve-memory", "0"];

/// `skiff ARGS` alone: no daemon at the socket it looks at.
fn alone(linux: &Linux, args: &[&str]) -> Ran {
    Ran::from(
        linux
            .command()
            .env("SKIFF_SOCKET", linux.data_dir.path().join("run/none.sock"))
            .args(args)
            .output()
            .expect("spawning skiff"),
    )
}

/// Waits (bounded) until the daemon's access log has a request for `path` that got `status`.
#[track_caller]
fn requested(serve: &Serve, method: &str, path: &str, status: u16) {
    let deadline = Instant::now() + WAIT;
    let wanted = [
        "control request".to_string(),
        format!("method={method}"),
        format!("path=\"{path}\""),
        format!("status={status}"),
    ];
    while Instant::now() < deadline {
        let log = serve.log();
        if log.lines().any(|l| wanted.iter().all(|w| l.contains(w))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "the daemon never logged {method} {path} -> {status}:\n{}",
        serve.log()
    );
}

#[track_caller]
fn wait_running(linux: &Linux, id: &str) {
    let deadline = Instant::now() + WAIT;
    while linux.record(id)["status"] != "running" {
        assert!(Instant::now() < deadline, "{id} never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ps_logs_stop_and_rm_go_through_the_daemon_and_answer_as_alone() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let serve = Serve::start_with(netns, linux, SMALL_NODE);
    let script = "echo hello-out; echo hello-err >&2; exec sleep 1000";
    let started = client(
        linux,
        &[
            "run", "-d", "--net", "none", "--name", "box1", "-m", "600m", IMAGE, "sh", "-c", script,
        ],
    );
    let id = full_id(&started);
    requested(&serve, "POST", "/v1/containers", 201);
    wait_running(linux, &id);

    // ps lists it, from the daemon.
    let ps = client(linux, &["ps"]);
    ps.expect_code(0).stdout_has(&id[..12]).stdout_has("box1");
    requested(&serve, "GET", "/v1/containers", 200);
    client(linux, &["ps", "-q"])
        .expect_code(0)
        .stdout_has(&id[..12]);

    // logs shows both streams, each on its own (bounded wait: the shell writes them soon).
    let deadline = Instant::now() + WAIT;
    let logs = loop {
        let logs = client(linux, &["logs", "box1"]);
        logs.expect_code(0);
        if logs.stdout.contains("hello-out") && logs.stderr.contains("hello-err") {
            break logs;
        }
        assert!(Instant::now() < deadline, "no output: {:?}", logs.stdout);
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        (logs.stdout.as_str(), logs.stderr.as_str()),
        ("hello-out\n", "hello-err\n")
    );
    requested(&serve, "GET", "/v1/containers/box1/logs", 200);

    // logs -f follows until the container stops.
    let mut follow = linux
        .command()
        .env("SKIFF_SOCKET", socket(linux))
        .args(["logs", "-f", &id[..12]])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning skiff logs -f");
    requested(
        &serve,
        "GET",
        &format!("/v1/containers/{}/logs", &id[..12]),
        200,
    );

    // An unknown name: the same error as alone, and nothing changed.
    for (args, code) in [
        (&["stop", "nope"][..], 1),
        (&["rm", "-f", "nope"][..], 1),
        (&["logs", "nope"][..], 125),
    ] {
        let through = client(linux, args);
        through
            .expect_code(code)
            .stderr_has("skiff: error: no such container: nope; see `skiff ps -a`");
        let by_hand = alone(linux, args);
        assert_eq!(
            (by_hand.code, &by_hand.stderr),
            (through.code, &through.stderr)
        );
    }
    requested(&serve, "POST", "/v1/containers/nope/stop", 404);
    requested(&serve, "DELETE", "/v1/containers/nope", 404);
    assert_eq!(linux.record(&id)["status"], "running");
    assert!(follow.try_wait().unwrap().is_none(), "logs -f ended early");

    // A running container is not removed without -f: the same refusal as alone.
    let refused = client(linux, &["rm", "box1"]);
    refused
        .expect_code(1)
        .stderr_has("container box1 is running; stop it with `skiff stop box1`");
    assert_eq!(alone(linux, &["rm", "box1"]).stderr, refused.stderr);
    requested(&serve, "DELETE", "/v1/containers/box1", 409);
    assert_eq!(linux.record(&id)["status"], "running");

    // stop, through the daemon: its room is back at once, so a second 600 MiB fits now.
    client(linux, &["stop", "-t", "1", "box1"])
        .expect_code(0)
        .stdout_has("box1");
    requested(&serve, "POST", "/v1/containers/box1/stop", 200);
    serve.wait_log("container stopped for skiff stop");
    assert_eq!(linux.record(&id)["status"], "exited");
    let deadline = Instant::now() + WAIT;
    let followed = loop {
        if let Some(status) = follow.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "logs -f never ended");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    follow
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(followed.success(), "logs -f: {followed}");
    assert_eq!(out, "hello-out\n");
    let second = client(
        linux,
        &[
            "run", "-d", "--net", "none", "--name", "box2", "-m", "600m", IMAGE, "true",
        ],
    );
    let second = full_id(&second);

    // ps -a lists both, the same table as alone.
    let deadline = Instant::now() + WAIT;
    while linux.record(&second)["status"] != "exited" {
        assert!(Instant::now() < deadline, "box2 never exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    let through = client(linux, &["ps", "-a"]);
    through.expect_code(0).stdout_has("box1").stdout_has("box2");
    assert_eq!(alone(linux, &["ps", "-a"]).stdout, through.stdout);

    // rm, through the daemon: gone.
    client(linux, &["rm", "box1", &second[..12]])
        .expect_code(0)
        .stdout_has("box1");
    requested(&serve, "DELETE", "/v1/containers/box1", 200);
    serve.wait_log("container removed for skiff rm");
    assert!(linux.ids().is_empty(), "{:?}", linux.ids());
    client(linux, &["events"])
        .expect_code(0)
        .stdout_has(&format!("container {id} stopped"))
        .stdout_has(&format!("container {id} removed"));
}

#[test]
fn stop_and_rm_of_an_apps_instance_are_refused_through_the_daemon() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(netns, linux);
    deploy(linux, dir.path(), WEB).expect_code(0);
    wait_served(netns, &serve, "/index.html");
    let (id, pid) = one_running(linux, None);

    for args in [&["stop", &id[..12]][..], &["rm", &id[..12]][..]] {
        let refused = client(linux, args);
        refused
            .expect_code(1)
            .stderr_has(&format!(
                "container {} is an instance of shop/web, which skiff serve keeps running",
                &id[..12]
            ))
            .stderr_has("`skiff scale shop/web=N`");
        assert_eq!(alone(linux, args).stderr, refused.stderr);
    }
    requested(
        &serve,
        "POST",
        &format!("/v1/containers/{}/stop", &id[..12]),
        409,
    );
    requested(
        &serve,
        "DELETE",
        &format!("/v1/containers/{}", &id[..12]),
        409,
    );

    // Still the same container, still served.
    assert_eq!(owned(linux), vec![(id, pid)]);
    wait_served(netns, &serve, "/index.html");
    client(linux, &["apps", "rm", "shop"]).expect_code(0);
}

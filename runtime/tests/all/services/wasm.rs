//! Wasm services: `wasi:cli/run` commands (the hello sample, as a component and as a
//! module, pushed as Wasm images) kept running in-process by `skiff serve`, restarted per
//! their policy with back-off, stopped with their app, and refused when they ask for what a
//! Wasm service cannot do, changing nothing; their CPU counted, capped and autoscaled on.

use super::logs::{Follower, api_get, wait_logs};
use super::*;
use crate::registry::Registry;

/// Pushes `file` as a Wasm image to `registry`, which also stores it in the data dir; its
/// reference.
fn wasm_image(linux: &Linux, registry: &Registry, file: &Path, name: &str) -> String {
    let reference = registry.reference(name);
    let pushed = Ran::from(
        linux
            .command()
            .args(["push", file.to_str().unwrap(), &reference])
            .output()
            .expect("spawning skiff push"),
    );
    pushed.expect_code(0).stdout_has("pushed");
    reference
}

/// Waits (bounded) until `skiff ps` shows `workload` with `words` from its KIND column on.
#[track_caller]
fn wait_ps(linux: &Linux, workload: &str, words: &[&str]) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let ps = client(linux, &["ps"]);
        let line = ps_line(&ps, workload);
        if line.len() > words.len() && line[1..=words.len()] == *words {
            return line;
        }
        assert!(Instant::now() < deadline, "never {words:?}:\n{}", ps.stdout);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The app's events, one line each (`SEQ TIME APP/WORKLOAD[/INSTANCE] KIND MESSAGE`).
fn events(linux: &Linux, app: &str) -> String {
    let ran = client(linux, &["events", "--app", app]);
    ran.expect_code(0);
    ran.stdout.clone()
}

#[test]
fn wasm_service_replicas_run_in_process_and_stop_with_their_app() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let registry = Registry::start();
    let sleeper = wasm_image(linux, &registry, &p2("hello"), "skiff/hello:p2");
    let writer = wasm_image(linux, &registry, &p2("fs-demo"), "skiff/fs-demo:p2");
    let spinner = wasm_image(linux, &registry, &p1("loop"), "skiff/loop:p1");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let serve = Serve::start(netns, linux);
    let manifest = format!(
        r#"[app]
name = "wasmsvc"

[service.worker]
image = "{sleeper}"
replicas = 2
memory = "64MiB"
env = {{ HELLO_SLEEP = "3600", WHO = "worker" }}
command = ["--serve"]

[service.writer]
image = "{writer}"
command = ["write", "/data/out.txt", "written by a wasm service"]
volumes = ["./data:/data"]
restart = "on-failure"

[service.spinner]
image = "{spinner}"
"#
    );
    deploy(linux, dir.path(), &manifest).expect_code(0);
    wait_ps(linux, "wasmsvc/worker", &["service/wasm", "running", "2/2"]);
    wait_ps(
        linux,
        "wasmsvc/spinner",
        &["service/wasm", "running", "1/1"],
    );
    // Its output goes to each replica's log: argv[0] is the service's name, then `command`.
    for replica in ["wasm.wasmsvc.worker.1.0", "wasm.wasmsvc.worker.1.1"] {
        for line in ["arg[0]=worker", "arg[1]=--serve", "env WHO=worker"] {
            wait_logs(linux, "wasmsvc/worker", &format!("{replica} | {line}"));
        }
    }
    assert!(
        !serve.log().contains("arg[0]=worker"),
        "not in the daemon's own log"
    );

    // The writer ran once through its volume and, exiting 0 under on-failure, stays down.
    wait_ps(linux, "wasmsvc/writer", &["service/wasm", "stopped", "0/1"]);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("data/out.txt")).unwrap(),
        "written by a wasm service"
    );
    serve.wait_log("replica 0 not restarted (restart = on-failure, exited with code 0)");
    assert!(linux.ids().is_empty(), "no containers: {:?}", linux.ids());

    // A redeploy that changes the worker stops its instances and starts the new generation's.
    deploy(
        linux,
        dir.path(),
        &manifest.replace("replicas = 2", "replicas = 1"),
    )
    .expect_code(0);
    let worker = wait_ps(linux, "wasmsvc/worker", &["service/wasm", "running", "1/1"]);
    assert_eq!(worker[1], "service/wasm");
    let redeployed = events(linux, "wasmsvc");
    for stopped in [
        "worker.1.0  stopped",
        "worker.1.1  stopped",
        "worker.2.0  started",
    ] {
        assert!(redeployed.contains(stopped), "{stopped}:\n{redeployed}");
    }

    // Removal drops every instance, the sleeping one and the spinning one (interrupted at its
    // next epoch tick), and says so once they are gone.
    client(linux, &["apps", "rm", "wasmsvc"]).expect_code(0);
    let events = events(linux, "wasmsvc");
    for stopped in ["worker.2.0  stopped", "spinner.1.0  stopped"] {
        assert!(events.contains(stopped), "{stopped}:\n{events}");
    }
    assert!(!serve.log().contains("did not end"), "{}", serve.log());
    let ps = client(linux, &["ps"]);
    assert!(!ps.stdout.contains("wasmsvc/"), "{}", ps.stdout);
    let logs = std::fs::read_dir(linux.data_dir.path().join("logs")).unwrap();
    assert_eq!(logs.count(), 0, "the instances' logs went with them");
}

/// The instances of `app/workload` that `GET /v1/instances` lists: (id, kind, state).
fn instances(linux: &Linux, app: &str, workload: &str) -> Vec<(String, String, String)> {
    let (status, answer) = api_get(
        linux,
        &format!("/v1/instances?app={app}&workload={workload}"),
    );
    assert_eq!(status, 200, "{answer}");
    let rows = answer["instances"].as_array().expect("a list");
    let text = |row: &serde_json::Value, key: &str| row[key].as_str().unwrap_or("").to_string();
    (rows.iter())
        .map(|row| (text(row, "id"), text(row, "kind"), text(row, "state")))
        .collect()
}

#[test]
fn a_wasm_service_scales_live_and_its_output_is_in_skiff_logs() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let registry = Registry::start();
    let hello = wasm_image(linux, &registry, &p2("hello"), "skiff/hello:p2");
    let dir = tempfile::tempdir().unwrap();
    let _serve = Serve::start(netns, linux);
    std::fs::copy(p2("http_hello"), dir.path().join("api.wasm")).unwrap();
    let manifest = format!(
        "[app]\nname = \"wasmapp\"\n\n[service.svc]\nimage = \"{hello}\"\n\
         env = {{ HELLO_SLEEP = \"3600\" }}\ncommand = [\"--stderr\", \"to stderr\"]\n\n\
         [function.api]\nfile = \"api.wasm\"\nroute = \"/api\"\n"
    );
    deploy(linux, dir.path(), &manifest).expect_code(0);
    wait_ps(linux, "wasmapp/svc", &["service/wasm", "running", "1/1"]);
    let follower = Follower::start(linux, "wasmapp/svc");
    follower.wait("wasm.wasmapp.svc.1.0 | hello from skiff");
    follower.wait("wasm.wasmapp.svc.1.0 | to stderr");

    // Scaled up while running: the new replicas start, and a follow shows their lines.
    client(linux, &["scale", "wasmapp/svc=3"]).expect_code(0);
    wait_ps(linux, "wasmapp/svc", &["service/wasm", "running", "3/3"]);
    for replica in ["wasm.wasmapp.svc.1.1", "wasm.wasmapp.svc.1.2"] {
        follower.wait(&format!("{replica} | hello from skiff"));
        wait_logs(linux, "wasmapp/svc", &format!("{replica} | arg[0]=svc"));
    }
    let listed = instances(linux, "wasmapp", "svc");
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(
        listed
            .iter()
            .all(|(_, kind, state)| kind == "wasm" && state == "running"),
        "{listed:?}"
    );
    drop(follower);

    // Scaled down: the highest replicas go, with their rows and logs.
    client(linux, &["scale", "wasmapp/svc=1"]).expect_code(0);
    wait_ps(linux, "wasmapp/svc", &["service/wasm", "running", "1/1"]);
    let deadline = Instant::now() + WAIT;
    while instances(linux, "wasmapp", "svc").len() != 1 {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            instances(linux, "wasmapp", "svc")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let printed = client(linux, &["logs", "wasmapp/svc"]);
    printed
        .expect_code(0)
        .stdout_has("wasm.wasmapp.svc.1.0 | hello from skiff");
    assert!(!printed.stdout.contains("svc.1.2"), "{}", printed.stdout);

    // An unknown workload, or a function: said, with where to look.
    client(linux, &["logs", "wasmapp/nope"])
        .stderr_has("app wasmapp has no service or job named nope");
    client(linux, &["logs", "wasmapp/api"])
        .expect_code(125)
        .stderr_has("wasmapp/api is a function")
        .stderr_has("read the daemon's log");
    client(linux, &["apps", "rm", "wasmapp"]).expect_code(0);
}

#[test]
fn a_failing_wasm_service_restarts_with_back_off_unless_its_policy_says_never() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let registry = Registry::start();
    let hello = wasm_image(linux, &registry, &p1("hello"), "skiff/hello:p1");
    let hog = wasm_image(linux, &registry, &p2("hog"), "skiff/hog:p2");
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(netns, linux);
    let manifest = format!(
        r#"[app]
name = "crashy"

[service.again]
image = "{hello}"
env = {{ HELLO_EXIT = "3" }}

[service.once]
image = "{hello}"
env = {{ HELLO_EXIT = "3" }}
restart = "never"

[service.hog]
image = "{hog}"
memory = "16MiB"
restart = "never"
"#
    );
    deploy(linux, dir.path(), &manifest).expect_code(0);
    serve.wait_log("replica 0 restarting in 1s (exited with code 3)");
    serve.wait_log("replica 0 restarting in 2s (exited with code 3)");
    serve.wait_log("replica 0 not restarted (restart = never, exited with code 3)");
    wait_ps(linux, "crashy/once", &["service/wasm", "stopped", "0/1"]);
    // `memory` is the store's limit: growing past it ends the instance, which is told.
    serve.wait_log("not restarted (restart = never, exited with code 137)");
    wait_ps(linux, "crashy/hog", &["service/wasm", "stopped", "0/1"]);
    let ps = client(linux, &["ps"]);
    let again = ps_line(&ps, "crashy/again");
    assert_eq!(again[1], "service/wasm", "{}", ps.stdout);

    // `again` restarted twice meanwhile (a second at least); `once` started only once.
    let events = events(linux, "crashy");
    let starts = |service: &str| {
        let prefix = format!("crashy/{service}/");
        (events.lines())
            .filter(|l| l.contains(&prefix) && l.contains("  started  "))
            .count()
    };
    assert!(starts("again") >= 2, "{events}");
    assert_eq!(starts("once"), 1, "{events}");
    assert!(events.contains("out of memory (limit 16 MiB)"), "{events}");
    client(linux, &["apps", "rm", "crashy"]).expect_code(0);
}

#[test]
fn a_wasm_service_it_cannot_run_is_refused_and_nothing_changes() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let registry = Registry::start();
    let hello = wasm_image(linux, &registry, &p2("hello"), "skiff/hello:p2");
    let dir = tempfile::tempdir().unwrap();
    let _serve = Serve::start(netns, linux);
    let good = format!(
        "[app]\nname = \"wasmsvc\"\n\n[service.worker]\nimage = \"{hello}\"\n\
         env = {{ HELLO_SLEEP = \"3600\" }}\n"
    );
    deploy(linux, dir.path(), &good).expect_code(0);
    wait_ps(linux, "wasmsvc/worker", &["service/wasm", "running", "1/1"]);
    let apps = client(linux, &["apps"]);
    apps.expect_code(0);

    deploy(
        linux,
        dir.path(),
        &format!("{good}health = {{ exec = [\"true\"] }}\n"),
    )
    .expect_code(125)
    .stderr_has("cannot have an exec health check");
    // A new app is not stored either: for ports, for an HTTP component that is no command,
    // or for a volume that does not exist.
    let proxy = wasm_image(linux, &registry, &p2("http_hello"), "skiff/http-hello:p2");
    let other = |service: &str| format!("[app]\nname = \"other\"\n\n[service.s]\n{service}\n");
    for (service, says) in [
        (format!("image = \"{proxy}\""), "`wasi:cli/run`"),
        (
            format!("image = \"{hello}\"\nvolumes = [\"./missing:/data\"]"),
            "no such directory",
        ),
    ] {
        deploy(linux, dir.path(), &other(&service))
            .expect_code(125)
            .stderr_has("service other/s:")
            .stderr_has(says);
    }

    let after = client(linux, &["apps"]);
    assert_eq!(after.stdout, apps.stdout, "the apps changed");
    let line = wait_ps(linux, "wasmsvc/worker", &["service/wasm", "running", "1/1"]);
    assert_eq!(line[1], "service/wasm");
    let events = events(linux, "wasmsvc");
    assert_eq!(
        events.lines().filter(|l| l.contains("  started  ")).count(),
        1,
        "the running instance was left alone:\n{events}"
    );
    client(linux, &["apps", "rm", "wasmsvc"]).expect_code(0);
}

#[test]
fn wasm_services_start_again_after_the_daemons_kill_9() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let registry = Registry::start();
    let hello = wasm_image(linux, &registry, &p2("hello"), "skiff/hello:p2");
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(netns, linux);
    let manifest = format!(
        "[app]\nname = \"wasmsvc\"\n\n[service.worker]\nimage = \"{hello}\"\nreplicas = 2\n\
         env = {{ HELLO_SLEEP = \"3600\" }}\n"
    );
    deploy(linux, dir.path(), &manifest).expect_code(0);
    wait_ps(linux, "wasmsvc/worker", &["service/wasm", "running", "2/2"]);
    serve.kill();

    // Its instances died with the daemon: the new one starts them again, once each.
    let _serve = Serve::start(netns, linux);
    wait_ps(linux, "wasmsvc/worker", &["service/wasm", "running", "2/2"]);
    let events = events(linux, "wasmsvc");
    let started = events.lines().filter(|l| l.contains("  started  ")).count();
    assert_eq!(started, 4, "{events}");
    client(linux, &["apps", "rm", "wasmsvc"]).expect_code(0);
}

#[test]
fn wasm_service_replicas_listen_on_their_own_addresses_and_are_routed_once_healthy() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let registry = Registry::start();
    let hello = wasm_image(linux, &registry, &p2("hello"), "skiff/hello:p2");
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(netns, linux);
    // `api`'s two replicas each listen on the loopback address they are told (`HOST`,
    // `PORT`); `wide` asks for every interface and `other` for 127.0.0.1, not its own:
    // both are refused the bind (the sample exits, 1 as `wasi:cli/exit` says a failure).
    let manifest = format!(
        r#"[app]
name = "wasmnet"

[service.api]
image = "{hello}"
ports = [8080]
route = "/api"
replicas = 2
env = {{ HELLO_SERVE = "1" }}

[service.wide]
image = "{hello}"
ports = [8081]
restart = "never"
env = {{ HELLO_LISTEN = "0.0.0.0:8081" }}

[service.other]
image = "{hello}"
ports = [8082]
restart = "never"
env = {{ HELLO_LISTEN = "127.0.0.1:8082" }}
"#
    );
    deploy(linux, dir.path(), &manifest).expect_code(0);
    let first = wait_served(netns, &serve, "/api");
    assert!(
        first.starts_with("hello from a wasm service at 127.77."),
        "{first}"
    );
    wait_ps(linux, "wasmnet/api", &["service/wasm", "running", "2/2"]);
    // Round robin over both replicas' addresses.
    let mut seen: Vec<String> = (0..6)
        .map(|_| get(netns, serve.gateway, "/api").1)
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let deadline = Instant::now() + WAIT;
    loop {
        let events = events(linux, "wasmnet");
        let exited = |service: &str| {
            (events.lines()).any(|l| {
                l.contains(&format!("wasmnet/{service}/")) && l.contains("exited with code 1")
            })
        };
        if exited("wide") && exited("other") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "binds were not refused:\n{events}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Scaled to 3, the new replica gets an address of its own and is routed too.
    client(linux, &["scale", "wasmnet/api=3"]).expect_code(0);
    wait_ps(linux, "wasmnet/api", &["service/wasm", "running", "3/3"]);
    let mut seen: Vec<String> = (0..9)
        .map(|_| get(netns, serve.gateway, "/api").1)
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3, "{seen:?}");
    // The instances' sockets are the daemon's, and go with the app.
    let address = first.trim().rsplit(' ').next().unwrap().to_string();
    client(linux, &["apps", "rm", "wasmnet"]).expect_code(0);
    let (status, _) = get(netns, serve.gateway, "/api");
    assert_eq!(status, 404);
    let refused = netns.enter(move || std::net::TcpStream::connect(&address).is_err());
    assert!(refused, "the listener outlived its app");
}

/// The CPU seconds `skiff ps` shows for `workload`.
#[track_caller]
fn ps_cpu(linux: &Linux, workload: &str) -> f64 {
    let line = ps_line(&client(linux, &["ps"]), workload);
    let cpu = line[4]
        .strip_suffix('s')
        .unwrap_or_else(|| panic!("{line:?}"));
    cpu.parse().unwrap_or_else(|_| panic!("{line:?}"))
}

#[test]
fn a_spinning_wasm_service_scales_up_on_its_cpu() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let registry = Registry::start();
    let spinner = wasm_image(linux, &registry, &p1("loop"), "skiff/loop:p1");
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start_with(
        netns,
        linux,
        &["--autoscale-interval", "1s", "--autoscale-window", "3s"],
    );
    let manifest = format!(
        "[app]\nname = \"wasmcpu\"\n\n[service.spin]\nimage = \"{spinner}\"\n\
         cpu = \"100m\"\ncpu_target = \"50%\"\nmin = 1\nmax = 3\n"
    );
    deploy(linux, dir.path(), &manifest).expect_code(0);
    // One spinning replica, capped at its request, is at 100% of it, twice the target.
    serve.wait_log("scaled up from 1 to ");
    let told = events(linux, "wasmcpu");
    for said in [
        "autoscaled",
        "scaled up from 1 to ",
        "of the request, target 50%",
    ] {
        assert!(told.contains(said), "{said}:\n{told}");
    }
    let line = wait_ps(linux, "wasmcpu/spin", &["service/wasm", "running"]);
    let desired: u32 = line[3].split_once('/').unwrap().1.parse().unwrap();
    assert!((2..=3).contains(&desired), "{line:?}");
    client(linux, &["apps", "rm", "wasmcpu"]).expect_code(0);
    assert!(!serve.log().contains("did not end"), "{}", serve.log());
}

#[test]
fn a_wasm_services_cpu_is_counted_under_its_limit() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let registry = Registry::start();
    let spinner = wasm_image(linux, &registry, &p1("loop"), "skiff/loop:p1");
    let dir = tempfile::tempdir().unwrap();
    let _serve = Serve::start(netns, linux);
    let good = format!(
        "[app]\nname = \"wasmcpu\"\n\n[service.spin]\nimage = \"{spinner}\"\n\
         cpu = \"100m\"\ncpu_limit = \"200m\"\n"
    );
    deploy(linux, dir.path(), &good).expect_code(0);
    wait_ps(linux, "wasmcpu/spin", &["service/wasm", "running", "1/1"]);
    // Its instance's CPU is counted as it spins: what `skiff ps` shows grows.
    let deadline = Instant::now() + WAIT;
    let first = loop {
        let cpu = ps_cpu(linux, "wasmcpu/spin");
        if cpu > 0.0 {
            break cpu;
        }
        assert!(Instant::now() < deadline, "no CPU counted");
        std::thread::sleep(Duration::from_millis(100));
    };
    while ps_cpu(linux, "wasmcpu/spin") <= first {
        assert!(Instant::now() < deadline, "CPU stayed at {first}s");
        std::thread::sleep(Duration::from_millis(100));
    }

    wait_ps(linux, "wasmcpu/spin", &["service/wasm", "running", "1/1"]);
    let events = events(linux, "wasmcpu");
    assert_eq!(
        events.lines().filter(|l| l.contains("  started  ")).count(),
        1,
        "the running instance was left alone:\n{events}"
    );
    client(linux, &["apps", "rm", "wasmcpu"]).expect_code(0);
}

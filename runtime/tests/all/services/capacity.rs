//! Services in the node's one ledger, beside functions: a service larger than the node is
//! refused at deploy; an idle warm function is evicted to make room for a service; a service
//! with no room waits as pending, says why, and starts when room frees.

use super::*;

/// 1 GiB less 10% and no fixed reserve: 921.6 MiB for workloads.
const SMALL_NODE: &[&str] = &["--capacity-memory", "1GiB", "--reserve-memory", "0"];

fn service(app: &str, memory: &str, route: &str) -> String {
    format!(
        "[app]\nname = \"{app}\"\n\n[service.web]\nimage = \"localhost/skiff/busybox:latest\"\n\
         command = [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\nports = [80]\n\
         memory = \"{memory}\"\nroute = \"{route}\"\n"
    )
}

#[test]
fn a_service_larger_than_the_node_is_refused_and_changes_nothing() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let dir = tempfile::tempdir().unwrap();
    let _serve = Serve::start_with(netns, linux, SMALL_NODE);
    deploy(linux, dir.path(), &service("huge", "2GiB", "/"))
        .expect_code(125)
        .stderr_has("service huge/web asks for 2 GiB of memory")
        .stderr_has("lower memory in the manifest")
        .stderr_has("nothing was changed");
    let apps = client(linux, &["apps"]);
    apps.expect_code(0);
    assert!(!apps.stdout.contains("huge"), "{}", apps.stdout);
    assert!(owned(linux).is_empty(), "{:?}", owned(linux));
}

#[test]
fn an_idle_function_makes_room_for_a_service_and_a_service_without_room_waits() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start_with(netns, linux, SMALL_NODE);

    // A function kept warm for an hour after one request: 600 MiB held in the ledger.
    let function = format!(
        "[app]\nname = \"fn\"\n\n[function.hello]\nfile = \"{}\"\nroute = \"/hello\"\n\
         memory = \"600MiB\"\nidle = \"1h\"\n",
        crate::support::p2("http_hello").display()
    );
    let fn_dir = tempfile::tempdir().unwrap();
    deploy(linux, fn_dir.path(), &function).expect_code(0);
    assert_eq!(get(netns, serve.gateway, "/hello").0, 200);

    // A 400 MiB service does not fit beside it: the idle pool goes, the service runs.
    deploy(linux, dir.path(), &service("web", "400MiB", "/")).expect_code(0);
    wait_served(netns, &serve, "/index.html");
    client(linux, &["events", "--app", "fn"])
        .expect_code(0)
        .stdout_has("evicted");
    // The function still answers: a cold start, which now waits for room itself.
    let hello = get(netns, serve.gateway, "/hello");
    assert!(matches!(hello.0, 200 | 503), "{hello:?}");

    // A 800 MiB service cannot fit beside the 400 MiB one: pending, with the reason.
    let other = tempfile::tempdir().unwrap();
    deploy(linux, other.path(), &service("big", "800MiB", "/big")).expect_code(0);
    let deadline = Instant::now() + WAIT;
    loop {
        let ps = client(linux, &["ps"]);
        if ps.stdout.contains("waiting for 800 MiB of memory") {
            break;
        }
        assert!(Instant::now() < deadline, "never pending:\n{}", ps.stdout);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(owned(linux).len(), 1, "only web runs: {:?}", owned(linux));

    // Room frees when web goes: big starts.
    client(linux, &["apps", "rm", "web"]).expect_code(0);
    wait_owned(linux, |ids| ids.len() == 1);
    client(linux, &["events", "--app", "big"])
        .expect_code(0)
        .stdout_has("pending: waiting for 800 MiB of memory")
        .stdout_has("started");
    client(linux, &["apps", "rm", "big"]).expect_code(0);
    client(linux, &["apps", "rm", "fn"]).expect_code(0);
}

#[test]
fn run_d_goes_through_the_daemon_and_its_ledger() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let _serve = Serve::start_with(netns, linux, SMALL_NODE);
    let run = |args: &[&str]| {
        let mut all = vec!["run", "-d"];
        all.extend_from_slice(args);
        all.extend_from_slice(&[IMAGE, "httpd", "-f", "-p", "80", "-h", "/www"]);
        client(linux, &all)
    };

    // Larger than the node: refused with the flag to lower, nothing created.
    run(&["--name", "huge", "-m", "2g"])
        .expect_code(125)
        .stderr_has("container huge asks for 2 GiB of memory, more than the node's 921.6 MiB")
        .stderr_has("lower -m");
    assert!(linux.ids().is_empty(), "{:?}", linux.ids());

    // One that fits runs, started by the daemon (its event says so) in the daemon's network.
    let started = run(&["--name", "web1", "-m", "600m"]);
    started.expect_code(0);
    let id = started.stdout.trim().to_string();
    assert_eq!(linux.ids(), std::slice::from_ref(&id));
    client(linux, &["events"])
        .expect_code(0)
        .stdout_has(&format!("container {id} started"));
    let deadline = Instant::now() + WAIT;
    while linux.record(&id)["status"] != "running" {
        assert!(Instant::now() < deadline, "{id} never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    let address = linux.record(&id)["address"].as_str().unwrap().to_string();
    assert!(address.starts_with("10.89."), "{address}");

    // Beside it, a second 600 MiB does not fit now: refused with the shortfall.
    run(&["--name", "web2", "-m", "600m"])
        .expect_code(125)
        .stderr_has("container web2 does not fit the node now (waiting for 600 MiB of memory");
    assert_eq!(linux.ids(), std::slice::from_ref(&id), "nothing created");

    // When web1 is gone, its room is given back (bounded wait: the daemon polls its exit).
    client(linux, &["rm", "-f", "web1"]).expect_code(0);
    let deadline = Instant::now() + WAIT;
    loop {
        let second = run(&["--name", "web2", "-m", "600m"]);
        if second.code == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "room never freed: {}",
            second.stderr
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    client(linux, &["rm", "-f", "web2"]).expect_code(0);
}

#[test]
fn a_job_without_room_waits_until_room_frees() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let _serve = Serve::start_with(netns, linux, SMALL_NODE);
    let dir = tempfile::tempdir().unwrap();
    deploy(linux, dir.path(), &service("web", "600MiB", "/")).expect_code(0);
    let job = "[app]\nname = \"batch\"\n\n[job.once]\nimage = \"localhost/skiff/busybox:latest\"\n\
               command = [\"true\"]\nmemory = \"600MiB\"\n";
    let other = tempfile::tempdir().unwrap();
    deploy(linux, other.path(), job).expect_code(0);
    let deadline = Instant::now() + WAIT;
    loop {
        let ps = client(linux, &["ps"]);
        if ps_line(&ps, "batch/once")[2] == "pending" {
            assert!(
                ps.stdout.contains("waiting for 600 MiB of memory"),
                "{}",
                ps.stdout
            );
            break;
        }
        assert!(Instant::now() < deadline, "never pending:\n{}", ps.stdout);
        std::thread::sleep(Duration::from_millis(200));
    }

    client(linux, &["apps", "rm", "web"]).expect_code(0);
    let deadline = Instant::now() + WAIT;
    loop {
        let events = client(linux, &["events", "--app", "batch"]);
        if events.stdout.contains("succeeded") {
            break;
        }
        assert!(Instant::now() < deadline, "never ran:\n{}", events.stdout);
        std::thread::sleep(Duration::from_millis(200));
    }
    client(linux, &["apps", "rm", "batch"]).expect_code(0);
}

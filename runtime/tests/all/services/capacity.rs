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
    let deadline = Instant::now() + WAIT;
    while owned(linux).len() != 1 {
        assert!(
            Instant::now() < deadline,
            "big never started: {:?}",
            owned(linux)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    client(linux, &["events", "--app", "big"])
        .expect_code(0)
        .stdout_has("pending: waiting for 800 MiB of memory")
        .stdout_has("started");
    client(linux, &["apps", "rm", "big"]).expect_code(0);
    client(linux, &["apps", "rm", "fn"]).expect_code(0);
}

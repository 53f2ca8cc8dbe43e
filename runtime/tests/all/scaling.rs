//! Functions under `skiff serve` between requests: scale to zero and cold starts, `min` warm
//! pools, the node's ledger refusing what can never fit, evicting idle pools under memory
//! pressure and keeping what does not fit now pending with its reason. State is observed
//! through the control API (`GET /v1/apps/{name}`), never by timing.

use crate::daemon::{Daemon, HELLO, client, manifest, socket};
use crate::support::*;
use std::io::Read;

/// `GET path` on the control API, as JSON.
fn api(skiff: &Skiff, path: &str) -> serde_json::Value {
    use std::io::Write;
    let mut stream = std::os::unix::net::UnixStream::connect(socket(skiff)).expect("the socket");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: skiff\r\nConnection: close\r\n\r\n"
    )
    .expect("sending");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("reading");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {answer}"))
}

/// Whether function `function` of `app` is warm, as `GET /v1/apps/{app}` says.
fn warm(skiff: &Skiff, app: &str, function: &str) -> bool {
    let answer = api(skiff, &format!("/v1/apps/{app}"));
    let functions = answer["functions"].as_array().expect("a functions list");
    let status = functions
        .iter()
        .find(|f| f["name"] == function)
        .unwrap_or_else(|| panic!("no function {function} in {answer}"));
    status["warm"].as_bool().expect("a warm flag")
}

/// Polls `condition` every 50 ms for up to 30 s; panics with `what` when it never holds.
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn an_idle_function_goes_to_zero_and_cold_starts_while_min_1_stays_warm() {
    let skiff = Skiff::new();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&skiff, &[]);
    let file = manifest(
        dir.path(),
        "skiff.toml",
        "[app]\nname = \"idle\"\n\n[function.zero]\nfile = \"hello.wasm\"\nroute = \"/zero\"\n\
         idle = \"1s\"\n\n[function.kept]\nfile = \"hello.wasm\"\nroute = \"/kept\"\n\
         idle = \"1s\"\nmin = 1\n",
    );
    client(&skiff, &["deploy", "-f", &file]).expect_code(0);
    assert!(warm(&skiff, "idle", "kept"), "min = 1 is warm from deploy");
    assert!(!warm(&skiff, "idle", "zero"), "min = 0 starts at zero");

    assert_eq!(get(daemon.gateway, "/zero").status, 200);
    assert_eq!(get(daemon.gateway, "/kept").status, 200);
    wait_until("zero goes back to zero after its idle window", || {
        !warm(&skiff, "idle", "zero")
    });
    assert!(
        warm(&skiff, "idle", "kept"),
        "min = 1 outlives the idle window"
    );

    let reply = get(daemon.gateway, "/zero/again");
    assert_eq!(reply.status, 200, "a cold start still answers: {reply:?}");
    assert_eq!(reply.body, "Hello from skiff! path=/zero/again\n");
    assert!(
        warm(&skiff, "idle", "zero"),
        "warm again after the cold start"
    );
}

#[test]
fn a_function_larger_than_the_node_is_refused_and_changes_nothing() {
    let skiff = Skiff::new();
    let dir = tempfile::tempdir().unwrap();
    let _daemon = Daemon::start(&skiff, &["--capacity-memory", "1GiB"]);
    let good = manifest(dir.path(), "skiff.toml", HELLO);
    client(&skiff, &["deploy", "-f", &good]).expect_code(0);
    let before = client(&skiff, &["apps"]).stdout;

    let huge = manifest(
        dir.path(),
        "huge.toml",
        "[app]\nname = \"huge\"\n\n[function.big]\nfile = \"hello.wasm\"\nroute = \"/big\"\n\
         memory = \"2GiB\"\n",
    );
    client(&skiff, &["deploy", "-f", &huge])
        .expect_code(125)
        .stderr_has("function huge/big asks for 2 GiB of memory")
        .stderr_has("lower `memory` or `min`")
        .stderr_has("nothing was changed");
    assert_eq!(client(&skiff, &["apps"]).stdout, before);
}

#[test]
fn memory_pressure_evicts_an_idle_warm_function_before_refusing() {
    let skiff = Skiff::new();
    let dir = tempfile::tempdir().unwrap();
    // 1 GiB less 10% and no fixed reserve: 921.6 MiB for workloads, room for one 600 MiB
    // function at a time.
    let daemon = Daemon::start(
        &skiff,
        &["--capacity-memory", "1GiB", "--reserve-memory", "0"],
    );
    let file = manifest(
        dir.path(),
        "skiff.toml",
        "[app]\nname = \"big\"\n\n[function.first]\nfile = \"hello.wasm\"\nroute = \"/first\"\n\
         memory = \"600MiB\"\nidle = \"1h\"\n\n[function.second]\nfile = \"hello.wasm\"\n\
         route = \"/second\"\nmemory = \"600MiB\"\nidle = \"1h\"\n",
    );
    client(&skiff, &["deploy", "-f", &file]).expect_code(0);
    assert_eq!(get(daemon.gateway, "/first").status, 200);
    assert!(
        warm(&skiff, "big", "first"),
        "warm for an hour unless evicted"
    );

    let reply = get(daemon.gateway, "/second");
    assert_eq!(reply.status, 200, "the idle pool made room: {reply:?}");
    assert!(warm(&skiff, "big", "second"));
    assert!(!warm(&skiff, "big", "first"), "first was evicted");
}

#[test]
fn a_warm_pool_that_does_not_fit_now_waits_with_its_reason_until_room_frees() {
    let skiff = Skiff::new();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &skiff,
        &["--capacity-memory", "1GiB", "--reserve-memory", "0"],
    );
    let pool = |app: &str, route: &str| {
        format!(
            "[app]\nname = \"{app}\"\n\n[function.pool]\nfile = \"hello.wasm\"\n\
             route = \"{route}\"\nmemory = \"600MiB\"\nmin = 1\n"
        )
    };
    let first = manifest(dir.path(), "first.toml", &pool("first", "/first"));
    let second = manifest(dir.path(), "second.toml", &pool("second", "/second"));
    client(&skiff, &["deploy", "-f", &first]).expect_code(0);
    client(&skiff, &["deploy", "-f", &second]).expect_code(0);

    let status = api(&skiff, "/v1/apps/second");
    let pending = status["functions"][0]["pending"]
        .as_str()
        .unwrap_or_default();
    assert!(
        pending.contains("waiting for 600 MiB of memory"),
        "min = 1 cannot evict another warm pool: {status}"
    );
    let refused = get(daemon.gateway, "/second");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.headers["retry-after"], "1");
    assert!(refused.body.contains("waiting for"), "{}", refused.body);

    client(&skiff, &["apps", "rm", "first"]).expect_code(0);
    wait_until("second is warmed once first's memory frees", || {
        warm(&skiff, "second", "pool")
    });
    assert_eq!(get(daemon.gateway, "/second").status, 200);
}

#[test]
fn spinning_guests_do_not_stall_the_gateway() {
    let skiff = Skiff::new();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&skiff, &[]);
    let file = manifest(
        dir.path(),
        "skiff.toml",
        &format!(
            "[app]\nname = \"spin\"\n\n[function.bad]\nfile = {:?}\nroute = \"/\"\n\
             timeout = \"10s\"\n\n[function.hello]\nfile = \"hello.wasm\"\nroute = \"/hello\"\n",
            p2("http_misbehave").to_str().unwrap()
        ),
    );
    client(&skiff, &["deploy", "-f", &file]).expect_code(0);
    let in_flight = |skiff: &Skiff| {
        let answer = api(skiff, "/v1/apps/spin");
        let functions = answer["functions"].as_array().cloned().unwrap_or_default();
        let bad = functions.iter().find(|f| f["name"] == "bad").cloned();
        bad.and_then(|f| f["in_flight"].as_u64()).unwrap_or(0)
    };

    // As many spinning guests as the machine has cores (2 here): without yielding at epoch
    // ticks each would hold a runtime worker until its time limit.
    let gateway = daemon.gateway;
    let spinners: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || get(gateway, "/loop")))
        .collect();
    wait_until("both spinners run", || in_flight(&skiff) == 2);
    let reply = get(gateway, "/hello");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        in_flight(&skiff),
        2,
        "answered while both guests still spin (their limit is 10 s)"
    );
    for spinner in spinners {
        assert_eq!(spinner.join().unwrap().status, 504);
    }
}

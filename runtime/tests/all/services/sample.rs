//! The mixed sample app (`samples/apps/mixed`), as the README's main job deploys it: two Wasm
//! functions and a Linux service behind one gateway.

use super::*;

#[test]
fn the_mixed_sample_app_serves_its_functions_and_its_service() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/apps/mixed/skiff.toml");
    // The functions' files are the built samples; fail with the command that builds them.
    crate::support::p2("http_hello");
    crate::support::p1("wagi-hello");
    let serve = Serve::start(netns, linux);
    client(linux, &["deploy", "-f", manifest.to_str().unwrap()])
        .expect_code(0)
        .stdout_has("+ function hello (new)")
        .stdout_has("+ function wagi (new)")
        .stdout_has("+ service web (new)");

    assert_eq!(
        wait_served(netns, &serve, "/index.html"),
        "hello from busybox httpd\n"
    );
    let (status, body) = get(netns, serve.gateway, "/hello");
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(netns, serve.gateway, "/wagi?x=1");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Hello from WAGI!"), "{body}");
    assert!(body.contains("query=x=1"), "{body}");

    // Both replicas come up healthy; `skiff ps` says so.
    let deadline = Instant::now() + WAIT;
    loop {
        let ps = client(linux, &["ps"]);
        let line = ps_line(&ps, "mixed/web");
        if line[2] == "running" && line[3] == "2/2" {
            for function in ["mixed/hello", "mixed/wagi"] {
                let line = ps_line(&ps, function);
                assert_eq!(line[1], "function/wasm", "{}", ps.stdout);
            }
            break;
        }
        assert!(Instant::now() < deadline, "web never 2/2:\n{}", ps.stdout);
        std::thread::sleep(Duration::from_millis(200));
    }
    let instances = owned(linux);
    assert_eq!(instances.len(), 2, "{instances:?}");

    // An instance is the workload's: `stop` and plain `rm` by hand say what to use instead,
    // and change nothing.
    let (id, _) = &instances[0];
    for verb in [&["stop", id.as_str()][..], &["rm", id.as_str()]] {
        client(linux, verb)
            .expect_code(1)
            .stderr_has("is an instance of mixed/web")
            .stderr_has("skiff scale mixed/web=N")
            .stderr_has("skiff apps rm mixed");
    }
    assert_eq!(owned(linux), instances, "nothing changed");
    wait_served(netns, &serve, "/index.html");

    client(linux, &["apps", "rm", "mixed"]).expect_code(0);
    assert!(owned(linux).is_empty(), "{:?}", owned(linux));
}

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
            break;
        }
        assert!(Instant::now() < deadline, "web never 2/2:\n{}", ps.stdout);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(owned(linux).len(), 2, "{:?}", owned(linux));

    client(linux, &["apps", "rm", "mixed"]).expect_code(0);
    assert!(owned(linux).is_empty(), "{:?}", owned(linux));
}

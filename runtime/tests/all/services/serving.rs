//! Services under the daemon: served through the gateway, restarted, adopted after a
//! `kill -9`, health-checked, proxied faithfully, and refused when their input is wrong.

use super::*;

#[test]
fn a_service_is_served_restarted_and_adopted_after_the_daemons_kill_9() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(netns, linux);
    deploy(linux, dir.path(), WEB)
        .expect_code(0)
        .stdout_has("+ service web (new)");
    assert_eq!(
        wait_served(netns, &serve, "/index.html"),
        "hello from busybox httpd\n"
    );
    let (first, pid) = one_running(linux, None);
    let ps = client(linux, &["ps"]);
    let line = ps_line(&ps, "shop/web");
    assert_eq!(
        &line[..4],
        ["shop/web", "service/linux", "running", "1/1"],
        "{}",
        ps.stdout
    );

    // Its process dies: a new container replaces it, and it is served again.
    kill_9(pid);
    let (second, _) = one_running(linux, Some(&first));
    serve.wait_log("restarting in 1s");
    wait_served(netns, &serve, "/index.html");
    assert!(
        !linux.containers_dir().join(&first).exists(),
        "{first} left"
    );

    // The daemon dies: the container lives on and the next daemon adopts it.
    serve.kill();
    let serve = Serve::start(netns, linux);
    serve.wait_log("adopted after a restart");
    assert_eq!(one_running(linux, None).0, second);
    wait_served(netns, &serve, "/");
    assert_eq!(owned(linux).len(), 1, "{:?}", owned(linux));

    // The container dies while no daemon runs: the next daemon replaces it.
    serve.kill();
    let (id, pid) = one_running(linux, None);
    assert_eq!(id, second);
    kill_9(pid);
    let deadline = Instant::now() + WAIT;
    while linux.record(&second)["status"] != "exited" {
        assert!(Instant::now() < deadline, "{second} never exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    let serve = Serve::start(netns, linux);
    let (third, _) = one_running(linux, Some(&second));
    wait_served(netns, &serve, "/");
    assert!(!linux.containers_dir().join(&second).exists());

    // Removing the app stops and removes its containers.
    client(linux, &["apps", "rm", "shop"]).expect_code(0);
    assert!(owned(linux).is_empty(), "{:?}", owned(linux));
    assert!(!linux.containers_dir().join(&third).exists());
    assert_eq!(get(netns, serve.gateway, "/").0, 404);
}

#[test]
fn an_unhealthy_instance_is_not_routed() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(netns, linux);
    let manifest =
        format!("{WEB}health = {{ http = \"/missing\", interval = \"200ms\", retries = 2 }}\n");
    deploy(linux, dir.path(), &manifest).expect_code(0);
    serve.wait_log("unhealthy: GET /missing answered 404");
    let response = send_raw(
        netns,
        serve.gateway,
        "GET /index.html HTTP/1.0\r\nHost: shop.test\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.0 503"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("\r\nretry-after: 1\r\n"),
        "{response}"
    );
    assert!(
        response.contains("service shop/web has no healthy instance"),
        "{response}"
    );
    assert_eq!(owned(linux).len(), 1, "the instance still runs");
    client(linux, &["apps", "rm", "shop"]).expect_code(0);
    assert!(linux.ids().is_empty(), "{:?}", linux.ids());
}

#[test]
fn a_missing_image_or_a_taken_route_is_refused_and_nothing_is_started() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let dir = tempfile::tempdir().unwrap();
    let _serve = Serve::start(netns, linux);

    let missing = WEB.replace(IMAGE, "localhost/skiff/nothere:1");
    deploy(linux, dir.path(), &missing)
        .expect_code(125)
        .stderr_has("service shop/web: image localhost/skiff/nothere:1 is not in the local store")
        .stderr_has("skiff pull localhost/skiff/nothere:1");

    std::fs::copy(p2("http_hello"), dir.path().join("hello.wasm")).unwrap();
    std::fs::write(dir.path().join("broken.wasm"), "not wasm").unwrap();
    let wasm_job = "[app]\nname = \"batch\"\n\n[job.once]\nfile = \"broken.wasm\"\n";
    deploy(linux, dir.path(), wasm_job)
        .expect_code(125)
        .stderr_has("job batch/once:")
        .stderr_has("broken.wasm");
    let function =
        "[app]\nname = \"greet\"\n\n[function.hello]\nfile = \"hello.wasm\"\nroute = \"/\"\n";
    deploy(linux, dir.path(), function).expect_code(0);
    deploy(linux, dir.path(), WEB)
        .expect_code(125)
        .stderr_has("route / of service shop/web is already served by greet/hello");

    let apps = client(linux, &["apps"]);
    apps.expect_code(0);
    assert!(!apps.stdout.contains("shop"), "{}", apps.stdout);
    assert!(!apps.stdout.contains("batch"), "{}", apps.stdout);
    assert!(linux.ids().is_empty(), "{:?}", linux.ids());
}

/// A CGI script under busybox httpd on port 8080 that echoes what it was sent.
const ECHO: &str = r#"[app]
name = "echo"

[service.cgi]
image = "localhost/skiff/busybox:latest"
ports = [8080]
route = "/cgi-bin"
health = { tcp = 8080, interval = "200ms" }
replicas = 2
cpu = "500m"
memory = "64Mi"
command = ["sh", "-c", '''
mkdir -p /tmp/www/cgi-bin
cat > /tmp/www/cgi-bin/echo <<'EOF'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
echo "$REQUEST_METHOD $REQUEST_URI for=$HTTP_X_FORWARDED_FOR host=$HTTP_X_FORWARDED_HOST custom=$HTTP_X_CUSTOM"
head -c "$CONTENT_LENGTH"
EOF
cat > /tmp/www/cgi-bin/who <<'EOF'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
hostname
EOF
chmod +x /tmp/www/cgi-bin/who
chmod +x /tmp/www/cgi-bin/echo
exec httpd -f -p 8080 -h /tmp/www
''']
"#;

#[test]
fn the_proxy_keeps_method_path_query_headers_and_body() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(netns, linux);
    deploy(linux, dir.path(), ECHO).expect_code(0);
    wait_served(netns, &serve, "/cgi-bin/echo");
    let (status, body) = send(
        netns,
        serve.gateway,
        "POST /cgi-bin/echo?x=1&y=2 HTTP/1.0\r\nHost: echo.test\r\nX-Custom: kept\r\n\
         Content-Length: 11\r\n\r\nhello world",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        "POST /cgi-bin/echo?x=1&y=2 for=127.0.0.1 host=echo.test custom=kept\nhello world"
    );
    // Two replicas, both healthy, take turns.
    wait_ready(linux, "echo/cgi", "2/2");
    let hosts: Vec<String> = (0..4)
        .map(|_| get(netns, serve.gateway, "/cgi-bin/who").1)
        .collect();
    assert_ne!(hosts[0], hosts[1], "{hosts:?}");
    assert_eq!((&hosts[0], &hosts[1]), (&hosts[2], &hosts[3]), "{hosts:?}");

    // The service's cpu and memory are its containers' cgroup limits.
    let id = owned(linux)[0].0.clone();
    let [memory, cpu, _] = crate::linux::cgroup_dirs(&id).try_into().unwrap();
    let read = |path: PathBuf| std::fs::read_to_string(path).unwrap().trim().to_string();
    assert_eq!(read(memory.join("memory.limit_in_bytes")), "67108864");
    assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "50000");
    client(linux, &["apps", "rm", "echo"]).expect_code(0);
    assert!(linux.ids().is_empty(), "{:?}", linux.ids());
}

#[test]
fn exec_health_checks_decide_a_rollout_a_failing_change_is_rolled_back_a_good_one_replaces() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(netns, linux);
    let healthy = format!(
        "{WEB}health = {{ exec = [\"test\", \"-f\", \"/www/index.html\"], interval = \"200ms\" }}\n"
    );
    deploy(linux, dir.path(), &healthy).expect_code(0);
    serve.wait_log("health check passed");
    wait_served(netns, &serve, "/index.html");
    let (first, _) = one_running(linux, None);

    // The new version never passes its check: it is rolled back, the first one served on.
    let unhealthy = healthy.replace("/www/index.html", "/nowhere");
    deploy(linux, dir.path(), &unhealthy)
        .expect_code(0)
        .stdout_has("~ service web: health");
    serve.wait_log("unhealthy: [\"test\", \"-f\", \"/nowhere\"] exited with");
    serve.wait_log("generation 2 rolled back to generation 1");
    assert_eq!(get(netns, serve.gateway, "/index.html").0, 200);
    assert_eq!(one_running(linux, None).0, first);
    let ps = client(linux, &["ps"]);
    assert_eq!(
        ps_line(&ps, "shop/web")[2..4],
        ["running", "1/1"],
        "{}",
        ps.stdout
    );

    // A change that passes replaces it.
    let changed = healthy.replace("/www/index.html", "/bin/sh");
    deploy(linux, dir.path(), &changed)
        .expect_code(0)
        .stdout_has("~ service web: health");
    let (second, _) = one_running(linux, Some(&first));
    serve.wait_log("serves all 1 replicas");
    wait_served(netns, &serve, "/index.html");
    let deadline = Instant::now() + WAIT;
    while linux.containers_dir().join(&first).exists() {
        assert!(Instant::now() < deadline, "{first} left");
        std::thread::sleep(Duration::from_millis(50));
    }
    client(linux, &["apps", "rm", "shop"]).expect_code(0);
    assert!(!linux.containers_dir().join(&second).exists());
}

#[test]
fn an_instance_that_does_not_answer_is_a_502() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(netns, linux);
    // No health check: routed once running, though nothing listens on its port.
    let silent = WEB.replace(
        r#"["httpd", "-f", "-p", "80", "-h", "/www"]"#,
        r#"["sleep", "3600"]"#,
    );
    deploy(linux, dir.path(), &silent).expect_code(0);
    serve.wait_log("replica 0 started");
    let deadline = Instant::now() + WAIT;
    let (status, body) = loop {
        let answer = get(netns, serve.gateway, "/");
        if answer.0 != 503 || Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("service shop/web failed to answer"), "{body}");
    client(linux, &["apps", "rm", "shop"]).expect_code(0);
    assert!(linux.ids().is_empty(), "{:?}", linux.ids());
}

#[test]
fn containers_of_an_app_no_longer_stored_are_removed_on_restart() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(netns, linux);
    deploy(linux, dir.path(), WEB).expect_code(0);
    wait_served(netns, &serve, "/");
    let (id, _) = one_running(linux, None);

    // A crash between forgetting the app and stopping its containers, as `apps rm` does them.
    serve.kill();
    let store = skiff::state::Store::open(linux.data_dir.path()).unwrap();
    assert!(store.delete_app("shop").unwrap());
    drop(store);
    let serve = Serve::start(netns, linux);
    serve.wait_log("removing a container no workload adopted");
    let deadline = Instant::now() + WAIT;
    while linux.containers_dir().join(&id).exists() {
        assert!(Instant::now() < deadline, "{id} left");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(owned(linux).is_empty(), "{:?}", owned(linux));
    assert_eq!(get(netns, serve.gateway, "/").0, 404);
}

#[test]
fn an_exited_instance_is_restarted_only_as_its_policy_says() {
    let Some(env) = env() else { return };
    let (netns, linux) = (&env.netns, &env.linux);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(netns, linux);
    let manifest = format!(
        r#"[app]
name = "policies"

[service.never]
image = "{IMAGE}"
command = ["sh", "-c", "exit 3"]
restart = "never"

[service.clean]
image = "{IMAGE}"
command = ["true"]
restart = "on-failure"

[service.failing]
image = "{IMAGE}"
command = ["sh", "-c", "exit 5"]
restart = "on-failure"
"#
    );
    deploy(linux, dir.path(), &manifest).expect_code(0);
    serve.wait_log("replica 0 not restarted (restart = never, exited with code 3)");
    serve.wait_log("replica 0 not restarted (restart = on-failure, exited with code 0)");
    serve.wait_log("replica 0 restarting in 1s (exited with code 5)");
    // `ps` shows why it is not running (once the supervisor's next look has published it).
    let deadline = Instant::now() + WAIT;
    loop {
        let ps = client(linux, &["ps"]);
        let never = ps_line(&ps, "policies/never");
        if never[2..4] == ["pending", "0/1"]
            && ps
                .stdout
                .contains("replica 0 not restarted (restart = never, exited with code 3)")
        {
            break;
        }
        assert!(Instant::now() < deadline, "{}", ps.stdout);
        std::thread::sleep(Duration::from_millis(100));
    }
    client(linux, &["apps", "rm", "policies"]).expect_code(0);
    assert!(linux.ids().is_empty(), "{:?}", linux.ids());
}

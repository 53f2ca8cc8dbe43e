//! The control plane of `skiff serve`: the TCP control API and its bearer token, `skiff scale`
//! and `skiff events`, against a real daemon.

use crate::serving::*;
use crate::support::*;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::sync::mpsc::channel;

fn apps_json(serving: &Serving) -> serde_json::Value {
    let reply = serving.api("GET", "/v1/apps", "");
    assert_eq!(reply.status, 200, "{reply:?}");
    serde_json::from_str(&reply.body).expect("JSON from /v1/apps")
}

#[test]
fn the_tcp_control_api_needs_its_bearer_token() {
    let skiff = Skiff::new();
    let dir = tempfile::tempdir().unwrap();
    let mut serving = Serving::start(&skiff, &["--api", "127.0.0.1:0"]);
    let tcp: std::net::SocketAddr = serving.line("control api on http://").parse().unwrap();
    let token_file = serving.line("token in ");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the generated token is private");
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(
        token_file,
        skiff.data_dir.path().join("run/token").to_str().unwrap()
    );

    let file = write_app(dir.path(), HELLO);
    let manifest = std::fs::read_to_string(&file).unwrap();
    let put = "/v1/apps/greet?base=/";
    for headers in [
        vec![],
        vec![("authorization", "Bearer wrong")],
        vec![("authorization", "Basic Zm9vOmJhcg==")],
    ] {
        let refused = request(tcp, "PUT", put, &headers, &manifest);
        assert_eq!(refused.status, 401, "{headers:?}: {refused:?}");
        assert_eq!(
            refused.headers["www-authenticate"],
            "Bearer realm=\"skiff\""
        );
        let error: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
        assert!(
            error["error"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains("token"),
            "{error}"
        );
    }
    assert_eq!(
        apps_json(&serving)["apps"],
        serde_json::json!([]),
        "refused requests stored nothing"
    );
    assert_eq!(request(tcp, "GET", "/metrics", &[], "").status, 401);

    let bearer = format!("Bearer {token}");
    let metrics = request(tcp, "GET", "/metrics", &[("authorization", &bearer)], "");
    assert_eq!(metrics.status, 200, "{metrics:?}");
    let lowercase = format!("bearer {token}");
    let info = request(tcp, "GET", "/v1/info", &[("authorization", &lowercase)], "");
    assert_eq!(info.status, 200, "the scheme is case-insensitive: {info:?}");

    // The CLI over TCP: SKIFF_HOST and SKIFF_TOKEN, or --token-file.
    let host = format!("http://{tcp}");
    let over_tcp = |args: &[&str], token: &str| {
        Ran::from(
            skiff
                .command()
                .env("SKIFF_SOCKET", "/nonexistent/skiff.sock")
                .env("SKIFF_HOST", &host)
                .env("SKIFF_TOKEN", token)
                .args(args)
                .output()
                .unwrap(),
        )
    };
    over_tcp(&["deploy", "-f", &file], "not-the-token")
        .expect_code(125)
        .stderr_has("wrong bearer token");
    assert_eq!(apps_json(&serving)["apps"], serde_json::json!([]));
    over_tcp(&["deploy", "-f", &file], &token)
        .expect_code(0)
        .stdout_has("app greet deployed (generation 1)");
    Ran::from(
        skiff
            .command()
            .env("SKIFF_HOST", &host)
            .env_remove("SKIFF_TOKEN")
            .args(["apps", "--token-file", &token_file])
            .output()
            .unwrap(),
    )
    .expect_code(0)
    .stdout_has("greet");
    Ran::from(
        skiff
            .command()
            .env("SKIFF_HOST", &host)
            .env_remove("SKIFF_TOKEN")
            .arg("apps")
            .output()
            .unwrap(),
    )
    .expect_code(125)
    .stderr_has("needs a token; set SKIFF_TOKEN or --token-file");
    // The unix socket stays tokenless.
    serving
        .client(&skiff, &["apps"])
        .expect_code(0)
        .stdout_has("greet");
}

#[test]
fn a_bad_token_file_stops_the_daemon_before_it_listens() {
    let skiff = Skiff::new();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    let serve = |file: &std::path::Path| {
        Ran::from(
            skiff
                .command()
                .args(["serve", "--gateway", "127.0.0.1:0", "--api"])
                .args(["127.0.0.1:0", "--socket"])
                .arg(socket(&skiff))
                .arg("--token-file")
                .arg(file)
                .output()
                .unwrap(),
        )
    };
    std::fs::write(&token, "s3cret\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    serve(&token)
        .expect_code(125)
        .stderr_has("has mode 0644")
        .stderr_has("chmod 600");
    std::fs::write(&token, "\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    serve(&token).expect_code(125).stderr_has("is empty");
    serve(&dir.path().join("missing"))
        .expect_code(125)
        .stderr_has("cannot read token file");
    assert!(!socket(&skiff).exists(), "no control socket was bound");

    // A token file given without a TCP listener is a usage error, not ignored.
    let alone = skiff
        .command()
        .args(["serve", "--token-file"])
        .arg(&token)
        .output()
        .unwrap();
    Ran::from(alone).expect_code(2).stderr_has("--api");
}

const SHOP: &str = r#"[app]
name = "shop"

[function.hello]
file = "hello.wasm"
route = "/hello"
max = 4

[job.migrate]
file = "hello.wasm"
"#;

/// Each workload's stored `skiff scale`, by name.
fn scales(serving: &Serving) -> serde_json::Value {
    let reply = serving.api("GET", "/v1/apps/shop", "");
    assert_eq!(reply.status, 200, "{reply:?}");
    let app: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    app["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["name"].as_str().unwrap().to_string(), w["scale"].clone()))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[test]
fn scale_stores_the_number_and_refuses_what_does_not_fit() {
    let skiff = Skiff::new();
    let dir = tempfile::tempdir().unwrap();
    let serving = Serving::start(&skiff, &[]);
    let file = write_app(dir.path(), SHOP);
    serving
        .client(&skiff, &["deploy", "-f", &file])
        .expect_code(0);

    let state = |serving: &Serving| {
        let ps = serving.client(&skiff, &["ps"]);
        ps.expect_code(0);
        let line = ps
            .stdout
            .lines()
            .find(|l| l.starts_with("shop/hello "))
            .map(str::to_string);
        line.unwrap_or_else(|| panic!("shop/hello not in ps:\n{}", ps.stdout))
    };
    assert!(
        state(&serving).contains("scaled to zero"),
        "{}",
        state(&serving)
    );
    serving
        .client(&skiff, &["scale", "shop/hello=3"])
        .expect_code(0)
        .stdout_has("function shop/hello scaled to 3");
    // A warm minimum applies at once: the function is warm before any request.
    assert!(state(&serving).contains(" warm "), "{}", state(&serving));
    // Services are scaled in `services::`, where their containers can run.
    let scaled = serde_json::json!({ "hello": 3, "migrate": null });
    assert_eq!(scales(&serving), scaled);

    for (target, message) in [
        ("shop/hello=5", "cannot be scaled to 5: its max is 4"),
        (
            "shop/migrate=1",
            "is a job; jobs run to completion and are not scaled",
        ),
        ("shop/nope=1", "app shop has no workload nope"),
        ("nope/hello=1", "no app named nope is deployed"),
        ("shop/hello", "is not APP/WORKLOAD=N"),
        ("shop/hello=-1", "is not a whole number"),
    ] {
        serving
            .client(&skiff, &["scale", target])
            .expect_code(125)
            .stderr_has(message);
        assert_eq!(scales(&serving), scaled, "{target} changed nothing");
    }
    let bad = serving.api("PUT", "/v1/apps/shop/workloads/hello/scale?replicas=x", "");
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(bad.body.contains("is not a whole number"), "{}", bad.body);
    let by_body = serving.api(
        "POST",
        "/v1/apps/shop/workloads/hello/scale",
        r#"{"replicas": 1}"#,
    );
    assert_eq!(by_body.status, 200, "{by_body:?}");
    assert_eq!(scales(&serving)["hello"], 1);

    // One `scaled` event per stored change, none for the refused ones.
    let events = serving.client(&skiff, &["events", "--app", "shop"]);
    events.expect_code(0);
    let scaled: Vec<&str> = events
        .stdout
        .lines()
        .filter(|l| l.contains(" scaled "))
        .collect();
    assert_eq!(scaled.len(), 2, "{}", events.stdout);
    assert!(scaled[0].contains("shop/hello  scaled  function warm minimum set to 3"));
    assert!(scaled[1].contains("shop/hello  scaled  function warm minimum set to 1"));

    // A re-deploy of the same manifest keeps the scale, and the function warm.
    serving
        .client(&skiff, &["deploy", "-f", &file])
        .expect_code(0);
    assert_eq!(scales(&serving)["hello"], 1);
    assert!(state(&serving).contains(" warm "), "{}", state(&serving));
    serving
        .client(&skiff, &["scale", "shop/hello=0"])
        .expect_code(0);
    assert!(
        state(&serving).contains("scaled to zero"),
        "{}",
        state(&serving)
    );
}

#[test]
fn events_follow_streams_what_happens_after_it_started() {
    let skiff = Skiff::new();
    let dir = tempfile::tempdir().unwrap();
    let serving = Serving::start(&skiff, &[]);
    let file = write_app(dir.path(), HELLO);
    serving
        .client(&skiff, &["deploy", "-f", &file])
        .expect_code(0);

    let mut follower = skiff
        .command()
        .env("SKIFF_SOCKET", &serving.socket)
        .args(["events", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (send, lines) = channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = send.send(line);
        }
    });
    let next = || {
        lines
            .recv_timeout(WAIT)
            .expect("`skiff events --follow` printed nothing in time")
    };
    // The stored event first: once it is printed, the follower is subscribed.
    let first = next();
    assert!(first.starts_with("1  "), "{first}");
    assert!(first.contains("  greet  deployed  generation 1"), "{first}");

    let changed = HELLO.replace("max = 4", "max = 2");
    std::fs::write(&file, changed).unwrap();
    serving
        .client(&skiff, &["deploy", "-f", &file])
        .expect_code(0);
    let live = next();
    assert!(live.starts_with("2  "), "{live}");
    assert!(live.contains("  greet  deployed  generation 2"), "{live}");
    serving
        .client(&skiff, &["apps", "rm", "greet"])
        .expect_code(0);
    assert!(next().contains("  greet  removed  app removed"));
    let _ = follower.kill();
    let _ = follower.wait();

    // Without --follow: the stored log, filtered and paged by seq.
    let all = serving.client(&skiff, &["events"]);
    assert_eq!(all.stdout.lines().count(), 3, "{}", all.stdout);
    let since = serving.client(&skiff, &["events", "--since", "2"]);
    assert_eq!(since.stdout.lines().count(), 1, "{}", since.stdout);
    let other = serving.client(&skiff, &["events", "--app", "other"]);
    assert_eq!(other.stdout, "");
}

//! Registry credentials: `skiff login`/`logout`, Docker's config file, and the bearer-token
//! challenge flow.

use super::*;

#[test]
fn login_opens_a_private_registry_and_logout_closes_it() {
    use std::io::Write;
    let registry = Registry::start_with_auth("alice", "s3cret");
    let reference = registry.reference("private/hello:1");
    let hello = p1("hello");
    let skiff = Skiff::new();
    let auth_file = skiff.data_dir.path().join("auth.json");
    skiff
        .run(["push", hello.to_str().unwrap(), &reference])
        .expect_code(125)
        .stderr_has("skiff login");

    let login = |password: &str| {
        let mut child = skiff
            .command()
            .args(["login", "-u", "alice", "--password-stdin", &registry.host()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        Ran::from(child.wait_with_output().unwrap())
    };
    login("wrong").expect_code(125).stderr_has("access denied");
    assert!(!auth_file.exists(), "refused credentials are not stored");
    login("s3cret").expect_code(0).stdout_has("login succeeded");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&auth_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    skiff
        .run(["push", hello.to_str().unwrap(), &reference])
        .expect_code(0);
    skiff.run(["pull", &reference]).expect_code(0);
    skiff
        .run(["run", &reference])
        .expect_code(0)
        .stdout_has("hello from skiff");

    // Docker's own config file is honoured too.
    let other = Skiff::new();
    let docker_dir = other.data_dir.path().join("docker");
    std::fs::create_dir_all(&docker_dir).unwrap();
    let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "alice:s3cret");
    std::fs::write(
        docker_dir.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    other.run(["pull", &reference]).expect_code(0);

    skiff.run(["logout", &registry.host()]).expect_code(0);
    skiff
        .run(["pull", &reference])
        .expect_code(125)
        .stderr_has("access denied");
}

#[test]
fn bearer_token_challenges_are_answered_with_the_logged_in_credentials() {
    let registry = Registry::start();
    let reference = registry.reference("tokens/hello:1");
    let digest = push(&Skiff::new(), &p1("hello"), &reference);
    let gate = FaultProxy::start(
        registry.addr,
        Fault::BearerAuth {
            user: "carol".into(),
            password: "t0ken-pass".into(),
            token: "opaque-token-123".into(),
        },
    );
    let through_gate = gate.reference("tokens/hello:1");
    pull_fails(&through_gate, &["access denied", "skiff login"]);

    let skiff = Skiff::new();
    skiff
        .run(["login", "-u", "carol", "-p", "wrong", &gate.host()])
        .expect_code(125)
        .stderr_has("access denied");
    skiff
        .run(["login", "-u", "carol", "-p", "t0ken-pass", &gate.host()])
        .expect_code(0);
    skiff
        .run(["pull", &through_gate])
        .expect_code(0)
        .stdout_has(&digest);
    skiff
        .run(["run", &through_gate])
        .expect_code(0)
        .stdout_has("hello from skiff");
    let asked_for_token = gate.seen().iter().any(|r| {
        r.starts_with("GET /token?") && r.contains("scope=repository%3Atokens%2Fhello%3Apull")
    });
    assert!(
        asked_for_token,
        "the client followed the challenge's realm with its scope: {:?}",
        gate.seen()
    );
}

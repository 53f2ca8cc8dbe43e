//! The image's config and the flags that override it, as the container's process sees them;
//! exit codes and the errors for a command or user that is not there.

use super::*;

/// Entrypoint `sh -c`, a Cmd that reports what it sees, Env, WorkingDir and User set.
fn configured(skiff: &Skiff) -> String {
    variant(
        skiff,
        "configured",
        |_| {},
        &[
            "--clear=config.entrypoint",
            "--clear=config.cmd",
            "--clear=config.env",
            "--config.entrypoint=/bin/sh",
            "--config.entrypoint=-c",
            "--config.cmd=echo \"$GREETING|$(pwd)|$(id)|$0\"",
            "--config.env=PATH=/bin",
            "--config.env=GREETING=hello",
            "--config.workingdir=/home/skiff",
            "--config.user=skiff",
        ],
    )
}

#[test]
fn the_image_config_is_honoured() {
    let Some(linux) = linux() else { return };
    let image = configured(&linux);
    linux
        .run(["run", "--rm", "--net", "none", &image])
        .expect_code(0)
        .stdout_has("hello|/home/skiff|uid=1000(skiff) gid=1000(skiff)|");
}

#[test]
fn flags_override_the_image_config() {
    let Some(linux) = linux() else { return };
    let image = configured(&linux);
    let work = tempfile::tempdir().unwrap();
    let env_file = work.path().join("env");
    std::fs::write(&env_file, "# a comment\nFROM_FILE=yes\n").unwrap();
    // -e, --env-file, -w and -u over Env, WorkingDir and User; ARGS replace Cmd and keep
    // the Entrypoint (`sh -c`, so the first argument is the script).
    let ran = linux.run([
        "run",
        "--rm",
        "--net",
        "none",
        "-e",
        "GREETING=overridden",
        "--env-file",
        env_file.to_str().unwrap(),
        "-w",
        "/tmp",
        "-u",
        "root",
        &image,
        "echo \"$GREETING|$FROM_FILE|$(pwd)|$(id -u)|$PATH\"",
    ]);
    ran.expect_code(0)
        .stdout_has("overridden|yes|/tmp|0|/bin\n");

    // --entrypoint replaces the Entrypoint, and Cmd goes with it (as Docker does).
    let ran = linux.run([
        "run",
        "--rm",
        "--net",
        "none",
        "--entrypoint",
        "/bin/echo",
        &image,
        "plain",
        "words",
    ]);
    assert_eq!(ran.expect_code(0).stdout, "plain words\n");

    // --hostname, seen by the process.
    let ran = linux.sh(
        &["--hostname", "box"],
        "hostname; cat /proc/sys/kernel/hostname",
    );
    assert_eq!(ran.expect_code(0).stdout, "box\nbox\n");
}

#[test]
fn users_resolve_by_name_and_number() {
    let Some(linux) = linux() else { return };
    for (user, expected) in [
        ("skiff", "uid=1000(skiff) gid=1000(skiff)"),
        ("1000", "uid=1000(skiff) gid=1000(skiff)"),
        ("nobody", "uid=65534(nobody) gid=65534(nogroup)"),
        ("1000:65534", "uid=1000(skiff) gid=65534(nogroup)"),
        ("4321", "uid=4321 gid=0(root)"),
    ] {
        let ran = linux.sh(&["--user", user], "id");
        assert_eq!(ran.expect_code(0).stdout.trim(), expected, "--user {user}");
    }
    // The default: root, the sample has no User.
    assert_eq!(linux.sh(&[], "id -u").expect_code(0).stdout, "0\n");

    let ran = linux.sh(&["--user", "bogus"], "id");
    assert_ne!(ran.code, 0, "an unknown user ran: {}", ran.stdout);
    ran.stderr_has("user `bogus` is not in the image's /etc/passwd");
    assert!(ran.stdout.is_empty(), "{}", ran.stdout);
    assert!(linux.ids().is_empty(), "--rm left {:?}", linux.ids());
}

#[test]
fn exit_codes_propagate() {
    let Some(linux) = linux() else { return };
    linux.sh(&[], "exit 7").expect_code(7);
    linux.sh(&[], "exit 0").expect_code(0);
    // Killed by a signal: 128 + the signal.
    linux.sh(&[], "kill -9 $$").expect_code(137);

    let ran = linux.run([
        "run",
        "--rm",
        "--net",
        "none",
        "--entrypoint",
        "/app/missing",
        IMAGE,
    ]);
    ran.expect_code(127)
        .stderr_has("/app/missing does not exist in the container");
    let ran = linux.run(["run", "--rm", "--net", "none", IMAGE, "no-such-command"]);
    ran.expect_code(127).stderr_has("no-such-command");
    // A file that is not executable.
    let ran = linux.run(["run", "--rm", "--net", "none", IMAGE, "/etc/passwd"]);
    ran.expect_code(127).stderr_has("/etc/passwd");
}

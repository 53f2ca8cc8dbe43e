//! A container's life: orphans reaped by skiff's init, `stop` (TERM, then KILL), `logs`,
//! `ps`, `rm`, `--rm`, detached containers outliving the CLI, and names that are taken.

use super::*;

#[test]
fn orphans_are_reaped_by_skiffs_init() {
    let Some(linux) = linux() else { return };
    // `(sleep 0.2 &)` leaves an orphan that pid 1 inherits; once it exits, only a reaper
    // makes its /proc entry go (a zombie keeps it). Wait (bounded) for that, then list what
    // is left.
    let ran = linux.sh(
        &[],
        "(sleep 0.2 & echo $! > /tmp/orphan); orphan=$(cat /tmp/orphan); i=0; \
         while [ -e /proc/$orphan ] && [ $i -lt 100 ]; do usleep 100000; i=$((i+1)); done; \
         [ -e /proc/$orphan ] && echo left $(grep State /proc/$orphan/status); \
         ps -o pid,stat,comm",
    );
    ran.expect_code(0);
    assert!(!ran.stdout.contains("left"), "not reaped:\n{}", ran.stdout);
    let rows: Vec<Vec<&str>> = ran
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        rows.iter()
            .all(|r| !r[1].starts_with('Z') && r[2] != "sleep"),
        "an orphan was not reaped:\n{}",
        ran.stdout
    );
    // sh execs its last command: skiff's init and ps are all that is left.
    let commands: Vec<&str> = rows.iter().map(|r| r[2]).collect();
    assert_eq!(commands, ["exe", "ps"], "{}", ran.stdout);
}

#[test]
fn stop_sends_term_then_kill() {
    let Some(linux) = linux() else { return };
    linux.detach(&["--name", "sleeper"], &["sleep", "1000"]);
    let ran = linux.run(["stop", "sleeper"]);
    ran.expect_code(0).stdout_has("sleeper");
    let line = linux.ps_line("sleeper").unwrap();
    assert!(line.contains("exited (143)"), "ended by SIGTERM: {line}");

    // A shell that ignores TERM is killed once --time is up. Stopped only once its trap is
    // set: a TERM before that would end it (143) and test nothing.
    linux.detach(
        &["--name", "stubborn"],
        &[
            "sh",
            "-c",
            "trap '' TERM; echo trapped; while true; do sleep 1; done",
        ],
    );
    assert!(
        eventually(|| linux.run(["logs", "stubborn"]).stdout.contains("trapped")),
        "the shell never set its trap"
    );
    linux
        .run(["stop", "--time", "1s", "stubborn"])
        .expect_code(0);
    let line = linux.ps_line("stubborn").unwrap();
    assert!(line.contains("exited (137)"), "ended by SIGKILL: {line}");

    // Stopping an exited container is a no-op; an unknown one is an error.
    linux.run(["stop", "sleeper"]).expect_code(0);
    linux
        .run(["stop", "nonesuch"])
        .expect_code(1)
        .stderr_has("no such container: nonesuch");
}

#[test]
fn logs_keep_stdout_and_stderr_apart() {
    let Some(linux) = linux() else { return };
    linux.detach(
        &["--name", "talker"],
        &["sh", "-c", "echo out-1; echo err-1 >&2; echo out-2"],
    );
    linux.wait_exited("talker");
    let ran = linux.run(["logs", "talker"]);
    ran.expect_code(0);
    assert_eq!(ran.stdout, "out-1\nout-2\n");
    assert_eq!(ran.stderr, "err-1\n");

    // -f follows a running container and returns when it exits.
    linux.detach(
        &["--name", "follow"],
        &[
            "sh",
            "-c",
            "echo first; i=0; while [ $i -lt 5 ]; do usleep 100000; i=$((i+1)); done; echo second >&2; echo third",
        ],
    );
    let ran = linux.run(["logs", "-f", "follow"]);
    ran.expect_code(0);
    assert_eq!(ran.stdout, "first\nthird\n");
    assert_eq!(ran.stderr, "second\n");
    assert!(linux.ps_line("follow").unwrap().contains("exited (0)"));
    linux
        .run(["logs", "nonesuch"])
        .expect_code(125)
        .stderr_has("no such container");
}

#[test]
fn ps_rm_and_auto_remove() {
    let Some(linux) = linux() else { return };
    let running = linux.detach(&["--name", "up"], &["sleep", "1000"]);
    linux
        .run(["run", "--net", "none", "--name", "done", IMAGE, "true"])
        .expect_code(0);
    linux
        .run([
            "run", "--net", "none", "--rm", "--name", "gone", IMAGE, "true",
        ])
        .expect_code(0);

    let names = |args: &[&str]| -> Vec<String> {
        let listed = linux.run(args).expect_code(0).stdout.clone();
        let mut names: Vec<String> = listed
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().last().map(str::to_string))
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&["ps"]), ["up"]);
    assert_eq!(names(&["ps", "-a"]), ["done", "up"], "--rm removed `gone`");
    assert_eq!(
        linux.run(["ps", "-q"]).stdout,
        format!("{}\n", &running[..12])
    );
    assert_eq!(linux.ids().len(), 2);

    // rm of a running container is refused and leaves it running.
    let ran = linux.run(["rm", "up"]);
    ran.expect_code(1)
        .stderr_has("container up is running; stop it with `skiff stop up`");
    assert!(
        linux.ps_line("up").unwrap().contains(" up "),
        "still running"
    );
    assert!(linux.containers_dir().join(&running).exists());

    linux.run(["rm", "done"]).expect_code(0);
    linux
        .run(["rm", "-f", "up"])
        .expect_code(0)
        .stdout_has("up");
    assert_eq!(names(&["ps", "-a"]), Vec::<String>::new());
    assert!(linux.ids().is_empty(), "{:?}", linux.ids());
    for dir in cgroup_dirs(&running) {
        assert!(!dir.exists(), "{} is left after rm -f", dir.display());
    }
}

#[test]
fn a_detached_container_outlives_the_cli() {
    let Some(linux) = linux() else { return };
    let shared = tempfile::tempdir().unwrap();
    let volume = format!("{}:/shared", shared.path().display());
    // The container answers a ping dropped in the shared directory.
    let ran = linux.run([
        "run",
        "-d",
        "--net",
        "none",
        "--name",
        "ponger",
        "-v",
        &volume,
        IMAGE,
        "sh",
        "-c",
        "while [ ! -e /shared/ping ]; do usleep 50000; done; echo pong > /shared/pong; sleep 1000",
    ]);
    // `output()` returned: the CLI process has exited.
    let id = full_id(&ran);
    let record = linux.record(&id);
    assert_eq!(record["status"], "running");
    let monitor = record["monitor_pid"].as_i64().unwrap() as i32;
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(monitor), None).is_ok(),
        "the monitor is alive"
    );
    std::fs::write(shared.path().join("ping"), "").unwrap();
    let pong = shared.path().join("pong");
    assert!(eventually(|| pong.exists()), "the container did not answer");
    assert_eq!(std::fs::read_to_string(&pong).unwrap(), "pong\n");
    assert!(linux.ps_line("ponger").unwrap().contains(" up "));
}

#[test]
fn a_taken_name_is_refused_and_the_first_container_is_untouched() {
    let Some(linux) = linux() else { return };
    let first = linux.detach(&["--name", "one"], &["sleep", "1000"]);
    let ran = linux.run(["run", "-d", "--net", "none", "--name", "one", IMAGE, "true"]);
    assert_ne!(ran.code, 0, "{}", ran.stdout);
    ran.stderr_has("container name one is already in use");
    assert_eq!(linux.ids(), std::slice::from_ref(&first));
    assert!(linux.ps_line("one").unwrap().contains(" up "));
    assert_eq!(linux.record(&first)["status"], "running");
    // Also in the foreground, and a name skiff cannot use.
    let ran = linux.run(["run", "--net", "none", "--name", "one", IMAGE, "true"]);
    ran.expect_code(125).stderr_has("already in use");
    let ran = linux.run(["run", "--net", "none", "--name", "../x", IMAGE, "true"]);
    ran.expect_code(125).stderr_has("invalid container name");
    assert_eq!(linux.ids(), [first]);
}

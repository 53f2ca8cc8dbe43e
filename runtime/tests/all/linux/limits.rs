//! Resource limits: the cgroup files `--memory`, `--cpus` and `--pids-limit` write, what
//! hitting them does to the container (and only to it), and the cgroup going with it.

use super::*;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .trim()
        .to_string()
}

#[test]
fn limits_are_written_to_the_containers_cgroup_and_removed_with_it() {
    let Some(linux) = linux() else { return };
    let id = linux.detach(
        &[
            "--name",
            "limited",
            "--cpus",
            "0.5",
            "--memory",
            "32m",
            "--pids-limit",
            "20",
        ],
        &["sleep", "1000"],
    );
    let cgroup = |controller: &str, file: &str| {
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join("skiff")
            .join(&id)
            .join(file)
    };
    assert_eq!(read(&cgroup("cpu", "cpu.cfs_quota_us")), "50000");
    assert_eq!(read(&cgroup("cpu", "cpu.cfs_period_us")), "100000");
    assert_eq!(
        read(&cgroup("memory", "memory.limit_in_bytes")),
        (32u64 << 20).to_string()
    );
    assert_eq!(read(&cgroup("pids", "pids.max")), "20");
    // The container's processes are in it: its pid 1 (skiff's init) and `sleep`.
    let pid = linux.record(&id)["pid"].as_i64().unwrap().to_string();
    for controller in CONTROLLERS {
        let procs = read(&cgroup(controller, "cgroup.procs"));
        assert!(procs.lines().any(|p| p == pid), "{controller}: {procs}");
        assert_eq!(procs.lines().count(), 2, "{controller}: {procs}");
    }

    linux.run(["stop", "limited"]).expect_code(0);
    for dir in cgroup_dirs(&id) {
        assert!(!dir.exists(), "{} is left after exit", dir.display());
    }
    linux.run(["rm", "limited"]).expect_code(0);
}

#[test]
fn without_limits_the_cgroup_is_unlimited() {
    let Some(linux) = linux() else { return };
    let id = linux.detach(&[], &["sleep", "1000"]);
    let dirs = cgroup_dirs(&id);
    assert_eq!(read(&dirs[1].join("cpu.cfs_quota_us")), "-1");
    assert_eq!(read(&dirs[2].join("pids.max")), "max");
    linux.run(["rm", "-f", &id]).expect_code(0);
    for dir in dirs {
        assert!(!dir.exists(), "{} is left after rm -f", dir.display());
    }
    assert!(linux.ids().is_empty());
}

#[test]
fn a_memory_hog_is_killed_and_skiff_carries_on() {
    let Some(linux) = linux() else { return };
    let ran = linux.run([
        "run",
        "--net",
        "none",
        "--name",
        "hog",
        "--memory",
        "16m",
        IMAGE,
        "sh",
        "-c",
        "x=a; while true; do x=$x$x; done",
    ]);
    ran.expect_code(137)
        .stderr_has("skiff: container hog was killed: out of memory (raise --memory)");
    let line = linux.ps_line("hog").expect("hog in ps -a");
    assert!(line.contains("exited (137, oom)"), "{line}");
    let id = linux.ids().pop().unwrap();
    assert_eq!(linux.record(&id)["oom_killed"], true);
    for dir in cgroup_dirs(&id) {
        assert!(
            !dir.exists(),
            "{} is left after the OOM kill",
            dir.display()
        );
    }
    // The next container runs, and one killed by something else is not called an OOM.
    assert_eq!(
        linux
            .sh(&["--memory", "16m"], "echo fine")
            .expect_code(0)
            .stdout,
        "fine\n"
    );
    let ran = linux.sh(&["--memory", "16m"], "kill -9 $$");
    ran.expect_code(137);
    assert!(!ran.stderr.contains("out of memory"), "{}", ran.stderr);
}

#[test]
fn a_fork_bomb_hits_the_pids_limit_and_the_host_survives() {
    let Some(linux) = linux() else { return };
    // Each `sleep` holds a pid until the container ends; the shell fails to fork past 10.
    let ran = linux.sh(
        &["--pids-limit", "10"],
        "i=0; while [ $i -lt 50 ]; do sleep 1000 & i=$((i+1)); done; echo all forked",
    );
    assert_ne!(ran.code, 0, "{}", ran.stdout);
    ran.stderr_has("can't fork");
    assert!(!ran.stdout.contains("all forked"), "{}", ran.stdout);
    // Its processes went with it (pid 1's exit ends the pid namespace), and the next
    // container, without a limit, forks freely.
    let ran = linux.sh(
        &[],
        "i=0; while [ $i -lt 50 ]; do sleep 1000 & i=$((i+1)); done; echo all forked",
    );
    ran.expect_code(0).stdout_has("all forked");
    assert!(linux.ids().is_empty(), "--rm left {:?}", linux.ids());
}

//! podman 4.3 drives skiff as its OCI runtime (`--runtime skiff-oci`).

use super::*;

/// podman with its own storage, run dir and temp dir, and skiff (through a `skiff-oci` link)
/// as its runtime; its containers and storage go when dropped.
///
/// skiff keeps its default state root here: podman 4.3 passes `--runtime-flag` to the
/// runtime except from `podman container cleanup` (conmon's exit command), whose `delete`
/// would look in the default root. Container ids are random, so nothing collides there.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Self {
        become_subreaper();
        let podman = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_skiff"), podman.runtime()).unwrap();
        podman
    }

    fn runtime(&self) -> PathBuf {
        self.dir.path().join("skiff-oci")
    }

    fn state_root(&self) -> PathBuf {
        PathBuf::from("/run/skiff-oci")
    }

    fn command(&self) -> Command {
        let dir = self.dir.path().to_str().unwrap();
        let mut command = Command::new("podman");
        #[rustfmt::skip]
        command.args([
            "--root", &format!("{dir}/storage"), "--runroot", &format!("{dir}/run"),
            "--tmpdir", &format!("{dir}/tmp"), "--storage-driver", "vfs",
            "--events-backend", "none", "--cgroup-manager", "cgroupfs",
            "--runtime", self.runtime().to_str().unwrap(),
        ]);
        command.stdin(std::process::Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Ran {
        let mut command = self.command();
        command.args(args);
        run_to_files(command)
    }

    /// `podman run` with what this sandbox needs: no network, and rlimits it may set.
    fn container(&self, flags: &[&str], command: &[&str]) -> Ran {
        #[rustfmt::skip]
        let base = [
            "run", "--network", "none",
            "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
        ];
        let image = ["localhost/skiff/busybox:latest"];
        self.run(&[&base[..], flags, &image, command].concat())
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "--all", "--force", "--time", "0"]);
        let _ = self.run(&["rmi", "--all", "--force"]);
        let storage = self.dir.path().join("storage");
        let _ = self.run(&["system", "reset", "--force"]);
        let _ = std::fs::remove_dir_all(storage);
    }
}

#[test]
fn podman_runs_containers_with_skiff_as_its_runtime() {
    if !root_or_skip("podman_runs_containers_with_skiff_as_its_runtime") {
        return;
    }
    if Command::new("podman").arg("--version").output().is_err() {
        eprintln!("skipping podman_runs_containers_with_skiff_as_its_runtime: no podman");
        return;
    }
    let podman = Podman::new();
    let sample = busybox_sample();
    podman
        .run(&["load", "-i", sample.to_str().unwrap()])
        .expect_code(0)
        .stdout_has("localhost/skiff/busybox:latest");

    // Output and exit code come back through conmon from skiff's container.
    podman
        .container(&["--rm"], &["sh", "-c", "echo hi from $(hostname); exit 7"])
        .expect_code(7)
        .stdout_has("hi from ");

    // Detached: podman asks skiff for state, then `podman stop` sends TERM through
    // `skiff-oci kill`, and the trap's exit code shows the signal arrived.
    let script = "trap 'exit 3' TERM; echo ready; sleep 1000 & wait";
    let ran = podman.container(&["-d"], &["sh", "-c", script]);
    let id = ran.expect_code(0).stdout.trim().to_string();
    assert_eq!(id.len(), 64, "podman run -d prints the id: {}", ran.stdout);
    wait_until("the container's trap is set", || {
        podman.run(&["logs", &id]).stdout.contains("ready")
    });
    let inspect = |format: &str| {
        let ran = podman.run(&["inspect", "--format", format, &id]);
        ran.expect_code(0).stdout.trim().to_string()
    };
    assert_eq!(inspect("{{.State.Status}}"), "running");
    let pid: i32 = inspect("{{.State.Pid}}").parse().unwrap();
    assert_eq!(cmdline(pid)[..2], ["sh", "-c"]);
    assert!(
        podman.state_root().join(&id).is_dir(),
        "skiff's state root has {id}"
    );
    let cgroup = format!("libpod_parent/libpod-{id}");
    let procs = cgroup_dirs(&cgroup);
    assert!(!procs.is_empty(), "no cgroup {cgroup}");
    podman.run(&["stop", "--time", "60", &id]).expect_code(0);
    assert_eq!(inspect("{{.State.Status}}"), "exited");
    assert_eq!(inspect("{{.State.ExitCode}}"), "3");
    podman.run(&["rm", &id]).expect_code(0);
    assert!(!podman.state_root().join(&id).exists(), "delete left state");
    let left = cgroup_dirs(&cgroup);
    assert!(left.is_empty(), "delete left cgroups: {left:?}");
}

//! `skiff oci ...` and `skiff-oci`: the OCI runtime command line (runc's verbs) on bundles
//! unpacked by umoci from the busybox sample, and driven by podman. Needs root (namespaces,
//! cgroups, pivot_root); skipped with a printed reason otherwise.
//!
//! The test process makes itself a child subreaper, so a container's pid 1, orphaned when
//! `skiff oci create` exits, becomes its child and is reaped here: `state` then sees it gone
//! the moment `waitpid` returns, with no sleeping.

use crate::support::*;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use serde_json::Value;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn root_or_skip(test: &str) -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    if !root {
        eprintln!("skipping {test}: the OCI runtime needs root (namespaces, cgroups)");
    }
    root
}

/// Orphaned container processes come to this process, which reaps them by pid.
fn become_subreaper() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
    });
}

/// An id no other run of these tests uses at the same time (cgroup paths are machine-wide).
fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// The busybox sample image as an OCI layout, extracted under `dir`.
fn busybox_sample_layout(dir: &Path) -> PathBuf {
    let archive = busybox_sample();
    let layout = dir.join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    tool(
        "tar",
        &[
            "-C",
            layout.to_str().unwrap(),
            "-xf",
            archive.to_str().unwrap(),
        ],
    );
    layout
}

fn busybox_sample() -> PathBuf {
    let archive = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/target/linux/busybox.tar");
    assert!(
        archive.exists(),
        "{} is missing; build it: bash samples/linux/busybox/build.sh",
        archive.display()
    );
    archive
}

/// A bundle: the busybox sample unpacked by umoci (rootfs and its generated config.json),
/// with no terminal and `args` as the process.
struct Bundle {
    dir: tempfile::TempDir,
}

impl Bundle {
    fn new(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let layout = busybox_sample_layout(dir.path());
        let image = format!("{}:latest", layout.display());
        let path = dir.path().join("bundle");
        tool(
            "umoci",
            &["unpack", "--image", &image, path.to_str().unwrap()],
        );
        let bundle = Self { dir };
        bundle.edit(|config| {
            config["process"]["terminal"] = false.into();
            config["process"]["args"] = args.into();
        });
        bundle
    }

    fn path(&self) -> PathBuf {
        std::fs::canonicalize(self.dir.path().join("bundle")).unwrap()
    }

    fn config_path(&self) -> PathBuf {
        self.path().join("config.json")
    }

    fn edit(&self, change: impl FnOnce(&mut Value)) {
        let path = self.config_path();
        let mut config: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        change(&mut config);
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    }
}

/// A state root for `skiff oci`; on drop, force-deletes what is left and reaps the processes.
struct Oci {
    skiff: Skiff,
    root: PathBuf,
    pids: RefCell<Vec<i32>>,
}

impl Oci {
    fn new() -> Self {
        become_subreaper();
        let skiff = Skiff::new();
        let root = skiff.data_dir.path().join("oci-root");
        Self {
            skiff,
            root,
            pids: RefCell::default(),
        }
    }

    /// The state root's flag and `args`, after `skiff oci` (or none, for the link form).
    fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        [&["--root", self.root.to_str().unwrap()], args].concat()
    }

    fn run(&self, args: &[&str]) -> Ran {
        let mut command = self.skiff.command();
        command.arg("oci").args(self.args(args));
        run_to_files(command)
    }

    /// `create --bundle B --pid-file B/../ID.pid ID`: checks the pid file and returns the pid.
    fn create(&self, bundle: &Bundle, id: &str) -> i32 {
        let pid_file = bundle.dir.path().join(format!("{id}.pid"));
        let bundle = bundle.path();
        let ran = self.run(&[
            "create",
            "--bundle",
            bundle.to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
            id,
        ]);
        ran.expect_code(0);
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .expect("create writes the pid file")
            .trim()
            .parse()
            .expect("the pid file holds a number");
        self.pids.borrow_mut().push(pid);
        pid
    }

    fn state(&self, id: &str) -> Value {
        let ran = self.run(&["state", id]);
        serde_json::from_str(&ran.expect_code(0).stdout).expect("state prints JSON")
    }

    fn status(&self, id: &str) -> String {
        self.state(id)["status"].as_str().unwrap().to_string()
    }

    /// Waits for the container's pid 1 to exit (it is this process's child by now).
    fn reap(&self, pid: i32) -> WaitStatus {
        self.pids.borrow_mut().retain(|p| *p != pid);
        waitpid(Pid::from_raw(pid), None).expect("pid 1 was reparented to this subreaper")
    }

    fn state_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }
}

impl Drop for Oci {
    fn drop(&mut self) {
        for entry in std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
        {
            let id = entry.file_name().to_string_lossy().into_owned();
            let _ = self.run(&["delete", "--force", &id]);
        }
        for pid in self.pids.take() {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
        }
    }
}

/// Runs `command` with its output in files: a container's pid 1 inherits `create`'s stdout
/// and stderr, so pipes would stay open, and unread, as long as the container lives.
fn run_to_files(mut command: Command) -> Ran {
    let out = tempfile::tempfile().unwrap();
    let err = tempfile::tempfile().unwrap();
    let status = command
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap())
        .status()
        .expect("spawning skiff");
    let read = |mut file: std::fs::File| {
        use std::io::{Read, Seek};
        let mut text = String::new();
        file.rewind().unwrap();
        file.read_to_string(&mut text).unwrap();
        text
    };
    Ran {
        code: status.code().unwrap_or(-1),
        stdout: read(out),
        stderr: read(err),
    }
}

/// The directories of cgroup `path` in every mounted hierarchy (v1 controllers, unified).
fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|hierarchy| hierarchy.path().join(path))
        .chain([Path::new("/sys/fs/cgroup").join(path)])
        .filter(|dir| dir.is_dir())
        .collect()
}

fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// Polls `done` for a bounded while; the bound only turns a hang into a failure.
#[track_caller]
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_container_goes_through_create_start_kill_and_delete() {
    if !root_or_skip("a_container_goes_through_create_start_kill_and_delete") {
        return;
    }
    let bundle = Bundle::new(&["sleep", "1000"]);
    let oci = Oci::new();
    let id = unique("cycle");
    let pid = oci.create(&bundle, &id);

    let state = oci.state(&id);
    assert_eq!(state["id"], id.as_str());
    assert_eq!(state["status"], "created");
    assert_eq!(state["pid"], pid);
    assert_eq!(state["bundle"], bundle.path().to_str().unwrap());
    assert!(state["ociVersion"].as_str().unwrap().starts_with("1."));
    let created = state["created"].as_str().unwrap();
    humantime::parse_rfc3339(created).unwrap_or_else(|e| panic!("created {created:?}: {e}"));
    assert!(oci.state_dir(&id).is_dir());
    let cgroups = cgroup_dirs(&format!("skiff-oci/{id}"));
    assert!(
        cgroups
            .iter()
            .any(|dir| dir.starts_with("/sys/fs/cgroup/memory")),
        "no memory cgroup for the container: {cgroups:?}"
    );
    let procs = std::fs::read_to_string(cgroups[0].join("cgroup.procs")).unwrap();
    assert!(
        procs.lines().any(|line| line == pid.to_string()),
        "pid {pid} is not in {}: {procs}",
        cgroups[0].display()
    );
    assert_ne!(
        cmdline(pid),
        ["sleep", "1000"],
        "the process must wait for start"
    );

    oci.run(&["start", &id]).expect_code(0);
    wait_until("pid 1 runs the bundle's args", || {
        cmdline(pid) == ["sleep", "1000"]
    });
    let state = oci.state(&id);
    assert_eq!(state["status"], "running");
    assert_eq!(state["pid"], pid);
    assert_eq!(state["created"], created, "created is when create ran");
    oci.run(&["start", &id])
        .expect_code(125)
        .stderr_has("is running, not created");

    oci.run(&["kill", &id, "KILL"]).expect_code(0);
    assert_eq!(
        oci.reap(pid),
        WaitStatus::Signaled(Pid::from_raw(pid), nix::sys::signal::SIGKILL, false)
    );
    let state = oci.state(&id);
    assert_eq!(state["status"], "stopped");
    assert!(
        state.get("pid").is_none(),
        "a stopped container has no pid: {state}"
    );
    oci.run(&["kill", &id, "KILL"])
        .expect_code(125)
        .stderr_has("is not running");

    oci.run(&["delete", &id]).expect_code(0);
    assert!(!oci.state_dir(&id).exists(), "delete leaves the state dir");
    let left = cgroup_dirs(&format!("skiff-oci/{id}"));
    assert!(left.is_empty(), "delete leaves cgroups: {left:?}");
    oci.run(&["state", &id])
        .expect_code(125)
        .stderr_has(&format!("container {id} does not exist"));

    // Errors go to --log as well, one JSON object a line, as conmon reads them.
    let log = oci.skiff.data_dir.path().join("oci.log");
    let log_arg = log.to_str().unwrap();
    let ran = oci.run(&["--log", log_arg, "--log-format", "json", "start", "nope"]);
    ran.expect_code(125)
        .stderr_has("container nope does not exist");
    let logged = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = logged
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect();
    assert_eq!(lines.len(), 1, "{logged}");
    assert_eq!(lines[0]["level"], "error");
    assert!(
        lines[0]["msg"]
            .as_str()
            .unwrap()
            .contains("container nope does not exist"),
        "{logged}"
    );
    humantime::parse_rfc3339(lines[0]["time"].as_str().unwrap()).unwrap();
    let text = oci.skiff.data_dir.path().join("oci.txt");
    let text_arg = text.to_str().unwrap();
    oci.run(&["--log", text_arg, "state", "nope"])
        .expect_code(125);
    let logged = std::fs::read_to_string(&text).unwrap();
    assert!(
        logged.contains("error: container nope does not exist"),
        "{logged}"
    );
}

#[test]
fn runtime_spec_1_x_bundles_run_and_others_are_refused() {
    if !root_or_skip("runtime_spec_1_x_bundles_run_and_others_are_refused") {
        return;
    }
    let bundle = Bundle::new(&["sleep", "1000"]);
    let oci = Oci::new();
    for version in ["1.0.0", "1.0.2", "1.1.0", "1.2.0"] {
        bundle.edit(|config| config["ociVersion"] = version.into());
        let id = unique(&format!("v{version}"));
        let pid = oci.create(&bundle, &id);
        assert_eq!(oci.status(&id), "created", "version {version}");
        oci.run(&["start", &id]).expect_code(0);
        wait_until("pid 1 runs the bundle's args", || {
            cmdline(pid) == ["sleep", "1000"]
        });
        assert_eq!(oci.status(&id), "running", "version {version}");
        oci.run(&["kill", &id, "TERM"]).expect_code(0);
        // pid 1 of a pid namespace ignores TERM without a handler; KILL ends it.
        oci.run(&["kill", &id, "9"]).expect_code(0);
        oci.reap(pid);
        assert_eq!(oci.status(&id), "stopped", "version {version}");
        oci.run(&["delete", &id]).expect_code(0);
    }
    for version in ["0.9.0", "2.0.0"] {
        bundle.edit(|config| config["ociVersion"] = version.into());
        let id = unique(&format!("v{version}"));
        let path = bundle.path();
        oci.run(&["create", "--bundle", path.to_str().unwrap(), &id])
            .expect_code(125)
            .stderr_has(&format!("runtime-spec version {version}"))
            .stderr_has("skiff runs 1.x bundles");
        assert!(!oci.state_dir(&id).exists(), "version {version} left state");
        let left = cgroup_dirs(&format!("skiff-oci/{id}"));
        assert!(left.is_empty(), "version {version} left cgroups: {left:?}");
    }
}

/// Asserts a refused `create` left no state dir and no cgroup.
#[track_caller]
fn left_nothing(oci: &Oci, id: &str) {
    assert!(!oci.state_dir(id).exists(), "{id} left a state dir");
    let left = cgroup_dirs(&format!("skiff-oci/{id}"));
    assert!(left.is_empty(), "{id} left cgroups: {left:?}");
}

#[test]
fn bad_bundles_ids_and_verbs_are_refused_and_leave_nothing() {
    if !root_or_skip("bad_bundles_ids_and_verbs_are_refused_and_leave_nothing") {
        return;
    }
    let bundle = Bundle::new(&["sleep", "1000"]);
    let oci = Oci::new();
    let scratch = tempfile::tempdir().unwrap();
    let create = |dir: &Path, id: &str| oci.run(&["create", "--bundle", dir.to_str().unwrap(), id]);

    let empty = scratch.path().join("no-config");
    std::fs::create_dir_all(empty.join("rootfs")).unwrap();
    let id = unique("no-config");
    create(&empty, &id)
        .expect_code(125)
        .stderr_has(&format!("{}/config.json", empty.display()));
    left_nothing(&oci, &id);

    let no_rootfs = scratch.path().join("no-rootfs");
    std::fs::create_dir_all(&no_rootfs).unwrap();
    std::fs::copy(bundle.config_path(), no_rootfs.join("config.json")).unwrap();
    let id = unique("no-rootfs");
    create(&no_rootfs, &id)
        .expect_code(125)
        .stderr_has("rootfs");
    left_nothing(&oci, &id);

    let malformed = scratch.path().join("malformed");
    std::fs::create_dir_all(malformed.join("rootfs")).unwrap();
    std::fs::write(malformed.join("config.json"), "{\"ociVersion\": \"1.0.2\",").unwrap();
    let id = unique("malformed");
    create(&malformed, &id)
        .expect_code(125)
        .stderr_has(&format!("cannot read {}/config.json", malformed.display()));
    left_nothing(&oci, &id);

    for bad in ["../x", "a/b", ".hidden", ""] {
        create(&bundle.path(), bad)
            .expect_code(125)
            .stderr_has("invalid container id");
    }
    assert!(!oci.root.parent().unwrap().join("x").exists());
    let listed: Vec<_> = std::fs::read_dir(&oci.root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(listed.is_empty(), "refused creates left {listed:?}");

    // A second create under a taken id is refused and leaves the first as it was.
    let id = unique("taken");
    let pid = oci.create(&bundle, &id);
    create(&bundle.path(), &id)
        .expect_code(125)
        .stderr_has(&format!("container {id} already exists"));
    let state = oci.state(&id);
    assert_eq!(
        (state["status"].as_str(), state["pid"].as_i64()),
        (Some("created"), Some(pid.into()))
    );
    oci.run(&["start", &id]).expect_code(0);
    assert_eq!(oci.status(&id), "running");

    oci.run(&["kill", &id, "NOPE"])
        .expect_code(125)
        .stderr_has("unknown signal NOPE");
    oci.run(&["kill", &id, "99"])
        .expect_code(125)
        .stderr_has("unknown signal 99");
    assert_eq!(oci.status(&id), "running");

    oci.run(&["delete", &id])
        .expect_code(125)
        .stderr_has("still running");
    assert_eq!(oci.status(&id), "running");
    assert!(oci.state_dir(&id).is_dir());
    oci.run(&["delete", "--force", &id]).expect_code(0);
    oci.reap(pid);
    left_nothing(&oci, &id);
    // runc's `delete --force` of an unknown id succeeds, so cleanup can be retried.
    oci.run(&["delete", "--force", &id]).expect_code(0);
    oci.run(&["delete", &id])
        .expect_code(125)
        .stderr_has("does not exist");
}

#[test]
fn a_link_named_skiff_oci_takes_runc_s_command_line() {
    if !root_or_skip("a_link_named_skiff_oci_takes_runc_s_command_line") {
        return;
    }
    let bundle = Bundle::new(&["sleep", "1000"]);
    let oci = Oci::new();
    let bin = tempfile::tempdir().unwrap();
    let link = bin.path().join("skiff-oci");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_skiff"), &link).unwrap();
    let log = bin.path().join("log.json");
    let pid_file = bin.path().join("pid");
    let id = unique("link");
    let path = bundle.path();
    let run = |args: &[&str]| {
        let mut command = Command::new(&link);
        command.args(oci.args(args));
        run_to_files(command)
    };
    #[rustfmt::skip]
    let created = run(&[
        "--log", log.to_str().unwrap(), "--log-format", "json",
        "create", "--bundle", path.to_str().unwrap(), "--pid-file", pid_file.to_str().unwrap(),
        &id,
    ]);
    created.expect_code(0);
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    oci.pids.borrow_mut().push(pid);
    let state: Value = serde_json::from_str(&run(&["state", &id]).expect_code(0).stdout).unwrap();
    assert_eq!(state["status"], "created");
    assert_eq!(state["pid"], pid);
    assert_eq!(state["id"], id.as_str());
    run(&["start", &id]).expect_code(0);
    assert_eq!(oci.status(&id), "running");
    run(&["kill", &id, "SIGKILL"]).expect_code(0);
    oci.reap(pid);
    run(&["delete", &id]).expect_code(0);
    left_nothing(&oci, &id);
    assert_eq!(
        std::fs::read_to_string(&log).unwrap_or_default(),
        "",
        "no errors logged"
    );
    // The link form is the runtime only: skiff's own verbs are not there.
    run(&["images"]).expect_code(2).stderr_has("images");
}

mod podman;

//! Real-kernel tests: limits read back from cgroupfs, an OOM kill, a fork bomb stopped, a
//! real-time task refused, and everything cleaned up. They need root and skip without it.
//!
//! Each test works in its own `skiff-test/<pid>-<n>` cgroup, removed by a guard even when the
//! test fails, with `skiff-test` itself once it is empty. The tests take turns (one lock), so
//! removing the shared parent never races another test's `create`. A child waits on its stdin
//! until it is in the cgroup, so nothing races there either.

use super::v1::Controller;
use super::*;
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

const MIB: i64 = 1 << 20;

/// The host's cgroups, or `None` (with the reason printed) when not root.
fn host(test: &str) -> Option<CgroupRoot> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping {test}: needs root to create cgroups");
        return None;
    }
    Some(CgroupRoot::detect().expect("detect the host's cgroups"))
}

fn unique_path() -> CgroupPath {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    CgroupPath::new(&format!("skiff-test/{}-{n}-{nanos}", std::process::id())).unwrap()
}

/// Held by each real-kernel test for its whole run.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A cgroup and its children, killed, reaped and removed on drop, with the `skiff-test`
/// parent when nothing else is in it.
struct Guard {
    cgroup: Box<dyn CgroupManager>,
    /// `skiff-test` in each hierarchy.
    parents: Vec<PathBuf>,
    children: Vec<Child>,
    _turn: MutexGuard<'static, ()>,
}

impl Guard {
    fn new(root: &CgroupRoot, path: &CgroupPath) -> Self {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let parent = path.as_path().parent().unwrap();
        let parents = match root {
            CgroupRoot::V1(mounts) => Controller::ALL
                .iter()
                .filter_map(|c| mounts.get(*c))
                .map(|mount| mount.join(parent))
                .collect(),
            CgroupRoot::V2(root) => vec![root.join(parent)],
        };
        Self {
            parents,
            cgroup: root.create(path).expect("create the test cgroup"),
            children: Vec::new(),
            _turn: turn,
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
        }
        if let Err(e) = self.cgroup.kill_all() {
            eprintln!("cleanup: {e}");
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
        if let Err(e) = self.cgroup.remove() {
            eprintln!("cleanup: {e}");
        }
        // A plain rmdir, which fails while another run of this binary has cgroups there.
        for parent in &self.parents {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// `sh -c 'read go; SCRIPT'`: runs SCRIPT once [`release`] writes a line.
fn spawn_gated(script: &str) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!("read go; {script}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sh")
}

fn release(child: &mut Child) {
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
}

fn pid(child: &Child) -> Pid {
    Pid::from_raw(child.id() as i32)
}

/// The cgroup's directory holding `controller`'s files.
fn dir(root: &CgroupRoot, path: &CgroupPath, controller: Controller) -> PathBuf {
    match root {
        CgroupRoot::V1(mounts) => mounts.get(controller).unwrap().join(path.as_path()),
        CgroupRoot::V2(root) => root.join(path.as_path()),
    }
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.join(file).display()))
        .trim()
        .to_string()
}

fn limits(memory: i64, pids: i64) -> LinuxResources {
    LinuxResourcesBuilder::default()
        .memory(LinuxMemoryBuilder::default().limit(memory).build().unwrap())
        .cpu(
            LinuxCpuBuilder::default()
                .quota(50_000_i64)
                .period(100_000_u64)
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(pids).build().unwrap())
        .build()
        .unwrap()
}

#[test]
fn kernel_limits_read_back_and_cleanup_removes_the_dirs() {
    let Some(root) = host("kernel_limits_read_back_and_cleanup_removes_the_dirs") else {
        return;
    };
    let path = unique_path();
    let mut guard = Guard::new(&root, &path);
    guard.cgroup.apply(&limits(32 * MIB, 16)).unwrap();
    guard.children.push(spawn_gated("exec sleep 5"));
    let child = &mut guard.children[0];
    guard.cgroup.add_task(pid(child)).unwrap();
    release(child);

    let memory = dir(&root, &path, Controller::Memory);
    let cpu = dir(&root, &path, Controller::Cpu);
    let pids = dir(&root, &path, Controller::Pids);
    match root.version() {
        CgroupVersion::V1 => {
            assert_eq!(read(&memory, "memory.limit_in_bytes"), "33554432");
            if memory.join("memory.memsw.limit_in_bytes").exists() {
                assert_eq!(read(&memory, "memory.memsw.limit_in_bytes"), "33554432");
            }
            assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "50000");
            assert_eq!(read(&cpu, "cpu.cfs_period_us"), "100000");
        }
        CgroupVersion::V2 => {
            assert_eq!(read(&memory, "memory.max"), "33554432");
            assert_eq!(read(&cpu, "cpu.max"), "50000 100000");
        }
    }
    assert_eq!(read(&pids, "pids.max"), "16");
    let child_pid = child.id().to_string();
    for d in [&memory, &cpu, &pids] {
        assert!(
            read(d, "cgroup.procs").lines().any(|l| l == child_pid),
            "{}",
            d.display()
        );
    }

    let stats = guard.cgroup.stats().unwrap();
    eprintln!("stats with one sleeping child: {stats:?}");
    assert!(stats.pids >= 1);
    assert_eq!(stats.oom_kills, 0);
    assert!(stats.memory_bytes <= 32 << 20);

    guard.cgroup.kill_all().unwrap();
    let status = guard.children[0].wait().unwrap();
    assert_eq!(status.signal(), Some(libc_sigkill()));
    guard.cgroup.remove().unwrap();
    for d in [&memory, &cpu, &pids] {
        assert!(!d.exists(), "{} still exists", d.display());
    }
    guard.cgroup.remove().unwrap(); // idempotent
}

fn libc_sigkill() -> i32 {
    nix::sys::signal::Signal::SIGKILL as i32
}

#[test]
fn kernel_oom_kills_the_child_and_stats_count_it() {
    let Some(root) = host("kernel_oom_kills_the_child_and_stats_count_it") else {
        return;
    };
    // The interpreter itself, not a pyenv-style shim script that forks helpers.
    let python = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 is installed");
    let python = String::from_utf8(python.stdout).unwrap().trim().to_string();

    let path = unique_path();
    let mut guard = Guard::new(&root, &path);
    guard.cgroup.apply(&limits(16 * MIB, 64)).unwrap();
    guard.children.push(spawn_gated(&format!(
        "exec {python} -c 'b = bytearray(200 << 20)'"
    )));
    let child = &mut guard.children[0];
    guard.cgroup.add_task(pid(child)).unwrap();
    release(child);
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc_sigkill()), "{status:?}");
    let stats = guard.cgroup.stats().unwrap();
    eprintln!("stats after the OOM kill: {stats:?}");
    assert!(stats.oom_kills >= 1, "{stats:?}");
}

#[test]
fn kernel_pids_limit_stops_a_fork_bomb() {
    let Some(root) = host("kernel_pids_limit_stops_a_fork_bomb") else {
        return;
    };
    let path = unique_path();
    let guard = Guard::new(&root, &path);
    guard.cgroup.apply(&limits(64 * MIB, 8)).unwrap();
    let mut child = spawn_gated("for i in $(seq 50); do sleep 2 & done; wait");
    guard.cgroup.add_task(pid(&child)).unwrap();
    release(&mut child);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("fork bomb: {:?}, stderr: {stderr}", output.status);
    assert!(
        !output.status.success()
            || stderr.contains("Resource temporarily unavailable")
            || stderr.contains("Cannot fork"),
        "forks were not refused: {:?} {stderr}",
        output.status
    );
    let events = read_keyed(&dir(&root, &path, Controller::Pids), "pids.events", "max").unwrap();
    assert!(events >= 1, "pids.events max is {events}");
    // The orphaned sleeps are still in the cgroup; the guard kills them.
}

#[test]
fn kernel_realtime_task_is_refused_with_a_clear_error() {
    let Some(root) = host("kernel_realtime_task_is_refused_with_a_clear_error") else {
        return;
    };
    if root.version() != CgroupVersion::V1 {
        eprintln!("skipping: the real-time restriction tested here is v1's cpu controller");
        return;
    }
    let spawned = Command::new("chrt")
        .args(["-f", "1", "sh", "-c", "echo ready; read go"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn();
    let Ok(mut child) = spawned else {
        eprintln!("skipping: chrt is not installed");
        return;
    };
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    let path = unique_path();
    let mut guard = Guard::new(&root, &path);
    guard.children.push(child);
    if ready.trim() != "ready" {
        eprintln!("skipping: chrt -f 1 failed here (no SCHED_FIFO allowed)");
        return;
    }
    let error = guard.cgroup.add_task(pid(&guard.children[0])).unwrap_err();
    eprintln!("{error}");
    assert!(
        matches!(error, CgroupError::RealtimeTask { .. }),
        "{error:?}"
    );
}

#[test]
fn kernel_v2_mount_kills_with_cgroup_kill_and_removes() {
    let Some(host_root) = host("kernel_v2_mount_kills_with_cgroup_kill_and_removes") else {
        return;
    };
    // On v2 the whole host is the v2 hierarchy; on hybrid, the `unified` mount is one too
    // (without memory, cpu or pids, but it can hold, kill and remove processes).
    let root = match host_root {
        CgroupRoot::V2(_) => host_root,
        CgroupRoot::V1(_) => {
            let unified = Path::new(DEFAULT_ROOT).join("unified");
            match nix::sys::statfs::statfs(&unified) {
                Ok(fs) if fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC => {
                    CgroupRoot::V2(unified)
                }
                _ => {
                    eprintln!("skipping: no cgroup2 mount at {}", unified.display());
                    return;
                }
            }
        }
    };
    let path = unique_path();
    let mut guard = Guard::new(&root, &path);
    guard.children.push(spawn_gated("exec sleep 5"));
    guard.cgroup.add_task(pid(&guard.children[0])).unwrap();
    let leaf = dir(&root, &path, Controller::Memory);
    let child_pid = guard.children[0].id().to_string();
    assert!(read(&leaf, "cgroup.procs").lines().any(|l| l == child_pid));
    guard.cgroup.stats().unwrap();

    guard.cgroup.kill_all().unwrap();
    let status = guard.children[0].wait().unwrap();
    assert_eq!(status.signal(), Some(libc_sigkill()));
    guard.cgroup.remove().unwrap();
    assert!(!leaf.exists());
}

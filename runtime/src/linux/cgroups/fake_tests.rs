//! The file-writing logic against fake hierarchies in a tempdir: which files get which values.
//!
//! A fake cgroup is a directory seeded with the control files the kernel would have made, so
//! a write to a file the kernel lacks fails here as it would there.

use super::v1::{Controller, Mounts};
use super::*;
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
};
use std::fs;

const MIB: i64 = 1 << 20;

fn resources() -> LinuxResources {
    LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(32 * MIB)
                .build()
                .unwrap(),
        )
        .cpu(
            LinuxCpuBuilder::default()
                .quota(50_000_i64)
                .period(100_000_u64)
                .shares(512_u64)
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(16).build().unwrap())
        .build()
        .unwrap()
}

fn seed(dir: &Path, files: &[&str]) {
    fs::create_dir_all(dir).unwrap();
    for file in files {
        fs::write(dir.join(file), "").unwrap();
    }
}

fn read(dir: &Path, file: &str) -> String {
    fs::read_to_string(dir.join(file)).unwrap()
}

/// v1 controllers at `root/<name>`, with the leaf `skiff/c1` seeded; `swap` adds memsw.
fn fake_v1(root: &Path, swap: bool) -> CgroupPath {
    let path = CgroupPath::new("skiff/c1").unwrap();
    let leaf = |c: &str| root.join(c).join(path.as_path());
    let mut memory = vec![
        "cgroup.procs",
        "memory.limit_in_bytes",
        "memory.usage_in_bytes",
        "memory.oom_control",
    ];
    if swap {
        memory.push("memory.memsw.limit_in_bytes");
    }
    seed(&leaf("memory"), &memory);
    seed(
        &leaf("cpu"),
        &[
            "cgroup.procs",
            "cpu.cfs_period_us",
            "cpu.cfs_quota_us",
            "cpu.shares",
        ],
    );
    seed(&leaf("cpuacct"), &["cgroup.procs"]);
    seed(&leaf("pids"), &["cgroup.procs", "pids.max", "pids.current"]);
    path
}

#[test]
fn v1_apply_writes_memory_swap_cpu_and_pids() {
    let tmp = tempfile::tempdir().unwrap();
    let path = fake_v1(tmp.path(), true);
    let root = CgroupRoot::V1(Mounts::under(tmp.path()));
    let cgroup = root.create(&path).unwrap();
    cgroup.apply(&resources()).unwrap();

    let leaf = |c: &str| tmp.path().join(c).join("skiff/c1");
    assert_eq!(read(&leaf("memory"), "memory.limit_in_bytes"), "33554432");
    assert_eq!(
        read(&leaf("memory"), "memory.memsw.limit_in_bytes"),
        "33554432"
    );
    assert_eq!(read(&leaf("cpu"), "cpu.cfs_period_us"), "100000");
    assert_eq!(read(&leaf("cpu"), "cpu.cfs_quota_us"), "50000");
    assert_eq!(read(&leaf("cpu"), "cpu.shares"), "512");
    assert_eq!(read(&leaf("pids"), "pids.max"), "16");
}

#[test]
fn v1_without_swap_accounting_skips_memsw() {
    let tmp = tempfile::tempdir().unwrap();
    let path = fake_v1(tmp.path(), false);
    let cgroup = CgroupRoot::V1(Mounts::under(tmp.path()))
        .create(&path)
        .unwrap();
    cgroup.apply(&resources()).unwrap();
    let memory = tmp.path().join("memory/skiff/c1");
    assert_eq!(read(&memory, "memory.limit_in_bytes"), "33554432");
    assert!(!memory.join("memory.memsw.limit_in_bytes").exists());
}

#[test]
fn v1_unlimited_values_are_minus_one_and_max() {
    let tmp = tempfile::tempdir().unwrap();
    let path = fake_v1(tmp.path(), true);
    let cgroup = CgroupRoot::V1(Mounts::under(tmp.path()))
        .create(&path)
        .unwrap();
    let unlimited = LinuxResourcesBuilder::default()
        .memory(LinuxMemoryBuilder::default().limit(-1).build().unwrap())
        .cpu(LinuxCpuBuilder::default().quota(-1_i64).build().unwrap())
        .pids(LinuxPidsBuilder::default().limit(0).build().unwrap())
        .build()
        .unwrap();
    cgroup.apply(&unlimited).unwrap();
    let leaf = |c: &str| tmp.path().join(c).join("skiff/c1");
    assert_eq!(read(&leaf("memory"), "memory.limit_in_bytes"), "-1");
    assert_eq!(read(&leaf("memory"), "memory.memsw.limit_in_bytes"), "-1");
    assert_eq!(read(&leaf("cpu"), "cpu.cfs_quota_us"), "-1");
    assert_eq!(read(&leaf("cpu"), "cpu.cfs_period_us"), "");
    assert_eq!(read(&leaf("pids"), "pids.max"), "max");
}

#[test]
fn v1_create_makes_a_dir_per_mounted_controller_and_add_task_joins_each() {
    let tmp = tempfile::tempdir().unwrap();
    // cpu and cpuacct co-mounted, as on many distributions; no pids hierarchy.
    let cpu = tmp.path().join("cpu,cpuacct");
    let mounts = Mounts::new([
        (Controller::Memory, tmp.path().join("memory")),
        (Controller::Cpu, cpu.clone()),
        (Controller::CpuAcct, cpu.clone()),
    ]);
    let path = CgroupPath::new("/libpod_parent/libpod-abc").unwrap();
    let cgroup = CgroupRoot::V1(mounts).create(&path).unwrap();
    let memory = tmp.path().join("memory/libpod_parent/libpod-abc");
    let cpu = cpu.join("libpod_parent/libpod-abc");
    assert!(memory.is_dir() && cpu.is_dir());

    seed(&memory, &["cgroup.procs"]);
    seed(&cpu, &["cgroup.procs"]);
    cgroup.add_task(Pid::from_raw(4242)).unwrap();
    assert_eq!(read(&memory, "cgroup.procs"), "4242");
    assert_eq!(read(&cpu, "cgroup.procs"), "4242");

    let pids = LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(8).build().unwrap())
        .build()
        .unwrap();
    let error = cgroup.apply(&pids).unwrap_err();
    assert!(
        matches!(
            error,
            CgroupError::V1ControllerMissing {
                controller: "pids",
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn v1_stats_read_usage_oom_kills_and_pids() {
    let tmp = tempfile::tempdir().unwrap();
    let path = fake_v1(tmp.path(), true);
    let memory = tmp.path().join("memory/skiff/c1");
    fs::write(memory.join("memory.usage_in_bytes"), "1048576\n").unwrap();
    fs::write(
        memory.join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    )
    .unwrap();
    fs::write(tmp.path().join("pids/skiff/c1/pids.current"), "3\n").unwrap();
    fs::write(
        tmp.path().join("cpuacct/skiff/c1/cpuacct.usage"),
        "2500000\n",
    )
    .unwrap();
    let stats = CgroupRoot::V1(Mounts::under(tmp.path()))
        .open(&path)
        .stats()
        .unwrap();
    assert_eq!(
        stats,
        CgroupStats {
            oom_kills: 2,
            memory_bytes: 1 << 20,
            pids: 3,
            cpu_usec: 2500,
        }
    );
}

/// A v2 root offering the usual controllers, with `skiff/c1` seeded below it.
fn fake_v2(root: &Path, leaf_controllers: &str, swap: bool) -> CgroupPath {
    fs::write(
        root.join("cgroup.controllers"),
        "cpuset cpu io memory hugetlb pids rdma misc\n",
    )
    .unwrap();
    fs::write(root.join("cgroup.subtree_control"), "").unwrap();
    seed(
        &root.join("skiff"),
        &["cgroup.subtree_control", "cgroup.procs"],
    );
    let leaf = root.join("skiff/c1");
    let mut files = vec![
        "cgroup.subtree_control",
        "cgroup.procs",
        "memory.max",
        "memory.current",
        "memory.events",
        "cpu.max",
        "cpu.weight",
        "pids.max",
        "pids.current",
    ];
    if swap {
        files.push("memory.swap.max");
    }
    seed(&leaf, &files);
    fs::write(leaf.join("cgroup.controllers"), leaf_controllers).unwrap();
    CgroupPath::new("skiff/c1").unwrap()
}

#[test]
fn v2_create_enables_controllers_along_the_path_but_not_in_the_leaf() {
    let tmp = tempfile::tempdir().unwrap();
    let path = fake_v2(tmp.path(), "memory cpu pids", true);
    CgroupRoot::V2(tmp.path().into()).create(&path).unwrap();
    assert_eq!(
        read(tmp.path(), "cgroup.subtree_control"),
        "+memory +cpu +pids"
    );
    assert_eq!(
        read(&tmp.path().join("skiff"), "cgroup.subtree_control"),
        "+memory +cpu +pids"
    );
    assert_eq!(
        read(&tmp.path().join("skiff/c1"), "cgroup.subtree_control"),
        ""
    );
}

#[test]
fn v2_create_enables_only_what_is_missing_and_offered() {
    let tmp = tempfile::tempdir().unwrap();
    let path = fake_v2(tmp.path(), "memory", true);
    fs::write(tmp.path().join("cgroup.controllers"), "memory pids\n").unwrap();
    fs::write(tmp.path().join("cgroup.subtree_control"), "memory\n").unwrap();
    CgroupRoot::V2(tmp.path().into()).create(&path).unwrap();
    assert_eq!(read(tmp.path(), "cgroup.subtree_control"), "+pids");
    assert_eq!(
        read(&tmp.path().join("skiff"), "cgroup.subtree_control"),
        "+memory +pids"
    );
}

#[test]
fn v2_apply_writes_max_files_and_weight() {
    let tmp = tempfile::tempdir().unwrap();
    let path = fake_v2(tmp.path(), "memory cpu pids", true);
    let cgroup = CgroupRoot::V2(tmp.path().into()).create(&path).unwrap();
    cgroup.apply(&resources()).unwrap();
    let leaf = tmp.path().join("skiff/c1");
    assert_eq!(read(&leaf, "memory.max"), "33554432");
    // memory.swap.max counts swap alone: 0 makes the memory limit real.
    assert_eq!(read(&leaf, "memory.swap.max"), "0");
    assert_eq!(read(&leaf, "cpu.max"), "50000 100000");
    assert_eq!(read(&leaf, "cpu.weight"), "20");
    assert_eq!(read(&leaf, "pids.max"), "16");

    cgroup.add_task(Pid::from_raw(4242)).unwrap();
    assert_eq!(read(&leaf, "cgroup.procs"), "4242");
}

#[test]
fn v2_swap_from_the_spec_is_memsw_minus_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let path = fake_v2(tmp.path(), "memory", true);
    let cgroup = CgroupRoot::V2(tmp.path().into()).open(&path);
    let memory = LinuxMemoryBuilder::default()
        .limit(32 * MIB)
        .swap(48 * MIB)
        .build()
        .unwrap();
    let resources = LinuxResourcesBuilder::default()
        .memory(memory)
        .build()
        .unwrap();
    cgroup.apply(&resources).unwrap();
    let leaf = tmp.path().join("skiff/c1");
    assert_eq!(read(&leaf, "memory.swap.max"), (16 * MIB).to_string());
}

#[test]
fn v2_without_swap_file_and_without_a_controller() {
    let tmp = tempfile::tempdir().unwrap();
    let path = fake_v2(tmp.path(), "memory cpu", false);
    let cgroup = CgroupRoot::V2(tmp.path().into()).open(&path);
    let memory_only = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(32 * MIB)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    cgroup.apply(&memory_only).unwrap();
    assert!(!tmp.path().join("skiff/c1/memory.swap.max").exists());

    let error = cgroup.apply(&resources()).unwrap_err();
    assert!(
        matches!(
            error,
            CgroupError::V2ControllerMissing {
                controller: "pids",
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn v2_stats_read_current_events_and_pids() {
    let tmp = tempfile::tempdir().unwrap();
    let path = fake_v2(tmp.path(), "memory cpu pids", true);
    let leaf = tmp.path().join("skiff/c1");
    fs::write(leaf.join("memory.current"), "4096\n").unwrap();
    fs::write(
        leaf.join("memory.events"),
        "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n",
    )
    .unwrap();
    fs::write(leaf.join("pids.current"), "5\n").unwrap();
    fs::write(leaf.join("cpu.stat"), "usage_usec 1234\nuser_usec 1000\n").unwrap();
    let stats = CgroupRoot::V2(tmp.path().into())
        .open(&path)
        .stats()
        .unwrap();
    assert_eq!(
        stats,
        CgroupStats {
            oom_kills: 1,
            memory_bytes: 4096,
            pids: 5,
            cpu_usec: 1234,
        }
    );
}

#[test]
fn remove_takes_child_cgroups_first_and_is_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    // Empty directories stand for cgroups: cgroupfs lets rmdir through its control files.
    fs::create_dir_all(tmp.path().join("skiff/c1/nested/deeper")).unwrap();
    fs::create_dir_all(tmp.path().join("skiff/c1/other")).unwrap();
    let cgroup = CgroupRoot::V2(tmp.path().into()).open(&CgroupPath::new("skiff/c1").unwrap());
    cgroup.remove().unwrap();
    assert!(!tmp.path().join("skiff/c1").exists());
    assert!(tmp.path().join("skiff").is_dir());
    cgroup.remove().unwrap();
    cgroup.kill_all().unwrap();
}

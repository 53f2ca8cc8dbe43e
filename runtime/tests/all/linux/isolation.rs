//! What a container's process sees of the machine: its own pid namespace under skiff's init,
//! its own hostname and mounts, a minimal /dev, masked and read-only kernel files, dropped
//! privileges, and the network namespace `--net` asks for.

use super::*;

#[test]
fn the_process_runs_as_pid_2_under_skiffs_init_with_its_own_hostname() {
    let Some(linux) = linux() else { return };
    let ran = linux.run([
        "run",
        "--net",
        "none",
        "--name",
        "pids",
        IMAGE,
        "sh",
        "-c",
        "echo $$; tr '\\0' ' ' </proc/1/cmdline; echo; ps -o pid,comm; hostname",
    ]);
    ran.expect_code(0);
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(
        lines[0], "2",
        "the image's process is pid 2:\n{}",
        ran.stdout
    );
    // Pid 1 is skiff itself, as its reaper (`skiff init`).
    assert_eq!(lines[1], "/proc/self/exe init ", "{}", ran.stdout);
    // (`tr` had a pid in between.)
    let processes: Vec<Vec<&str>> = lines[3..lines.len() - 1]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        processes,
        [vec!["1", "exe"], vec!["2", "sh"], vec!["4", "ps"]],
        "only the container's processes:\n{}",
        ran.stdout
    );
    // The default hostname: the first 12 digits of the container's id.
    let id = linux.ids().pop().unwrap();
    assert_eq!(lines.last().unwrap(), &&id[..12], "{}", ran.stdout);
    let host = nix::unistd::gethostname().unwrap();
    assert_ne!(host.to_str().unwrap(), &id[..12]);
}

/// `mountinfo` lines as (mount point, options, fs type, super options).
fn mounts(mountinfo: &str) -> Vec<(String, String, String, String)> {
    mountinfo
        .lines()
        .map(|line| {
            let (before, after) = line.split_once(" - ").expect("a mountinfo line");
            let before: Vec<&str> = before.split_whitespace().collect();
            let after: Vec<&str> = after.split_whitespace().collect();
            (
                before[4].to_string(),
                before[5].to_string(),
                after[0].to_string(),
                after.get(2).unwrap_or(&"").to_string(),
            )
        })
        .collect()
}

#[test]
fn the_mounts_and_devices_are_the_containers_own() {
    let Some(linux) = linux() else { return };
    let ran = linux.sh(&[], "cat /proc/self/mountinfo");
    let mounts = mounts(&ran.expect_code(0).stdout);
    let find = |point: &str| {
        mounts
            .iter()
            .find(|m| m.0 == point)
            .unwrap_or_else(|| panic!("no mount at {point}:\n{}", ran.stdout))
    };
    let root = find("/");
    assert_eq!(root.2, "overlay", "{root:?}");
    assert!(
        root.3.contains(linux.data_dir.path().to_str().unwrap()),
        "the overlay's dirs are in the data dir: {root:?}"
    );
    for (point, fs_type) in [
        ("/proc", "proc"),
        ("/dev", "tmpfs"),
        ("/dev/pts", "devpts"),
        ("/dev/shm", "tmpfs"),
        ("/dev/mqueue", "mqueue"),
        ("/sys", "sysfs"),
    ] {
        assert_eq!(find(point).2, fs_type, "{point}");
    }
    assert!(
        find("/sys").1.split(',').any(|o| o == "ro"),
        "/sys is read-only"
    );
    assert!(find("/proc/sys").1.split(',').any(|o| o == "ro"));
    // Nothing of the host's own mounts (e.g. its /boot or /run) came along.
    for host_only in ["/run", "/boot", "/home", "/sys/fs/cgroup/memory"] {
        assert!(
            !mounts.iter().any(|m| m.0 == host_only),
            "{host_only} is mounted"
        );
    }

    let ran = linux.sh(&[], "ls -A /dev");
    let mut devices: Vec<&str> = ran.expect_code(0).stdout.lines().collect();
    devices.sort();
    assert_eq!(
        devices,
        [
            "fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin",
            "stdout", "tty", "urandom", "zero"
        ],
        "no host devices"
    );
    // The devices work: null swallows, zero gives zeros, urandom gives bytes.
    let ran = linux.sh(
        &[],
        "echo x > /dev/null && head -c 4 /dev/zero | od -An -tx1 && head -c 16 /dev/urandom | wc -c",
    );
    assert_eq!(
        ran.expect_code(0)
            .stdout
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["00", "00", "00", "00", "16"]
    );
}

#[test]
fn kernel_files_are_masked_or_read_only() {
    let Some(linux) = linux() else { return };
    // /proc/kcore only exists on kernels built with it; where it does, it reads empty.
    let ran = linux.sh(
        &[],
        "if [ -e /proc/kcore ]; then echo kcore $(wc -c </proc/kcore); fi; \
         if [ -e /proc/acpi ]; then echo acpi $(ls -A /proc/acpi | wc -l); fi; \
         echo firmware $(ls -A /sys/firmware | wc -l); \
         echo keys $(wc -c </proc/keys); \
         if echo 1 > /proc/sys/kernel/domainname; then echo written; fi; \
         if echo 1 > /sys/kernel/uevent_helper; then echo sys written; fi",
    );
    ran.expect_code(0);
    for line in ran.stdout.lines() {
        let (what, count) = line.rsplit_once(' ').unwrap_or((line, ""));
        assert_eq!(count, "0", "{what} is not masked:\n{}", ran.stdout);
    }
    assert!(ran.stdout.contains("firmware 0"), "{}", ran.stdout);
    ran.stderr_has("/proc/sys/kernel/domainname: Read-only file system");
    assert!(!ran.stdout.contains("written"), "{}", ran.stdout);
}

/// `CapEff`, `NoNewPrivs` and `Seccomp` from the container's `/proc/self/status`.
fn privileges(linux: &Linux, flags: &[&str]) -> Vec<String> {
    let ran = linux.sh(
        flags,
        "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status",
    );
    ran.expect_code(0)
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn privileges_are_dropped() {
    let Some(linux) = linux() else { return };
    // Docker's default set for root: chown dac_override fowner fsetid kill setgid setuid
    // setpcap net_bind_service net_raw sys_chroot mknod audit_write setfcap.
    assert_eq!(
        privileges(&linux, &[]),
        ["CapEff: 00000000a80425fb", "NoNewPrivs: 1", "Seccomp: 2"]
    );
    assert_eq!(
        privileges(&linux, &["--user", "1000"]),
        ["CapEff: 0000000000000000", "NoNewPrivs: 1", "Seccomp: 2"]
    );
    // Even as root: no new mount namespace, no mounts, and a device node made for the
    // host's root file system cannot be read.
    use std::os::unix::fs::MetadataExt;
    let disk = std::fs::metadata("/").unwrap().dev();
    let (major, minor) = (nix::sys::stat::major(disk), nix::sys::stat::minor(disk));
    let ran = linux.sh(
        &[],
        &format!(
            "unshare -m true && echo unshared; mount -t tmpfs x /mnt && echo mounted; \
             mknod /tmp/disk b {major} {minor}; head -c 1 /tmp/disk >/dev/null && echo read; \
             echo done"
        ),
    );
    ran.expect_code(0);
    assert_eq!(ran.stdout, "done\n", "stderr:\n{}", ran.stderr);
    ran.stderr_has("unshare").stderr_has("mount");
}

#[test]
fn net_none_has_only_loopback_and_net_host_shares_the_hosts() {
    let Some(linux) = linux() else { return };
    let interfaces = |text: &str| -> Vec<String> {
        text.lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(|n| n.trim().to_string())
            .collect()
    };
    let ran = linux.sh(&[], "cat /proc/net/dev");
    assert_eq!(interfaces(&ran.expect_code(0).stdout), ["lo"]);
    let ran = linux.sh(&[], "ip -o addr show lo");
    ran.expect_code(0).stdout_has("inet 127.0.0.1/8");

    // The host's route to the world goes through an interface the container sees too.
    let routes = std::fs::read_to_string("/proc/net/route").unwrap();
    let default = routes
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f[1] == "00000000")
        .map(|f| f[0].to_string());
    let ran = linux.run([
        "run",
        "--rm",
        "--net",
        "host",
        IMAGE,
        "cat",
        "/proc/net/dev",
    ]);
    let seen = interfaces(&ran.expect_code(0).stdout);
    assert!(seen.len() > 1, "{seen:?}");
    if let Some(default) = default {
        assert!(seen.contains(&default), "{default} not in {seen:?}");
    }
    let ran = linux.run([
        "run",
        "--rm",
        "--net",
        "host",
        IMAGE,
        "cat",
        "/proc/net/route",
    ]);
    assert_eq!(ran.expect_code(0).stdout, routes, "the host's own routes");
}

//! The last steps before a container's `execve`: capabilities, `no_new_privs` and seccomp.
//!
//! `caps.rs` applies the OCI spec's capability sets and gives Docker's default set;
//! `seccomp.rs` compiles an OCI seccomp profile with libseccomp and gives skiff's default
//! profile (a deny-list; [`default_seccomp`] says which calls and why). Each call acts on the
//! calling thread only and returns `io::Error`s that say which step failed; the order of the calls (ids, capabilities, `no_new_privs`, seccomp) is the
//! caller's, through [`super::syscall::Syscall`], and is tested there with the recording fake.

mod caps;
mod seccomp;

pub use self::caps::{apply_capabilities, default_capabilities_spec, docker_default_capabilities};
pub use self::seccomp::{default_seccomp, load_seccomp};

use std::io;

/// Sets `no_new_privs`: from here on `execve` grants no privileges (set-uid bits and file
/// capabilities are ignored), and a seccomp filter may be loaded without `CAP_SYS_ADMIN`.
pub fn set_no_new_privs() -> io::Result<()> {
    nix::sys::prctl::set_no_new_privs()
        .map_err(|e| io::Error::other(format!("set no_new_privs: {e}")))
}

/// Real-kernel tests. Each applies its settings in a child process (this test binary, run
/// again on one `#[ignore]`d test with [`CHILD_ENV`] set), so the test process keeps its
/// capabilities and stays unfiltered; the parent checks the child's exit status and output.
/// Capabilities, seccomp and `no_new_privs` are per thread, so the child reads
/// `/proc/thread-self/status`.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::syscall::{LinuxSyscall, Syscall};
    use nix::errno::Errno;
    use nix::sched::CloneFlags;
    use std::process::Command;

    const CHILD_ENV: &str = "SKIFF_SECURITY_TEST_CHILD";
    /// Printed by a child after its last check, so a child that skipped its checks fails.
    const CHILD_DONE: &str = "security child: every check ran";

    /// Runs `child` (a test in this module) in a new process and fails with its output.
    fn run_child(child: &str) {
        let test = format!("linux::security::tests::{child}");
        let out = Command::new("/proc/self/exe")
            .args([
                "--exact",
                &test,
                "--nocapture",
                "--ignored",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, "1")
            .output()
            .expect("spawn the test binary");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains(CHILD_DONE),
            "{child}: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
    }

    fn in_child() -> bool {
        std::env::var_os(CHILD_ENV).is_some()
    }

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// The hex value of `field` in this thread's status, e.g. `CapEff` → `00000000a80425fb`.
    fn status(field: &str) -> String {
        let status = std::fs::read_to_string("/proc/thread-self/status").expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {field} in status"))
    }

    #[test]
    fn default_seccomp_denies_namespaces_and_mounts() {
        run_child("child_default_seccomp");
    }

    #[test]
    #[ignore = "run in a child process by default_seccomp_denies_namespaces_and_mounts"]
    fn child_default_seccomp() {
        if !in_child() {
            return;
        }
        set_no_new_privs().expect("no_new_privs");
        load_seccomp(&default_seccomp()).expect("load");
        assert_eq!(
            nix::sched::unshare(CloneFlags::CLONE_NEWNS),
            Err(Errno::EPERM)
        );
        assert_eq!(
            nix::sched::unshare(CloneFlags::CLONE_NEWUSER),
            Err(Errno::EPERM)
        );
        let mount = nix::mount::umount2("/", nix::mount::MntFlags::MNT_DETACH);
        assert_eq!(mount, Err(Errno::EPERM));
        assert!(nix::unistd::getpid().as_raw() > 0);
        // glibc's posix_spawn tries clone3 first: ENOSYS must send it to clone, which is allowed
        // without namespace flags.
        let status = Command::new("/bin/true")
            .status()
            .expect("spawn after clone3 ENOSYS");
        assert!(status.success());
        assert_eq!(status_line_seccomp(), "2");
        println!("{CHILD_DONE}");
    }

    /// `Seccomp: 2` is filter mode.
    fn status_line_seccomp() -> String {
        status("Seccomp")
    }

    #[test]
    fn no_new_privs_is_set() {
        run_child("child_no_new_privs");
    }

    #[test]
    #[ignore = "run in a child process by no_new_privs_is_set"]
    fn child_no_new_privs() {
        if !in_child() {
            return;
        }
        set_no_new_privs().expect("no_new_privs");
        assert_eq!(status("NoNewPrivs"), "1");
        println!("{CHILD_DONE}");
    }

    #[test]
    fn root_gets_docker_default_capabilities() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        run_child("child_root_capabilities");
    }

    #[test]
    #[ignore = "run in a child process by root_gets_docker_default_capabilities"]
    fn child_root_capabilities() {
        if !in_child() {
            return;
        }
        apply_capabilities(&default_capabilities_spec(false)).expect("apply");
        assert_eq!(status("CapEff"), "00000000a80425fb");
        assert_eq!(status("CapPrm"), "00000000a80425fb");
        assert_eq!(status("CapBnd"), "00000000a80425fb");
        assert_eq!(status("CapInh"), "0000000000000000");
        assert_eq!(status("CapAmb"), "0000000000000000");
        println!("{CHILD_DONE}");
    }

    #[test]
    fn non_root_user_holds_no_capabilities() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        run_child("child_non_root_capabilities");
    }

    #[test]
    #[ignore = "run in a child process by non_root_user_holds_no_capabilities"]
    fn child_non_root_capabilities() {
        if !in_child() {
            return;
        }
        // As container setup does: change ids keeping the permitted set, then apply the spec.
        LinuxSyscall.set_ids(1000, 1000, &[]).expect("set ids");
        apply_capabilities(&default_capabilities_spec(true)).expect("apply");
        assert_eq!(status("CapEff"), "0000000000000000");
        assert_eq!(status("CapPrm"), "0000000000000000");
        assert_eq!(status("CapBnd"), "00000000a80425fb");
        println!("{CHILD_DONE}");
    }

    #[test]
    fn ambient_capability_is_raised() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        run_child("child_ambient_capability");
    }

    #[test]
    #[ignore = "run in a child process by ambient_capability_is_raised"]
    fn child_ambient_capability() {
        if !in_child() {
            return;
        }
        use oci_spec::runtime::Capability;
        let mut spec = default_capabilities_spec(false);
        let bind: oci_spec::runtime::Capabilities =
            [Capability::NetBindService].into_iter().collect();
        spec.set_inheritable(Some(bind.clone()))
            .set_ambient(Some(bind));
        LinuxSyscall.set_ids(1000, 1000, &[]).expect("set ids");
        apply_capabilities(&spec).expect("apply");
        assert_eq!(status("CapAmb"), "0000000000000400");
        assert_eq!(status("CapInh"), "0000000000000400");
        assert_eq!(status("CapEff"), "00000000a80425fb");
        println!("{CHILD_DONE}");
    }
}

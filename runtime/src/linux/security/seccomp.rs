//! Seccomp: an OCI runtime-spec profile compiled with libseccomp, and skiff's default profile.

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
};
use std::io;

const EPERM: u32 = nix::errno::Errno::EPERM as u32;
const ENOSYS: u32 = nix::errno::Errno::ENOSYS as u32;

/// Compiles `profile` and loads it into the calling thread.
///
/// `no_new_privs` is not set here: libseccomp would set it by default (its `CtlNnp`
/// attribute), but the caller orders it explicitly with [`super::set_no_new_privs`] (before
/// this call, or this call needs `CAP_SYS_ADMIN`), so the filter is built with `CtlNnp` off.
pub fn load_seccomp(profile: &LinuxSeccomp) -> io::Result<()> {
    compile(profile)?
        .load()
        .map_err(|e| io::Error::other(format!("seccomp: load the filter: {e}")))
}

/// Builds the filter for `profile` without loading it.
///
/// As runc does: a syscall name libseccomp does not know is skipped with a debug log (profiles
/// name syscalls newer than the library); a rule whose action is the default action is skipped
/// (libseccomp refuses it, and it changes nothing); a rule's argument conditions are ANDed,
/// unless two name the same argument, in which case each condition becomes its own rule (ORed).
pub(super) fn compile(profile: &LinuxSeccomp) -> io::Result<ScmpFilterContext> {
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| err("create the filter", e))?;
    ctx.set_ctl_nnp(false)
        .map_err(|e| err("turn off libseccomp's no_new_privs", e))?;
    for arch in profile.architectures().iter().flatten() {
        let scmp = scmp_arch(*arch)?;
        ctx.add_arch(scmp)
            .map_err(|e| err(&format!("add architecture {arch}"), e))?;
    }
    for flag in profile.flags().iter().flatten() {
        let set = match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => ctx.set_ctl_log(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => ctx.set_ctl_ssb(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => ctx.set_ctl_tsync(true),
            // Only changes how a notify listener is woken; SCMP_ACT_NOTIFY is refused below.
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => continue,
        };
        set.map_err(|e| err(&format!("set flag {flag}"), e))?;
    }
    for rule in profile.syscalls().iter().flatten() {
        add_rule(&mut ctx, rule, default)?;
    }
    Ok(ctx)
}

fn add_rule(
    ctx: &mut ScmpFilterContext,
    rule: &LinuxSyscall,
    default: ScmpAction,
) -> io::Result<()> {
    let act = action(rule.action(), rule.errno_ret())?;
    if act == default {
        tracing::debug!(names = ?rule.names(), "seccomp rule has the default action; skipped");
        return Ok(());
    }
    let args = rule.args().as_deref().unwrap_or_default();
    let conditions = args.iter().map(condition).collect::<io::Result<Vec<_>>>()?;
    let mut seen = [false; 6];
    let same_arg_twice = args
        .iter()
        .any(|a| std::mem::replace(&mut seen[a.index()], true));
    for name in rule.names() {
        let Ok(syscall) = ScmpSyscall::from_name(name) else {
            tracing::debug!(syscall = %name, "seccomp: syscall unknown to libseccomp; skipped");
            continue;
        };
        let added = if conditions.is_empty() {
            ctx.add_rule(act, syscall)
        } else if same_arg_twice {
            conditions
                .iter()
                .try_for_each(|c| ctx.add_rule_conditional(act, syscall, &[*c]).map(drop))
                .map(|()| &mut *ctx)
        } else {
            ctx.add_rule_conditional(act, syscall, &conditions)
        };
        added.map_err(|e| err(&format!("add the rule for {name}"), e))?;
    }
    Ok(())
}

fn action(action: LinuxSeccompAction, errno_ret: Option<u32>) -> io::Result<ScmpAction> {
    let ret = || -> io::Result<u16> {
        let errno = errno_ret.unwrap_or(EPERM);
        u16::try_from(errno).map_err(|_| {
            io::Error::other(format!(
                "seccomp: errnoRet {errno} is out of range; use an errno below 65536"
            ))
        })
    };
    Ok(match action {
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(ret()?.into()),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(ret()?),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(io::Error::other(
                "seccomp: SCMP_ACT_NOTIFY needs a listener, which skiff does not run; \
                 use another action",
            ));
        }
    })
}

/// One argument condition; `MASKED_EQ` takes `value` as the mask and `valueTwo` as the datum.
fn condition(arg: &LinuxSeccompArg) -> io::Result<ScmpArgCompare> {
    let index = arg.index();
    if index > 5 {
        return Err(io::Error::other(format!(
            "seccomp: argument index {index} is out of range; syscalls take arguments 0 to 5"
        )));
    }
    let op = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            let datum = arg.value_two().unwrap_or_default();
            return Ok(ScmpArgCompare::new(
                index as u32,
                ScmpCompareOp::MaskedEqual(arg.value()),
                datum,
            ));
        }
    };
    Ok(ScmpArgCompare::new(index as u32, op, arg.value()))
}

/// Maps an OCI architecture to libseccomp's by its spec name (`SCMP_ARCH_X86_64`).
fn scmp_arch(arch: Arch) -> io::Result<ScmpArch> {
    let name = serde_json::to_value(arch)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| arch.to_string());
    name.parse()
        .map_err(|e| err(&format!("architecture {name} unknown to libseccomp"), e))
}

fn err(step: &str, e: libseccomp::error::SeccompError) -> io::Error {
    io::Error::other(format!("seccomp: {step}: {e}"))
}

/// Syscalls skiff's default profile denies with `EPERM`, grouped, each group with its reason.
///
/// Names libseccomp does not know on this host, or that do not exist on an architecture, are
/// skipped when the profile is compiled, so the table can name syscalls of every architecture.
const DENIED: &[(&str, &[&str])] = &[
    (
        "load, unload or replace the kernel and its modules",
        &[
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "create_module",
        ],
    ),
    (
        "obsolete or removed calls that no current program makes",
        &[
            "get_kernel_syms",
            "query_module",
            "nfsservctl",
            "uselib",
            "_sysctl",
        ],
    ),
    (
        "the host's power, swap and process accounting",
        &["reboot", "swapon", "swapoff", "acct"],
    ),
    (
        "kernel keyrings are not namespaced: keys would be shared with the host",
        &["keyctl", "add_key", "request_key"],
    ),
    (
        "large kernel attack surface behind most recent container escapes (Docker denies them too)",
        &[
            "bpf",
            "perf_event_open",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
        ],
    ),
    (
        "userfaultfd stalls kernel page faults at will, a classic exploit race-widener",
        &["userfaultfd"],
    ),
    (
        "file handles open files by inode, around the container's mount tree (the 'shocker' escape)",
        &["open_by_handle_at", "name_to_handle_at"],
    ),
    (
        "skiff sets up the mount tree; the workload may not change it",
        &[
            "mount",
            "umount",
            "umount2",
            "pivot_root",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "open_tree",
            "move_mount",
            "mount_setattr",
        ],
    ),
    (
        "joining another namespace (creating one is filtered by flag below)",
        &["setns"],
    ),
    (
        "host kernel log, profiling cookies and kernel object ordering (kcmp leaks it; CRIU only)",
        &["syslog", "lookup_dcookie", "kcmp"],
    ),
    ("disk quotas are the host's", &["quotactl", "quotactl_fd"]),
    (
        "raw I/O ports, PCI configuration and virtual-8086 mode",
        &[
            "iopl",
            "ioperm",
            "pciconfig_iobase",
            "pciconfig_read",
            "pciconfig_write",
            "vm86",
            "vm86old",
        ],
    ),
    (
        "the clock is the host's (reading it through adjtimex/clock_adjtime stays allowed)",
        &["clock_settime", "clock_settime64", "settimeofday", "stime"],
    ),
    (
        "NUMA placement moves memory under other tenants (Docker: CAP_SYS_NICE only)",
        &[
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
            "migrate_pages",
            "move_pages",
        ],
    ),
    (
        "filesystem-wide event monitoring (Docker: CAP_SYS_ADMIN only) and terminal hang-up",
        &["fanotify_init", "vhangup"],
    ),
];

/// `CLONE_NEW*` flags `clone` may not carry: a new namespace is skiff's to make.
const CLONE_NAMESPACE_FLAGS: &[u64] = &[
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

/// `CLONE_NEWTIME`: valid for `unshare` only; in `clone`'s flags these bits are the exit signal.
const CLONE_NEWTIME: u64 = 0x80;

/// `AF_VSOCK`: sockets to the hypervisor, across the VM boundary rather than the container's.
const AF_VSOCK: u64 = 40;

/// skiff's default seccomp profile: a deny-list over a default of `SCMP_ACT_ALLOW`.
///
/// Denied with `EPERM`: the `DENIED` table (grouped, a reason per group); `clone` and `unshare` with a `CLONE_NEW*` flag;
/// `socket(AF_VSOCK)`. `clone3` gets `ENOSYS`: its flags sit behind a pointer seccomp cannot
/// read, and `ENOSYS` makes glibc fall back to `clone`, which is filtered (as Docker does).
///
/// Why a deny-list, where Docker and Podman allow-list: an allow-list fails every syscall newer
/// than the list, so an image built against a newer libc breaks on a newer kernel until skiff is
/// updated. The denied calls are the ones the reduced capability set already refuses or that
/// reach state shared with the host; the deny-list is defence in depth behind the capabilities.
///
/// Allowed on purpose: `ptrace` and `process_vm_readv`/`writev` (since Linux 4.8 seccomp is
/// re-checked after a tracer changes a syscall, so tracing cannot bypass the filter, and without
/// `CAP_SYS_PTRACE` only same-user processes in the container can be traced; debuggers and
/// profilers need them); `personality` (a deny-list cannot say "all but these values": libseccomp
/// refuses two comparisons of one argument and a conditional allow under a deny; the flags that
/// matter to exploits are bounded by `vm.mmap_min_addr` and cleared on set-uid exec);
/// `adjtimex` and `clock_adjtime` (glibc's `ntp_gettime` reads the clock through them; setting
/// needs `CAP_SYS_TIME`).
///
/// Architectures: the native one plus its compat ABIs (x86 and x32 on x86_64, arm on aarch64),
/// so a 32-bit binary's syscalls are filtered too, not killed as a bad architecture.
pub fn default_seccomp() -> LinuxSeccomp {
    let mut syscalls: Vec<LinuxSyscall> = DENIED
        .iter()
        .map(|(_, names)| rule(names, EPERM, Vec::new()))
        .collect();
    let clone_flags: Vec<LinuxSeccompArg> = CLONE_NAMESPACE_FLAGS
        .iter()
        .map(|flag| has_flags(0, *flag))
        .collect();
    let mut unshare_flags = clone_flags.clone();
    unshare_flags.push(has_flags(0, CLONE_NEWTIME));
    // One condition per flag on the same argument: each becomes its own rule, so any one denies.
    syscalls.push(rule(&["clone"], EPERM, clone_flags));
    syscalls.push(rule(&["unshare"], EPERM, unshare_flags));
    syscalls.push(rule(&["clone3"], ENOSYS, Vec::new()));
    let vsock = arg(0, AF_VSOCK, None, LinuxSeccompOperator::ScmpCmpEq);
    syscalls.push(rule(&["socket"], EPERM, vec![vsock]));

    let mut profile = LinuxSeccomp::default();
    profile
        .set_default_action(LinuxSeccompAction::ScmpActAllow)
        .set_architectures(Some(native_architectures()))
        .set_syscalls(Some(syscalls));
    profile
}

fn native_architectures() -> Vec<Arch> {
    if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else {
        vec![Arch::ScmpArchNative]
    }
}

fn rule(names: &[&str], errno: u32, args: Vec<LinuxSeccompArg>) -> LinuxSyscall {
    let mut rule = LinuxSyscall::default();
    rule.set_names(names.iter().map(|n| n.to_string()).collect())
        .set_action(LinuxSeccompAction::ScmpActErrno)
        .set_errno_ret(Some(errno))
        .set_args((!args.is_empty()).then_some(args));
    rule
}

/// Argument `index` has every bit of `flags` set.
fn has_flags(index: usize, flags: u64) -> LinuxSeccompArg {
    arg(
        index,
        flags,
        Some(flags),
        LinuxSeccompOperator::ScmpCmpMaskedEq,
    )
}

fn arg(
    index: usize,
    value: u64,
    value_two: Option<u64>,
    op: LinuxSeccompOperator,
) -> LinuxSeccompArg {
    let builder = LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .op(op);
    match value_two {
        Some(two) => builder.value_two(two),
        None => builder,
    }
    .build()
    .expect("every field of LinuxSeccompArg has a default")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek};

    /// The filter as classic BPF, proving it compiles (8 bytes per instruction).
    fn bpf(profile: &LinuxSeccomp) -> io::Result<Vec<u8>> {
        let ctx = compile(profile)?;
        let mut file = tempfile::tempfile()?;
        ctx.export_bpf(&file).map_err(io::Error::other)?;
        let mut out = Vec::new();
        file.rewind()?;
        file.read_to_end(&mut out)?;
        Ok(out)
    }

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).expect("a valid profile")
    }

    #[test]
    fn default_profile_compiles_to_bpf() {
        let code = bpf(&default_seccomp()).expect("compiles");
        assert!(code.len() > 8 * 50, "{} bytes", code.len());
        assert_eq!(code.len() % 8, 0);
    }

    #[test]
    fn default_profile_names_syscalls_libseccomp_knows() {
        for name in [
            "mount",
            "unshare",
            "clone",
            "clone3",
            "kexec_load",
            "bpf",
            "setns",
        ] {
            ScmpSyscall::from_name(name).expect(name);
        }
        let groups = DENIED
            .iter()
            .filter(|(reason, _)| !reason.is_empty())
            .count();
        assert_eq!(groups, DENIED.len(), "every group says why");
    }

    #[test]
    fn unknown_syscall_name_is_skipped() {
        let with = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["no_such_syscall","getpid"],"action":"SCMP_ACT_ERRNO"}]}"#,
        );
        let without = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["getpid"],"action":"SCMP_ACT_ERRNO"}]}"#,
        );
        assert_eq!(
            bpf(&with).expect("compiles"),
            bpf(&without).expect("compiles")
        );
    }

    #[test]
    fn every_action_and_operator_compiles() {
        let code = bpf(&profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,
                "architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32","SCMP_ARCH_AARCH64","SCMP_ARCH_ARM"],
                "flags":["SECCOMP_FILTER_FLAG_LOG","SECCOMP_FILTER_FLAG_SPEC_ALLOW","SECCOMP_FILTER_FLAG_TSYNC"],
                "syscalls":[
                {"names":["read"],"action":"SCMP_ACT_ALLOW"},
                {"names":["write"],"action":"SCMP_ACT_LOG"},
                {"names":["getpid"],"action":"SCMP_ACT_TRAP"},
                {"names":["getppid"],"action":"SCMP_ACT_TRACE","errnoRet":7},
                {"names":["reboot"],"action":"SCMP_ACT_KILL"},
                {"names":["kexec_load"],"action":"SCMP_ACT_KILL_THREAD"},
                {"names":["init_module"],"action":"SCMP_ACT_KILL_PROCESS"},
                {"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]},
                {"names":["socket"],"action":"SCMP_ACT_ALLOW","args":[
                    {"index":0,"value":1,"op":"SCMP_CMP_NE"},{"index":1,"value":2,"op":"SCMP_CMP_LT"},
                    {"index":2,"value":3,"op":"SCMP_CMP_LE"}]},
                {"names":["mmap"],"action":"SCMP_ACT_ALLOW","args":[
                    {"index":2,"value":4,"op":"SCMP_CMP_GE"},{"index":3,"value":5,"op":"SCMP_CMP_GT"},
                    {"index":4,"value":255,"valueTwo":1,"op":"SCMP_CMP_MASKED_EQ"}]}]}"#,
        ));
        code.expect("compiles");
    }

    #[test]
    fn rule_with_the_default_action_is_skipped() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getpid"],"action":"SCMP_ACT_ALLOW"}]}"#,
        );
        bpf(&p).expect("libseccomp would refuse the rule; it is skipped");
    }

    #[test]
    fn two_conditions_on_one_argument_become_two_rules() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["clone"],"action":"SCMP_ACT_ERRNO","args":[
                {"index":0,"value":131072,"valueTwo":131072,"op":"SCMP_CMP_MASKED_EQ"},
                {"index":0,"value":268435456,"valueTwo":268435456,"op":"SCMP_CMP_MASKED_EQ"}]}]}"#,
        );
        bpf(&p).expect("libseccomp would refuse them as one rule");
    }

    #[test]
    fn bad_operator_is_refused_when_the_profile_is_read() {
        let err = serde_json::from_str::<LinuxSeccomp>(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["clone"],"action":"SCMP_ACT_ERRNO","args":[
                {"index":0,"value":1,"op":"SCMP_CMP_SOMETIMES"}]}]}"#,
        )
        .expect_err("unknown op");
        assert!(err.to_string().contains("SCMP_CMP_SOMETIMES"), "{err}");
    }

    #[test]
    fn argument_index_past_five_is_an_error() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["clone"],"action":"SCMP_ACT_ERRNO","args":[
                {"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
        );
        let err = bpf(&p).expect_err("index 6");
        assert!(err.to_string().contains("argument index 6"), "{err}");
    }

    #[test]
    fn notify_and_out_of_range_errno_are_errors() {
        let notify = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getpid"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        );
        assert!(
            bpf(&notify)
                .expect_err("notify")
                .to_string()
                .contains("SCMP_ACT_NOTIFY")
        );
        let errno = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getpid"],"action":"SCMP_ACT_ERRNO","errnoRet":70000}]}"#,
        );
        assert!(
            bpf(&errno)
                .expect_err("errno")
                .to_string()
                .contains("70000")
        );
    }

    #[test]
    fn every_spec_architecture_maps_to_libseccomp() {
        let names = [
            "SCMP_ARCH_NATIVE",
            "SCMP_ARCH_X86",
            "SCMP_ARCH_X86_64",
            "SCMP_ARCH_X32",
            "SCMP_ARCH_ARM",
            "SCMP_ARCH_AARCH64",
            "SCMP_ARCH_MIPS",
            "SCMP_ARCH_MIPS64",
            "SCMP_ARCH_MIPS64N32",
            "SCMP_ARCH_MIPSEL",
            "SCMP_ARCH_MIPSEL64",
            "SCMP_ARCH_MIPSEL64N32",
            "SCMP_ARCH_PPC",
            "SCMP_ARCH_PPC64",
            "SCMP_ARCH_PPC64LE",
            "SCMP_ARCH_S390",
            "SCMP_ARCH_S390X",
            "SCMP_ARCH_PARISC",
            "SCMP_ARCH_PARISC64",
            "SCMP_ARCH_RISCV64",
            "SCMP_ARCH_LOONGARCH64",
            "SCMP_ARCH_M68K",
            "SCMP_ARCH_SH",
            "SCMP_ARCH_SHEB",
        ];
        for name in names {
            let arch: Arch = serde_json::from_str(&format!("\"{name}\"")).expect(name);
            scmp_arch(arch).expect(name);
        }
    }
}

//! The last steps before the container's process runs, in runc's order: working directory,
//! rlimits, ids, capabilities, `no_new_privs`, seccomp (last, so setup is not filtered), then
//! `execve`. Everything that can fail for a reason the user can fix (a missing executable, an
//! unknown user) is checked in [`Exec::resolve`], before the container counts as created.

use super::syscall::Syscall;
use super::user::{self, Ids};
use oci_spec::runtime::Spec;
use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A process ready to exec.
#[derive(Debug)]
pub struct Exec {
    path: CString,
    args: Vec<CString>,
    env: Vec<CString>,
    cwd: PathBuf,
    ids: Ids,
}

fn c_string(text: &str) -> Result<CString, String> {
    CString::new(text).map_err(|_| format!("`{}` contains a NUL byte", text.escape_debug()))
}

impl Exec {
    /// Checks the process against the container's root (already `/`): the user exists, the
    /// executable exists and is executable, the working directory is there (created if not).
    pub fn resolve(spec: &Spec, user_name: Option<&str>) -> Result<Self, String> {
        let process = spec
            .process()
            .as_ref()
            .ok_or("the spec has no process; set process.args in config.json")?;
        let args = process.args().clone().unwrap_or_default();
        let Some(program) = args.first() else {
            return Err("the spec's process.args is empty; give the command to run".into());
        };
        let mut env = process.env().clone().unwrap_or_default();
        let ids = match user_name {
            Some(name) => user::resolve_in(Path::new("/"), name).map_err(|e| e.to_string())?,
            None => Ids {
                uid: process.user().uid(),
                gid: process.user().gid(),
                groups: process.user().additional_gids().clone().unwrap_or_default(),
                home: None,
            },
        };
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            env.push(format!("HOME={}", ids.home.as_deref().unwrap_or("/root")));
        }
        let cwd = process.cwd().clone();
        if !cwd.is_dir() {
            std::fs::create_dir_all(&cwd).map_err(|e| {
                format!("cannot create the working directory {}: {e}", cwd.display())
            })?;
        }
        let path_var = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        let path = find_executable(program, path_var, &cwd)?;
        Ok(Self {
            path: c_string(&path.display().to_string())?,
            args: args.iter().map(|a| c_string(a)).collect::<Result<_, _>>()?,
            env: env.iter().map(|e| c_string(e)).collect::<Result<_, _>>()?,
            cwd,
            ids,
        })
    }

    /// Drops privileges and execs; returns only with the reason it could not.
    pub fn exec(&self, sys: &dyn Syscall, spec: &Spec) -> String {
        match self.prepare(sys, spec) {
            Ok(()) => {}
            Err(e) => return e,
        }
        reset_signals();
        match nix::unistd::execve(&self.path, &self.args, &self.env) {
            Ok(never) => match never {},
            Err(e) => format!("cannot run {}: {e}", self.path.to_string_lossy()),
        }
    }

    fn prepare(&self, sys: &dyn Syscall, spec: &Spec) -> Result<(), String> {
        let process = spec.process().as_ref().ok_or("the spec has no process")?;
        sys.chdir(&self.cwd)
            .map_err(|e| format!("cannot enter {}: {e}", self.cwd.display()))?;
        for limit in process.rlimits().as_deref().unwrap_or_default() {
            set_rlimit(limit)?;
        }
        if let Some(score) = process.oom_score_adj() {
            std::fs::write("/proc/self/oom_score_adj", score.to_string())
                .map_err(|e| format!("cannot set oom_score_adj: {e}"))?;
        }
        let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
        let no_new_privs = process.no_new_privileges() == Some(true);
        // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it before the
        // capabilities go (runc's order); with it, load it last, so the filter need not allow
        // the setup calls.
        if let Some(seccomp) = seccomp.filter(|_| !no_new_privs) {
            sys.load_seccomp(seccomp)
                .map_err(|e| format!("cannot load the seccomp filter: {e}"))?;
        }
        sys.set_ids(self.ids.uid, self.ids.gid, &self.ids.groups)
            .map_err(|e| {
                format!(
                    "cannot switch to uid {} gid {}: {e}",
                    self.ids.uid, self.ids.gid
                )
            })?;
        if let Some(caps) = process.capabilities() {
            let caps = if self.ids.uid != 0 && user_is_implicit(spec) {
                // Docker's rule: a non-root user gets no effective capabilities.
                super::security::default_capabilities_spec(true)
            } else {
                caps.clone()
            };
            sys.set_capabilities(&caps)
                .map_err(|e| format!("cannot set capabilities: {e}"))?;
        }
        if no_new_privs {
            sys.set_no_new_privs()
                .map_err(|e| format!("cannot set no_new_privs: {e}"))?;
            if let Some(seccomp) = seccomp {
                sys.load_seccomp(seccomp)
                    .map_err(|e| format!("cannot load the seccomp filter: {e}"))?;
            }
        }
        Ok(())
    }
}

/// `skiff run` marks its specs so the non-root capability rule applies only to them; a
/// bundle's spec is taken as written.
fn user_is_implicit(spec: &Spec) -> bool {
    spec.annotations()
        .as_ref()
        .is_some_and(|a| a.contains_key(super::spec::RUN_ANNOTATION))
}

fn set_rlimit(limit: &oci_spec::runtime::PosixRlimit) -> Result<(), String> {
    use nix::sys::resource::{Resource, setrlimit};
    use oci_spec::runtime::PosixRlimitType as T;
    let resource = match limit.typ() {
        T::RlimitNofile => Resource::RLIMIT_NOFILE,
        T::RlimitNproc => Resource::RLIMIT_NPROC,
        T::RlimitCore => Resource::RLIMIT_CORE,
        T::RlimitStack => Resource::RLIMIT_STACK,
        T::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        T::RlimitAs => Resource::RLIMIT_AS,
        T::RlimitCpu => Resource::RLIMIT_CPU,
        T::RlimitData => Resource::RLIMIT_DATA,
        T::RlimitFsize => Resource::RLIMIT_FSIZE,
        T::RlimitLocks => Resource::RLIMIT_LOCKS,
        T::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        T::RlimitNice => Resource::RLIMIT_NICE,
        T::RlimitRss => Resource::RLIMIT_RSS,
        T::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        T::RlimitRttime => Resource::RLIMIT_RTTIME,
        T::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
    };
    setrlimit(resource, limit.soft(), limit.hard())
        .map_err(|e| format!("cannot set {:?}: {e}", limit.typ()))
}

/// Signals the container's process must see with their defaults: skiff's std runtime ignores
/// SIGPIPE, and an ignored disposition survives exec.
#[allow(unsafe_code)]
fn reset_signals() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: installing SIG_DFL runs no handler code; this process is single-threaded and
    // about to exec.
    let _ = unsafe { sigaction(Signal::SIGPIPE, &default) };
    let _ = SigSet::all().thread_unblock();
}

/// `program` as exec would find it: a path with a slash as given (relative to `cwd`), a bare
/// name through `PATH`.
pub fn find_executable(program: &str, path_var: &str, cwd: &Path) -> Result<PathBuf, String> {
    let is_executable = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let path = cwd.join(program);
        if !path.exists() {
            return Err(format!(
                "{program} does not exist in the container; check the image's Entrypoint and Cmd, or the command you gave"
            ));
        }
        if !is_executable(&path) {
            return Err(format!(
                "{program} is not an executable file; check the image's Entrypoint and Cmd, or the command you gave"
            ));
        }
        return Ok(PathBuf::from(program));
    }
    path_var
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| is_executable(&cwd.join(candidate)))
        .ok_or_else(|| {
            format!(
                "executable `{program}` not found in PATH={path_var} in the container; check the command, or give its full path"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executables_are_found_or_named() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let tool = bin.join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(bin.join("data"), "").unwrap();
        let root = dir.path();
        assert_eq!(
            find_executable("tool", "/nope:bin", root).unwrap(),
            PathBuf::from("bin/tool")
        );
        assert_eq!(
            find_executable("./bin/tool", "", root).unwrap(),
            PathBuf::from("./bin/tool")
        );
        let err = find_executable("/app/server", "/bin", root).unwrap_err();
        assert!(err.starts_with("/app/server does not exist"), "{err}");
        let err = find_executable("bin/data", "", root).unwrap_err();
        assert!(err.contains("not an executable"), "{err}");
        let err = find_executable("missing", "/bin", root).unwrap_err();
        assert!(err.contains("`missing` not found in PATH"), "{err}");
    }
}

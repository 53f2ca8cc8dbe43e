//! skiff as pid 1 of a `skiff run` container: it forks the image's process, forwards the
//! signals it gets (`skiff stop`'s SIGTERM among them) and reaps every orphan, so zombies
//! never pile up whatever the image's process does, as `docker run --init` (tini) does.
//!
//! Signals are blocked and read from a signalfd: a pid 1 ignores signals it has no handler
//! for, but blocked ones stay pending and are read here.

use super::exec::Exec;
use super::process::{Channel, Message, fork};
use super::syscall::Syscall;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};
use oci_spec::runtime::Spec;

/// Signals passed on to the image's process.
const FORWARDED: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
];

/// Runs the process under skiff as pid 1; returns the exit code to leave with: the process's
/// own, or 128 + the signal that ended it.
pub fn run(sys: &dyn Syscall, mut channel: Channel, exec: &Exec, spec: &Spec) -> i32 {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    for signal in FORWARDED {
        mask.add(*signal);
    }
    if let Err(e) = mask.thread_block() {
        let _ = channel.send(&Message::Error(format!("cannot block signals: {e}")));
        return 127;
    }
    let signals = match SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = channel.send(&Message::Error(format!("cannot read signals: {e}")));
            return 127;
        }
    };
    let child = match fork() {
        Ok(ForkResult::Child) => {
            drop(signals);
            let error = exec.exec(sys, spec);
            let _ = channel.send(&Message::Error(error));
            std::process::exit(127);
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => {
            let _ = channel.send(&Message::Error(format!("cannot fork the process: {e}")));
            return 127;
        }
    };
    // The launcher learns of exec (or of its failure) from the child's copy of the channel.
    drop(channel);
    supervise(&signals, child)
}

fn supervise(signals: &SignalFd, child: Pid) -> i32 {
    loop {
        let signal = match signals.read_signal() {
            Ok(Some(info)) => Signal::try_from(info.ssi_signo as i32).ok(),
            Ok(None) => None,
            Err(nix::errno::Errno::EINTR) => None,
            Err(_) => return 125,
        };
        match signal {
            Some(Signal::SIGCHLD) | None => {
                if let Some(code) = reap(child) {
                    return code;
                }
            }
            Some(other) => {
                let _ = kill(child, other);
            }
        }
    }
}

/// Reaps every exited child; the process's exit code once it has gone.
fn reap(child: Pid) -> Option<i32> {
    let mut result = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == child => result = Some(code),
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == child => {
                result = Some(128 + signal as i32)
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return result,
            Ok(_) => {}
        }
    }
}

//! Stopping and removing a detached container: the work of `skiff stop` and `skiff rm`, done
//! by the CLI alone or by the daemon when the CLI goes through it, so both give the same
//! answers and messages.
//!
//! A container is named as users name it (name, id or unique id prefix, see
//! [`Containers::find`]). An instance of a daemon's workload is refused by `stop` and plain
//! `rm` ([`ContainerError::Managed`]): its supervisor would undo the change. Waits are bounded:
//! the grace after SIGTERM by [`MAX_GRACE`], the exit after SIGKILL by [`KILL_WAIT`]. This
//! module does not know about the ledger: a caller holding a reservation gives it back.

use super::container::{ContainerError, ContainerRecord, Containers, Status, same_process};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

/// How long to wait for the monitor to record the exit after SIGKILL.
pub const KILL_WAIT: Duration = Duration::from_secs(10);

/// The longest grace `stop --time` takes: a stop is a wait someone sits through.
pub const MAX_GRACE: Duration = Duration::from_secs(3600);

/// How often the record is read while waiting for an exit.
const POLL: Duration = Duration::from_millis(20);

/// Why a container was not stopped or removed. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    #[error(transparent)]
    Container(#[from] ContainerError),

    #[error(
        "container {name} is running; stop it with `skiff stop {name}` or remove it with `skiff rm -f {name}`"
    )]
    Running { name: String },

    #[error("container {name} did not exit after SIGKILL; check `skiff ps` and the host's logs")]
    DidNotExit { name: String },
}

type Result<T, E = StopError> = std::result::Result<T, E>;

/// Stops the container `name` names (SIGTERM, then SIGKILL after `grace`); its record as it
/// was found. A container already stopped is left as it is.
pub fn stop_named(containers: &Containers, name: &str, grace: Duration) -> Result<ContainerRecord> {
    let record = containers.find(name)?;
    record.check_unmanaged(name)?;
    stop(containers, &record, grace)?;
    Ok(record)
}

/// Removes the container `name` names; a running one only with `force` (killed first, no
/// grace). `force` also removes an instance of a daemon's workload (a daemon that still runs
/// replaces it). Its record as it was found.
pub fn remove_named(containers: &Containers, name: &str, force: bool) -> Result<ContainerRecord> {
    let record = containers.find(name)?;
    if !force {
        record.check_unmanaged(name)?;
    }
    if record.status != Status::Exited {
        if !force {
            return Err(StopError::Running { name: name.into() });
        }
        stop(containers, &record, Duration::ZERO)?;
    }
    containers.remove_dir(&record.id)?;
    Ok(record)
}

/// Stops one container and waits for its monitor to record the exit.
pub fn stop(containers: &Containers, record: &ContainerRecord, grace: Duration) -> Result<()> {
    let Some(pid) = record.pid.filter(|_| record.status == Status::Running) else {
        return Ok(());
    };
    if !same_process(pid, record.pid_start) {
        return Ok(());
    }
    let pid = Pid::from_raw(pid);
    let _ = kill(pid, Signal::SIGTERM);
    if !wait_exited(containers, record, grace.min(MAX_GRACE)) {
        tracing::info!(container = %record.name, "did not stop after SIGTERM; killing");
        let _ = kill(pid, Signal::SIGKILL);
        if !wait_exited(containers, record, KILL_WAIT) {
            return Err(StopError::DidNotExit {
                name: record.name.clone(),
            });
        }
    }
    Ok(())
}

fn wait_exited(containers: &Containers, record: &ContainerRecord, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let exited = match containers.load(&record.id) {
            Ok(current) => current.status == Status::Exited,
            // Removed by --rm: gone.
            Err(_) => true,
        };
        if exited {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

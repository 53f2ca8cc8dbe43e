//! `skiff stop NAME...`: SIGTERM to the container, then SIGKILL after `--time`.

use crate::linux::container::{ContainerRecord, Containers, Status, same_process};
use crate::units::parse_duration;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long to wait for the monitor to record the exit after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub struct StopCommand {
    /// Time to wait after SIGTERM before SIGKILL: 10s, 500ms, or seconds as a number
    #[arg(short, long, value_name = "DURATION", default_value = "10s", value_parser = parse_time)]
    time: Duration,

    /// Containers, by name or id
    #[arg(required = true, value_name = "NAME")]
    names: Vec<String>,
}

fn parse_time(text: &str) -> Result<Duration, String> {
    match text.parse::<u64>() {
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) => parse_duration(text).map_err(|e| e.to_string()),
    }
}

impl StopCommand {
    pub fn execute(self, data_dir: &Path) -> anyhow::Result<i32> {
        let containers = Containers::open(data_dir);
        let mut failed = false;
        for name in &self.names {
            match containers
                .find(name)
                .and_then(|record| record.check_unmanaged(name).map(|()| record))
            {
                Ok(record) => {
                    stop(&containers, &record, self.time)?;
                    println!("{name}");
                }
                Err(e) => {
                    eprintln!("skiff: error: {e}");
                    failed = true;
                }
            }
        }
        Ok(if failed { 1 } else { 0 })
    }
}

/// Stops one container and waits for its monitor to record the exit.
pub fn stop(
    containers: &Containers,
    record: &ContainerRecord,
    grace: Duration,
) -> anyhow::Result<()> {
    let Some(pid) = record.pid.filter(|_| record.status == Status::Running) else {
        return Ok(());
    };
    if !same_process(pid, record.pid_start) {
        return Ok(());
    }
    let pid = Pid::from_raw(pid);
    let _ = kill(pid, Signal::SIGTERM);
    if !wait_exited(containers, record, grace) {
        tracing::info!(container = %record.name, "did not stop after SIGTERM; killing");
        let _ = kill(pid, Signal::SIGKILL);
        if !wait_exited(containers, record, KILL_WAIT) {
            anyhow::bail!(
                "container {} did not exit after SIGKILL; check `skiff ps` and the host's logs",
                record.name
            );
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
        std::thread::sleep(Duration::from_millis(20));
    }
}

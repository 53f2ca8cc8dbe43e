//! Workload logs: what the instances of a service or job wrote, kept per instance and read
//! back merged (`GET /v1/logs/{app}/{workload}`, `skiff logs APP/WORKLOAD`).
//!
//! A Linux instance's output is its container's log, written by its monitor. An in-process
//! Wasm instance (a Wasm service's replica, a Wasm job's run) has its stdout and stderr
//! captured into a log of its own under `<data>/logs/`, in the same JSON-lines format and
//! bounded the same way: rotated once past [`WASM_LOG_MAX`] into one `.1` file, so at most
//! twice that is kept per instance. A replica keeps one log across its restarts (its instance
//! row is the same), and the log goes when its row does. Reading them back is [`merge`].
//!
//! Functions are not here: their instances live per request, and their output goes to the
//! daemon's own log.

pub mod merge;

use super::Daemon;
use crate::linux::container::Containers;
use crate::linux::monitor::{LogFile, Stream};
use crate::state::{InstanceKind, InstanceRecord, StateError, WorkloadKind};
use crate::wasm::capabilities::Stdio;
use crate::wasm::output::{Capture, Fd, OutputSink};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use merge::WorkloadLog;

/// The largest a Wasm instance's log grows before it is rotated.
pub const WASM_LOG_MAX: u64 = 8 << 20;

/// Why a workload's logs cannot be read; nothing is changed by asking.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("no app named {app} is deployed")]
    NoApp { app: String },
    #[error("app {app} has no service or job named {workload}")]
    NoWorkload { app: String, workload: String },
    #[error(
        "{app}/{workload} is a function: its instances live per request and write to the \
         daemon's log"
    )]
    Function { app: String, workload: String },
    #[error(transparent)]
    State(#[from] StateError),
}

/// Where an in-process Wasm instance's output is kept.
pub fn wasm_log(data_dir: &Path, instance: &str) -> PathBuf {
    data_dir.join("logs").join(format!("{instance}.log"))
}

/// Where the output of the instance `row` is, and the short name its lines are prefixed
/// with; `None` for a Linux instance without a container yet.
pub fn instance_log(data_dir: &Path, row: &InstanceRecord) -> Option<(PathBuf, String)> {
    match row.kind {
        InstanceKind::Wasm => Some((wasm_log(data_dir, &row.id), row.id.clone())),
        InstanceKind::Linux => {
            let container = row.container_id.as_deref()?;
            let dir = Containers::open(data_dir).dir(container);
            let short = crate::linux::container::short_id(container).to_string();
            Some((LogFile::path(&dir), short))
        }
    }
}

/// Stdout and stderr of the Wasm instance `instance`, appended to its log. When the log
/// cannot be opened the output goes to the daemon's log instead, which is said.
pub fn capture(data_dir: &Path, instance: &str) -> Stdio {
    let path = wasm_log(data_dir, instance);
    let opened = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| LogFile::append_to(path.clone(), WASM_LOG_MAX));
    match opened {
        Ok(log) => Stdio::Capture(Capture(Arc::new(InstanceLog(Mutex::new(log))))),
        Err(error) => {
            tracing::warn!(%error, path = %path.display(), "instance log not opened; its output goes to the daemon's log");
            Stdio::Log
        }
    }
}

/// Removes a Wasm instance's log and its rotated part, once its row is gone.
pub fn remove_wasm_log(data_dir: &Path, instance: &str) {
    let path = wasm_log(data_dir, instance);
    for file in [LogFile::rotated(&path), path] {
        if let Err(error) = std::fs::remove_file(&file)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(%error, path = %file.display(), "instance log not removed");
        }
    }
}

/// One Wasm instance's log, written as its guest writes.
struct InstanceLog(Mutex<LogFile>);

impl OutputSink for InstanceLog {
    fn write(&self, fd: Fd, bytes: &[u8]) {
        let stream = match fd {
            Fd::Stdout => Stream::Stdout,
            Fd::Stderr => Stream::Stderr,
        };
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .append(stream, bytes);
    }
}

impl Daemon {
    /// The logs of `app/workload`'s instances, merged; with `follow`, kept open as instances
    /// come and go. Blocking: reads the store.
    pub fn workload_logs(
        &self,
        app: &str,
        workload: &str,
        follow: bool,
    ) -> Result<WorkloadLog, LogsError> {
        let record = self.store.get_app(app)?.ok_or_else(|| LogsError::NoApp {
            app: app.to_string(),
        })?;
        let stored = (record.workloads.iter()).find(|w| w.name == workload);
        match stored.map(|w| w.kind) {
            None => Err(LogsError::NoWorkload {
                app: app.to_string(),
                workload: workload.to_string(),
            }),
            Some(WorkloadKind::Function) => Err(LogsError::Function {
                app: app.to_string(),
                workload: workload.to_string(),
            }),
            Some(_) => WorkloadLog::open(
                Arc::clone(&self.store),
                self.data_dir().to_path_buf(),
                app,
                workload,
                follow,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wasm_instance_log_is_bounded_and_goes_with_its_row() {
        let dir = tempfile::tempdir().unwrap();
        let Stdio::Capture(Capture(sink)) = capture(dir.path(), "w1") else {
            panic!("not captured");
        };
        let chunk = vec![b'x'; 64 << 10];
        for _ in 0..(3 * WASM_LOG_MAX / chunk.len() as u64) {
            sink.write(Fd::Stdout, &chunk);
        }
        sink.write(Fd::Stderr, b"last\n");
        let path = wasm_log(dir.path(), "w1");
        let size = |path: &Path| std::fs::metadata(path).unwrap().len();
        assert!(size(&path) <= WASM_LOG_MAX, "{}", size(&path));
        assert!(size(&LogFile::rotated(&path)) <= WASM_LOG_MAX);
        let kept = std::fs::read_to_string(&path).unwrap();
        assert!(
            kept.ends_with("\"log\":\"last\\n\"}\n"),
            "the newest is kept"
        );

        remove_wasm_log(dir.path(), "w1");
        assert!(!path.exists() && !LogFile::rotated(&path).exists());
    }
}

//! The merged logs of one workload's instances, read in bounded chunks for the control API to
//! stream: each line as a JSON entry `{"instance","stream","time","log"}`, `log` one whole
//! line, `instance` the short name it is prefixed with (as `docker compose logs` prefixes the
//! service).
//!
//! The instances are the store's rows of the workload, looked at again every [`RESCAN`] when
//! following: a new instance (a replica scaled up, a container restarted) is read from its
//! start; one whose row is gone (or a Linux one that exited) is read to its end and dropped.
//! Each read takes one instance's next chunk in turn, so a chatty one does not starve the
//! others. Memory is bounded: one chunk at a time, a partial line per stream and instance of
//! at most [`MAX_PARTIAL`] (longer lines come in pieces), and at most [`MAX_SOURCES`] open.

use crate::linux::logs::{Chunks, LogChunk, LogTail};
use crate::linux::monitor::{LogEntry, Stream};
use crate::state::{InstanceKind, InstanceState, Store};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a follow looks for instances that came or went.
pub const RESCAN: Duration = Duration::from_millis(200);

/// The longest partial line held per stream and instance; past it, it is sent as it is.
pub const MAX_PARTIAL: usize = 16 << 10;

/// Instances read at once; more (a workload of over a thousand replicas) wait their turn.
pub const MAX_SOURCES: usize = 1024;

/// A workload's logs; see the module docs.
pub struct WorkloadLog {
    store: Arc<Store>,
    data_dir: PathBuf,
    app: String,
    workload: String,
    follow: bool,
    /// The logs being read, by path.
    sources: BTreeMap<PathBuf, Source>,
    /// Logs read to their end whose instance is still recorded, so they are not read again.
    finished: BTreeSet<PathBuf>,
    /// Where the next read starts, so each instance gets its turn.
    turn: usize,
    scanned: Option<Instant>,
    /// The app no longer has the workload: a follow ends once its logs are read.
    gone: bool,
}

/// One instance's log.
struct Source {
    prefix: String,
    tail: LogTail,
    /// Its writer may still write: the row is there (and a Linux one has not exited).
    live: bool,
    /// The end of a line not written yet, stdout's and stderr's.
    partial: [Vec<u8>; 2],
}

impl WorkloadLog {
    /// The logs of `app/workload`'s recorded instances (the caller checked it exists).
    pub fn open(
        store: Arc<Store>,
        data_dir: PathBuf,
        app: &str,
        workload: &str,
        follow: bool,
    ) -> Result<Self, super::LogsError> {
        let mut log = WorkloadLog {
            store,
            data_dir,
            app: app.to_string(),
            workload: workload.to_string(),
            follow,
            sources: BTreeMap::new(),
            finished: BTreeSet::new(),
            turn: 0,
            scanned: None,
            gone: false,
        };
        log.scan()?;
        Ok(log)
    }

    /// Opens the logs of instances that came, and marks those that went.
    fn scan(&mut self) -> Result<(), super::LogsError> {
        self.scanned = Some(Instant::now());
        let rows = (self.store).list_instances(Some(&self.app), Some(&self.workload))?;
        let mut current = BTreeSet::new();
        for row in &rows {
            let Some((path, prefix)) = super::instance_log(&self.data_dir, row) else {
                continue;
            };
            current.insert(path.clone());
            let live = self.follow
                && (row.kind == InstanceKind::Wasm || row.state != InstanceState::Exited);
            if let Some(source) = self.sources.get_mut(&path) {
                source.live = live;
                continue;
            }
            if self.finished.contains(&path) || self.sources.len() >= MAX_SOURCES {
                continue;
            }
            match LogTail::open(&path) {
                Ok(tail) => {
                    let source = Source {
                        prefix,
                        tail,
                        live,
                        partial: Default::default(),
                    };
                    self.sources.insert(path, source);
                }
                Err(error) => {
                    tracing::warn!(%error, path = %path.display(), "instance log not read")
                }
            }
        }
        for (path, source) in &mut self.sources {
            source.live &= current.contains(path);
        }
        self.finished.retain(|path| current.contains(path));
        // Only when nothing is live: the app is read only when the follow might end.
        if self.follow && self.sources.values().all(|source| !source.live) {
            let app = self.store.get_app(&self.app)?;
            self.gone = !app.is_some_and(|a| a.workloads.iter().any(|w| w.name == self.workload));
        }
        Ok(())
    }

    /// The next entries, about `max` bytes; see [`Chunks`].
    fn next(&mut self, max: usize) -> std::io::Result<LogChunk> {
        if self.follow && self.scanned.is_none_or(|at| at.elapsed() >= RESCAN) {
            self.scan().map_err(std::io::Error::other)?;
        }
        let paths: Vec<PathBuf> = self.sources.keys().cloned().collect();
        let mut out = Vec::new();
        for k in 0..paths.len() {
            let at = (self.turn + k) % paths.len();
            let path = &paths[at];
            let Some(source) = self.sources.get_mut(path) else {
                continue;
            };
            let live = source.live;
            let ended = match source.tail.next(max, || live) {
                Ok(LogChunk::Lines(lines)) => {
                    source.frame(&lines, &mut out);
                    false
                }
                Ok(LogChunk::Wait) => false,
                Ok(LogChunk::End) => true,
                Err(error) => {
                    tracing::warn!(%error, path = %path.display(), "instance log not read to its end");
                    true
                }
            };
            if ended {
                source.flush(&mut out);
                self.sources.remove(path);
                self.finished.insert(path.clone());
            }
            if !out.is_empty() {
                self.turn = at + 1;
                return Ok(LogChunk::Lines(out));
            }
        }
        if self.sources.is_empty() && (!self.follow || self.gone) {
            return Ok(LogChunk::End);
        }
        Ok(LogChunk::Wait)
    }
}

impl Chunks for WorkloadLog {
    fn next_chunk(&mut self, max: usize) -> std::io::Result<LogChunk> {
        self.next(max)
    }
}

impl Source {
    /// Turns the log's entries (chunks as they were written) into one entry per whole line.
    fn frame(&mut self, lines: &[u8], out: &mut Vec<u8>) {
        for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(entry) = serde_json::from_slice::<LogEntry>(line) else {
                continue;
            };
            let index = stream_index(entry.stream);
            let mut text = entry.log.as_bytes();
            while let Some(end) = text.iter().position(|b| *b == b'\n') {
                self.partial[index].extend_from_slice(&text[..=end]);
                self.emit(entry.stream, entry.time, out);
                text = &text[end + 1..];
            }
            self.partial[index].extend_from_slice(text);
            if self.partial[index].len() >= MAX_PARTIAL {
                self.emit(entry.stream, entry.time, out);
            }
        }
    }

    /// What is left of unfinished lines, at the end of the log.
    fn flush(&mut self, out: &mut Vec<u8>) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            if !self.partial[stream_index(stream)].is_empty() {
                self.emit(stream, 0, out);
            }
        }
    }

    fn emit(&mut self, stream: Stream, time: u64, out: &mut Vec<u8>) {
        let text = std::mem::take(&mut self.partial[stream_index(stream)]);
        let entry = json!({
            "instance": self.prefix,
            "stream": stream,
            "time": time,
            "log": String::from_utf8_lossy(&text),
        });
        // A `Value` always serialises.
        let _ = serde_json::to_writer(&mut *out, &entry);
        out.push(b'\n');
    }
}

fn stream_index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Source {
        let dir = tempfile::tempdir().unwrap();
        Source {
            prefix: "abc".into(),
            tail: LogTail::open(&dir.path().join("none.log")).unwrap(),
            live: false,
            partial: Default::default(),
        }
    }

    fn entry(stream: &str, log: &str) -> String {
        format!("{}\n", json!({"stream": stream, "time": 7, "log": log}))
    }

    fn logs(out: &[u8]) -> Vec<(String, String)> {
        (out.split(|b| *b == b'\n').filter(|l| !l.is_empty()))
            .map(|l| serde_json::from_slice::<serde_json::Value>(l).unwrap())
            .map(|v| {
                (
                    v["stream"].as_str().unwrap().into(),
                    v["log"].as_str().unwrap().into(),
                )
            })
            .collect()
    }

    #[test]
    fn chunks_become_whole_lines_per_stream() {
        let mut source = source();
        let mut out = Vec::new();
        let written =
            entry("stdout", "one\ntw") + &entry("stderr", "err") + &entry("stdout", "o\n");
        source.frame(written.as_bytes(), &mut out);
        assert_eq!(
            logs(&out),
            [
                ("stdout".into(), "one\n".into()),
                ("stdout".into(), "two\n".into())
            ]
        );
        out.clear();
        source.flush(&mut out);
        assert_eq!(logs(&out), [("stderr".into(), "err".into())]);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains(r#""instance":"abc""#)
        );
    }

    #[test]
    fn a_line_longer_than_the_bound_comes_in_pieces() {
        let mut source = source();
        let mut out = Vec::new();
        let long = "x".repeat(MAX_PARTIAL + 10);
        source.frame(entry("stdout", &long).as_bytes(), &mut out);
        assert_eq!(logs(&out).len(), 1);
        assert!(source.partial[0].is_empty());
    }

    /// Appends `text` to Wasm instance `id`'s log as its guest would.
    fn write(data_dir: &std::path::Path, id: &str, text: &str) {
        let path = super::super::wasm_log(data_dir, id);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut log = crate::linux::monitor::LogFile::append_to(path, 1 << 20).unwrap();
        log.append(Stream::Stdout, text.as_bytes());
    }

    fn row(id: &str) -> crate::state::InstanceRecord {
        crate::state::InstanceRecord::new(id, "shop", "web", InstanceKind::Wasm, 1)
    }

    /// The next read, its lines as `instance | log`; `None` on `Wait`, `End` as "end".
    fn read(log: &mut WorkloadLog) -> Option<Vec<String>> {
        log.scanned = None;
        match log.next(1 << 16).unwrap() {
            LogChunk::Lines(out) => Some(
                (out.split(|b| *b == b'\n').filter(|l| !l.is_empty()))
                    .map(|l| serde_json::from_slice::<serde_json::Value>(l).unwrap())
                    .map(|v| {
                        format!(
                            "{} | {}",
                            v["instance"].as_str().unwrap(),
                            v["log"].as_str().unwrap()
                        )
                    })
                    .collect(),
            ),
            LogChunk::Wait => None,
            LogChunk::End => Some(vec!["end".into()]),
        }
    }

    #[test]
    fn a_follow_reads_instances_as_they_come_and_each_to_its_end_as_it_goes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        store.put_app("shop", &json!({}), &[]).unwrap();
        store.insert_instance(&row("w1")).unwrap();
        write(dir.path(), "w1", "a\n");
        let data = dir.path().to_path_buf();
        let mut log = WorkloadLog::open(Arc::clone(&store), data, "shop", "web", true).unwrap();
        assert_eq!(read(&mut log), Some(vec!["w1 | a\n".to_string()]));
        assert_eq!(read(&mut log), None, "w1 may write more");

        // A new instance is read from its start.
        store.insert_instance(&row("w2")).unwrap();
        write(dir.path(), "w2", "b\n");
        assert_eq!(read(&mut log), Some(vec!["w2 | b\n".to_string()]));

        // One that goes is read to its end, its partial line too, and not again.
        write(dir.path(), "w1", "c\nlast");
        store.remove_instance("w1").unwrap();
        assert_eq!(read(&mut log), Some(vec!["w1 | c\n".to_string()]));
        assert_eq!(read(&mut log), Some(vec!["w1 | last".to_string()]));
        assert_eq!(read(&mut log), None);

        // Once the app has no such workload and every log is read, the follow ends.
        store.remove_instance("w2").unwrap();
        assert_eq!(read(&mut log), Some(vec!["end".to_string()]));
    }

    #[test]
    fn without_follow_every_log_is_read_once_then_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        store.insert_instance(&row("w1")).unwrap();
        write(dir.path(), "w1", "a\n");
        store.insert_instance(&row("w2")).unwrap();
        let data = dir.path().to_path_buf();
        let mut log = WorkloadLog::open(store, data, "shop", "web", false).unwrap();
        assert_eq!(read(&mut log), Some(vec!["w1 | a\n".to_string()]));
        assert_eq!(read(&mut log), Some(vec!["end".to_string()]));
    }
}

//! Reading a container's log back (`container.log`, JSON lines written by its monitor): what
//! `skiff logs [-f]` prints, read by the CLI alone or by the daemon that streams it.
//!
//! The reader hands out whole lines in bounded chunks and never blocks: when following and
//! nothing new is written yet it answers [`LogChunk::Wait`], and the caller decides how to
//! wait (a thread sleeps, the daemon's stream awaits a timer). Following ends when the
//! container has exited, after the lines it wrote just before. It does not parse entries:
//! printing them (stdout or stderr) is the CLI's.

use super::container::{ContainerError, Containers, Status};
use super::monitor::LogFile;
use std::io::{BufRead, BufReader};

/// What [`LogReader::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum LogChunk {
    /// Whole lines (each ending in `\n`, but for a last partial line written before the exit).
    Lines(Vec<u8>),
    /// Following, and nothing new yet: ask again later.
    Wait,
    /// Everything is read: the container has exited, or the log was read without following.
    End,
}

/// One container's log, read from the start.
pub struct LogReader {
    /// `None` once everything is read, or when the container never wrote a log.
    reader: Option<BufReader<std::fs::File>>,
    containers: Containers,
    id: String,
    follow: bool,
    /// The last pass after the exit: what is left is read, a partial line too.
    draining: bool,
}

impl LogReader {
    /// The log of container `id`; with `follow`, read until the container exits.
    pub fn open(containers: &Containers, id: &str, follow: bool) -> Result<Self, ContainerError> {
        let path = LogFile::path(&containers.dir(id));
        let reader = match std::fs::File::open(&path) {
            Ok(file) => Some(BufReader::new(file)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(ContainerError::Io { path, error }),
        };
        Ok(LogReader {
            reader,
            containers: containers.clone(),
            id: id.to_string(),
            follow,
            draining: false,
        })
    }

    /// The next whole lines, about `max` bytes at most (one line longer than `max` comes
    /// whole); [`LogChunk::Wait`] when following and nothing new is written.
    pub fn next(&mut self, max: usize) -> std::io::Result<LogChunk> {
        let mut out = Vec::new();
        loop {
            let Some(reader) = self.reader.as_mut() else {
                return Ok(LogChunk::End);
            };
            let start = out.len();
            let read = reader.read_until(b'\n', &mut out)?;
            if read > 0 && out.ends_with(b"\n") {
                if out.len() >= max {
                    return Ok(LogChunk::Lines(out));
                }
                continue;
            }
            // At the end of what is written so far; `out` may end in a partial line.
            if self.draining {
                self.reader = None;
                return Ok(if out.is_empty() {
                    LogChunk::End
                } else {
                    LogChunk::Lines(out)
                });
            }
            if read > 0 {
                // A partial line: go back and read it whole later.
                reader.seek_relative(-(read as i64))?;
                out.truncate(start);
            }
            if !out.is_empty() {
                return Ok(LogChunk::Lines(out));
            }
            if !self.follow || self.exited() {
                // One more pass: output written just before the exit was recorded.
                self.draining = true;
                continue;
            }
            return Ok(LogChunk::Wait);
        }
    }

    /// Exited or gone (removed, or its monitor died).
    fn exited(&self) -> bool {
        self.containers
            .current(&self.id)
            .map(|r| r.status == Status::Exited)
            .unwrap_or(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::container::ContainerRecord;
    use std::io::Write;

    fn record(id: &str, status: Status) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            name: id.into(),
            image: "busybox".into(),
            command: vec![],
            created: 0,
            status,
            pid: None,
            pid_start: None,
            monitor_pid: None,
            exit_code: None,
            oom_killed: false,
            finished: None,
            ports: vec![],
            address: None,
            auto_remove: false,
            owner: None,
        }
    }

    #[test]
    fn whole_lines_in_bounded_chunks_then_the_partial_line_after_the_exit() {
        let data = tempfile::tempdir().unwrap();
        let containers = Containers::open(data.path());
        // Running with our own pid as its monitor: alive until its record says exited.
        let mut running = record("c1", Status::Running);
        running.monitor_pid = Some(std::process::id() as i32);
        containers.create(&running).unwrap();
        let path = LogFile::path(&containers.dir("c1"));
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(b"one\ntwo\nthr").unwrap();

        let mut reader = LogReader::open(&containers, "c1", true).unwrap();
        assert_eq!(reader.next(4).unwrap(), LogChunk::Lines(b"one\n".to_vec()));
        assert_eq!(reader.next(4).unwrap(), LogChunk::Lines(b"two\n".to_vec()));
        assert_eq!(
            reader.next(4).unwrap(),
            LogChunk::Wait,
            "a partial line waits"
        );
        file.write_all(b"ee\nfo").unwrap();
        assert_eq!(
            reader.next(100).unwrap(),
            LogChunk::Lines(b"three\n".to_vec())
        );
        assert_eq!(reader.next(100).unwrap(), LogChunk::Wait);

        containers.save(&record("c1", Status::Exited)).unwrap();
        assert_eq!(reader.next(100).unwrap(), LogChunk::Lines(b"fo".to_vec()));
        assert_eq!(reader.next(100).unwrap(), LogChunk::End);
    }

    #[test]
    fn without_follow_or_a_log_it_ends() {
        let data = tempfile::tempdir().unwrap();
        let containers = Containers::open(data.path());
        containers.create(&record("c2", Status::Running)).unwrap();
        let mut reader = LogReader::open(&containers, "c2", true).unwrap();
        assert_eq!(reader.next(100).unwrap(), LogChunk::End, "no log yet");

        std::fs::write(LogFile::path(&containers.dir("c2")), b"a\nb").unwrap();
        let mut reader = LogReader::open(&containers, "c2", false).unwrap();
        assert_eq!(reader.next(100).unwrap(), LogChunk::Lines(b"a\n".to_vec()));
        assert_eq!(reader.next(100).unwrap(), LogChunk::Lines(b"b".to_vec()));
        assert_eq!(reader.next(100).unwrap(), LogChunk::End);
    }
}

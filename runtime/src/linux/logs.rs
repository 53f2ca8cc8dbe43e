//! Reading a container's log back (`container.log`, JSON lines written by its monitor): what
//! `skiff logs [-f]` prints, read by the CLI alone or by the daemon that streams it.
//!
//! The reader hands out whole lines in bounded chunks and never blocks: when following and
//! nothing new is written yet it answers [`LogChunk::Wait`], and the caller decides how to
//! wait (a thread sleeps, the daemon's stream awaits a timer). Following ends when the
//! container has exited, after the lines it wrote just before. It does not parse entries:
//! printing them (stdout or stderr) is the CLI's.
//!
//! Underneath is [`LogTail`], which reads any [`LogFile`] (the daemon's logs of Wasm
//! instances too) from its rotated `.1` part on, and follows it across rotations.

use super::container::{ContainerError, Containers, Status};
use super::monitor::LogFile;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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

/// Something read in bounded chunks of whole lines: one container's log, or (in the daemon)
/// the merged logs of a workload's instances. Blocking: call it on a blocking thread.
pub trait Chunks: Send + 'static {
    /// The next whole lines, about `max` bytes at most.
    fn next_chunk(&mut self, max: usize) -> std::io::Result<LogChunk>;
}

/// One container's log, read from the start.
pub struct LogReader {
    /// `None` when the container never wrote a log.
    tail: Option<LogTail>,
    containers: Containers,
    id: String,
    follow: bool,
}

impl LogReader {
    /// The log of container `id`; with `follow`, read until the container exits.
    pub fn open(containers: &Containers, id: &str, follow: bool) -> Result<Self, ContainerError> {
        let path = LogFile::path(&containers.dir(id));
        let tail = match LogTail::open(&path) {
            Ok(tail) if tail.reader.is_some() => Some(tail),
            Ok(_) => None,
            Err(error) => return Err(ContainerError::Io { path, error }),
        };
        Ok(LogReader {
            tail,
            containers: containers.clone(),
            id: id.to_string(),
            follow,
        })
    }

    /// The next whole lines, about `max` bytes at most (one line longer than `max` comes
    /// whole); [`LogChunk::Wait`] when following and nothing new is written.
    pub fn next(&mut self, max: usize) -> std::io::Result<LogChunk> {
        let Some(tail) = self.tail.as_mut() else {
            return Ok(LogChunk::End);
        };
        let (containers, id, follow) = (&self.containers, &self.id, self.follow);
        tail.next(max, || follow && !exited(containers, id))
    }
}

impl Chunks for LogReader {
    fn next_chunk(&mut self, max: usize) -> std::io::Result<LogChunk> {
        self.next(max)
    }
}

/// Exited or gone (removed, or its monitor died).
fn exited(containers: &Containers, id: &str) -> bool {
    containers
        .current(id)
        .map(|r| r.status == Status::Exited)
        .unwrap_or(true)
}

/// A [`LogFile`] read from the start of what it keeps (its rotated `.1` part first), and
/// across rotations while it is followed. It never blocks and does not know whether its
/// writer still runs: the caller says so when the end of what is written is reached.
pub struct LogTail {
    path: PathBuf,
    /// The file being read; `None` before the log exists, and once everything is read.
    reader: Option<BufReader<File>>,
    /// The file being read was rotated away: one more pass for the lines finished before the
    /// rename, then on to the new file.
    rotated_away: bool,
    /// The writer is gone: one more pass, a partial line too, then [`LogChunk::End`].
    draining: bool,
    done: bool,
}

impl LogTail {
    /// The log at `path`, which may not exist yet.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let reader = match open_if_exists(&LogFile::rotated(path))? {
            Some(older) => Some(older),
            None => open_if_exists(path)?,
        };
        Ok(LogTail {
            path: path.to_path_buf(),
            reader,
            rotated_away: false,
            draining: false,
            done: false,
        })
    }

    /// The next whole lines, about `max` bytes at most (one line longer than `max` comes
    /// whole). At the end of what is written, `live` says whether the writer may write more:
    /// then [`LogChunk::Wait`], else what is left and [`LogChunk::End`].
    pub fn next(
        &mut self,
        max: usize,
        mut live: impl FnMut() -> bool,
    ) -> std::io::Result<LogChunk> {
        let mut out = Vec::new();
        loop {
            if self.done {
                return Ok(LogChunk::End);
            }
            let Some(reader) = self.reader.as_mut() else {
                if let Some(file) = open_if_exists(&self.path)? {
                    self.reader = Some(file);
                    continue;
                }
                if self.draining || !live() {
                    self.done = true;
                    return Ok(LogChunk::End);
                }
                return Ok(LogChunk::Wait);
            };
            let start = out.len();
            let read = reader.read_until(b'\n', &mut out)?;
            if read > 0 && out.ends_with(b"\n") {
                if out.len() >= max {
                    return Ok(LogChunk::Lines(out));
                }
                continue;
            }
            // At the end of what this file holds now; `out` may end in a partial line.
            if self.rotated_away {
                // Complete since the rename: a partial line left is a crash's, dropped.
                out.truncate(start);
                self.rotated_away = false;
                self.reader = open_if_exists(&self.path)?;
                continue;
            }
            if self.draining {
                if out.is_empty() && self.rotated()? {
                    self.reader = open_if_exists(&self.path)?;
                    continue;
                }
                self.reader = None;
                self.done = true;
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
            if self.rotated()? {
                self.rotated_away = true;
            } else if !live() {
                // One more pass: output written just before the end was recorded.
                self.draining = true;
            } else {
                return Ok(LogChunk::Wait);
            }
        }
    }

    /// Whether the file being read is no longer the one at the path (rotated, or the `.1`
    /// part read first).
    fn rotated(&self) -> std::io::Result<bool> {
        let Some(reader) = &self.reader else {
            return Ok(false);
        };
        let ours = reader.get_ref().metadata()?.ino();
        match std::fs::metadata(&self.path) {
            Ok(meta) => Ok(meta.ino() != ours),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn open_if_exists(path: &Path) -> std::io::Result<Option<BufReader<File>>> {
    match File::open(path) {
        Ok(file) => Ok(Some(BufReader::new(file))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
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

    #[test]
    fn a_tail_reads_the_rotated_part_first_and_follows_across_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.log");
        std::fs::write(LogFile::rotated(&path), b"old\n").unwrap();
        std::fs::write(&path, b"new\n").unwrap();
        let mut tail = LogTail::open(&path).unwrap();
        let mut read = Vec::new();
        while let LogChunk::Lines(lines) = tail.next(100, || true).unwrap() {
            read.extend(lines);
        }
        assert_eq!(read, b"old\nnew\n");

        // Rotated while followed: the rest of the old file, then the new one from its start.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"last\n").unwrap();
        std::fs::rename(&path, LogFile::rotated(&path)).unwrap();
        std::fs::write(&path, b"fresh\n").unwrap();
        assert_eq!(
            tail.next(100, || true).unwrap(),
            LogChunk::Lines(b"last\n".to_vec())
        );
        assert_eq!(
            tail.next(100, || true).unwrap(),
            LogChunk::Lines(b"fresh\n".to_vec())
        );
        assert_eq!(tail.next(100, || true).unwrap(), LogChunk::Wait);
        assert_eq!(tail.next(100, || false).unwrap(), LogChunk::End);
    }

    #[test]
    fn a_tail_of_a_log_not_written_yet_waits_while_its_writer_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("later.log");
        let mut tail = LogTail::open(&path).unwrap();
        assert_eq!(tail.next(100, || true).unwrap(), LogChunk::Wait);
        std::fs::write(&path, b"hi\n").unwrap();
        assert_eq!(
            tail.next(100, || true).unwrap(),
            LogChunk::Lines(b"hi\n".to_vec())
        );
        assert_eq!(tail.next(100, || false).unwrap(), LogChunk::End);
    }
}

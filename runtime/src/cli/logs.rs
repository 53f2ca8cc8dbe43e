//! `skiff logs [-f] NAME`: a container's stdout and stderr, from its log.

use crate::linux::container::{Containers, Status};
use crate::linux::monitor::{LogEntry, LogFile, Stream};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct LogsCommand {
    /// Keep printing as the container writes, until it exits
    #[arg(short, long)]
    follow: bool,

    /// The container, by name or id
    #[arg(value_name = "NAME")]
    name: String,
}

impl LogsCommand {
    pub fn execute(self, data_dir: &Path) -> anyhow::Result<i32> {
        let containers = Containers::open(data_dir);
        let record = containers.find(&self.name)?;
        let dir = containers.dir(&record.id);
        let path = LogFile::path(&dir);
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = reader.read_until(b'\n', &mut line)?;
            if read > 0 && line.ends_with(b"\n") {
                print_entry(&line);
                continue;
            }
            // At the end of what is written so far.
            if !self.follow || exited(&containers, &record.id) {
                // One more pass: output written just before the exit was recorded.
                if read > 0 {
                    print_entry(&line);
                }
                let mut rest = Vec::new();
                while reader.read_until(b'\n', &mut rest)? > 0 {
                    print_entry(&rest);
                    rest.clear();
                }
                return Ok(0);
            }
            if read > 0 {
                // A partial line: go back and read it whole later.
                reader.seek_relative(-(read as i64))?;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn exited(containers: &Containers, id: &str) -> bool {
    containers
        .load(id)
        .map(|r| r.status == Status::Exited)
        .unwrap_or(true)
}

fn print_entry(line: &[u8]) {
    let Ok(entry) = serde_json::from_slice::<LogEntry>(line) else {
        return;
    };
    let _ = match entry.stream {
        Stream::Stdout => std::io::stdout().write_all(entry.log.as_bytes()),
        Stream::Stderr => std::io::stderr().write_all(entry.log.as_bytes()),
    };
}

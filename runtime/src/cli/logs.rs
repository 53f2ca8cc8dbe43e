//! `skiff logs [-f] NAME`: a container's stdout and stderr, from its log; through the daemon
//! of this data dir when one runs (it streams the same lines), else read here. Printing is
//! one code path either way.

use super::client::{self, ClientOptions, Endpoint};
use crate::linux::container::Containers;
use crate::linux::logs::{LogChunk, LogReader};
use crate::linux::monitor::{LogEntry, Stream};
use anyhow::Context;
use http_body_util::BodyExt;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// The most bytes of whole lines read at once.
const CHUNK: usize = 64 << 10;

/// How often `-f` looks for new lines when reading alone.
const POLL: Duration = Duration::from_millis(100);

/// The longest line taken from the daemon: past it, the stream is not a log.
const MAX_LINE: usize = 16 << 20;

#[derive(Debug, clap::Args)]
pub struct LogsCommand {
    /// Keep printing as the container writes, until it exits
    #[arg(short, long)]
    follow: bool,

    /// The container, by name or id
    #[arg(value_name = "NAME", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    name: String,

    #[command(flatten)]
    daemon: ClientOptions,
}

impl LogsCommand {
    pub fn execute(self, data_dir: &Path) -> anyhow::Result<i32> {
        if let Some(endpoint) = client::daemon_of(&self.daemon, data_dir) {
            return super::block_on(self.through_daemon(&endpoint));
        }
        let containers = Containers::open(data_dir);
        let record = containers.find(&self.name)?;
        let mut reader = LogReader::open(&containers, &record.id, self.follow)?;
        loop {
            match reader.next(CHUNK)? {
                LogChunk::Lines(lines) => print_lines(&lines),
                LogChunk::Wait => std::thread::sleep(POLL),
                LogChunk::End => return Ok(0),
            }
        }
    }

    /// `GET /v1/containers/{name}/logs`, printed line by line as it streams.
    async fn through_daemon(&self, endpoint: &Endpoint) -> anyhow::Result<i32> {
        let path = format!(
            "/v1/containers/{}/logs{}",
            client::segment(&self.name),
            if self.follow { "?follow=true" } else { "" }
        );
        let response = client::send(endpoint, http::Method::GET, &path, String::new()).await?;
        if !response.status().is_success() {
            let answer = client::read_answer(response).await?;
            return answer.or_message().map(|_| 0).map_err(anyhow::Error::msg);
        }
        let mut body = response.into_body();
        let mut pending = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.context("the daemon stopped sending the log")?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            if let Some(end) = pending.iter().rposition(|b| *b == b'\n') {
                print_lines(&pending[..=end]);
                pending.drain(..=end);
            }
            if pending.len() > MAX_LINE {
                anyhow::bail!(
                    "the daemon sent a log line over {MAX_LINE} bytes; read the log without \
                     the daemon (stop `skiff serve`), or report it"
                );
            }
        }
        // A last partial line, written just before the container exited.
        print_lines(&pending);
        Ok(0)
    }
}

/// Prints each entry to the stream it came from; empty lines (the daemon's heartbeats) and
/// lines that are not entries are skipped.
fn print_lines(lines: &[u8]) {
    for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(entry) = serde_json::from_slice::<LogEntry>(line) else {
            continue;
        };
        let _ = match entry.stream {
            Stream::Stdout => std::io::stdout().write_all(entry.log.as_bytes()),
            Stream::Stderr => std::io::stderr().write_all(entry.log.as_bytes()),
        };
    }
}

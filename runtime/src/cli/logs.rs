//! `skiff logs [-f] NAME`: a container's stdout and stderr, from its log; through the daemon
//! of this data dir when one runs (it streams the same lines), else read here. Printing is
//! one code path either way.
//!
//! `skiff logs [-f] APP/WORKLOAD` (a name with a `/`): the merged logs of a service's or
//! job's instances, from the daemon, each line prefixed with its instance's short id as
//! `docker compose logs` prefixes the service; `-f` keeps following as instances come and go.

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
    /// Keep printing as the container writes, until it exits (a workload: until interrupted)
    #[arg(short, long)]
    follow: bool,

    /// The container, by name or id; or a workload of the daemon, as APP/WORKLOAD
    #[arg(value_name = "NAME", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    name: String,

    #[command(flatten)]
    daemon: ClientOptions,
}

impl LogsCommand {
    pub fn execute(self, data_dir: &Path) -> anyhow::Result<i32> {
        if let Some((app, workload)) = self.name.split_once('/') {
            if app.is_empty() || workload.is_empty() {
                anyhow::bail!(
                    "{} is not a workload; write APP/WORKLOAD as `skiff ps` shows it",
                    self.name
                );
            }
            let Some(endpoint) = client::daemon_of(&self.daemon, data_dir) else {
                anyhow::bail!(
                    "{} names a workload (APP/WORKLOAD), and its logs come from the daemon, \
                     which does not run for this data dir; start `skiff serve`",
                    self.name
                );
            };
            let path = format!(
                "/v1/logs/{}/{}{}",
                client::segment(app),
                client::segment(workload),
                if self.follow { "?follow=true" } else { "" }
            );
            return super::block_on(stream(&endpoint, &path));
        }
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
        print_stream(response).await
    }
}

/// `GET /v1/logs/{app}/{workload}`, printed line by line as it streams; a refusal with the
/// daemon's hint.
async fn stream(endpoint: &Endpoint, path: &str) -> anyhow::Result<i32> {
    let response = client::send(endpoint, http::Method::GET, path, String::new()).await?;
    if !response.status().is_success() {
        // Not a success: the daemon's error and hint.
        return client::read_answer(response).await?.ok().map(|_| 1);
    }
    print_stream(response).await
}

/// Prints a streamed log's entries as they come.
async fn print_stream(response: http::Response<hyper::body::Incoming>) -> anyhow::Result<i32> {
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

/// A log entry as the daemon streams it: a container's (`instance` absent), or a line of a
/// workload's instance.
#[derive(serde::Deserialize)]
struct Entry {
    #[serde(flatten)]
    entry: LogEntry,
    instance: Option<String>,
}

/// Prints each entry to the stream it came from, a workload's line after its instance's
/// prefix; empty lines (the daemon's heartbeats) and lines that are not entries are skipped.
fn print_lines(lines: &[u8]) {
    for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(Entry { entry, instance }) = serde_json::from_slice::<Entry>(line) else {
            continue;
        };
        let mut text = entry.log.into_bytes();
        if let Some(instance) = instance {
            if !text.ends_with(b"\n") {
                text.push(b'\n');
            }
            text.splice(0..0, format!("{instance} | ").into_bytes());
        }
        let _ = match entry.stream {
            Stream::Stdout => std::io::stdout().write_all(&text),
            Stream::Stderr => std::io::stderr().write_all(&text),
        };
    }
}

//! `skiff events`: the daemon's event log, one line per event; `--follow` keeps printing new
//! ones as they happen.

use super::client::{self, ClientOptions};
use anyhow::Context;
use http_body_util::BodyExt;
use std::io::Write;

#[derive(Debug, clap::Args)]
pub struct EventsCommand {
    /// Keep printing events as they happen, until the daemon stops or Ctrl-C
    #[arg(short, long)]
    follow: bool,

    /// Only this app's events
    #[arg(long, value_name = "APP")]
    app: Option<String>,

    /// Only events after this sequence number (the first column of each line)
    #[arg(long, value_name = "SEQ")]
    since: Option<u64>,

    #[command(flatten)]
    daemon: ClientOptions,
}

impl EventsCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let endpoint = self.daemon.endpoint()?;
        let mut path = format!("/v1/events?follow={}", self.follow);
        if let Some(app) = &self.app {
            path.push_str(&format!("&app={}", client::encode(app)));
        }
        if let Some(since) = self.since {
            path.push_str(&format!("&since={since}"));
        }
        super::block_on(async {
            let response = client::send(&endpoint, http::Method::GET, &path, String::new()).await?;
            if !response.status().is_success() {
                let status = response.status();
                let bytes = response.into_body().collect().await?.to_bytes();
                let body = serde_json::from_slice(&bytes).unwrap_or_default();
                client::Answer { status, body }.ok()?;
                return Ok(0);
            }
            let mut body = response.into_body();
            let mut pending = Vec::new();
            let mut out = std::io::stdout().lock();
            while let Some(frame) = body.frame().await {
                let frame = frame.context("the daemon's event stream broke off")?;
                let Some(data) = frame.data_ref() else {
                    continue;
                };
                pending.extend_from_slice(data);
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    writeln!(out, "{}", format_line(&line))?;
                }
                out.flush()?;
            }
            Ok(0)
        })
    }
}

/// `SEQ  TIME  APP/WORKLOAD/INSTANCE  KIND  MESSAGE`; `-` for what the event has not.
fn format_line(line: &[u8]) -> String {
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(line) else {
        return String::from_utf8_lossy(line).trim_end().to_string();
    };
    let text = |key: &str| event[key].as_str().unwrap_or("").to_string();
    let subject: Vec<String> = ["app", "workload", "instance"]
        .iter()
        .map(|key| text(key))
        .filter(|s| !s.is_empty())
        .collect();
    let subject = if subject.is_empty() {
        "-".to_string()
    } else {
        subject.join("/")
    };
    let seq = match &event["seq"] {
        serde_json::Value::Number(n) => n.to_string(),
        _ => "-".to_string(),
    };
    let time = Some(text("time")).filter(|t| !t.is_empty());
    format!(
        "{seq}  {}  {subject}  {}  {}",
        time.as_deref().unwrap_or("-"),
        text("kind"),
        text("message")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_time_subject_kind_and_message() {
        let line = br#"{"seq":3,"time":"2026-01-02T03:04:05.006Z","app":"shop","workload":"api","instance":null,"kind":"scaled","message":"function warm minimum set to 2"}"#;
        assert_eq!(
            format_line(line),
            "3  2026-01-02T03:04:05.006Z  shop/api  scaled  function warm minimum set to 2"
        );
        let missed = br#"{"kind":"missed","missed":7,"after":3,"message":"missed 7 events"}"#;
        assert_eq!(format_line(missed), "-  -  -  missed  missed 7 events");
    }
}

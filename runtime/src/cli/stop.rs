//! `skiff stop NAME...`: SIGTERM to the container, then SIGKILL after `--time`; through the
//! daemon of this data dir when one runs (it gives back what the container held in the node's
//! ledger), else here. The stopping itself is `linux::stop`'s either way.

use super::client::{self, ClientOptions};
use crate::linux::container::Containers;
use crate::linux::stop::{self, MAX_GRACE};
use crate::units::parse_duration;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct StopCommand {
    /// Time to wait after SIGTERM before SIGKILL: 10s, 500ms, or seconds as a number (1h at
    /// most)
    #[arg(short, long, value_name = "DURATION", default_value = "10s", value_parser = parse_time)]
    time: Duration,

    /// Containers, by name or id
    #[arg(
        required = true,
        value_name = "NAME",
        value_parser = clap::builder::NonEmptyStringValueParser::new()
    )]
    names: Vec<String>,

    #[command(flatten)]
    daemon: ClientOptions,
}

fn parse_time(text: &str) -> Result<Duration, String> {
    let time = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => parse_duration(text).map_err(|e| e.to_string())?,
    };
    if time > MAX_GRACE {
        return Err(format!(
            "{text} is longer than the {}s a stop waits at most; give less",
            MAX_GRACE.as_secs()
        ));
    }
    Ok(time)
}

impl StopCommand {
    pub fn execute(self, data_dir: &Path) -> anyhow::Result<i32> {
        let daemon = client::daemon_of(&self.daemon, data_dir);
        let containers = Containers::open(data_dir);
        let mut failed = false;
        for name in &self.names {
            let stopped = match &daemon {
                Some(endpoint) => {
                    let path = format!(
                        "/v1/containers/{}/stop?time={}",
                        client::segment(name),
                        self.time.as_secs_f64()
                    );
                    client::call(endpoint, http::Method::POST, &path)?.map(drop)
                }
                None => stop::stop_named(&containers, name, self.time)
                    .map(drop)
                    .map_err(|e| e.to_string()),
            };
            match stopped {
                Ok(()) => println!("{name}"),
                Err(message) => {
                    eprintln!("skiff: error: {message}");
                    failed = true;
                }
            }
        }
        Ok(if failed { 1 } else { 0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_is_seconds_or_a_duration_up_to_an_hour() {
        assert_eq!(parse_time("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_time("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_time("1h"), Ok(MAX_GRACE));
        let long = parse_time("3601").unwrap_err();
        assert!(long.contains("longer than the 3600s"), "{long}");
    }
}

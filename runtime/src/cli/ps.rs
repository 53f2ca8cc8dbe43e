//! `skiff ps [-a]`: list containers, running ones unless `-a`; when a daemon answers on its
//! socket, its workloads too: functions (warm, at zero or pending; instances now), services
//! and jobs (state, ready instances, CPU, memory, why pending).

use super::client::{self, ClientOptions};
use crate::linux::container::{Containers, Status, short_id};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// How long `ps` waits for a daemon before listing containers only.
const DAEMON_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, clap::Args)]
pub struct PsCommand {
    /// Show every container, not just running ones
    #[arg(short, long)]
    all: bool,

    /// Print only the ids
    #[arg(short, long)]
    quiet: bool,

    #[command(flatten)]
    daemon: ClientOptions,
}

impl PsCommand {
    pub fn execute(self, data_dir: &Path) -> anyhow::Result<i32> {
        let containers = Containers::open(data_dir).list()?;
        let shown = containers
            .iter()
            .filter(|c| self.all || c.status != Status::Exited);
        if self.quiet {
            for c in shown {
                println!("{}", short_id(&c.id));
            }
            return Ok(0);
        }
        println!(
            "{:<12}  {:<28}  {:<20}  {:<18}  {:<24}  NAME",
            "ID", "IMAGE", "COMMAND", "STATUS", "PORTS"
        );
        let now = crate::linux::container::now();
        for c in shown {
            let status = match (c.status, c.exit_code) {
                (Status::Created, _) => "created".to_string(),
                (Status::Running, _) => format!("up {}", ago(now.saturating_sub(c.created))),
                (Status::Exited, Some(code)) if c.oom_killed => format!("exited ({code}, oom)"),
                (Status::Exited, Some(code)) => format!("exited ({code})"),
                (Status::Exited, None) => "exited (unknown)".to_string(),
            };
            let mut command = c.command.join(" ");
            if command.len() > 20 {
                command.truncate(17);
                command.push_str("...");
            }
            println!(
                "{:<12}  {:<28}  {:<20}  {:<18}  {:<24}  {}",
                short_id(&c.id),
                c.image,
                command,
                status,
                c.ports.join(","),
                c.name
            );
        }
        if let Some(workloads) = self.daemon_workloads() {
            print!("{}", workloads_table(&workloads));
        }
        Ok(0)
    }

    /// The daemon's services and jobs; `None` when no daemon answers (plain `ps` then).
    fn daemon_workloads(&self) -> Option<Vec<Value>> {
        let endpoint = self.daemon.endpoint().ok()?;
        if let client::Endpoint::Unix(socket) = &endpoint
            && !socket.exists()
        {
            return None;
        }
        let asked = super::block_on(async {
            let request =
                client::request(&endpoint, http::Method::GET, "/v1/workloads", String::new());
            tokio::time::timeout(DAEMON_WAIT, request).await
        });
        match asked.map(|answer| answer.and_then(client::Answer::ok)) {
            Ok(Ok(body)) => body["workloads"].as_array().cloned(),
            Ok(Err(error)) => {
                tracing::debug!(%error, "no workloads from the daemon");
                None
            }
            Err(_) => {
                tracing::debug!("the daemon did not answer in time");
                None
            }
        }
    }
}

/// The daemon's workloads, after a blank line; nothing when there are none.
fn workloads_table(workloads: &[Value]) -> String {
    if workloads.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\n{:<28}  {:<14}  {:<22}  {:<6}  {:<8}  {:<9}  PENDING\n",
        "WORKLOAD", "KIND", "STATE", "READY", "CPU", "MEMORY"
    );
    for w in workloads {
        let text = |key: &str| w[key].as_str().unwrap_or("?").to_string();
        let number = |key: &str| w[key].as_u64().unwrap_or(0);
        let pending: Vec<&str> = w["pending"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        out.push_str(&format!(
            "{:<28}  {:<14}  {:<22}  {:<6}  {:<8}  {:<9}  {}\n",
            format!("{}/{}", text("app"), text("workload")),
            format!("{}/{}", text("kind"), text("runtime")),
            text("state"),
            format!("{}/{}", number("ready"), number("desired")),
            // Function instances live inside the daemon: no cgroup of their own to read.
            match w["runtime"].as_str() {
                Some("wasm") => "-".to_string(),
                _ => format!("{:.2}s", number("cpu_usec") as f64 / 1e6),
            },
            match w["runtime"].as_str() {
                Some("wasm") => "-".to_string(),
                _ => crate::units::ByteSize(number("memory_bytes")).to_string(),
            },
            pending.join("; ")
        ));
    }
    out
}

fn ago(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m", seconds / 60),
        3600..86400 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86400),
    }
}

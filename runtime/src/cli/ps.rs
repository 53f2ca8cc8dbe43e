//! `skiff ps [-a]`: list containers, running ones unless `-a` (from the daemon of this data
//! dir when one runs, else from disk; one table either way); when a daemon answers on its
//! socket, its workloads too: functions (warm, at zero or pending; instances now), services
//! and jobs (state, ready instances, CPU, memory, why pending).

use super::client::{self, ClientOptions};
use crate::linux::container::{ContainerRecord, Containers, Status, short_id};
use anyhow::Context;
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
        let containers = match client::daemon_of(&self.daemon, data_dir) {
            Some(endpoint) => from_daemon(&endpoint, self.all)?,
            None => Containers::open(data_dir).list()?,
        };
        let shown: Vec<&ContainerRecord> = containers
            .iter()
            .filter(|c| self.all || c.status != Status::Exited)
            .collect();
        if self.quiet {
            for c in shown {
                println!("{}", short_id(&c.id));
            }
            return Ok(0);
        }
        print!(
            "{}",
            containers_table(&shown, crate::linux::container::now())
        );
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

/// The containers the daemon of this data dir lists (`GET /v1/containers`).
fn from_daemon(endpoint: &client::Endpoint, all: bool) -> anyhow::Result<Vec<ContainerRecord>> {
    let path = if all {
        "/v1/containers?all=true"
    } else {
        "/v1/containers"
    };
    let body = client::call(endpoint, http::Method::GET, path)?.map_err(anyhow::Error::msg)?;
    serde_json::from_value(body["containers"].clone())
        .context("the daemon's container list is not what this skiff reads; update skiff")
}

/// The containers' table, the same whether they came from disk or from the daemon.
fn containers_table(containers: &[&ContainerRecord], now: u64) -> String {
    let mut out = format!(
        "{:<12}  {:<28}  {:<20}  {:<18}  {:<24}  NAME\n",
        "ID", "IMAGE", "COMMAND", "STATUS", "PORTS"
    );
    for c in containers {
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
        out.push_str(&format!(
            "{:<12}  {:<28}  {:<20}  {:<18}  {:<24}  {}\n",
            short_id(&c.id),
            c.image,
            command,
            status,
            c.ports.join(","),
            c.name
        ));
    }
    out
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
            // Wasm instances live inside the daemon: no cgroup of their own to read; a Wasm
            // service's CPU is counted per instance, a Wasm job's is not.
            match (w["runtime"].as_str(), w["kind"].as_str()) {
                (Some("wasm"), Some("job")) => "-".to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_from_the_daemon_makes_the_same_table_as_one_from_disk() {
        let record = ContainerRecord {
            id: "0123456789abcdef".into(),
            name: "web".into(),
            image: "localhost/skiff/busybox:latest".into(),
            command: vec!["httpd".into(), "-f".into(), "-p".into(), "80".into()],
            created: 100,
            status: Status::Running,
            pid: Some(7),
            pid_start: Some(9),
            monitor_pid: Some(6),
            exit_code: None,
            oom_killed: false,
            finished: None,
            ports: vec!["8080:80/tcp".into()],
            address: Some("10.89.0.2".into()),
            auto_remove: false,
            owner: None,
        };
        let sent = serde_json::json!({ "containers": [record] });
        let received: Vec<ContainerRecord> =
            serde_json::from_value(sent["containers"].clone()).unwrap();
        let table = containers_table(&[&record], 190);
        assert_eq!(containers_table(&[&received[0]], 190), table);
        let row = table.lines().nth(1).unwrap();
        assert!(
            row.starts_with("0123456789ab  localhost/skiff/busybox"),
            "{row}"
        );
        assert!(row.contains("up 1m") && row.ends_with("  web"), "{row}");
    }

    #[test]
    fn wasm_services_show_their_cpu_and_wasm_jobs_and_memory_do_not() {
        let workload = |name: &str, kind: &str, runtime: &str| {
            serde_json::json!({
                "app": "shop", "workload": name, "kind": kind, "runtime": runtime,
                "state": "running", "ready": 1, "desired": 1,
                "cpu_usec": 1_500_000, "memory_bytes": 0, "pending": [],
            })
        };
        let table = workloads_table(&[
            workload("spinner", "service", "wasm"),
            workload("batch", "job", "wasm"),
        ]);
        let row = |name: &str| -> Vec<String> {
            let line = table.lines().find(|l| l.contains(name)).unwrap();
            line.split_whitespace().map(str::to_string).collect()
        };
        assert_eq!(row("shop/spinner")[4..6], ["1.50s", "-"], "{table}");
        assert_eq!(row("shop/batch")[4..6], ["-", "-"], "{table}");
    }
}

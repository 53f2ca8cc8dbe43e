//! `skiff ps [-a]`: list containers, running ones unless `-a`.

use crate::linux::container::{Containers, Status, short_id};
use std::path::Path;

#[derive(Debug, clap::Args)]
pub struct PsCommand {
    /// Show every container, not just running ones
    #[arg(short, long)]
    all: bool,

    /// Print only the ids
    #[arg(short, long)]
    quiet: bool,
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
        Ok(0)
    }
}

fn ago(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m", seconds / 60),
        3600..86400 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86400),
    }
}

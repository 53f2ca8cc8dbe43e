//! `skiff rm [-f] NAME...`: remove stopped containers (with `-f`, stop them first); through
//! the daemon of this data dir when one runs (it gives back what the container held in the
//! node's ledger), else here. An instance of a daemon's workload is removed only with `-f`.

use super::client::{self, ClientOptions};
use crate::linux::container::Containers;
use crate::linux::stop;
use std::path::Path;

#[derive(Debug, clap::Args)]
pub struct RmCommand {
    /// Kill a running container first
    #[arg(short, long)]
    force: bool,

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

impl RmCommand {
    pub fn execute(self, data_dir: &Path) -> anyhow::Result<i32> {
        let daemon = client::daemon_of(&self.daemon, data_dir);
        let containers = Containers::open(data_dir);
        let mut failed = false;
        for name in &self.names {
            let removed = match &daemon {
                Some(endpoint) => {
                    let force = if self.force { "?force=true" } else { "" };
                    let path = format!("/v1/containers/{}{force}", client::segment(name));
                    client::call(endpoint, http::Method::DELETE, &path)?.map(drop)
                }
                None => stop::remove_named(&containers, name, self.force)
                    .map(drop)
                    .map_err(|e| e.to_string()),
            };
            match removed {
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

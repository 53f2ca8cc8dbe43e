//! `skiff rm [-f] NAME...`: remove stopped containers (with `-f`, stop them first); through
//! the daemon of this data dir when one runs (it gives back what the container held in the
//! node's ledger), else here. An instance of a daemon's workload is removed only with `-f`.
//!
//! `skiff rm APP`: when a daemon runs and NAME is a deployed app and no container's name or id
//! (prefix), the app is removed as `skiff apps rm` does. A NAME that is both is refused,
//! naming both ways, and nothing is removed.

use super::client::{self, ClientOptions, Endpoint};
use crate::linux::container::{ContainerError, Containers};
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
                Some(endpoint) if let Some(app) = as_app(endpoint, &containers, name)? => app,
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

/// What `skiff rm NAME` does when NAME is a deployed app: removes it, or refuses when NAME is
/// also a container's name or id (prefix). `None`: not an app, so NAME is a container.
fn as_app(
    endpoint: &Endpoint,
    containers: &Containers,
    name: &str,
) -> anyhow::Result<Option<Result<(), String>>> {
    let path = format!("/v1/apps/{}", client::segment(name));
    if client::call(endpoint, http::Method::GET, &path)?.is_err() {
        return Ok(None);
    }
    let both = |containers: String| {
        Err(format!(
            "{name} is both an app and {containers}; nothing was removed. Remove the app with \
             `skiff apps rm {name}`, or the container by its full id with `skiff rm ID`"
        ))
    };
    Ok(Some(match containers.find(name) {
        Err(ContainerError::Unknown { .. }) => {
            client::call(endpoint, http::Method::DELETE, &path)?.map(drop)
        }
        Ok(record) => both(format!("container {}", record.id)),
        Err(ContainerError::Ambiguous { ids, .. }) => both(format!("a prefix of containers {ids}")),
        Err(error) => Err(error.to_string()),
    }))
}

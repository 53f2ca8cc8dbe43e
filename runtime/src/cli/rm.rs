//! `skiff rm [-f] NAME...`: remove stopped containers (with `-f`, stop them first). An
//! instance of a daemon's workload is removed only with `-f`.

use crate::linux::container::{Containers, Status};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct RmCommand {
    /// Kill a running container first
    #[arg(short, long)]
    force: bool,

    /// Containers, by name or id
    #[arg(required = true, value_name = "NAME")]
    names: Vec<String>,
}

impl RmCommand {
    pub fn execute(self, data_dir: &Path) -> anyhow::Result<i32> {
        let containers = Containers::open(data_dir);
        let mut failed = false;
        for name in &self.names {
            let result = containers.find(name).map_err(anyhow::Error::from).and_then(|record| {
                // `-f` may remove an instance (a daemon that still runs replaces it).
                if !self.force {
                    record.check_unmanaged(name)?;
                }
                if record.status != Status::Exited {
                    if !self.force {
                        anyhow::bail!(
                            "container {name} is running; stop it with `skiff stop {name}` or remove it with `skiff rm -f {name}`"
                        );
                    }
                    super::stop::stop(&containers, &record, Duration::ZERO)?;
                }
                containers.remove_dir(&record.id)?;
                Ok(())
            });
            match result {
                Ok(()) => println!("{name}"),
                Err(e) => {
                    eprintln!("skiff: error: {e:#}");
                    failed = true;
                }
            }
        }
        Ok(if failed { 1 } else { 0 })
    }
}

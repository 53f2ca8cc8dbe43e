//! `skiff rmi IMAGE...`: remove names, and the blobs no other image uses.

use crate::oci::local::LocalImages;
use std::path::Path;

#[derive(Debug, clap::Args)]
pub struct RmiCommand {
    /// Images to remove, by name or digest
    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<String>,
}

impl RmiCommand {
    pub fn execute(self, data_dir: &Path) -> anyhow::Result<i32> {
        let images = LocalImages::open(data_dir)?;
        for name in &self.images {
            let record = images.get(name)?;
            let blobs = images.remove(&record.name)?;
            println!(
                "untagged {} ({}); {blobs} blobs removed",
                record.name, record.digest
            );
        }
        Ok(0)
    }
}

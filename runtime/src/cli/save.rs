//! `skiff save IMAGE... -o FILE`: stored images to a tar archive in OCI image layout.

use crate::oci::layout;
use crate::oci::local::LocalImages;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct SaveCommand {
    /// Images to save, by name or digest
    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<String>,

    /// The archive to write (replaced only once it is complete)
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: PathBuf,
}

impl SaveCommand {
    pub fn execute(self, data_dir: &Path) -> anyhow::Result<i32> {
        let images = LocalImages::open(data_dir)?;
        for record in layout::save(&images, &self.images, &self.output)? {
            println!("saved {} ({})", record.name, record.digest);
        }
        Ok(0)
    }
}

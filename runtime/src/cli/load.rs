//! `skiff load -i FILE`: images from a tar archive (an OCI image layout or `docker save`).

use crate::oci::layout;
use crate::oci::local::LocalImages;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct LoadCommand {
    /// The archive to read: an OCI image layout or `docker save` tar; `-` for standard input
    #[arg(short = 'i', long = "input", value_name = "FILE")]
    input: PathBuf,
}

impl LoadCommand {
    pub fn execute(self, data_dir: &Path) -> anyhow::Result<i32> {
        let images = LocalImages::open(data_dir)?;
        let records = if self.input == Path::new("-") {
            layout::load(&images, std::io::stdin().lock(), "standard input")?
        } else {
            layout::load_file(&images, &self.input)?
        };
        for record in records {
            println!("loaded {} ({})", record.name, record.digest);
        }
        Ok(0)
    }
}

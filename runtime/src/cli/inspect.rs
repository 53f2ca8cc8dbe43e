//! `skiff inspect IMAGE`: manifest and config as JSON.

use crate::oci::local::LocalImages;
use std::path::Path;

#[derive(Debug, clap::Args)]
pub struct InspectCommand {
    /// The image, by name or digest
    #[arg(value_name = "IMAGE")]
    image: String,
}

impl InspectCommand {
    pub fn execute(self, data_dir: &Path) -> anyhow::Result<i32> {
        let images = LocalImages::open(data_dir)?;
        let record = images.get(&self.image)?;
        let json = images.inspect(&record)?;
        println!("{}", serde_json::to_string_pretty(&json)?);
        Ok(0)
    }
}

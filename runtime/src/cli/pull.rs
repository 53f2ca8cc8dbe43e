//! `skiff pull REF`: fetch an image into the local store.

use super::progress;
use super::registry_options::RegistryOptions;
use crate::oci::local::LocalImages;
use crate::oci::reference::ImageRef;
use crate::oci::registry::Registry;
use std::path::Path;

#[derive(Debug, clap::Args)]
pub struct PullCommand {
    #[command(flatten)]
    registry: RegistryOptions,

    /// The image: NAME[:TAG] or NAME@sha256:DIGEST
    #[arg(value_name = "REF")]
    reference: ImageRef,
}

impl PullCommand {
    pub fn execute(self, data_dir: &Path) -> anyhow::Result<i32> {
        let images = LocalImages::open(data_dir)?;
        let registry = Registry::new(self.registry.config(data_dir)?);
        let record = super::block_on(images.pull(
            &registry,
            &self.reference,
            progress::for_stdout().as_ref(),
        ))?;
        println!(
            "pulled {} ({}, {}, {} bytes)",
            record.name, record.kind, record.digest, record.size
        );
        Ok(0)
    }
}

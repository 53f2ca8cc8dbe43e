//! `skiff push FILE.wasm REF` packages and pushes a Wasm artifact; `skiff push IMAGE [REF]`
//! pushes a stored image (under another name or registry when REF is given).

use super::registry_options::RegistryOptions;
use crate::oci::local::LocalImages;
use crate::oci::reference::ImageRef;
use crate::oci::registry::Registry;
use anyhow::Context;
use std::path::Path;

#[derive(Debug, clap::Args)]
pub struct PushCommand {
    #[command(flatten)]
    registry: RegistryOptions,

    /// A .wasm file to package, or a stored image's name
    #[arg(value_name = "FILE|IMAGE")]
    source: String,

    /// Where to push: NAME[:TAG] [default for a stored image: its own name]
    #[arg(value_name = "REF")]
    target: Option<ImageRef>,
}

impl PushCommand {
    pub fn execute(self, data_dir: &Path) -> anyhow::Result<i32> {
        let images = LocalImages::open(data_dir)?;
        let registry = Registry::new(self.registry.config(data_dir)?);
        let file = Path::new(&self.source);
        if file.is_file() {
            let target = self
                .target
                .context("name where to push the file: skiff push FILE.wasm NAME[:TAG]")?;
            let record = super::block_on(images.push_file(&registry, file, &target))?;
            println!("pushed {} ({})", record.name, record.digest);
        } else {
            let record = images.get(&self.source)?;
            let target = match self.target {
                Some(target) => target,
                None => record.name.parse()?,
            };
            super::block_on(images.push_stored(&registry, &record, &target))?;
            println!("pushed {target} ({})", record.digest);
        }
        Ok(0)
    }
}

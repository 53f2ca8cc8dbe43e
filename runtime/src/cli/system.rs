//! `skiff system prune`: remove what nothing references.

use crate::oci::local::LocalImages;
use crate::units::ByteSize;
use crate::wasm::engine::{EngineConfig, WasmEngine};
use std::path::Path;

#[derive(Debug, clap::Args)]
pub struct SystemCommand {
    #[command(subcommand)]
    action: SystemAction,
}

#[derive(Debug, clap::Subcommand)]
enum SystemAction {
    /// Remove blobs no image references, and compiled code of programs no image holds
    Prune,
}

impl SystemCommand {
    pub fn execute(self, data_dir: &Path) -> anyhow::Result<i32> {
        match self.action {
            SystemAction::Prune => prune(data_dir),
        }
    }
}

fn prune(data_dir: &Path) -> anyhow::Result<i32> {
    let images = LocalImages::open(data_dir)?;
    let blobs = images.prune()?;
    let engine = WasmEngine::new(&EngineConfig::default(), data_dir.join("cache/wasm"))?;
    let (programs, bytes) = engine.prune_cache(&images.wasm_code_digests()?)?;
    println!(
        "removed {blobs} blobs and the compiled code of {programs} programs ({} freed from the compile cache)",
        ByteSize(bytes)
    );
    Ok(0)
}

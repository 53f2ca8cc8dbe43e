//! `skiff system prune`: remove what nothing references.

use crate::linux::snapshot::{self, Snapshots};
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
    /// Remove blobs no image references, compiled code of programs no image holds, and layer
    /// snapshots no Linux image uses
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
    // What stored images name, and what containers still run on after their image went.
    let mut keep = snapshot::images_chain_ids(&images)?;
    let containers = crate::linux::container::Containers::open(data_dir);
    for lower in crate::linux::monitor::lowers_in_use(&containers)? {
        if let Some(hex) = lower.file_name().and_then(|n| n.to_str())
            && let Ok(chain_id) = format!("sha256:{hex}").parse()
        {
            keep.insert(chain_id);
        }
    }
    let snapshots = Snapshots::open(data_dir)?.prune(&keep)?;
    println!("removed {snapshots} layer snapshots");
    Ok(0)
}

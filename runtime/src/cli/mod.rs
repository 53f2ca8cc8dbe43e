//! The `skiff` command line: one file per verb, each a `…Command` with `execute`.

mod run;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// skiff runs WebAssembly and Linux containers on one node.
#[derive(Debug, Parser)]
#[command(name = "skiff", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOptions,

    #[command(subcommand)]
    pub command: Command,
}

/// Options every verb takes.
#[derive(Debug, clap::Args)]
pub struct GlobalOptions {
    /// Where skiff keeps compiled code, images and state
    /// [default: /var/lib/skiff as root, $XDG_DATA_HOME/skiff otherwise]
    #[arg(long, global = true, env = "SKIFF_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a WebAssembly program, or serve it over HTTP with --listen
    Run(run::RunCommand),
}

impl Cli {
    /// Runs the chosen verb; returns the process exit code.
    pub fn execute(self) -> anyhow::Result<i32> {
        let data_dir = self.global.data_dir.unwrap_or_else(default_data_dir);
        match self.command {
            Command::Run(run) => run.execute(&data_dir),
        }
    }
}

/// `/var/lib/skiff` as root; the XDG data dir otherwise. The one place the CLI reads the
/// environment for a default (clap reads `SKIFF_*` for flags).
fn default_data_dir() -> PathBuf {
    if nix_is_root() {
        return PathBuf::from("/var/lib/skiff");
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("skiff")
}

fn nix_is_root() -> bool {
    // /proc/self is owned by the effective uid; avoids an unsafe libc call for one check.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }
}

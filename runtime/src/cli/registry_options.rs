//! Flags shared by the verbs that talk to registries, and where credentials come from.

use crate::oci::credentials::{self, Credentials};
use crate::oci::registry::{Platform, RegistryConfig};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, clap::Args)]
pub struct RegistryOptions {
    /// Reach this registry (HOST[:PORT]) over plain HTTP; loopback registries always are
    #[arg(
        long = "insecure-registry",
        value_name = "HOST[:PORT]",
        env = "SKIFF_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    pub insecure: Vec<String>,

    /// The platform to pull from a multi-platform image [default: this machine's]
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<Platform>,
}

impl RegistryOptions {
    /// The registry settings, with credentials from `skiff login` over Docker's config.
    pub fn config(&self, data_dir: &Path) -> anyhow::Result<RegistryConfig> {
        Ok(RegistryConfig {
            insecure: self.insecure.clone(),
            credentials: load_credentials(data_dir)?,
            platform: self.platform.clone(),
        })
    }
}

/// Where `skiff login` keeps credentials (Docker's format, mode 0600).
pub fn skiff_auth_file(data_dir: &Path) -> PathBuf {
    data_dir.join("auth.json")
}

/// Docker's config: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
fn docker_config_file() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json"))
}

/// skiff's own logins win over Docker's for the same registry.
pub fn load_credentials(data_dir: &Path) -> anyhow::Result<Credentials> {
    let mut all = match docker_config_file() {
        Some(path) => credentials::read(&path)?,
        None => Credentials::new(),
    };
    all.extend(credentials::read(&skiff_auth_file(data_dir))?);
    Ok(all)
}

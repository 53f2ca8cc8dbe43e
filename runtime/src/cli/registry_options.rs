//! Flags shared by the verbs that talk to registries.

use crate::oci::registry::{Platform, RegistryConfig};

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
    pub fn config(&self) -> RegistryConfig {
        RegistryConfig {
            insecure: self.insecure.clone(),
            credentials: Default::default(),
            platform: self.platform.clone(),
        }
    }
}

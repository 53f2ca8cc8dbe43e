//! `skiff login REGISTRY` checks credentials against the registry and stores them;
//! `skiff logout REGISTRY` forgets them.

use super::registry_options::{RegistryOptions, load_credentials, skiff_auth_file};
use crate::oci::credentials;
use crate::oci::registry::Registry;
use anyhow::Context;
use std::io::{BufRead, IsTerminal};
use std::path::Path;

#[derive(Debug, clap::Args)]
pub struct LoginCommand {
    #[command(flatten)]
    registry_options: RegistryOptions,

    /// Username
    #[arg(short, long)]
    username: Option<String>,

    /// Password (prefer --password-stdin: arguments are visible to other users)
    #[arg(short, long)]
    password: Option<String>,

    /// Read the password from standard input
    #[arg(long, conflicts_with = "password")]
    password_stdin: bool,

    /// The registry: HOST[:PORT]
    #[arg(value_name = "REGISTRY")]
    registry: String,
}

impl LoginCommand {
    pub fn execute(self, data_dir: &Path) -> anyhow::Result<i32> {
        let username = self
            .username
            .clone()
            .context("give a username with -u USER")?;
        let password = match (&self.password, self.password_stdin) {
            (Some(password), _) => password.clone(),
            (None, true) => read_password_line()?,
            (None, false) => anyhow::bail!("give a password with --password-stdin (or -p)"),
        };
        let mut config = self.registry_options.config(data_dir)?;
        config.credentials = load_credentials(data_dir)?;
        config
            .credentials
            .insert(self.registry.clone(), (username.clone(), password.clone()));
        let registry = Registry::new(config);
        super::block_on(registry.check_login(&self.registry))?;
        credentials::store(
            &skiff_auth_file(data_dir),
            &self.registry,
            Some((&username, &password)),
        )?;
        println!("login succeeded for {}", self.registry);
        Ok(0)
    }
}

fn read_password_line() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    anyhow::ensure!(
        !stdin.is_terminal(),
        "--password-stdin reads a pipe, e.g. `echo $PW | skiff login ...`"
    );
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

#[derive(Debug, clap::Args)]
pub struct LogoutCommand {
    /// The registry: HOST[:PORT]
    #[arg(value_name = "REGISTRY")]
    registry: String,
}

impl LogoutCommand {
    pub fn execute(self, data_dir: &Path) -> anyhow::Result<i32> {
        credentials::store(&skiff_auth_file(data_dir), &self.registry, None)?;
        println!("removed login credentials for {}", self.registry);
        Ok(0)
    }
}

//! `skiff deploy -f FILE`: send an app manifest to the daemon and print what changed.

use super::client::{self, ClientOptions};
use anyhow::Context;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct DeployCommand {
    /// The app manifest (skiff.toml); relative paths in it are relative to its directory
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: PathBuf,

    #[command(flatten)]
    daemon: ClientOptions,
}

impl DeployCommand {
    pub fn execute(self) -> anyhow::Result<i32> {
        let text = std::fs::read_to_string(&self.file).with_context(|| {
            format!(
                "cannot read app manifest {}; check the path given to -f",
                self.file.display()
            )
        })?;
        let shown = self.file.display().to_string();
        let name = app_name(&text, &shown)?;
        let base = std::path::absolute(&self.file)
            .with_context(|| format!("cannot resolve {shown}"))?
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        let path = format!(
            "/v1/apps/{}?base={}&file={}",
            client::encode(&name),
            client::encode(&base.to_string_lossy()),
            client::encode(&shown)
        );
        let endpoint = self.daemon.endpoint()?;
        let answer = super::block_on(client::request(&endpoint, http::Method::PUT, &path, text))?;
        print_deployed(&answer.ok()?);
        Ok(0)
    }
}

/// `[app] name`, to address the app; a manifest too broken to say is reported as the daemon
/// would, by validating it here.
fn app_name(text: &str, file: &str) -> anyhow::Result<String> {
    let name = toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|table| table.get("app")?.get("name")?.as_str().map(str::to_string));
    match name {
        Some(name) => Ok(name),
        None => {
            crate::app::AppSpec::parse_with(text, std::path::Path::new("/"), file, false)?;
            anyhow::bail!("{file}: [app] name is missing; add it")
        }
    }
}

fn print_deployed(answer: &serde_json::Value) {
    for line in answer["diff"].as_array().into_iter().flatten() {
        println!("{}", line.as_str().unwrap_or_default());
    }
    let (app, generation) = (
        &answer["app"].as_str().unwrap_or("?"),
        &answer["generation"],
    );
    if answer["unchanged"].as_bool() == Some(true) {
        println!("app {app} unchanged (generation {generation})");
    } else {
        println!("app {app} deployed (generation {generation})");
    }
}

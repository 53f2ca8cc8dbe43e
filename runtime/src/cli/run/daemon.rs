//! `skiff run -d` and the daemon. When `skiff serve` runs on this data dir
//! ([`client::daemon_of`]), a detached Linux container is started by the daemon ([`send`]),
//! which admits it through the node's ledger first; the daemon reads `run`'s flags with this
//! same code ([`CliRunner`]).

use super::RunCommand;
use super::linux::{self, Detached};
use crate::cli::client::{self, Endpoint};
use crate::daemon::containers::{ContainerRunner, Planned, RunRefused, RunRequest};
use crate::oci::image::ImageKind;
use crate::oci::local::LocalImages;
use crate::sched::capacity::Requests;
use clap::Parser;
use serde_json::json;
use std::path::Path;

/// `run`'s flags as the daemon reads them.
#[derive(Debug, Parser)]
#[command(name = "skiff run", no_binary_name = true)]
struct RunArgs {
    #[command(flatten)]
    run: RunCommand,
}

/// The daemon's reading of `skiff run -d` requests.
pub struct CliRunner;

impl CliRunner {
    fn parse(request: &RunRequest) -> Result<RunCommand, RunRefused> {
        let mut run = RunArgs::try_parse_from(&request.args)
            .map_err(|e| RunRefused::bad_request(e.render().to_string()))?
            .run;
        if !run.linux.detach {
            return Err(RunRefused::bad_request(
                "only `skiff run -d` goes through the daemon; a foreground run is the CLI's own",
            ));
        }
        // Relative paths are the client's: resolve them where it stood.
        for volume in run.volumes.iter_mut().chain(run.dirs.iter_mut()) {
            if volume.host.is_relative() {
                volume.host = request.cwd.join(&volume.host);
            }
        }
        for file in &mut run.env_files {
            if file.is_relative() {
                *file = request.cwd.join(&*file);
            }
        }
        Ok(run)
    }

    fn image(
        run: &RunCommand,
        data_dir: &Path,
    ) -> Result<crate::oci::images::ImageRecord, RunRefused> {
        let refused = |e: crate::oci::local::ImagesError| RunRefused::bad_request(e.to_string());
        let record = LocalImages::open(data_dir)
            .map_err(refused)?
            .get(&run.target)
            .map_err(refused)?;
        if record.kind != ImageKind::Linux {
            return Err(RunRefused::bad_request(format!(
                "{} is a Wasm image; the daemon starts Linux containers (deploy Wasm as an \
                 app's function, or run it in the foreground)",
                record.name
            )));
        }
        run.check_linux_flags()
            .map_err(|e| RunRefused::bad_request(format!("{e:#}")))?;
        Ok(record)
    }
}

impl ContainerRunner for CliRunner {
    fn plan(&self, request: &RunRequest, data_dir: &Path) -> Result<Planned, RunRefused> {
        let run = Self::parse(request)?;
        Self::image(&run, data_dir)?;
        Ok(Planned {
            name: run.linux.name.clone().unwrap_or_else(|| run.target.clone()),
            requests: Requests {
                cpu_millis: run.linux.cpus.map_or(0, |c| (c * 1000.0).ceil() as u64),
                memory_bytes: run.memory.map_or(0, |m| m.0),
                ..Requests::ZERO
            },
        })
    }

    fn launch(&self, request: &RunRequest, data_dir: &Path) -> Result<String, RunRefused> {
        let run = Self::parse(request)?;
        let image = Self::image(&run, data_dir)?;
        match linux::run_detached(&run, image, data_dir) {
            Ok(Detached::Started(id)) => Ok(id),
            Ok(Detached::Failed { code, message }) => Err(RunRefused {
                status: if code == 127 { 400 } else { 500 },
                message,
            }),
            Err(error) => Err(RunRefused {
                status: 400,
                message: format!("{error:#}"),
            }),
        }
    }
}

/// Asks the daemon to start the container; prints its id as `skiff run -d` does.
pub fn send(endpoint: &Endpoint) -> anyhow::Result<i32> {
    let args: Vec<String> = std::env::args()
        .skip_while(|a| a != "run")
        .skip(1)
        .collect();
    let cwd = std::env::current_dir()?;
    let body = json!({ "args": args, "cwd": cwd }).to_string();
    let answer = crate::cli::block_on(client::request(
        endpoint,
        http::Method::POST,
        "/v1/containers",
        body,
    ))?;
    let body = answer.ok()?;
    println!("{}", body["id"].as_str().unwrap_or_default());
    Ok(0)
}

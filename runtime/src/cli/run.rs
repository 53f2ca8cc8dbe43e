//! `skiff run`: run a Wasm program in the foreground, or serve it over HTTP with `--listen`;
//! or run a Linux image as a container (`run/linux.rs`). Which one is decided by the image.

mod daemon;
mod linux;

pub use daemon::CliRunner;

pub use linux::exit_code_for;

use super::registry_options::RegistryOptions;
use crate::gateway::{self, GatewayConfig};
use crate::oci::image::ImageKind;
use crate::oci::images::ImageRecord;
use crate::oci::local::{ImagesError, LocalImages};
use crate::oci::reference::ImageRef;
use crate::oci::registry::Registry;
use crate::units::{ByteSize, parse_duration};
use crate::wasm::capabilities::{Capabilities, Preopen, Stdio, parse_env, parse_env_file};
use crate::wasm::command;
use crate::wasm::engine::{EngineConfig, WasmEngine};
use crate::wasm::http::HttpFunction;
use crate::wasm::limits::Limits;
use crate::wasm::{Program, WasmError, WasmKind};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::Duration;

/// Wall time of one request's instance when serving without `--timeout`.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct RunCommand {
    /// Grant a host directory: HOST:GUEST, HOST:GUEST:ro for read-only (a bind mount for a
    /// Linux image)
    #[arg(short = 'v', long = "volume", value_name = "HOST:GUEST[:ro]", value_parser = parse_volume)]
    volumes: Vec<Preopen>,

    /// Grant a host directory, as wasmtime spells it: HOST::GUEST
    #[arg(long = "dir", value_name = "HOST::GUEST", value_parser = parse_volume)]
    dirs: Vec<Preopen>,

    /// Set an environment variable in the guest
    #[arg(short = 'e', long = "env", value_name = "NAME=VALUE", value_parser = parse_env_flag)]
    env: Vec<(String, String)>,

    /// Read environment variables from a file of NAME=VALUE lines
    #[arg(long = "env-file", value_name = "FILE")]
    env_files: Vec<PathBuf>,

    /// Cap the guest's memory (linear memories and tables; a Linux container's memory cgroup):
    /// 64m, 1g, 64MiB [default: no limit]
    #[arg(short = 'm', long, value_name = "SIZE")]
    memory: Option<ByteSize>,

    /// Stop the guest after this long: 500ms, 10s [default: no limit for a command; 60s per
    /// request with --listen, so a guest that streams forever is still stopped]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_flag)]
    timeout: Option<Duration>,

    /// Serve the program over HTTP on this address (a wasi:http component or a WAGI module)
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    #[command(flatten)]
    linux: linux::LinuxFlags,

    #[command(flatten)]
    registry: RegistryOptions,

    /// Where a running `skiff serve` is: `run -d` of a Linux image goes through the daemon
    /// of this data dir when one answers
    #[command(flatten)]
    daemon: super::client::ClientOptions,

    /// The .wasm file, or the Wasm image (pulled first when not stored)
    #[arg(value_name = "FILE|IMAGE")]
    target: String,

    /// Arguments passed to the guest, or the command a Linux image runs instead of its Cmd
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    args: Vec<String>,
}

fn parse_volume(text: &str) -> Result<Preopen, String> {
    text.parse()
        .map_err(|e: crate::wasm::capabilities::GrantError| e.to_string())
}

fn parse_env_flag(text: &str) -> Result<(String, String), String> {
    parse_env(text).map_err(|e| e.to_string())
}

fn parse_duration_flag(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

impl RunCommand {
    pub fn execute(self, data_dir: &Path) -> anyhow::Result<i32> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let image = runtime.block_on(self.image(data_dir))?;
        match image {
            Some(record) if record.kind == ImageKind::Linux => {
                drop(runtime);
                self.check_linux_flags()?;
                if self.linux.detach
                    && let Some(endpoint) = super::client::daemon_of(&self.daemon, data_dir)
                {
                    return daemon::send(&endpoint);
                }
                linux::run(self, record, data_dir)
            }
            image => {
                self.linux.check_unused()?;
                runtime.block_on(self.run(image, data_dir))
            }
        }
    }

    /// Flags that only mean something to the Wasm executor.
    fn check_linux_flags(&self) -> anyhow::Result<()> {
        let wasm_only = [
            (self.listen.is_some(), "--listen"),
            (!self.dirs.is_empty(), "--dir"),
            (self.timeout.is_some(), "--timeout"),
        ];
        if let Some((_, flag)) = wasm_only.iter().find(|(set, _)| *set) {
            anyhow::bail!(
                "{flag} is for Wasm programs; {} is a Linux image: publish ports with -p and stop it with `skiff stop`",
                self.target
            );
        }
        Ok(())
    }

    async fn run(self, image: Option<ImageRecord>, data_dir: &Path) -> anyhow::Result<i32> {
        let mut caps = self.capabilities()?;
        let limits = Limits {
            memory: self.memory,
            timeout: self
                .timeout
                .or(self.listen.map(|_| DEFAULT_REQUEST_TIMEOUT)),
        };
        let config = EngineConfig {
            pool_instances: self.listen.map(|_| 1000),
            ..EngineConfig::default()
        };
        let engine = Arc::new(WasmEngine::new(&config, data_dir.join("cache/wasm"))?);
        let program = self.load(&engine, image, data_dir)?;
        match self.listen {
            None => {
                caps.stdio = Stdio::Inherit;
                Ok(command::run(&engine, &program, &caps, &limits).await?)
            }
            Some(addr) => {
                caps.stdio = Stdio::Log;
                // Validate and link everything before the port opens.
                let function = HttpFunction::prepare(engine, &program, caps, limits)?;
                let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                    format!("cannot listen on {addr}; pick a free address or port")
                })?;
                let local = listener.local_addr()?;
                println!("serving http on http://{local}");
                let shutdown = async {
                    let _ = tokio::signal::ctrl_c().await;
                };
                gateway::serve(
                    listener,
                    Arc::new(function),
                    GatewayConfig::default(),
                    shutdown,
                )
                .await?;
                Ok(0)
            }
        }
    }

    fn is_file(&self) -> bool {
        let path = Path::new(&self.target);
        path.exists() || self.target.ends_with(".wasm") || self.target.starts_with(['.', '/'])
    }

    /// The image the target names, pulled when not stored; `None` for a file.
    async fn image(&self, data_dir: &Path) -> anyhow::Result<Option<ImageRecord>> {
        if self.is_file() {
            return Ok(None);
        }
        let images = LocalImages::open(data_dir)?;
        let record = match images.get(&self.target) {
            Ok(record) => record,
            Err(ImagesError::Unknown { .. }) => {
                let reference: ImageRef = self.target.parse()?;
                let registry = Registry::new(self.registry.config(data_dir)?);
                images
                    .pull(
                        &registry,
                        &reference,
                        super::progress::for_stdout().as_ref(),
                    )
                    .await?
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Some(record))
    }

    /// The program: the file, or the Wasm image's code.
    fn load(
        &self,
        engine: &WasmEngine,
        image: Option<ImageRecord>,
        data_dir: &Path,
    ) -> anyhow::Result<Program> {
        let Some(record) = image else {
            return Ok(engine.load_file(Path::new(&self.target))?);
        };
        let images = LocalImages::open(data_dir)?;
        let bytes = images.wasm_bytes(&record)?;
        let kind = WasmKind::detect(&bytes).ok_or_else(|| WasmError::Invalid {
            name: record.name.clone(),
            reason: "its Wasm layer does not start with `\\0asm`".into(),
        })?;
        Ok(engine.load_bytes(record.name.clone(), kind, &bytes)?)
    }

    /// The guest's grants: argv[0] is the file's base name (the host path stays private),
    /// or the image's repository name.
    fn capabilities(&self) -> anyhow::Result<Capabilities> {
        let argv0 = self
            .target
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty())
            .unwrap_or("main.wasm")
            .to_string();
        let mut env = Vec::new();
        for file in &self.env_files {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read env file {}", file.display()))?;
            env.extend(
                parse_env_file(&text).with_context(|| format!("in env file {}", file.display()))?,
            );
        }
        env.extend(self.env.iter().cloned());
        Ok(Capabilities {
            args: std::iter::once(argv0)
                .chain(self.args.iter().cloned())
                .collect(),
            env,
            preopens: self.volumes.iter().chain(&self.dirs).cloned().collect(),
            stdio: Stdio::Closed,
            outbound: Default::default(),
            listen: Vec::new(),
            listen_on: None,
        })
    }
}

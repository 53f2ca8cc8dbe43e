//! Turning a deployed [`FunctionSpec`] into something the router can call: the program
//! compiled through the shared engine, its grants, its limits and its request slots, as a
//! [`FunctionTarget`] (which links it, and keeps it warm or at zero).
//!
//! This is the per-deploy phase; each request then only instantiates (see `wasm::http`).

use super::DaemonError;
use super::capacity::NodeLedger;
use super::services::names::ServiceNames;
use super::target::{FunctionTarget, Parts};
use crate::app::{FunctionSpec, Source, VolumeSource};
use crate::oci::local::LocalImages;
use crate::sched::function::{FunctionSlots, SlotsConfig};
use crate::wasm::capabilities::{Capabilities, Preopen, Stdio};
use crate::wasm::engine::WasmEngine;
use crate::wasm::limits::Limits;
use crate::wasm::outbound::OutboundPolicy;
use crate::wasm::{Program, WasmError, WasmKind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What a full function tells a refused request to wait before retrying.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Everything preparing a function needs from the node.
pub struct Preparer {
    pub engine: Arc<WasmEngine>,
    pub data_dir: PathBuf,
    /// Requests that may wait per function when all its slots are busy.
    pub queue: usize,
    /// The node's ledger, where warm functions hold their memory.
    pub ledger: Arc<NodeLedger>,
    /// The app's services by name, for outbound requests (`http://cache:6379`).
    pub names: Arc<ServiceNames>,
}

impl Preparer {
    /// Compiles, links and sizes one function of `app`. Blocking: compiling takes a while on a
    /// cold cache, so async callers run it on a blocking thread.
    #[tracing::instrument(skip_all, fields(app = app, function = name), err)]
    pub fn prepare(
        self: &Arc<Self>,
        app: &str,
        name: &str,
        spec: &FunctionSpec,
    ) -> Result<FunctionTarget, DaemonError> {
        let failed = |error: WasmError| DaemonError::Function {
            app: app.to_string(),
            function: name.to_string(),
            error: Box::new(error),
        };
        let program = self.load(app, name, spec)?;
        let caps = self.capabilities(app, name, spec)?;
        let limits = Limits {
            memory: spec.memory,
            timeout: Some(spec.timeout),
        };
        caps.validate().map_err(failed)?;
        let max = (spec.max as usize).saturating_mul(spec.concurrency as usize);
        FunctionTarget::new(Parts {
            app: app.to_string(),
            function: name.to_string(),
            spec: spec.clone(),
            program,
            caps,
            limits,
            slots: FunctionSlots::new(SlotsConfig {
                max,
                queue: self.queue,
                retry_after: RETRY_AFTER,
            }),
            preparer: Arc::clone(self),
            ledger: Arc::clone(&self.ledger),
        })
    }

    /// The function's compiled code, from its file or image (through the compile cache).
    pub(super) fn load(
        &self,
        app: &str,
        name: &str,
        spec: &FunctionSpec,
    ) -> Result<Program, DaemonError> {
        let failed = |error: WasmError| DaemonError::Function {
            app: app.to_string(),
            function: name.to_string(),
            error: Box::new(error),
        };
        match spec.source() {
            Some(Source::File(path)) => self.engine.load_file(path).map_err(failed),
            Some(Source::Image(image)) => {
                let image_error = |error| DaemonError::Image {
                    app: app.to_string(),
                    function: name.to_string(),
                    error: Box::new(error),
                };
                let images = LocalImages::open(&self.data_dir).map_err(image_error)?;
                let record = images.get(image).map_err(image_error)?;
                let bytes = images.wasm_bytes(&record).map_err(image_error)?;
                let kind = WasmKind::detect(&bytes).ok_or_else(|| {
                    failed(WasmError::Invalid {
                        name: record.name.clone(),
                        reason: "its Wasm layer does not start with `\\0asm`".into(),
                    })
                })?;
                self.engine
                    .load_bytes(record.name.clone(), kind, &bytes)
                    .map_err(failed)
            }
            None => Err(failed(WasmError::Invalid {
                name: name.to_string(),
                reason: "the function names neither `image` nor `file`".into(),
            })),
        }
    }

    /// env from the spec, volumes as preopens (named ones under `<data>/volumes/<app>/<name>`,
    /// created on demand), argv[0] the function's name, stdout and stderr to the daemon's log.
    fn capabilities(
        &self,
        app: &str,
        name: &str,
        spec: &FunctionSpec,
    ) -> Result<Capabilities, DaemonError> {
        let mut preopens = Vec::new();
        for volume in &spec.volumes {
            let host = match &volume.source {
                VolumeSource::Host(path) => path.clone(),
                VolumeSource::Named(volume) => self.named_volume(app, volume)?,
            };
            preopens.push(Preopen {
                host,
                guest: volume.guest.clone(),
                read_only: volume.read_only,
            });
        }
        Ok(Capabilities {
            args: vec![name.to_string()],
            env: spec
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            preopens,
            stdio: Stdio::Log,
            outbound: OutboundPolicy::parse(&spec.allowed_outbound_hosts)
                .map_err(|error| DaemonError::Function {
                    app: app.to_string(),
                    function: name.to_string(),
                    error: Box::new(error),
                })?
                .with_names(self.names.resolver(app)),
            listen: Vec::new(),
            listen_on: None,
        })
    }

    fn named_volume(&self, app: &str, volume: &str) -> Result<PathBuf, DaemonError> {
        let path = volume_dir(&self.data_dir, app, volume);
        std::fs::create_dir_all(&path).map_err(|error| DaemonError::Volume {
            path: path.clone(),
            error,
        })?;
        Ok(path)
    }
}

/// Where a named volume of an app lives.
pub fn volume_dir(data_dir: &Path, app: &str, volume: &str) -> PathBuf {
    data_dir.join("volumes").join(app).join(volume)
}

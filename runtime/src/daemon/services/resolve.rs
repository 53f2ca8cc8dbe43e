//! Before a deploy stores anything: the image of every service and job found in the local
//! store, Wasm jobs compiled and Wasm services checked, so a missing image or a program that
//! cannot run is refused with nothing changed.

use super::{WorkloadError, Workloads, wasm};
use crate::app::{AppSpec, Source};
use crate::oci::image::ImageKind;
use crate::oci::images::ImageRecord;
use crate::oci::local::{ImagesError, LocalImages};
use crate::wasm::{Program, WasmError, WasmKind};
use std::collections::BTreeMap;

/// What an app's services and jobs run, by workload name.
#[derive(Clone, Default)]
pub struct Resolved {
    /// Each Linux service's image.
    pub services: BTreeMap<String, ImageRecord>,
    /// Each Wasm service's command, run in-process.
    pub wasm_services: BTreeMap<String, wasm::WasmService>,
    pub jobs: BTreeMap<String, JobCode>,
}

/// What a job runs: a Linux image in a container, or a Wasm command in this process.
#[derive(Clone)]
pub enum JobCode {
    Linux(ImageRecord),
    Wasm(Program),
}

/// The image `name` from the local store; a clear error naming how to get it when missing.
fn find(
    store: &LocalImages,
    kind: &'static str,
    workload: &str,
    image: &str,
) -> Result<ImageRecord, WorkloadError> {
    store.get(image).map_err(|error| match error {
        ImagesError::Unknown { .. } => WorkloadError::ImageMissing {
            kind,
            workload: workload.to_string(),
            image: image.to_string(),
        },
        error => WorkloadError::Images {
            kind,
            workload: workload.to_string(),
            image: image.to_string(),
            error: Box::new(error),
        },
    })
}

impl Workloads {
    /// Finds the image of every service and job in the local store and compiles Wasm
    /// services and jobs: a missing image, a Wasm service asking for what it cannot do (see
    /// [`wasm`]) or Wasm that does not compile is refused before anything is stored or
    /// started. Blocking.
    pub fn resolve(&self, spec: &AppSpec) -> Result<Resolved, WorkloadError> {
        let mut resolved = Resolved::default();
        if spec.services.is_empty() && spec.jobs.is_empty() {
            return Ok(resolved);
        }
        let workload = |name: &str| format!("{}/{name}", spec.name);
        let store = LocalImages::open(&self.cx.data_dir).map_err(|error| WorkloadError::Store {
            error: Box::new(error),
        })?;
        for (name, service) in &spec.services {
            let record = find(&store, "service", &workload(name), &service.image)?;
            if record.kind == ImageKind::Wasm {
                let (cx, app) = (&self.cx, &spec.name);
                let code = wasm::resolve(
                    &cx.engine,
                    &store,
                    &cx.data_dir,
                    app,
                    name,
                    service,
                    &record,
                )?;
                resolved.wasm_services.insert(name.clone(), code);
                continue;
            }
            resolved.services.insert(name.clone(), record);
        }
        for (name, job) in &spec.jobs {
            let wasm_error = |error| WorkloadError::Wasm {
                workload: workload(name),
                error: Box::new(error),
            };
            let code = match job.source() {
                Some(Source::Image(image)) => {
                    let record = find(&store, "job", &workload(name), image)?;
                    match record.kind {
                        ImageKind::Linux => JobCode::Linux(record),
                        ImageKind::Wasm => {
                            let images_error = |error| WorkloadError::Images {
                                kind: "job",
                                workload: workload(name),
                                image: image.to_string(),
                                error: Box::new(error),
                            };
                            let bytes = store.wasm_bytes(&record).map_err(images_error)?;
                            let kind = WasmKind::detect(&bytes).ok_or_else(|| {
                                wasm_error(WasmError::Invalid {
                                    name: record.name.clone(),
                                    reason: "its Wasm layer does not start with `\\0asm`".into(),
                                })
                            })?;
                            let program = self.cx.engine.load_bytes(record.name, kind, &bytes);
                            JobCode::Wasm(program.map_err(wasm_error)?)
                        }
                    }
                }
                Some(Source::File(path)) => {
                    JobCode::Wasm(self.cx.engine.load_file(path).map_err(wasm_error)?)
                }
                // Validation refuses a job with neither; nothing to run.
                None => continue,
            };
            resolved.jobs.insert(name.clone(), code);
        }
        Ok(resolved)
    }
}

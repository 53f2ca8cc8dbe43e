//! Runs a program as a command: a WASI preview-1 module's `_start` or a component's
//! `wasi:cli/run`, to completion, returning its exit code.

use super::capabilities::Capabilities;
use super::engine::WasmEngine;
use super::error::{Ended, classify};
use super::host::{component_store, module_store};
use super::limits::{Limits, with_deadline};
use super::{Code, Program, WasmError, link};
use wasmtime::Module;
use wasmtime::component::Component;

/// Runs `program` with `caps` and `limits` to completion; returns the guest's exit code.
///
/// A trap, a time-out or an exhausted memory limit is an `Err` carrying its own exit code
/// (`WasmError::exit_code`); a guest that exits non-zero is `Ok(code)`.
#[tracing::instrument(skip_all, fields(program = program.name()), err(level = "debug"))]
pub async fn run(
    engine: &WasmEngine,
    program: &Program,
    caps: &Capabilities,
    limits: &Limits,
) -> Result<i32, WasmError> {
    caps.validate()?;
    let outcome = match &program.code {
        Code::Module(module) => run_module(engine, program.name(), module, caps, limits).await,
        Code::Component(component) => {
            run_component(engine, program.name(), component, caps, limits).await
        }
    };
    match outcome {
        Ok(()) => Ok(0),
        Err(err) => match classify(program.name(), limits, err) {
            Ended::Exit(code) => Ok(code),
            Ended::Failed(failure) => Err(failure),
        },
    }
}

/// Checks, without running it, that `program` links and is a command (a module's `_start`,
/// a component's `wasi:cli/run`): what a deploy refuses up front rather than failing at
/// every start.
pub fn check(engine: &WasmEngine, program: &Program) -> Result<(), WasmError> {
    let name = program.name();
    match &program.code {
        Code::Module(module) => {
            link::module_pre(engine, name, module)?;
            match module.get_export("_start") {
                Some(wasmtime::ExternType::Func(_)) => Ok(()),
                _ => Err(WasmError::MissingExport {
                    name: name.to_string(),
                    export: "`_start`",
                    hint: MODULE_HINT,
                }),
            }
        }
        Code::Component(component) => {
            let not_a_command = || WasmError::MissingExport {
                name: name.to_string(),
                export: "`wasi:cli/run`",
                hint: "build it as a command (a binary for wasm32-wasip2); an HTTP component \
                       is served as a [function] or by `skiff run --listen`",
            };
            // Before linking: an HTTP component would otherwise fail on its wasi:http imports,
            // which says less about what is wrong.
            let component_type = component.component_type();
            let mut exports = component_type.exports(engine.engine());
            if !exports.any(|(export, _)| export.starts_with("wasi:cli/run@")) {
                return Err(not_a_command());
            }
            let pre = link::component_pre(engine, name, component, false)?;
            wasmtime_wasi::p2::bindings::CommandPre::new(pre)
                .map(drop)
                .map_err(|_| not_a_command())
        }
    }
}

const MODULE_HINT: &str =
    "build it as a WASI command (a binary, not a library), e.g. for wasm32-wasip1";
const COMPONENT_HINT: &str =
    "build it as a command (a binary for wasm32-wasip2); to serve HTTP use --listen";

async fn run_module(
    engine: &WasmEngine,
    name: &str,
    module: &Module,
    caps: &Capabilities,
    limits: &Limits,
) -> wasmtime::Result<()> {
    let pre = link::module_pre(engine, name, module)?;
    let wasi = caps.wasi_builder()?.build_p1();
    let mut store = module_store(engine, wasi, limits);
    let instance = pre.instantiate_async(&mut store).await?;
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .map_err(|_| {
            wasmtime::Error::new(WasmError::MissingExport {
                name: name.to_string(),
                export: "`_start`",
                hint: MODULE_HINT,
            })
        })?;
    with_deadline(limits, start.call_async(&mut store, ())).await
}

async fn run_component(
    engine: &WasmEngine,
    name: &str,
    component: &Component,
    caps: &Capabilities,
    limits: &Limits,
) -> wasmtime::Result<()> {
    let pre = link::component_pre(engine, name, component, false)?;
    let pre = wasmtime_wasi::p2::bindings::CommandPre::new(pre).map_err(|_| {
        wasmtime::Error::new(WasmError::MissingExport {
            name: name.to_string(),
            export: "`wasi:cli/run`",
            hint: COMPONENT_HINT,
        })
    })?;
    let mut store = component_store(engine, caps, limits)?;
    let command = pre.instantiate_async(&mut store).await?;
    let result = with_deadline(limits, command.wasi_cli_run().call_run(&mut store)).await?;
    result.map_err(|()| wasmtime::Error::new(wasmtime_wasi::I32Exit(1)))
}

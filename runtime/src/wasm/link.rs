//! Linking, once per deploy: the host interfaces each kind of program gets, and link errors
//! that name the import skiff does not provide.

use super::WasmError;
use super::engine::WasmEngine;
use super::host::{ComponentHost, ModuleHost};
use wasmtime::component::Component;
use wasmtime::{InstancePre, Module};

/// A core module linked against WASI preview 1.
pub(crate) fn module_pre(
    engine: &WasmEngine,
    name: &str,
    module: &Module,
) -> Result<InstancePre<ModuleHost>, WasmError> {
    let mut linker = wasmtime::Linker::new(engine.engine());
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |host: &mut ModuleHost| &mut host.wasi)
        .map_err(engine_error)?;
    let imports = module
        .imports()
        .map(|i| format!("{}::{}", i.module(), i.name()));
    linker
        .instantiate_pre(module)
        .map_err(|e| link_error(name, imports, e))
}

/// A component linked against all of WASI 0.2, plus `wasi:http` when `http` is set.
///
/// Even an HTTP-only component built with Rust's std imports wasi:cli and wasi:filesystem;
/// they are linked, and deny-by-default grants keep them empty.
pub(crate) fn component_pre(
    engine: &WasmEngine,
    name: &str,
    component: &Component,
    http: bool,
) -> Result<wasmtime::component::InstancePre<ComponentHost>, WasmError> {
    let linker = engine.component_linker(http)?;
    let component_type = component.component_type();
    let imports: Vec<String> = component_type
        .imports(engine.engine())
        .map(|(name, _)| name.to_string())
        .collect();
    linker
        .instantiate_pre(component)
        .map_err(|e| link_error(name, imports.into_iter(), e))
}

/// A fresh component linker; the engine keeps one of each (see `WasmEngine::component_linker`).
pub(crate) fn component_linker(
    engine: &WasmEngine,
    http: bool,
) -> Result<wasmtime::component::Linker<ComponentHost>, WasmError> {
    let mut linker = wasmtime::component::Linker::new(engine.engine());
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(engine_error)?;
    if http {
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(engine_error)?;
    }
    Ok(linker)
}

fn engine_error(e: wasmtime::Error) -> WasmError {
    WasmError::Engine {
        reason: format!("{e:#}"),
    }
}

/// `UnsupportedImport` naming the interface when one of the program's imports is what the
/// linker could not satisfy (the longest match: a versioned name over its prefix), `Link`
/// otherwise.
fn link_error(
    name: &str,
    imports: impl Iterator<Item = String>,
    err: wasmtime::Error,
) -> WasmError {
    let message = format!("{err:#}");
    let missing = imports
        .filter(|import| message.contains(import.as_str()))
        .max_by_key(String::len);
    match missing {
        Some(interface) => WasmError::UnsupportedImport {
            name: name.to_string(),
            interface,
        },
        None => WasmError::Link {
            name: name.to_string(),
            reason: message,
        },
    }
}

//! Errors of the Wasm executor, and the exit codes the CLI maps them to.

use crate::units::ByteSize;
use std::{io, path::PathBuf, time::Duration};

pub type Result<T, E = WasmError> = std::result::Result<T, E>;

/// Everything that can go wrong loading, linking or running a Wasm program.
///
/// Each message names the program or path it is about and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    #[error("{path}: no such file; check the path")]
    NotFound { path: PathBuf },

    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: io::Error },

    #[error(
        "{path} is not a WebAssembly file (it does not start with `\\0asm`); \
         pass a .wasm core module or component"
    )]
    NotWasm { path: PathBuf },

    #[error(
        "{name} is not valid WebAssembly: {reason}; rebuild it or check that the file is complete"
    )]
    Invalid { name: String, reason: String },

    #[error(
        "{name} imports `{interface}`, which skiff does not provide; build it against WASI \
         preview 1, wasi:cli or wasi:http/proxy"
    )]
    UnsupportedImport { name: String, interface: String },

    #[error("{name} cannot be linked: {reason}")]
    Link { name: String, reason: String },

    #[error("{name} does not export {export}; {hint}")]
    MissingExport {
        name: String,
        export: &'static str,
        hint: &'static str,
    },

    #[error("{name} trapped: {message}\nguest backtrace:\n{backtrace}")]
    Trap {
        name: String,
        message: String,
        backtrace: String,
    },

    #[error(
        "{name} was stopped after its time limit of {}; raise --timeout if it needs longer",
        humantime::format_duration(*limit)
    )]
    Timeout { name: String, limit: Duration },

    #[error("{name} was stopped: out of memory (limit {limit}); raise --memory if it needs more")]
    MemoryLimit { name: String, limit: ByteSize },

    #[error("no free instance slot for {name}: every pooled instance is in use; retry shortly")]
    Busy { name: String },

    #[error("{name} failed in the host: {reason}")]
    Host { name: String, reason: String },

    #[error("cannot preopen {host} as {guest}: {reason}")]
    Preopen {
        host: PathBuf,
        guest: String,
        reason: String,
    },

    #[error("allowed outbound host `{entry}`: {reason}")]
    Outbound { entry: String, reason: String },

    #[error("compile cache {path}: {error}; check that the data dir is writable")]
    Cache { path: PathBuf, error: io::Error },

    #[error("cannot start the wasm engine: {reason}")]
    Engine { reason: String },
}

/// Exit codes, chosen to match what users of Docker, podman and coreutils read them as.
pub mod exit_code {
    /// skiff itself could not run the program (bad file, link error): podman's 125.
    pub const SKIFF_ERROR: i32 = 125;
    /// A trap: the process "aborted", as wasmtime reports it (128 + SIGABRT).
    pub const TRAP: i32 = 134;
    /// Out of memory: what Docker reports for an OOM kill (128 + SIGKILL).
    pub const OUT_OF_MEMORY: i32 = 137;
    /// Time limit: what GNU `timeout` returns.
    pub const TIMEOUT: i32 = 124;
}

impl WasmError {
    /// The exit code the CLI returns for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            WasmError::Trap { .. } => exit_code::TRAP,
            WasmError::Timeout { .. } => exit_code::TIMEOUT,
            WasmError::MemoryLimit { .. } => exit_code::OUT_OF_MEMORY,
            _ => exit_code::SKIFF_ERROR,
        }
    }
}

/// How a guest call ended when it did not return normally.
pub(crate) enum Ended {
    /// The guest asked to exit (`proc_exit`, `wasi:cli/exit`) with this code.
    Exit(i32),
    /// Anything else: a trap, a limit, a host failure.
    Failed(WasmError),
}

/// Sorts a wasmtime error from a guest call into an exit request or a `WasmError`.
pub(crate) fn classify(name: &str, limits: &super::limits::Limits, err: wasmtime::Error) -> Ended {
    use super::limits::MemoryLimitExceeded;
    let err = match err.downcast::<WasmError>() {
        Ok(failure) => return Ended::Failed(failure),
        Err(err) => err,
    };
    if let Some(exit) = err.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return Ended::Exit(exit.0);
    }
    let name = name.to_string();
    if err.is::<wasmtime::PoolConcurrencyLimitError>() {
        return Ended::Failed(WasmError::Busy { name });
    }
    if let Some(MemoryLimitExceeded(limit)) = err.downcast_ref::<MemoryLimitExceeded>() {
        return Ended::Failed(WasmError::MemoryLimit {
            name,
            limit: *limit,
        });
    }
    match err.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => Ended::Failed(WasmError::Timeout {
            name,
            limit: limits.timeout.unwrap_or_default(),
        }),
        Some(trap) => Ended::Failed(WasmError::Trap {
            name,
            message: trap.to_string(),
            backtrace: backtrace(&err),
        }),
        None => Ended::Failed(WasmError::Host {
            name,
            reason: format!("{err:#}"),
        }),
    }
}

/// The guest's frames, innermost first, by function name where the binary names them.
fn backtrace(err: &wasmtime::Error) -> String {
    let Some(trace) = err.downcast_ref::<wasmtime::WasmBacktrace>() else {
        return "  (no backtrace available)".to_string();
    };
    let lines: Vec<String> = trace
        .frames()
        .iter()
        .enumerate()
        .map(|(i, frame)| match frame.func_name() {
            // `{:#}` drops the hash suffix: `trap::detonate`, not `trap::detonate::h1a2d…`.
            Some(func) => format!("  {i:>2}: {:#}", rustc_demangle::demangle(func)),
            None => format!("  {i:>2}: <function #{}>", frame.func_index()),
        })
        .collect();
    lines.join("\n")
}

//! The Wasm executor: from a `.wasm` file (or, later, a pulled artifact) to a running instance.
//!
//! Phases follow spin's factors: once per process the [`engine::WasmEngine`] (wasmtime engine,
//! epoch ticker, compile cache); once per deploy a [`Program`] (compiled code, loaded from the
//! cache by mmap) and, for HTTP, an [`http::HttpFunction`] holding a pre-linked `InstancePre`;
//! once per request or run a fresh `Store` with its own capabilities and limits.
//!
//! This module does not know about scheduling, routing or the network listener: the gateway
//! calls [`http::HttpFunction::handle`], the CLI calls [`command::run`].

pub mod cache;
pub mod capabilities;
pub mod command;
pub mod cpu;
pub mod engine;
mod error;
mod host;
pub mod http;
pub mod limits;
mod link;
pub mod outbound;
pub mod output;
mod wagi;

pub use error::{Result, WasmError, exit_code};

use std::path::Path;
use wasmtime::Module;
use wasmtime::component::Component;

/// What a `.wasm` binary holds, read from its header (never guessed from exports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WasmKind {
    /// A core module: run as a WASI preview-1 command or a WAGI handler.
    Module,
    /// A component: run as `wasi:cli/command` or served as `wasi:http/proxy`.
    Component,
}

impl WasmKind {
    /// Reads the 8-byte preamble: `\0asm` then version 1 (core) or a layer-1 version (component).
    pub fn detect(bytes: &[u8]) -> Option<WasmKind> {
        match bytes.get(..8)? {
            [0, b'a', b's', b'm', 1, 0, 0, 0] => Some(WasmKind::Module),
            [0, b'a', b's', b'm', _, _, 1, 0] => Some(WasmKind::Component),
            _ => None,
        }
    }
}

/// Compiled code ready to instantiate: a core module or a component, with the name users know
/// it by (the file name now, an image reference once images arrive).
#[derive(Clone)]
pub struct Program {
    name: String,
    /// sha256 of the wasm, hex: the compile cache's key.
    digest: String,
    code: Code,
}

#[derive(Clone)]
pub(crate) enum Code {
    Module(Module),
    Component(Component),
}

impl Program {
    /// The name used in messages: the file's name as the user typed it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// sha256 of the wasm (hex), to load its code again with `WasmEngine::load_digest`.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn kind(&self) -> WasmKind {
        match self.code {
            Code::Module(_) => WasmKind::Module,
            Code::Component(_) => WasmKind::Component,
        }
    }
}

/// The display name for a file: its path as given.
fn display_name(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_is_read_from_the_preamble() {
        assert_eq!(
            WasmKind::detect(b"\0asm\x01\0\0\0rest"),
            Some(WasmKind::Module)
        );
        assert_eq!(
            WasmKind::detect(b"\0asm\x0d\0\x01\0"),
            Some(WasmKind::Component)
        );
        assert_eq!(WasmKind::detect(b"\x7fELF\x02\x01\x01\0"), None);
        assert_eq!(WasmKind::detect(b"\0asm"), None);
    }
}

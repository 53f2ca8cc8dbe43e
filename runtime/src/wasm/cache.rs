//! The compile cache: compiled code on disk, keyed by the wasm's sha256 and the engine's
//! compatibility fingerprint, loaded by mmap (`deserialize_file`), never recompiled when sound.
//!
//! Layout: `<dir>/<fingerprint>/<sha256>.cwasm` and beside it `<sha256>.sum`, the sha256 of the
//! `.cwasm` bytes. Both are written to a temporary file and renamed into place, the code first.
//! An entry is used only when the code's digest matches its sum; a missing, truncated, corrupt or
//! incompatible entry is logged, counted as a rebuild and compiled again. Wasmtime itself checks
//! version and settings on load but not the integrity of the machine code: the sum does that.

use super::{Code, WasmError, WasmKind};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::Hasher;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::Engine;
use wasmtime::Module;
use wasmtime::component::Component;

/// Counters of what the cache did since the engine started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Loaded from disk without compiling.
    pub hits: u64,
    /// Not cached yet: compiled and stored.
    pub misses: u64,
    /// Present but unusable (corrupt, truncated, incompatible): compiled and replaced.
    pub rebuilds: u64,
}

pub(crate) struct CompileCache {
    dir: PathBuf,
    /// Code already loaded in this process, by wasm digest: a second function of the same
    /// wasm shares the first one's code (one mmap) instead of reading and mapping it again.
    loaded: Mutex<HashMap<String, Code>>,
    hits: AtomicU64,
    misses: AtomicU64,
    rebuilds: AtomicU64,
}

enum Entry {
    Sound(PathBuf),
    Missing,
    Unusable(String),
}

impl CompileCache {
    pub(crate) fn new(root: PathBuf, engine: &Engine) -> Self {
        Self {
            dir: root.join(fingerprint(engine)),
            loaded: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            rebuilds: AtomicU64::new(0),
        }
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            rebuilds: self.rebuilds.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn load(
        &self,
        engine: &Engine,
        name: &str,
        kind: WasmKind,
        wasm: &[u8],
    ) -> Result<(String, Code), WasmError> {
        let digest = hex::encode(Sha256::digest(wasm));
        if let Some(code) = self.loaded().get(&digest) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok((digest, code.clone()));
        }
        let code = self.load_uncached(engine, name, kind, wasm, &digest)?;
        self.loaded().insert(digest.clone(), code.clone());
        Ok((digest, code))
    }

    fn loaded(&self) -> std::sync::MutexGuard<'_, HashMap<String, Code>> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops the in-memory index of loaded code; code a linked function still holds stays
    /// alive with it, the rest is unmapped. Returns how many programs were dropped.
    pub(crate) fn forget_loaded(&self) -> usize {
        std::mem::take(&mut *self.loaded()).len()
    }

    /// Code of the wasm with sha256 `digest`, from memory or from a sound entry on disk,
    /// without the wasm itself; `None` when neither has it (the caller loads the wasm again).
    pub(crate) fn load_digest(
        &self,
        engine: &Engine,
        kind: WasmKind,
        digest: &str,
    ) -> Option<Code> {
        if let Some(code) = self.loaded().get(digest) {
            return Some(code.clone());
        }
        let Entry::Sound(path) = self.check(&self.dir.join(format!("{digest}.cwasm"))) else {
            return None;
        };
        let code = deserialize(engine, kind, &path).ok()?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        self.loaded().insert(digest.to_string(), code.clone());
        Some(code)
    }

    fn load_uncached(
        &self,
        engine: &Engine,
        name: &str,
        kind: WasmKind,
        wasm: &[u8],
        digest: &str,
    ) -> Result<Code, WasmError> {
        let code_path = self.dir.join(format!("{digest}.cwasm"));
        match self.check(&code_path) {
            Entry::Sound(path) => match deserialize(engine, kind, &path) {
                Ok(code) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%digest, "compile cache hit");
                    return Ok(code);
                }
                Err(e) => self.note_unusable(digest, &format!("{e:#}")),
            },
            Entry::Unusable(why) => self.note_unusable(digest, &why),
            Entry::Missing => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%digest, "compile cache miss");
            }
        }
        let compiled = compile(engine, name, kind, wasm)?;
        self.store(&code_path, &compiled)?;
        deserialize(engine, kind, &code_path).map_err(|e| WasmError::Cache {
            path: code_path,
            error: std::io::Error::other(format!("freshly compiled code does not load: {e:#}")),
        })
    }

    /// Removes compiled code for wasm digests not in `keep`, and whole directories of other
    /// engine fingerprints (code no engine of this build can load). Returns (entries, bytes).
    pub(crate) fn prune(
        &self,
        keep: &std::collections::HashSet<String>,
    ) -> std::io::Result<(usize, u64)> {
        let Some(root) = self.dir.parent() else {
            return Ok((0, 0));
        };
        let (mut entries, mut bytes) = (0, 0);
        for fingerprint in std::fs::read_dir(root).into_iter().flatten().flatten() {
            let current = fingerprint.path() == self.dir;
            for entry in std::fs::read_dir(fingerprint.path())?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let digest = name.split('.').next().unwrap_or("");
                if current && keep.contains(digest) {
                    continue;
                }
                let size = entry.metadata().map_or(0, |m| m.len());
                if std::fs::remove_file(entry.path()).is_ok() {
                    bytes += size;
                    entries += usize::from(name.ends_with(".cwasm"));
                }
            }
            if !current {
                let _ = std::fs::remove_dir(fingerprint.path());
            }
        }
        Ok((entries, bytes))
    }

    fn note_unusable(&self, digest: &str, why: &str) {
        self.rebuilds.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%digest, reason = why, "compile cache entry unusable; recompiling");
    }

    /// Verifies an entry's code against its recorded digest.
    fn check(&self, code_path: &Path) -> Entry {
        let sum_path = code_path.with_extension("sum");
        let code = match std::fs::read(code_path) {
            Ok(code) => code,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Entry::Missing,
            Err(e) => return Entry::Unusable(format!("cannot read: {e}")),
        };
        let recorded = match std::fs::read_to_string(&sum_path) {
            Ok(sum) => sum,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Entry::Unusable("no checksum beside the code".into());
            }
            Err(e) => return Entry::Unusable(format!("cannot read checksum: {e}")),
        };
        if recorded.trim() != hex::encode(Sha256::digest(&code)) {
            return Entry::Unusable("code does not match its checksum".into());
        }
        Entry::Sound(code_path.to_path_buf())
    }

    fn store(&self, code_path: &Path, code: &[u8]) -> Result<(), WasmError> {
        let cache_err = |source| WasmError::Cache {
            path: code_path.to_path_buf(),
            error: source,
        };
        std::fs::create_dir_all(&self.dir).map_err(cache_err)?;
        let sum = format!("{}\n", hex::encode(Sha256::digest(code)));
        write_atomically(&self.dir, code_path, code).map_err(cache_err)?;
        write_atomically(&self.dir, &code_path.with_extension("sum"), sum.as_bytes())
            .map_err(cache_err)
    }
}

fn compile(engine: &Engine, name: &str, kind: WasmKind, wasm: &[u8]) -> Result<Vec<u8>, WasmError> {
    let invalid = |e: wasmtime::Error| WasmError::Invalid {
        name: name.to_string(),
        reason: root_reason(&e),
    };
    tracing::debug!(name, ?kind, bytes = wasm.len(), "compiling");
    match kind {
        WasmKind::Module => engine.precompile_module(wasm).map_err(invalid),
        WasmKind::Component => engine.precompile_component(wasm).map_err(invalid),
    }
}

/// The innermost cause of a wasmtime error, which is where validation says what is wrong.
fn root_reason(e: &wasmtime::Error) -> String {
    let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    chain.join(": ")
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, kind: WasmKind, path: &Path) -> wasmtime::Result<Code> {
    // SAFETY: `deserialize_file` trusts the file to be code this engine produced. The file is
    // in skiff's own data dir, written by `store` above through an atomic rename, and `check`
    // verified its bytes against the recorded sha256 just before; wasmtime verifies the
    // version and settings. A tampered file therefore fails the digest check and is rebuilt.
    unsafe {
        Ok(match kind {
            WasmKind::Module => Code::Module(Module::deserialize_file(engine, path)?),
            WasmKind::Component => Code::Component(Component::deserialize_file(engine, path)?),
        })
    }
}

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// A stable name for the engine's compatibility: wasmtime version, target and settings.
fn fingerprint(engine: &Engine) -> String {
    use std::hash::Hash;
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..12])
}

/// Feeds `Hash` output into sha256, so the fingerprint is stable across processes and
/// Rust versions (unlike `DefaultHasher`).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        unreachable!("only the digest is read")
    }
}

//! The one wasmtime engine per process: its configuration, the epoch ticker that enforces
//! deadlines, and loading programs through the compile cache.

use super::cache::{CacheStats, CompileCache};
use super::host::ComponentHost;
use super::{Program, WasmError, WasmKind, display_name};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
use wasmtime::{Engine, EngineWeak, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How the engine is built. Defaults suit a one-shot `skiff run`.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Use the pooling instance allocator, sized for this many concurrent instances.
    /// `None` (the default) allocates on demand, which is cheaper for a single run;
    /// servers set it, so a request's instance comes from a pre-reserved slot.
    pub pool_instances: Option<u32>,
    /// Largest linear memory a guest may grow to in the pool (default 4 GiB, the wasm32
    /// maximum). Per-workload `--memory` limits apply below this.
    pub pool_max_memory: u64,
    /// How often the epoch advances. Deadlines are counted in these ticks, so this is the
    /// granularity of `--timeout` (default 10 ms).
    pub epoch_tick: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            pool_instances: None,
            pool_max_memory: 4 << 30,
            epoch_tick: Duration::from_millis(10),
        }
    }
}

/// The wasmtime engine with its epoch ticker and compile cache.
pub struct WasmEngine {
    engine: Engine,
    cache: CompileCache,
    epoch_tick: Duration,
    http_linker: OnceLock<wasmtime::component::Linker<ComponentHost>>,
    cli_linker: OnceLock<wasmtime::component::Linker<ComponentHost>>,
}

impl WasmEngine {
    /// Builds the engine and starts its epoch ticker. Compiled code is cached under `cache_dir`.
    pub fn new(config: &EngineConfig, cache_dir: PathBuf) -> Result<Self, WasmError> {
        let mut wasm = wasmtime::Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .memory_init_cow(true);
        if let Some(instances) = config.pool_instances {
            wasm.allocation_strategy(pooling(instances, config.pool_max_memory));
        }
        let engine = Engine::new(&wasm).map_err(|e| WasmError::Engine {
            reason: format!("{e:#}"),
        })?;
        spawn_epoch_ticker(engine.weak(), config.epoch_tick);
        let cache = CompileCache::new(cache_dir, &engine);
        Ok(Self {
            engine,
            cache,
            epoch_tick: config.epoch_tick,
            http_linker: OnceLock::new(),
            cli_linker: OnceLock::new(),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Hits, misses and rebuilds of the compile cache so far.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Removes compiled code for every wasm whose sha256 (hex) is not in `keep`, and code
    /// left by other wasmtime builds. Returns (programs removed, bytes freed).
    pub fn prune_cache(
        &self,
        keep: &std::collections::HashSet<String>,
    ) -> Result<(usize, u64), WasmError> {
        self.cache.prune(keep).map_err(|source| WasmError::Cache {
            path: PathBuf::from("compiled code"),
            error: source,
        })
    }

    /// How many epoch ticks make up `timeout` (at least one).
    pub(crate) fn ticks_for(&self, timeout: Duration) -> u64 {
        let tick = self.epoch_tick.as_nanos().max(1);
        (timeout.as_nanos().div_ceil(tick) as u64).max(1)
    }

    /// Reads a `.wasm` file, tells module from component, and returns its compiled code,
    /// from the cache when present and sound, compiling (and caching) otherwise.
    #[tracing::instrument(skip_all, fields(path = %path.display()), err(level = "debug"))]
    pub fn load_file(&self, path: &Path) -> Result<Program, WasmError> {
        let bytes = std::fs::read(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => WasmError::NotFound { path: path.into() },
            _ => WasmError::Read {
                path: path.into(),
                error: source,
            },
        })?;
        let Some(kind) = WasmKind::detect(&bytes) else {
            return Err(WasmError::NotWasm { path: path.into() });
        };
        self.load_bytes(display_name(path), kind, &bytes)
    }

    /// Compiles (or loads from the cache) `bytes` known to be of `kind`.
    pub fn load_bytes(
        &self,
        name: String,
        kind: WasmKind,
        bytes: &[u8],
    ) -> Result<Program, WasmError> {
        let (digest, code) = self.cache.load(&self.engine, &name, kind, bytes)?;
        Ok(Program { name, digest, code })
    }

    /// The program of sha256 `digest` again, from the code in memory or on disk, without
    /// its wasm; `None` when neither has it any more (then load the wasm again).
    pub fn load_digest(&self, name: &str, kind: WasmKind, digest: &str) -> Option<Program> {
        let code = self.cache.load_digest(&self.engine, kind, digest)?;
        Some(Program {
            name: name.to_string(),
            digest: digest.to_string(),
            code,
        })
    }

    /// Drops the compiled code held in memory for programs no linked function uses; it is
    /// loaded from disk when next needed. Returns how many programs were dropped.
    pub fn forget_loaded_code(&self) -> usize {
        self.cache.forget_loaded()
    }

    /// The component linker (all of WASI 0.2, plus `wasi:http` when `http`), built once:
    /// linking a function then only resolves its imports against it.
    pub(crate) fn component_linker(
        &self,
        http: bool,
    ) -> Result<&wasmtime::component::Linker<ComponentHost>, WasmError> {
        let cell = if http {
            &self.http_linker
        } else {
            &self.cli_linker
        };
        if let Some(linker) = cell.get() {
            return Ok(linker);
        }
        let linker = super::link::component_linker(self, http)?;
        Ok(cell.get_or_init(|| linker))
    }
}

fn pooling(instances: u32, max_memory: u64) -> InstanceAllocationStrategy {
    // A Rust wasip2 component holds a handful of core instances (the program plus small
    // shims), each with at most one table; size the totals for that. Per-component maxima
    // keep wasmtime's defaults (bounded by these totals).
    const CORE_PER_COMPONENT: u32 = 8;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_core_instances(instances * CORE_PER_COMPONENT)
        .total_memories(instances * 2)
        .total_tables(instances * CORE_PER_COMPONENT)
        .total_stacks(instances)
        .max_memory_size(usize::try_from(max_memory).unwrap_or(usize::MAX))
        // Keep a little of each slot resident so reuse skips page faults for small guests.
        .linear_memory_keep_resident(64 << 10)
        .table_keep_resident(16 << 10);
    InstanceAllocationStrategy::Pooling(pool)
}

/// Advances the engine's epoch every `tick` until the engine is dropped.
fn spawn_epoch_ticker(engine: EngineWeak, tick: Duration) {
    std::thread::Builder::new()
        .name("skiff-epoch".into())
        .spawn(move || {
            while let Some(engine) = engine.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(tick);
            }
        })
        .expect("spawning the epoch thread");
}

//! What the gateway's admission of one request to a deployed function costs, in process, and
//! what a cold start costs: no sockets, no guest code run.
//!
//! - admission: take a slot (`FunctionSlots::acquire`), raise the in-flight gauge, find the
//!   function warm (`FunctionTarget::ready`), wrap a body in the guard that frees all three
//!   when the body ends, drop it: exactly what `Router::handle` does around the guest call.
//! - cold start: `scale_to_zero` then `ready()`: a ledger reservation and a relink of the
//!   code (kept in memory by digest) against the engine's linker, and their release.
//!
//! Run it with:
//!
//!     bash samples/build.sh
//!     cargo bench -p skiff-benches --bench admission

use anyhow::Context;
use skiff::app::AppSpec;
use skiff::daemon::body::{Guarded, InFlight};
use skiff::daemon::capacity::NodeLedger;
use skiff::daemon::functions::Preparer;
use skiff::daemon::services::names::ServiceNames;
use skiff::daemon::target::{FunctionTarget, Parts};
use skiff::sched::capacity::{Capacity, NodeCapacity, Reserve};
use skiff::sched::function::{FunctionSlots, SlotsConfig};
use skiff::wasm::capabilities::Capabilities;
use skiff::wasm::engine::{EngineConfig, WasmEngine};
use skiff::wasm::limits::Limits;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ADMISSIONS: u32 = 1_000_000;
const COLD_STARTS: u32 = 20_000;

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let wasm = root.join("samples/target/wasm32-wasip2/release/http_hello.wasm");
    anyhow::ensure!(
        wasm.is_file(),
        "{} is missing; run `bash samples/build.sh`",
        wasm.display()
    );
    let dir = tempfile::tempdir()?;
    let manifest = format!(
        "[app]\nname = \"bench\"\n\n[function.f]\nfile = {wasm:?}\nroute = \"/\"\nmemory = \"16MiB\"\n"
    );
    let spec = AppSpec::parse(&manifest, dir.path(), "bench.toml")?;
    let function = spec.functions.get("f").context("the function")?.clone();

    let config = EngineConfig {
        pool_instances: Some(1000),
        ..Default::default()
    };
    let engine = Arc::new(WasmEngine::new(&config, dir.path().join("cache"))?);
    let total = Capacity {
        cpu_millis: 2000,
        memory_bytes: 8 << 30,
        pids: 10_000,
    };
    let ledger = Arc::new(NodeLedger::new(
        NodeCapacity::new(total, &Reserve::default()),
        Arc::clone(&engine),
    ));
    let preparer = Arc::new(Preparer {
        engine: Arc::clone(&engine),
        data_dir: dir.path().to_path_buf(),
        queue: 0,
        ledger: Arc::clone(&ledger),
        names: Arc::new(ServiceNames::new(dir.path())),
    });
    let target = FunctionTarget::new(Parts {
        app: "bench".into(),
        function: "f".into(),
        program: engine.load_file(&wasm)?,
        spec: function,
        caps: Capabilities::default(),
        limits: Limits::default(),
        slots: FunctionSlots::new(SlotsConfig {
            max: 100,
            queue: 0,
            retry_after: Duration::from_secs(1),
        }),
        preparer,
        ledger,
    })?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let held = target.ready().await?;
        let started = Instant::now();
        for _ in 0..ADMISSIONS {
            let slot = target.slots.acquire(Duration::from_secs(1)).await?;
            let in_flight = InFlight::new(&target.metrics.in_flight);
            let warm = target.ready().await?;
            let response = skiff::instance::text_response(http::StatusCode::OK, "x");
            let body = Guarded::wrap(response.into_body(), (slot, in_flight, warm));
            drop(std::hint::black_box(body));
        }
        let each = started.elapsed().as_nanos() as f64 / f64::from(ADMISSIONS);
        println!("admission (slot + in-flight gauge + warm lookup + body guard): {each:.0} ns/request (n = {ADMISSIONS})");
        drop(held);

        let started = Instant::now();
        for _ in 0..COLD_STARTS {
            anyhow::ensure!(target.scale_to_zero(), "nothing in flight");
            drop(target.ready().await?);
        }
        let each = started.elapsed().as_secs_f64() * 1e6 / f64::from(COLD_STARTS);
        println!("cold start (reserve + relink from code in memory) + scale to zero: {each:.1} µs each (n = {COLD_STARTS})");
        anyhow::Ok(())
    })
}

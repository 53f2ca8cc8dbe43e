//! Per-request cost of an HTTP function, in process: one request through
//! `HttpFunction::handle` of `http_hello.wasm` = a fresh `Store`, instantiation from the
//! pooling allocator through the pre-linked `InstancePre`, the `wasi:http` handler call, and
//! collecting the response body. No sockets, no HTTP parsing.
//!
//! Serial, on a current-thread tokio runtime, so the numbers are latencies of one request
//! with nothing else running. A hand-rolled harness rather than criterion because the figure
//! that matters for a server is the tail (p99), which criterion does not report.
//!
//!     bash samples/build.sh
//!     cargo bench -p skiff-benches --bench instantiate

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use skiff::instance::Body;
use skiff::wasm::capabilities::{Capabilities, Stdio};
use skiff::wasm::engine::{EngineConfig, WasmEngine};
use skiff::wasm::http::HttpFunction;
use skiff::wasm::limits::Limits;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const WARM_UP: usize = 2_000;
const ITERATIONS: usize = 20_000;
const PATH: &str = "/bench";

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench` (and any filter) to harness-less benches: nothing to read.
    let sample = sample_path();
    if !sample.is_file() {
        bail!(
            "{} is missing; build the guest samples first with `bash samples/build.sh` \
             (from the workspace root)",
            sample.display()
        );
    }
    let cache = tempfile::tempdir().context("cannot create a temporary compile-cache dir")?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    // The engine spawns its epoch ticker as a plain thread; as in `skiff run --listen`, the
    // pool is sized for 1000 instances.
    let config = EngineConfig {
        pool_instances: Some(1000),
        ..Default::default()
    };
    let engine = Arc::new(WasmEngine::new(&config, cache.path().to_path_buf())?);
    let program = engine.load_file(&sample)?;
    let caps = Capabilities {
        stdio: Stdio::Log,
        ..Default::default()
    };
    let function = HttpFunction::prepare(engine, &program, caps, Limits::default())?;

    let expected = Bytes::from(format!("Hello from skiff! path={PATH}\n"));
    let samples = runtime.block_on(async {
        for _ in 0..WARM_UP {
            one_request(&function, &expected).await?;
        }
        let mut samples = Vec::with_capacity(ITERATIONS);
        for _ in 0..ITERATIONS {
            samples.push(one_request(&function, &expected).await?);
        }
        anyhow::Ok(samples)
    })?;

    let stats = Stats::new(samples);
    println!(
        "instantiate+call http-hello: median {:.1} µs, p90 {:.1} µs, p99 {:.1} µs, mean {:.1} µs (n={})",
        stats.median, stats.p90, stats.p99, stats.mean, ITERATIONS
    );
    Ok(())
}

/// One request, timed from `handle` to the last body byte; the check runs outside the timing.
async fn one_request(function: &HttpFunction, expected: &Bytes) -> anyhow::Result<Duration> {
    let request = http::Request::builder()
        .method(http::Method::GET)
        .uri(PATH)
        .header(http::header::HOST, "localhost")
        .body(empty_body())?;
    let started = Instant::now();
    let response = function.handle(request).await;
    let status = response.status();
    let body = response.into_body().collect().await;
    let elapsed = started.elapsed();
    ensure!(
        status == http::StatusCode::OK,
        "http-hello answered {status}"
    );
    let body = body
        .map_err(|e| anyhow::anyhow!("reading the response body: {e}"))?
        .to_bytes();
    ensure!(body == *expected, "unexpected body {body:?}");
    Ok(elapsed)
}

fn empty_body() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Summary of the samples, in microseconds (nearest-rank percentiles).
struct Stats {
    median: f64,
    p90: f64,
    p99: f64,
    mean: f64,
}

impl Stats {
    fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let rank = |p: f64| {
            let index = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
            us(samples[index])
        };
        let total: Duration = samples.iter().sum();
        Self {
            median: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            mean: us(total) / samples.len() as f64,
        }
    }
}

/// `samples/target/wasm32-wasip2/release/http_hello.wasm` under the workspace root.
fn sample_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("samples/target/wasm32-wasip2/release/http_hello.wasm")
}

//! The function path of `skiff serve`, end to end over loopback HTTP: scale from zero,
//! density, and deploy to first response. Starts its own `skiff serve` (a temp data dir,
//! `--gateway 127.0.0.1:0`), deploys `http_hello.wasm` under many distinct routes with
//! `skiff deploy -f`, and times requests with hyper's HTTP/1.1 client over ONE keep-alive
//! connection, one request at a time.
//!
//!     cargo build --release -p skiff -p skiff-benches
//!     target/release/functions [--skiff target/release/skiff] [--functions 1000]
//!         [--density 10000] [--sample 100] [--deploys 20]
//!
//! Prints one line per figure. Never asserts on timing; the targets are in benches/README.md.

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Functions per app: one manifest per thousand keeps each deploy's request small.
const PER_APP: usize = 1000;

struct Options {
    skiff: PathBuf,
    functions: usize,
    density: usize,
    sample: usize,
    deploys: usize,
}

fn main() -> anyhow::Result<()> {
    let options = parse_args()?;
    let wasm = workspace().join("samples/target/wasm32-wasip2/release/http_hello.wasm");
    ensure!(
        wasm.is_file(),
        "{} is missing; run `bash samples/build.sh`",
        wasm.display()
    );
    ensure!(
        options.skiff.is_file(),
        "no skiff at {}; `cargo build --release -p skiff` or pass --skiff",
        options.skiff.display()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    // Scale from zero, then the same functions warm, in one daemon.
    {
        let serve = Serve::start(&options.skiff)?;
        let routes = serve.deploy_functions(&wasm, options.functions, "zero")?;
        let (cold, warm) = runtime.block_on(async {
            let mut client = connect(serve.gateway).await?;
            let cold = time_each(&mut client, &routes).await?;
            let warm = time_each(&mut client, &routes).await?;
            anyhow::Ok((cold, warm))
        })?;
        report(
            &format!("scale from zero ({} functions, each once)", routes.len()),
            &cold,
        );
        report("the same functions warm (second hit)", &warm);
        println!(
            "ratio cold/warm: p50 {:.2}, p99 {:.2}",
            ratio(&cold, &warm, 0.50),
            ratio(&cold, &warm, 0.99)
        );

        // Deploy to first response, the code already loaded (same wasm as above).
        let mut took = Vec::new();
        for i in 0..options.deploys {
            let started = Instant::now();
            let routes = serve.deploy_functions(&wasm, 1, &format!("late{i}"))?;
            runtime.block_on(async {
                let mut client = connect(serve.gateway).await?;
                request(&mut client, &routes[0]).await
            })?;
            took.push(started.elapsed());
        }
        report(
            &format!(
                "deploy -f to first 200 ({} new apps, wasm already loaded)",
                options.deploys
            ),
            &took,
        );
        // The peer: a CLI round trip through the control API that writes nothing.
        let mut listed = Vec::new();
        for _ in 0..options.deploys {
            let started = Instant::now();
            serve.cli(&["apps"])?;
            listed.push(started.elapsed());
        }
        report(
            "peer: `skiff apps` (CLI process + API round trip, no write)",
            &listed,
        );
        println!(
            "ratio deploy-to-first-200 / skiff apps: p50 {:.2}",
            ratio(&took, &listed, 0.50)
        );
    }

    // Density: many functions at zero, RSS, then a sample's first requests.
    if options.density > 0 {
        let serve = Serve::start(&options.skiff)?;
        let before = serve.rss_kib()?;
        let routes = serve.deploy_functions(&wasm, options.density, "dense")?;
        let after = serve.rss_kib()?;
        println!(
            "density: {} functions at zero: VmRSS {:.1} MiB (daemon idle before deploy: {:.1} MiB)",
            routes.len(),
            after as f64 / 1024.0,
            before as f64 / 1024.0
        );
        let sample: Vec<String> = pick(&routes, options.sample);
        let first = runtime.block_on(async {
            let mut client = connect(serve.gateway).await?;
            time_each(&mut client, &sample).await
        })?;
        report(
            &format!(
                "density: first request of {} random functions",
                sample.len()
            ),
            &first,
        );
        println!(
            "density: VmRSS after the sample {:.1} MiB",
            serve.rss_kib()? as f64 / 1024.0
        );
    }
    Ok(())
}

fn parse_args() -> anyhow::Result<Options> {
    let mut options = Options {
        skiff: workspace().join("target/release/skiff"),
        functions: 1000,
        density: 10_000,
        sample: 100,
        deploys: 20,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--skiff" => options.skiff = PathBuf::from(value()?),
            "--functions" => options.functions = value()?.parse()?,
            "--density" => options.density = value()?.parse()?,
            "--sample" => options.sample = value()?.parse()?,
            "--deploys" => options.deploys = value()?.parse()?,
            // `cargo bench` style flags are ignored.
            "--bench" => {}
            other => bail!("unknown argument {other}; see the file's doc comment"),
        }
    }
    Ok(options)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A `skiff serve` of our own, killed when dropped.
struct Serve {
    child: Child,
    gateway: SocketAddr,
    socket: PathBuf,
    skiff: PathBuf,
    data: tempfile::TempDir,
}

impl Serve {
    fn start(skiff: &Path) -> anyhow::Result<Serve> {
        let data = tempfile::tempdir()?;
        let socket = data.path().join("skiff.sock");
        let mut child = Command::new(skiff)
            .env("SKIFF_DATA_DIR", data.path())
            .env_remove("SKIFF_LOG")
            .args(["serve", "--gateway", "127.0.0.1:0", "--socket"])
            .arg(&socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning skiff serve")?;
        let mut stdout = BufReader::new(child.stdout.take().context("piped stdout")?);
        let mut line = String::new();
        let mut gateway = None;
        for _ in 0..2 {
            line.clear();
            stdout.read_line(&mut line)?;
            if let Some(addr) = line.trim().strip_prefix("gateway on http://") {
                gateway = Some(addr.parse()?);
            }
        }
        let gateway = gateway.context("skiff serve printed no gateway line")?;
        let skiff = skiff.to_path_buf();
        Ok(Serve {
            child,
            gateway,
            socket,
            skiff,
            data,
        })
    }

    /// Deploys `count` functions of `wasm` in apps named `{prefix}{n}`; returns their routes.
    fn deploy_functions(
        &self,
        wasm: &Path,
        count: usize,
        prefix: &str,
    ) -> anyhow::Result<Vec<String>> {
        let mut routes = Vec::new();
        for (app, start) in (0..count).step_by(PER_APP).enumerate() {
            let name = format!("{prefix}{app}");
            let mut manifest = format!("[app]\nname = \"{name}\"\n");
            for i in start..(start + PER_APP).min(count) {
                let route = format!("/{name}/f{i}");
                manifest.push_str(&format!(
                    "\n[function.f{i}]\nfile = {wasm:?}\nroute = \"{route}\"\nmemory = \"16MiB\"\n\
                     idle = \"10m\"\n"
                ));
                routes.push(route);
            }
            let file = self.data.path().join(format!("{name}.toml"));
            std::fs::write(&file, manifest)?;
            let file = file.to_str().context("a UTF-8 temp path")?;
            self.cli(&["deploy", "-f", file])?;
        }
        Ok(routes)
    }

    /// `skiff ARGS` against this daemon; fails unless it exits 0.
    fn cli(&self, args: &[&str]) -> anyhow::Result<()> {
        let output = Command::new(&self.skiff)
            .env("SKIFF_SOCKET", &self.socket)
            .args(args)
            .output()?;
        ensure!(
            output.status.success(),
            "skiff {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .context("no VmRSS line")?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("VmRSS value")?
            .parse()?)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(gateway: SocketAddr) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(gateway).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One GET of `route`, its whole body read; fails unless 200.
async fn request(client: &mut SendRequest<Empty<Bytes>>, route: &str) -> anyhow::Result<()> {
    client.ready().await?;
    let request = http::Request::get(route)
        .header(http::header::HOST, "bench")
        .body(Empty::new())?;
    let response = client.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    ensure!(
        status == 200,
        "{route}: {status} {}",
        String::from_utf8_lossy(&body)
    );
    Ok(())
}

async fn time_each(
    client: &mut SendRequest<Empty<Bytes>>,
    routes: &[String],
) -> anyhow::Result<Vec<Duration>> {
    let mut took = Vec::with_capacity(routes.len());
    for route in routes {
        let started = Instant::now();
        request(client, route).await?;
        took.push(started.elapsed());
    }
    Ok(took)
}

/// `count` routes spread over all of them (a fixed-seed shuffle, so runs compare).
fn pick(routes: &[String], count: usize) -> Vec<String> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut chosen = Vec::new();
    let mut indices: Vec<usize> = (0..routes.len()).collect();
    for i in 0..count.min(routes.len()) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let j = i + (state as usize) % (indices.len() - i);
        indices.swap(i, j);
        chosen.push(routes[indices[i]].clone());
    }
    chosen
}

fn quantile(samples: &[Duration], q: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

fn ratio(a: &[Duration], b: &[Duration], q: f64) -> f64 {
    quantile(a, q).as_secs_f64() / quantile(b, q).as_secs_f64().max(1e-9)
}

fn report(what: &str, samples: &[Duration]) {
    let mean = samples.iter().sum::<Duration>() / samples.len().max(1) as u32;
    println!(
        "{what}: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms, mean {:.3} ms (n = {})",
        ms(quantile(samples, 0.50)),
        ms(quantile(samples, 0.90)),
        ms(quantile(samples, 0.99)),
        ms(quantile(samples, 1.0)),
        ms(mean),
        samples.len()
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

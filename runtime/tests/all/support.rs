//! Helpers: locating samples, running the `skiff` binary, serving and fetching over HTTP, and
//! for the image tests, reading a data dir's store and building images with outside tools
//! (umoci, skopeo).

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// A sample built by `samples/build.sh`, e.g. `sample("wasm32-wasip1", "hello")`.
pub fn sample(target: &str, name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../samples/target")
        .join(target)
        .join("release")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing; build the samples first: bash samples/build.sh",
        path.display()
    );
    path
}

pub fn p1(name: &str) -> PathBuf {
    sample("wasm32-wasip1", name)
}

pub fn p2(name: &str) -> PathBuf {
    sample("wasm32-wasip2", name)
}

/// A `skiff` invocation with its own data dir, removed when dropped.
pub struct Skiff {
    pub data_dir: tempfile::TempDir,
}

impl Skiff {
    pub fn new() -> Self {
        Self {
            data_dir: tempfile::tempdir().expect("temp data dir"),
        }
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_skiff"));
        command
            .env("SKIFF_DATA_DIR", self.data_dir.path())
            // Hermetic: never the machine's own Docker logins.
            .env("DOCKER_CONFIG", self.data_dir.path().join("docker"))
            .env_remove("SKIFF_LOG")
            .stdin(Stdio::null());
        command
    }

    /// Runs `skiff ARGS` to completion.
    pub fn run<I, S>(&self, args: I) -> Ran
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Ran::from(self.command().args(args).output().expect("spawning skiff"))
    }

    /// Runs with `SKIFF_LOG=skiff=debug`, to read what the compile cache did.
    pub fn run_debug<I, S>(&self, args: I) -> Ran
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Ran::from(
            self.command()
                .env("SKIFF_LOG", "skiff=debug")
                .args(args)
                .output()
                .expect("spawning skiff"),
        )
    }

    /// The compile cache's code entries.
    pub fn cache_entries(&self) -> Vec<PathBuf> {
        let root = self.data_dir.path().join("cache/wasm");
        let mut entries = Vec::new();
        for fingerprint in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            for entry in std::fs::read_dir(fingerprint.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if entry.path().extension().is_some_and(|e| e == "cwasm") {
                    entries.push(entry.path());
                }
            }
        }
        entries.sort();
        entries
    }

    /// Starts `skiff run --listen 127.0.0.1:0 ARGS` and waits for its stable line.
    pub fn serve<I, S>(&self, args: I) -> Server
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut child = self
            .command()
            .args(["run", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning skiff");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading skiff's stdout");
        let Some(addr) = line.trim().strip_prefix("serving http on http://") else {
            let mut stderr = String::new();
            let _ = child.kill();
            child
                .stderr
                .take()
                .map(|mut s| s.read_to_string(&mut stderr));
            panic!("skiff did not start serving; stdout: {line:?}\nstderr:\n{stderr}");
        };
        Server {
            addr: addr.parse().expect("an address in the stable line"),
            child,
        }
    }
}

/// A finished `skiff` process.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Ran {
    fn from(output: Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Ran {
    /// Asserts the exit code, showing both streams when it differs.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "unexpected exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        assert!(
            !self.stderr.contains("panicked"),
            "skiff panicked:\n{}",
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}:\n{}",
            self.stdout
        );
        self
    }
}

/// A running `skiff run --listen`, killed when dropped; its stderr is shown if a test fails.
pub struct Server {
    pub addr: SocketAddr,
    child: Child,
}

impl Server {
    /// Kills the server and returns what it logged.
    pub fn stop(mut self) -> String {
        self.kill_and_log()
    }

    fn kill_and_log(&mut self) -> String {
        kill_and_log(&mut self.child)
    }
}

/// Kills and reaps a server process; what it wrote to stderr.
pub fn kill_and_log(child: &mut Child) -> String {
    let _ = child.kill();
    let _ = child.wait();
    let mut stderr = String::new();
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut stderr);
    }
    stderr
}

impl Drop for Server {
    fn drop(&mut self) {
        let stderr = self.kill_and_log();
        if std::thread::panicking() {
            eprintln!("--- skiff server stderr ---\n{stderr}");
        }
    }
}

/// A response as a test reads it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// Which HTTP version to speak to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (h2c).
    H2c,
}

/// Sends one request with hyper's client over a fresh connection.
pub async fn fetch(
    addr: SocketAddr,
    version: Version,
    method: &str,
    path: &str,
    body: &str,
) -> Reply {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connecting");
    let request = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header(http::header::HOST, addr.to_string())
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .expect("a valid request");
    let response = match version {
        Version::Http1 => {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("http/1.1 handshake");
            tokio::spawn(conn);
            sender.send_request(request).await.expect("sending")
        }
        Version::H2c => {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .expect("h2c handshake");
            tokio::spawn(conn);
            sender.send_request(request).await.expect("sending")
        }
    };
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("reading the body").to_bytes();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// `fetch` for tests that are not async themselves.
pub fn get(addr: SocketAddr, path: &str) -> Reply {
    runtime().block_on(fetch(addr, Version::Http1, "GET", path, ""))
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Digests of the blobs in a data dir's content store.
pub fn stored_blobs(skiff: &Skiff) -> Vec<String> {
    let dir = skiff.data_dir.path().join("content/blobs/sha256");
    let mut blobs: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    blobs.sort();
    blobs
}

/// What `skiff images` lists.
pub fn images_listed(skiff: &Skiff) -> String {
    skiff.run(["images"]).expect_code(0).stdout.clone()
}

/// `skiff push FILE REFERENCE`; returns the pushed manifest's digest.
pub fn push(skiff: &Skiff, file: &Path, reference: &str) -> String {
    let ran = skiff.run(["push", file.to_str().unwrap(), reference]);
    ran.expect_code(0).stdout_has("pushed");
    let digest = ran
        .stdout
        .split_whitespace()
        .last()
        .unwrap()
        .trim_matches(['(', ')'])
        .to_string();
    assert!(digest.starts_with("sha256:"), "{}", ran.stdout);
    digest
}

/// Runs an outside tool, failing the test with its output if it fails.
pub fn tool(program: &str, args: &[&str]) -> Vec<u8> {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program} ({e}); scripts/install-test-deps.sh"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// `skopeo copy --insecure-policy FLAGS SOURCE TARGET`, e.g. from `oci:DIR:latest` to
/// `docker://REFERENCE`.
pub fn skopeo_copy(flags: &[&str], source: &str, target: &str) {
    tool(
        "skopeo",
        &[&["copy", "--insecure-policy"], flags, &[source, target]].concat(),
    );
}

/// Builds a one-layer image with umoci in an OCI image layout at `dir/layout`, tagged
/// `latest`: each `(file, path)` of `files` copied to `path` in its root file system, then
/// `umoci config CONFIG`. Returns the layout's path.
pub fn umoci_layout(dir: &Path, files: &[(&Path, &str)], config: &[&str]) -> PathBuf {
    let layout = dir.join("layout");
    let bundle = dir.join("bundle");
    let image = format!("{}:latest", layout.display());
    let bundle_path = bundle.to_str().unwrap();
    let rootless: &[&str] = if uid() == 0 { &[] } else { &["--rootless"] };
    tool("umoci", &["init", "--layout", layout.to_str().unwrap()]);
    tool("umoci", &["new", "--image", &image]);
    let unpack = ["--image", image.as_str(), bundle_path];
    tool("umoci", &[&["unpack"], rootless, &unpack].concat());
    for (file, path) in files {
        let target = bundle.join("rootfs").join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(file, target).unwrap();
    }
    tool("umoci", &[&["repack"], rootless, &unpack].concat());
    tool("umoci", &[&["config", "--image", &image], config].concat());
    layout
}

/// A Linux image built with umoci under `dir`: Debian's static busybox as its one layer,
/// entrypoint `/bin/busybox`, command `cmd`. Returns the layout's path.
pub fn busybox_layout(dir: &Path, cmd: &str) -> PathBuf {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .expect("busybox (busybox-static); scripts/install-test-deps.sh");
    let config = ["--config.entrypoint", "/bin/busybox", "--config.cmd", cmd];
    umoci_layout(dir, &[(busybox, "bin/busybox")], &config)
}

fn uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

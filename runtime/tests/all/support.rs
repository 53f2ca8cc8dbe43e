//! Helpers: locating samples, running the `skiff` binary, serving and fetching over HTTP.

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
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut stderr = String::new();
        if let Some(mut s) = self.child.stderr.take() {
            let _ = s.read_to_string(&mut stderr);
        }
        stderr
    }
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

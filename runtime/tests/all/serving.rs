//! A `skiff serve` for the control-plane and gateway tests: every stable line it prints, its
//! stderr drained as it runs (so a chatty daemon never blocks on a full pipe), and requests to
//! its unix socket or TCP listeners with real hyper clients.

use crate::support::*;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a test waits for the daemon to print or log something before it fails.
pub const WAIT: Duration = Duration::from_secs(60);

/// A running `skiff serve`, killed when dropped (its stderr shown if the test failed).
pub struct Serving {
    pub gateway: SocketAddr,
    pub socket: PathBuf,
    child: Child,
    lines: Receiver<String>,
    /// Stable lines read but not asked for yet.
    unread: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Serving {
    /// Starts `skiff serve` on a socket in the data dir and `--gateway 127.0.0.1:0`, with
    /// `extra` flags, and waits for its gateway line.
    pub fn start(skiff: &Skiff, extra: &[&str]) -> Serving {
        let socket = socket(skiff);
        let mut child = skiff
            .command()
            .args(["serve", "--gateway", "127.0.0.1:0", "--socket"])
            .arg(&socket)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning skiff serve");
        let (send, lines) = channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut serving = Serving {
            gateway: "0.0.0.0:0".parse().unwrap(),
            socket,
            child,
            lines,
            unread: Vec::new(),
            stderr,
        };
        let gateway = serving.line("gateway on http://");
        serving.gateway = gateway.parse().expect("an address in the gateway line");
        serving
    }

    /// The rest of the stable line that starts with `prefix`, waiting for it.
    pub fn line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(i) = self.unread.iter().position(|l| l.starts_with(prefix)) {
                return self.unread.remove(i)[prefix.len()..].to_string();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.unread.push(line),
                Err(_) => panic!(
                    "skiff serve printed no line starting with {prefix:?}; read {:?}\nstderr:\n{}",
                    self.unread,
                    self.stderr()
                ),
            }
        }
    }

    /// What the daemon has logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until the daemon's log holds a line with every one of `needles`; that line.
    pub fn logged(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let log = self.stderr();
            if let Some(line) = log.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needles:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `skiff ARGS` against this daemon's socket.
    pub fn client(&self, skiff: &Skiff, args: &[&str]) -> Ran {
        Ran::from(
            skiff
                .command()
                .env("SKIFF_SOCKET", &self.socket)
                .env_remove("SKIFF_HOST")
                .env_remove("SKIFF_TOKEN")
                .args(args)
                .output()
                .expect("spawning skiff"),
        )
    }

    /// One request to the control API on the unix socket.
    pub fn api(&self, method: &str, path: &str, body: &str) -> Reply {
        let socket = self.socket.clone();
        runtime().block_on(async move {
            let stream = tokio::net::UnixStream::connect(&socket)
                .await
                .expect("connecting to the control socket");
            exchange(stream, "skiff", method, path, &[], body).await
        })
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- skiff serve stderr ---\n{}", self.stderr());
        }
    }
}

pub fn socket(skiff: &Skiff) -> PathBuf {
    skiff.data_dir.path().join("run/skiff.sock")
}

/// One HTTP/1.1 request over TCP to `addr` with extra `headers`.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    runtime().block_on(async move {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connecting");
        exchange(stream, &addr.to_string(), method, path, headers, body).await
    })
}

async fn exchange<S>(
    stream: S,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::{BodyExt, Full};
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("http/1.1 handshake");
    tokio::spawn(conn);
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, host);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .expect("a valid request");
    let response = sender.send_request(request).await.expect("sending");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("reading the body").to_bytes();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Writes `manifest` to `dir/skiff.toml`, with http_hello beside it as `hello.wasm`; the
/// manifest's path.
pub fn write_app(dir: &Path, manifest: &str) -> String {
    std::fs::copy(p2("http_hello"), dir.join("hello.wasm")).expect("copying the sample");
    let path = dir.join("skiff.toml");
    std::fs::write(&path, manifest).expect("writing the manifest");
    path.to_str().expect("a UTF-8 temp path").to_string()
}

/// One function at `/hello`, app `greet`.
pub const HELLO: &str = r#"[app]
name = "greet"

[function.hello]
file = "hello.wasm"
route = "/hello"
max = 4
"#;

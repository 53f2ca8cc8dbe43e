//! The control API's client side: where the daemon's socket is, and one JSON request to it
//! over HTTP/1.1 on a unix socket (hyper's client on a tokio `UnixStream`).

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::path::PathBuf;

/// `--socket` for `serve` and the verbs that talk to it.
#[derive(Debug, Clone, clap::Args)]
pub struct SocketOption {
    /// The control API's unix socket
    /// [default: /run/skiff/skiff.sock as root, $XDG_RUNTIME_DIR/skiff.sock otherwise]
    #[arg(long, global = true, env = "SKIFF_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

impl SocketOption {
    pub fn path(&self) -> PathBuf {
        self.socket.clone().unwrap_or_else(default_socket)
    }
}

/// The design's default: root's under /run, a user's in their runtime dir.
fn default_socket() -> PathBuf {
    if super::nix_is_root() {
        return PathBuf::from("/run/skiff/skiff.sock");
    }
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(std::env::temp_dir)
        .join("skiff.sock")
}

/// The daemon's answer: status and JSON body.
pub struct Answer {
    pub status: http::StatusCode,
    pub body: Value,
}

impl Answer {
    /// The body of a success; the daemon's error and hint otherwise.
    pub fn ok(self) -> anyhow::Result<Value> {
        if self.status.is_success() {
            return Ok(self.body);
        }
        let error = self.body["error"].as_str().unwrap_or("the daemon refused");
        match self.body["hint"].as_str() {
            Some(hint) => anyhow::bail!("{error}\nhint: {hint}"),
            None => anyhow::bail!("{error} ({})", self.status),
        }
    }
}

/// Sends one request to the daemon at `socket`.
pub async fn request(
    socket: &std::path::Path,
    method: http::Method,
    path_and_query: &str,
    body: String,
) -> anyhow::Result<Answer> {
    let stream = tokio::net::UnixStream::connect(socket).await.map_err(|_| {
        anyhow::anyhow!(
            "no skiff daemon at {}; start one with `skiff serve`",
            socket.display()
        )
    })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("talking to the skiff daemon")?;
    tokio::spawn(connection);
    let request = http::Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(http::header::HOST, "skiff")
        .header(http::header::CONTENT_TYPE, "application/toml")
        .body(Full::new(bytes::Bytes::from(body)))
        .context("building the request")?;
    let response = sender
        .send_request(request)
        .await
        .context("the skiff daemon closed the connection")?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .context("reading the daemon's answer")?
        .to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(
        |_| serde_json::json!({ "error": String::from_utf8_lossy(&bytes).trim().to_string() }),
    );
    Ok(Answer { status, body })
}

/// Percent-encodes a query value: everything but RFC 3986's unreserved characters.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

//! The control API's client side: where the daemon is (its unix socket by default, or TCP with
//! a bearer token through `SKIFF_HOST`), and one request to it over HTTP/1.1 (hyper's client).

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
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

/// Where the verbs that talk to the daemon find it.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientOptions {
    #[command(flatten)]
    pub socket: SocketOption,

    /// The daemon's TCP control API, `http://ADDR` (`skiff serve --api`); the unix
    /// socket is used when unset
    #[arg(long, env = "SKIFF_HOST", value_name = "URL")]
    pub host: Option<String>,

    /// A file holding the TCP control API's bearer token (SKIFF_TOKEN holds the token itself
    /// and wins)
    #[arg(long, env = "SKIFF_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

/// The daemon's control API as the CLI reaches it.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp { authority: String, token: String },
}

impl ClientOptions {
    /// The unix socket, or the TCP API of `--host` with `SKIFF_TOKEN` or `--token-file`.
    pub fn endpoint(&self) -> anyhow::Result<Endpoint> {
        self.endpoint_with(std::env::var("SKIFF_TOKEN").ok())
    }

    fn endpoint_with(&self, env_token: Option<String>) -> anyhow::Result<Endpoint> {
        let Some(host) = &self.host else {
            return Ok(Endpoint::Unix(self.socket.path()));
        };
        let authority = host
            .strip_prefix("http://")
            .map(|rest| rest.trim_end_matches('/'))
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .with_context(|| {
                format!(
                    "SKIFF_HOST={host} is not http://HOST:PORT; use the address \
                     `skiff serve --api` printed"
                )
            })?;
        let token = match (env_token.filter(|t| !t.trim().is_empty()), &self.token_file) {
            (Some(token), _) => token.trim().to_string(),
            (None, Some(file)) => std::fs::read_to_string(file)
                .with_context(|| format!("cannot read token file {}", file.display()))?
                .trim()
                .to_string(),
            (None, None) => anyhow::bail!(
                "the TCP control API at {host} needs a token; set SKIFF_TOKEN or --token-file \
                 (`skiff serve` printed where its token is)"
            ),
        };
        Ok(Endpoint::Tcp {
            authority: authority.to_string(),
            token,
        })
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

/// Sends one request to the daemon and reads its JSON answer.
pub async fn request(
    endpoint: &Endpoint,
    method: http::Method,
    path_and_query: &str,
    body: String,
) -> anyhow::Result<Answer> {
    let response = send(endpoint, method, path_and_query, body).await?;
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

/// Sends one request to the daemon; the response's body is left to read as it streams.
pub async fn send(
    endpoint: &Endpoint,
    method: http::Method,
    path_and_query: &str,
    body: String,
) -> anyhow::Result<http::Response<Incoming>> {
    let request = http::Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(http::header::CONTENT_TYPE, "application/toml");
    match endpoint {
        Endpoint::Unix(socket) => {
            let stream = tokio::net::UnixStream::connect(socket).await.map_err(|_| {
                anyhow::anyhow!(
                    "no skiff daemon at {}; start one with `skiff serve`",
                    socket.display()
                )
            })?;
            let request = request.header(http::header::HOST, "skiff");
            exchange(stream, request, body).await
        }
        Endpoint::Tcp { authority, token } => {
            let stream = tokio::net::TcpStream::connect(authority.as_str())
                .await
                .map_err(|e| {
                    anyhow::anyhow!("no skiff daemon at http://{authority} ({e}); check SKIFF_HOST")
                })?;
            let request = request
                .header(http::header::HOST, authority.as_str())
                .header(http::header::AUTHORIZATION, format!("Bearer {token}"));
            exchange(stream, request, body).await
        }
    }
}

async fn exchange<S>(
    stream: S,
    request: http::request::Builder,
    body: String,
) -> anyhow::Result<http::Response<Incoming>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("talking to the skiff daemon")?;
    tokio::spawn(connection);
    let request = request
        .body(Full::new(bytes::Bytes::from(body)))
        .context("building the request")?;
    sender
        .send_request(request)
        .await
        .context("the skiff daemon closed the connection")
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn options(host: Option<&str>, token_file: Option<PathBuf>) -> ClientOptions {
        ClientOptions {
            socket: SocketOption {
                socket: Some(PathBuf::from("/tmp/test.sock")),
            },
            host: host.map(str::to_string),
            token_file,
        }
    }

    #[test]
    fn the_socket_is_the_default_and_tcp_needs_a_token() {
        let unix = options(None, None).endpoint_with(Some("t".into())).unwrap();
        assert!(matches!(unix, Endpoint::Unix(p) if p == Path::new("/tmp/test.sock")));

        let tcp = options(Some("http://127.0.0.1:7070/"), None)
            .endpoint_with(Some(" t0k \n".into()))
            .unwrap();
        let Endpoint::Tcp { authority, token } = tcp else {
            panic!("not tcp");
        };
        assert_eq!(
            (authority.as_str(), token.as_str()),
            ("127.0.0.1:7070", "t0k")
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        let tcp = options(Some("http://h:1"), Some(file))
            .endpoint_with(None)
            .unwrap();
        assert!(matches!(tcp, Endpoint::Tcp { token, .. } if token == "from-file"));

        let err = options(Some("http://h:1"), None).endpoint_with(Some(" ".into()));
        assert!(err.unwrap_err().to_string().contains("needs a token"));
        for bad in ["https://h:1", "h:1", "http://", "http://h:1/v1"] {
            let err = options(Some(bad), None).endpoint_with(Some("t".into()));
            assert!(
                err.unwrap_err()
                    .to_string()
                    .contains("is not http://HOST:PORT"),
                "{bad}"
            );
        }
    }
}

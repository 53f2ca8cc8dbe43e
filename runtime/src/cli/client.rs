//! The control API's client side: where the daemon is (its unix socket by default, or TCP with
//! a bearer token through `SKIFF_HOST`), whether it is the daemon of this data dir (then the
//! container verbs go through it: [`daemon_of`]), and one request to it over HTTP/1.1 (hyper's
//! client).

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the CLI waits for the daemon to answer that it is there.
const PROBE_WAIT: Duration = Duration::from_secs(2);

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

    /// The body of a success; otherwise the daemon's error alone, worded as the CLI words it
    /// without the daemon (the verbs that print it so, the same either way).
    pub fn or_message(self) -> Result<Value, String> {
        if self.status.is_success() {
            return Ok(self.body);
        }
        Err(match self.body["error"].as_str() {
            Some(error) => error.to_string(),
            None => format!("the daemon refused ({})", self.status),
        })
    }
}

/// The daemon of this data dir, when one answers: `run -d`, `ps`, `logs`, `stop` and `rm` then
/// go through it. Another data dir's daemon has other images and containers: `None`, and the
/// verb works alone.
pub fn daemon_of(options: &ClientOptions, data_dir: &Path) -> Option<Endpoint> {
    let endpoint = options.endpoint().ok()?;
    if let Endpoint::Unix(socket) = &endpoint
        && !socket.exists()
    {
        return None;
    }
    let info = super::block_on(async {
        let request = request(&endpoint, http::Method::GET, "/v1/info", String::new());
        tokio::time::timeout(PROBE_WAIT, request).await
    });
    let info = info.ok()?.ok()?.ok().ok()?;
    let theirs = std::fs::canonicalize(info["data_dir"].as_str()?).ok()?;
    let same = std::fs::canonicalize(data_dir).ok()? == theirs;
    same.then_some(endpoint)
}

/// One request without a body, blocking: the body of a success, or the daemon's refusal worded
/// as the CLI words it alone (see [`Answer::or_message`]). The outer error is the daemon not
/// answering at all.
pub fn call(
    endpoint: &Endpoint,
    method: http::Method,
    path_and_query: &str,
) -> anyhow::Result<Result<Value, String>> {
    let answer = super::block_on(request(endpoint, method, path_and_query, String::new()))?;
    Ok(answer.or_message())
}

/// Sends one request to the daemon and reads its JSON answer.
pub async fn request(
    endpoint: &Endpoint,
    method: http::Method,
    path_and_query: &str,
    body: String,
) -> anyhow::Result<Answer> {
    read_answer(send(endpoint, method, path_and_query, body).await?).await
}

/// Reads a response's whole JSON body (a plain-text one becomes `{"error": TEXT}`).
pub async fn read_answer(response: http::Response<Incoming>) -> anyhow::Result<Answer> {
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

/// A user's word (a container's name or id) as one segment of a URL path: `/` encoded too.
pub fn segment(value: &str) -> String {
    encode(value).replace('/', "%2F")
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
    fn a_word_stays_one_path_segment() {
        assert_eq!(segment("web-1.a_b"), "web-1.a_b");
        assert_eq!(segment("a/../b c"), "a%2F..%2Fb%20c");
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

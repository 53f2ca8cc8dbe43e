//! Fixtures for OCI registry tests: a real registry (Debian's `docker-registry`, distribution
//! v2.8) on loopback, independent clients to cross-check skiff against (skopeo, oras-py), a raw
//! distribution-API client for crafting odd artifacts, and a TCP proxy that injects faults.
//!
//! Outside tools come from `scripts/install-test-deps.sh`.
//!
//! Known registry behaviour (distribution 2.8.2): manifests are limited to 4 MiB (4,194,304
//! bytes) both ways: a larger PUT is refused with `400 MANIFEST_INVALID` ("http: request body
//! too large"), and a larger manifest planted on disk is answered with `500 UNKNOWN` ("storage:
//! read exceeds limit"). To serve a bigger manifest, put a [`FaultProxy`] with
//! [`Fault::ServeManifest`] in front of the registry.

// Fixtures are shared by tests that come and go; not every helper is used at every moment.
#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The registry binary Debian's `docker-registry` package installs.
const REGISTRY_BIN: &str = "docker-registry";
/// How long a registry may take to answer `GET /v2/`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Read/write timeout on every socket the fixtures open, so nothing hangs forever.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Media type of an OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A running distribution registry on 127.0.0.1 with its own storage, killed when dropped.
pub struct Registry {
    pub addr: SocketAddr,
    /// The storage root (`storage.filesystem.rootdirectory`).
    pub storage: tempfile::TempDir,
    /// `(user, password)` when started with basic auth; the helpers below use them.
    pub credentials: Option<(String, String)>,
    child: Child,
    /// Holds the config, the htpasswd file and the registry's log.
    dir: tempfile::TempDir,
}

impl Registry {
    /// An anonymous registry: anyone may push and pull.
    pub fn start() -> Self {
        Self::launch(None)
    }

    /// A registry that wants HTTP basic auth (htpasswd, bcrypt) for everything, `/v2/` included.
    pub fn start_with_auth(user: &str, password: &str) -> Self {
        Self::launch(Some((user.to_string(), password.to_string())))
    }

    fn launch(credentials: Option<(String, String)>) -> Self {
        let storage = tempfile::tempdir().expect("a temp dir for the registry's storage");
        let dir = tempfile::tempdir().expect("a temp dir for the registry's config");
        let htpasswd = credentials.as_ref().map(|(user, password)| {
            let output = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .unwrap_or_else(|e| {
                    panic!("running htpasswd ({e}); install it: scripts/install-test-deps.sh")
                });
            assert!(
                output.status.success(),
                "htpasswd failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, &output.stdout).expect("writing the htpasswd file");
            path
        });
        // Every response carries this header, so the readiness check knows it reached this
        // registry and not whatever else may have grabbed the port meanwhile.
        let token = random_hex();
        let log_path = dir.path().join("registry.log");
        let expected = if credentials.is_some() { 401 } else { 200 };
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let config = registry_config(storage.path(), addr, &token, htpasswd.as_deref());
            let config_path = dir.path().join("config.yml");
            std::fs::write(&config_path, config).expect("writing the registry config");
            let log = File::create(&log_path).expect("creating the registry log");
            let mut command = Command::new(REGISTRY_BIN);
            command
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("cloning the log file"))
                .stderr(log);
            // distribution lets REGISTRY_* variables override the config file.
            for (name, _) in std::env::vars_os() {
                if name.to_string_lossy().starts_with("REGISTRY_") {
                    command.env_remove(name);
                }
            }
            let mut child = command.spawn().unwrap_or_else(|e| {
                panic!("spawning {REGISTRY_BIN} ({e}); install it: scripts/install-test-deps.sh")
            });
            match wait_ready(&mut child, addr, expected, &token) {
                Ok(()) => {
                    return Self {
                        addr,
                        storage,
                        credentials,
                        child,
                        dir,
                    };
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    if !log.contains("address already in use") {
                        panic!("the registry did not come up on {addr}: {why}; its log:\n{log}");
                    }
                    last_log = log;
                }
            }
        }
        panic!("the registry found no free port in 5 attempts; last log:\n{last_log}");
    }

    /// What the registry has logged so far (warnings and errors only).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `127.0.0.1:PORT/<repo_and_tag>`, e.g. `reference("tools/hello:v1")`.
    pub fn reference(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.host())
    }

    /// Accepts `repo:tag` or `repo@sha256:...` (on this registry), or a full `HOST:PORT/...`
    /// reference, e.g. one through a [`FaultProxy`] in front of this registry.
    fn full_reference(&self, reference: &str) -> String {
        match reference.split_once('/') {
            Some((first, _)) if first.contains([':', '.']) || first == "localhost" => {
                reference.to_string()
            }
            _ => self.reference(reference),
        }
    }

    /// Where the registry keeps a blob (or a manifest, which is stored as a blob too) on disk;
    /// overwrite it to tamper with what the registry serves: it does not re-verify on reads.
    /// `digest` is `sha256:<hex>` or bare hex.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        assert!(
            hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
            "not a sha256 digest: {digest:?}"
        );
        self.storage
            .path()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// One request to the registry, with basic auth when it has credentials.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> RawReply {
        let authorization = self
            .credentials
            .as_ref()
            .map(|(user, password)| format!("Basic {}", base64(format!("{user}:{password}"))));
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(value) = &authorization {
            all.push(("Authorization", value));
        }
        http_request(self.addr, method, path, &all, body)
            .unwrap_or_else(|e| panic!("{method} {path} to the registry failed: {e}"))
    }

    /// Uploads one blob to `repo` (monolithic: `POST` then `PUT ...&digest=`); returns its digest.
    pub fn raw_push_blob(&self, repo: &str, blob: &[u8]) -> String {
        let digest = sha256_digest(blob);
        let started = self.request("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"");
        assert_eq!(
            started.status,
            202,
            "starting a blob upload to {repo}: {}",
            started.text()
        );
        let location = started
            .header("location")
            .expect("a Location for the upload")
            .to_string();
        // Location is absolute (http://host/v2/...) on distribution, relative elsewhere.
        let path = match location.split_once("://") {
            Some((_, rest)) => rest[rest.find('/').unwrap_or(rest.len())..].to_string(),
            None => location,
        };
        let separator = if path.contains('?') { '&' } else { '?' };
        let put = self.request(
            "PUT",
            &format!("{path}{separator}digest={digest}"),
            &[("Content-Type", "application/octet-stream")],
            blob,
        );
        assert_eq!(
            put.status,
            201,
            "finishing the upload of {digest} to {repo}: {}",
            put.text()
        );
        digest
    }

    /// Pushes `blobs` then the manifest as `repo:tag` (`tag` may also be a digest); returns the
    /// manifest's digest, or the registry's reply when it refuses the manifest.
    pub fn try_raw_push(
        &self,
        repo: &str,
        tag: &str,
        manifest_json: &[u8],
        media_type: &str,
        blobs: &[&[u8]],
    ) -> Result<String, RawReply> {
        for blob in blobs {
            self.raw_push_blob(repo, blob);
        }
        let reply = self.request(
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("Content-Type", media_type)],
            manifest_json,
        );
        if reply.status != 201 {
            return Err(reply);
        }
        let digest = sha256_digest(manifest_json);
        assert_eq!(
            reply.header("docker-content-digest"),
            Some(digest.as_str()),
            "the registry's digest of the manifest differs from ours"
        );
        Ok(digest)
    }

    /// [`Registry::try_raw_push`] that panics when the registry refuses the manifest.
    pub fn raw_push(
        &self,
        repo: &str,
        tag: &str,
        manifest_json: &[u8],
        media_type: &str,
        blobs: &[&[u8]],
    ) -> String {
        self.try_raw_push(repo, tag, manifest_json, media_type, blobs)
            .unwrap_or_else(|reply| {
                panic!(
                    "the registry refused the manifest for {repo}:{tag}: {} {}",
                    reply.status,
                    reply.text()
                )
            })
    }

    /// The manifest digest as skopeo sees it: sha256 of `skopeo inspect --raw`. (Works for
    /// any artifact; `skopeo inspect --format {{.Digest}}` refuses non-image config types.)
    pub fn skopeo_digest(&self, reference: &str) -> String {
        let output = Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--raw"])
            .args(self.skopeo_creds("--creds"))
            .arg(format!("docker://{}", self.full_reference(reference)))
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running skopeo ({e}); scripts/install-test-deps.sh"));
        assert!(
            output.status.success(),
            "skopeo inspect {reference} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        sha256_digest(&output.stdout)
    }

    /// `skopeo copy docker://REF oci:DIR[:tag]`: the artifact as an OCI image layout in `dir`
    /// (the tag is the reference's, none for a `@digest` reference). Artifacts with non-image
    /// config types copy fine.
    pub fn skopeo_copy_to_layout(&self, reference: &str, dir: &Path) -> Output {
        let reference = self.full_reference(reference);
        let name = reference.rsplit('/').next().unwrap_or_default();
        let destination = match name.split_once(':') {
            Some((_, tag)) if !name.contains('@') => format!("oci:{}:{tag}", dir.display()),
            _ => format!("oci:{}", dir.display()),
        };
        Command::new("skopeo")
            .args(["copy", "--insecure-policy", "--src-tls-verify=false"])
            .args(self.skopeo_creds("--src-creds"))
            .arg(format!("docker://{reference}"))
            .arg(destination)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running skopeo ({e}); scripts/install-test-deps.sh"))
    }

    fn skopeo_creds(&self, flag: &str) -> Vec<String> {
        match &self.credentials {
            Some((user, password)) => vec![format!("{flag}={user}:{password}")],
            None => vec![],
        }
    }

    /// Pushes an artifact with oras-py: one layer per file (`(path, layer media type)`), and the
    /// config blob with its media type (`None`: oras-py's `{}` with
    /// `application/vnd.unknown.config.v1+json`). Returns the manifest digest.
    ///
    /// oras-py always writes an OCI image manifest with `"annotations": {}` and a layer
    /// annotation `org.opencontainers.image.title` = the file's name.
    pub fn oras_push(
        &self,
        reference: &str,
        files: &[(PathBuf, &str)],
        config: Option<(&[u8], &str)>,
    ) -> String {
        let scratch = tempfile::tempdir().expect("a temp dir for the oras config");
        let config = config.map(|(bytes, media_type)| {
            let path = scratch.path().join("config.json");
            std::fs::write(&path, bytes).expect("writing the config blob");
            format!("{}:{media_type}", path.display())
        });
        let files: Vec<(String, &str)> = files
            .iter()
            .map(|(path, media_type)| (path.display().to_string(), *media_type))
            .collect();
        let answer = self.oras(serde_json::json!({
            "op": "push",
            "target": self.full_reference(reference),
            "files": files,
            "config": config,
        }));
        answer["digest"]
            .as_str()
            .expect("oras-py reported no Docker-Content-Digest")
            .to_string()
    }

    /// The raw manifest bytes as oras-py fetches them, and the digest the registry reported
    /// for them (`Docker-Content-Digest`).
    pub fn oras_pull_manifest(&self, reference: &str) -> (Vec<u8>, String) {
        let answer = self.oras(serde_json::json!({
            "op": "pull_manifest",
            "target": self.full_reference(reference),
        }));
        let manifest = hex::decode(answer["manifest"].as_str().expect("a manifest"))
            .expect("hex from the oras script");
        let digest = match answer["digest"].as_str() {
            Some(digest) => digest.to_string(),
            None => sha256_digest(&manifest),
        };
        (manifest, digest)
    }

    /// `oras pull` into `outdir`: each layer written under its title annotation (or digest).
    pub fn oras_pull(&self, reference: &str, outdir: &Path) -> Vec<PathBuf> {
        let answer = self.oras(serde_json::json!({
            "op": "pull",
            "target": self.full_reference(reference),
            "outdir": outdir,
        }));
        answer["files"]
            .as_array()
            .expect("a list of files")
            .iter()
            .map(|f| PathBuf::from(f.as_str().expect("a path")))
            .collect()
    }

    fn oras(&self, mut args: serde_json::Value) -> serde_json::Value {
        let target = args["target"].as_str().expect("a target").to_string();
        args["host"] = target.split('/').next().unwrap_or_default().into();
        if let Some((user, password)) = &self.credentials {
            args["user"] = user.as_str().into();
            args["password"] = password.as_str().into();
        }
        let output = Command::new("python3")
            .arg("-c")
            .arg(ORAS_SCRIPT)
            .arg(args.to_string())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running python3 ({e})"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "oras-py {} failed (is it installed? scripts/install-test-deps.sh)\nstdout:\n{stdout}\n\
             stderr:\n{}",
            args["op"],
            String::from_utf8_lossy(&output.stderr)
        );
        let last = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(last).unwrap_or_else(|e| panic!("oras script said {stdout:?}: {e}"))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- registry {} log ---\n{}--- end of registry log ---",
                self.addr,
                self.log()
            );
        }
    }
}

/// oras-py driven by one JSON argument; prints one JSON line.
const ORAS_SCRIPT: &str = r#"
import json, sys
import oras.client, oras.defaults, oras.provider

# oras-py retries failed requests for minutes (sleeping 2 + 3**n s); fixtures want to fail fast.
oras.provider.Registry.do_request = oras.provider.Registry.do_request.__wrapped__

a = json.loads(sys.argv[1])
c = oras.client.OrasClient(
    hostname=a["host"], insecure=True, auth_backend="basic" if a.get("user") else "token"
)
if a.get("user"):
    c.auth.set_basic_auth(a["user"], a["password"])

op = a["op"]
if op == "push":
    r = c.push(
        target=a["target"],
        files=[f"{path}:{media_type}" for path, media_type in a["files"]],
        manifest_config=a.get("config"),
        disable_path_validation=True,
        quiet=True,
    )
    print(json.dumps({"status": r.status_code, "digest": r.headers.get("Docker-Content-Digest")}))
elif op == "pull_manifest":
    container = c.get_container(a["target"])
    c.auth.load_configs(container)
    accept = ", ".join(oras.defaults.default_manifest_accepted_media_types)
    r = c.do_request(f"{c.prefix}://{container.manifest_url()}", "GET", headers={"Accept": accept})
    c._check_200_response(r)
    print(json.dumps({"digest": r.headers.get("Docker-Content-Digest"), "manifest": r.content.hex()}))
elif op == "pull":
    files = c.pull(target=a["target"], outdir=a["outdir"])
    print(json.dumps({"files": files}))
else:
    sys.exit(f"unknown op {op}")
"#;

/// Polls `GET /v2/` until the registry with this token answers `expected`.
fn wait_ready(
    child: &mut Child,
    addr: SocketAddr,
    expected: u16,
    token: &str,
) -> Result<(), String> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("it exited ({status})"));
        }
        let reply = http_request_within(addr, "GET", "/v2/", &[], b"", Duration::from_secs(2));
        if let Ok(reply) = reply
            && reply.header("x-skiff-fixture") == Some(token)
            && reply.status == expected
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "no {expected} from GET /v2/ within {STARTUP_TIMEOUT:?}"
    ))
}

fn registry_config(root: &Path, addr: SocketAddr, token: &str, htpasswd: Option<&Path>) -> String {
    let mut config = format!(
        r#"version: 0.1
log:
  level: warn
  formatter: text
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: "{root}"
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: "{addr}"
  secret: "{secret}"
  headers:
    X-Skiff-Fixture: ["{token}"]
"#,
        root = root.display(),
        secret = random_hex(),
    );
    if let Some(path) = htpasswd {
        config.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: skiff-test\n    path: \"{}\"\n",
            path.display()
        ));
    }
    config
}

/// A port nobody listened on a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// 32 hex digits from std's randomly keyed hasher (no rand crate needed).
fn random_hex() -> String {
    let mut out = String::new();
    for _ in 0..2 {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        out.push_str(&format!("{:016x}", hasher.finish()));
    }
    out
}

fn base64(input: String) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = input.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A response read off the wire by [`http_request`].
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    /// In order, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawReply {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`), std only, so it works
/// inside and outside async tests. A body cut short of its `Content-Length` (or chunked
/// framing) is an `UnexpectedEof` error.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<RawReply> {
    http_request_within(addr, method, path, headers, body, IO_TIMEOUT)
}

/// [`http_request`] with another socket timeout.
pub fn http_request_within(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<RawReply> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut reader = BufReader::new(stream);
    let (status_line, headers) = loop {
        let Some(head) = read_head(&mut reader)? else {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        };
        // Skip interim responses (100 Continue).
        if !head.0.split(' ').nth(1).is_some_and(|s| s.starts_with('1')) {
            break head;
        }
    };
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, status_line.clone()))?;
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut out = Vec::new();
    if method != "HEAD" && status != 204 && status != 304 {
        if find("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            copy_chunked(&mut reader, &mut io::sink(), Some(&mut out))?;
        } else if let Some(length) = find("content-length") {
            let length: u64 = length
                .trim()
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length"))?;
            reader.by_ref().take(length).read_to_end(&mut out)?;
            if (out.len() as u64) < length {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("body cut after {} of {length} bytes", out.len()),
                ));
            }
        } else {
            reader.read_to_end(&mut out)?;
        }
    }
    Ok(RawReply {
        status,
        headers,
        body: out,
    })
}

/// A start line (request or status line) and the headers, in order.
type Head = (String, Vec<(String, String)>);

/// Reads a request or response head: the start line and the headers. `None` on a clean EOF
/// before the first byte.
fn read_head(reader: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut start = String::new();
    if reader.read_line(&mut start)? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    let mut total = start.len();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "EOF inside an HTTP head",
            ));
        }
        total += n;
        if total > 256 * 1024 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "HTTP head too big",
            ));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    Ok(Some((
        start.trim_end_matches(['\r', '\n']).to_string(),
        headers,
    )))
}

/// Copies a chunked body verbatim (framing included) to `to`, and its decoded data to
/// `decoded` if given.
fn copy_chunked(
    from: &mut impl BufRead,
    to: &mut impl Write,
    mut decoded: Option<&mut Vec<u8>>,
) -> io::Result<()> {
    let eof = || io::Error::new(io::ErrorKind::UnexpectedEof, "chunked body cut short");
    loop {
        let mut line = String::new();
        if from.read_line(&mut line)? == 0 {
            return Err(eof());
        }
        to.write_all(line.as_bytes())?;
        let size = line.trim().split(';').next().unwrap_or_default();
        let size = u64::from_str_radix(size.trim(), 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        if size == 0 {
            // Trailers, up to an empty line.
            loop {
                let mut line = String::new();
                if from.read_line(&mut line)? == 0 {
                    return Err(eof());
                }
                to.write_all(line.as_bytes())?;
                if line.trim().is_empty() {
                    return Ok(());
                }
            }
        }
        let mut data = Vec::new();
        from.take(size + 2).read_to_end(&mut data)?;
        if (data.len() as u64) < size + 2 {
            return Err(eof());
        }
        to.write_all(&data)?;
        if let Some(decoded) = decoded.as_deref_mut() {
            decoded.extend_from_slice(&data[..size as usize]);
        }
    }
}

/// What a [`FaultProxy`] does to the traffic.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Forwards everything, but a response to `GET .../blobs/<digest>` is cut (the connection
    /// closed) after this many body bytes; its headers, `Content-Length` included, are intact.
    CutBlobAfter(usize),
    /// Answers every request with this status and a small distribution-style JSON error body,
    /// without contacting upstream. A 401 carries `WWW-Authenticate: Basic realm="fault-proxy"`.
    Status(u16),
    /// Answers `GET`/`HEAD .../manifests/<ref>` itself with `200`, this body and content type,
    /// and `Docker-Content-Digest` = the body's sha256; forwards everything else. For
    /// manifests the registry will not hold (over 4 MiB) or ones that do not match the
    /// digest they were asked by.
    ServeManifest { media_type: String, body: Vec<u8> },
    /// Forwards everything untouched (to see, with [`FaultProxy::seen`], what a client asked).
    PassThrough,
    /// Token authentication in front of an anonymous registry, as Docker Hub and most cloud
    /// registries do it: a request without `Authorization: Bearer TOKEN` gets 401 with a
    /// `WWW-Authenticate: Bearer realm=".../token",service=...,scope=...` challenge; the realm
    /// hands out TOKEN for these basic credentials (and 401 otherwise).
    BearerAuth {
        user: String,
        password: String,
        token: String,
    },
}

/// A TCP proxy on 127.0.0.1 in front of a registry, injecting a [`Fault`]. One request per
/// client connection (it answers with `Connection: close`); stops accepting when dropped.
pub struct FaultProxy {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    pub fn start(upstream: SocketAddr, fault: Fault) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the fault proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let fault = Arc::new(fault);
        let acceptor = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let (seen, fault) = (seen.clone(), fault.clone());
                    std::thread::spawn(move || {
                        let _ = proxy_one(client, addr, upstream, &fault, &seen);
                    });
                }
            })
        };
        Self {
            addr,
            seen,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `127.0.0.1:PORT/<repo_and_tag>` through the proxy.
    pub fn reference(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.host())
    }

    /// The requests seen so far, as `METHOD /path?query`.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("the seen list").clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn proxy_one(
    client: TcpStream,
    proxy: SocketAddr,
    upstream: SocketAddr,
    fault: &Fault,
    seen: &Mutex<Vec<String>>,
) -> io::Result<()> {
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    client.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut to_client = client.try_clone()?;
    let mut from_client = BufReader::new(client);
    // A TLS ClientHello (clients that try https first, like skopeo): hang up, as a plain-HTTP
    // registry's refusal would make them fall back to http.
    if from_client.fill_buf()?.first() == Some(&0x16) {
        return Ok(());
    }
    let Some((request_line, headers)) = read_head(&mut from_client)? else {
        return Ok(());
    };
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    seen.lock()
        .expect("the seen list")
        .push(format!("{method} {target}"));
    let has = |name: &str, needle: &str| {
        headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case(name) && v.to_ascii_lowercase().contains(needle))
    };
    let expects_continue = has("expect", "100-continue");
    let path = target.split('?').next().unwrap_or_default();
    let canned = match fault {
        Fault::Status(code) => Some(canned_status(*code)),
        Fault::ServeManifest { media_type, body }
            if (method == "GET" || method == "HEAD") && path.contains("/manifests/") =>
        {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {media_type}\r\nContent-Length: {}\r\n\
                 Docker-Content-Digest: {}\r\nDocker-Distribution-Api-Version: registry/2.0\r\n\
                 Connection: close\r\n\r\n",
                body.len(),
                sha256_digest(body)
            );
            Some((head, body.clone()))
        }
        Fault::BearerAuth {
            user,
            password,
            token,
        } => bearer_gate(proxy, path, &headers, (user, password), token),
        _ => None,
    };

    if expects_continue {
        to_client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    if let Some((head, body)) = canned {
        // Read the request body first: closing with unread input would reset the connection
        // and could lose the answer.
        copy_body(&mut from_client, &headers, &mut io::sink())?;
        to_client.write_all(head.as_bytes())?;
        if method != "HEAD" {
            to_client.write_all(&body)?;
        }
        to_client.flush()?;
        let _ = to_client.shutdown(Shutdown::Write);
        return Ok(());
    }

    let upstream = TcpStream::connect_timeout(&upstream, IO_TIMEOUT)?;
    upstream.set_read_timeout(Some(IO_TIMEOUT))?;
    upstream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut to_upstream = upstream.try_clone()?;
    let mut head = format!("{request_line}\r\n");
    for (name, value) in &headers {
        if !is_hop_header(name) && !name.eq_ignore_ascii_case("expect") {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    to_upstream.write_all(head.as_bytes())?;
    copy_body(&mut from_client, &headers, &mut to_upstream)?;

    let mut from_upstream = BufReader::new(upstream);
    let Some((status_line, response_headers)) = read_head(&mut from_upstream)? else {
        return Ok(());
    };
    let mut head = format!("{status_line}\r\n");
    for (name, value) in &response_headers {
        if !is_hop_header(name) {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    to_client.write_all(head.as_bytes())?;
    if method != "HEAD" {
        let is_blob = path.contains("/blobs/") && !path.contains("/blobs/uploads");
        match fault {
            Fault::CutBlobAfter(limit) if method == "GET" && is_blob => {
                io::copy(&mut from_upstream.take(*limit as u64), &mut to_client)?;
            }
            // Upstream closes after the response (we asked it to), framing passes through.
            _ => {
                io::copy(&mut from_upstream, &mut to_client)?;
            }
        }
    }
    to_client.flush()?;
    let _ = to_client.shutdown(Shutdown::Both);
    Ok(())
}

fn is_hop_header(name: &str) -> bool {
    ["connection", "keep-alive", "proxy-connection"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

/// Copies a request body (`Content-Length` or chunked) verbatim.
fn copy_body(
    from: &mut impl BufRead,
    headers: &[(String, String)],
    to: &mut impl Write,
) -> io::Result<()> {
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_ascii_lowercase())
    };
    if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        copy_chunked(from, to, None)
    } else if let Some(length) = find("content-length").and_then(|v| v.parse::<u64>().ok()) {
        let copied = io::copy(&mut from.take(length), to)?;
        if copied < length {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "request body cut short",
            ));
        }
        Ok(())
    } else {
        Ok(())
    }
}

/// The token flow: `None` lets the request through, `Some` is the proxy's own answer.
fn bearer_gate(
    proxy: SocketAddr,
    path: &str,
    headers: &[(String, String)],
    (user, password): (&str, &str),
    token: &str,
) -> Option<(String, Vec<u8>)> {
    let authorization = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let json = |code: u16, reason: &str, body: String, extra: String| {
        let head = format!(
            "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             {extra}Connection: close\r\n\r\n",
            body.len()
        );
        Some((head, body.into_bytes()))
    };
    if path == "/token" {
        let basic = format!(
            "Basic {}",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("{user}:{password}")
            )
        );
        if authorization == basic {
            return json(
                200,
                "OK",
                format!(r#"{{"token":"{token}","access_token":"{token}"}}"#),
                String::new(),
            );
        }
        return json(
            401,
            "Unauthorized",
            r#"{"details":"bad credentials"}"#.into(),
            String::new(),
        );
    }
    if authorization == format!("Bearer {token}") {
        return None;
    }
    let repository = path
        .strip_prefix("/v2/")
        .and_then(|rest| rest.split("/manifests/").next())
        .and_then(|rest| rest.split("/blobs/").next())
        .filter(|r| !r.is_empty())
        .unwrap_or("");
    let scope = if repository.is_empty() {
        String::new()
    } else {
        format!(",scope=\"repository:{repository}:pull\"")
    };
    let challenge = format!(
        "WWW-Authenticate: Bearer realm=\"http://{proxy}/token\",service=\"fault-proxy\"{scope}\r\n"
    );
    let (_, body) = canned_status(401);
    json(
        401,
        "Unauthorized",
        String::from_utf8(body).unwrap_or_default(),
        challenge,
    )
}

fn canned_status(code: u16) -> (String, Vec<u8>) {
    let (reason, error) = match code {
        400 => ("Bad Request", "UNSUPPORTED"),
        401 => ("Unauthorized", "UNAUTHORIZED"),
        403 => ("Forbidden", "DENIED"),
        404 => ("Not Found", "NAME_UNKNOWN"),
        429 => ("Too Many Requests", "TOOMANYREQUESTS"),
        500 => ("Internal Server Error", "UNKNOWN"),
        502 => ("Bad Gateway", "UNKNOWN"),
        503 => ("Service Unavailable", "UNAVAILABLE"),
        _ => ("Injected", "UNKNOWN"),
    };
    let body = format!(
        r#"{{"errors":[{{"code":"{error}","message":"fault proxy: injected status {code}","detail":null}}]}}"#
    )
    .into_bytes();
    let mut head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n\
         Content-Length: {}\r\nDocker-Distribution-Api-Version: registry/2.0\r\n",
        body.len()
    );
    if code == 401 {
        head.push_str("WWW-Authenticate: Basic realm=\"fault-proxy\"\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    (head, body)
}

/// A tiny OCI artifact: a manifest with one layer and a config, with the blobs to push.
fn tiny_artifact(layer: &[u8], layer_type: &str) -> (Vec<u8>, Vec<u8>) {
    let config = b"{}".to_vec();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.skiff.test.config.v1+json",
            "digest": sha256_digest(&config),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": layer_type,
            "digest": sha256_digest(layer),
            "size": layer.len(),
        }],
    });
    (serde_json::to_vec(&manifest).expect("json"), config)
}

#[test]
fn registry_fixture_works() {
    let registry = Registry::start();
    let layer = b"\0asm\x01\0\0\0".as_slice();
    let (manifest, config) = tiny_artifact(layer, "application/wasm");
    let digest = registry.raw_push(
        "fixture/tiny",
        "v1",
        &manifest,
        OCI_MANIFEST,
        &[&config, layer],
    );
    assert_eq!(digest, sha256_digest(&manifest));
    assert_eq!(registry.skopeo_digest("fixture/tiny:v1"), digest);
    let (pulled, pulled_digest) =
        registry.oras_pull_manifest(&registry.reference("fixture/tiny:v1"));
    assert_eq!(pulled, manifest);
    assert_eq!(pulled_digest, digest);
    assert_eq!(sha256_digest(&pulled), digest);
    let on_disk =
        std::fs::read(registry.blob_path(&sha256_digest(layer))).expect("the stored blob");
    assert_eq!(on_disk, layer);

    // oras-py pushes with custom layer and config media types; skopeo agrees on the digest
    // and copies the artifact to a layout.
    let files = tempfile::tempdir().expect("temp dir");
    let file = files.path().join("module.wasm");
    std::fs::write(&file, layer).expect("writing a layer");
    let config_type = "application/vnd.skiff.test.config.v1+json";
    let pushed = registry.oras_push(
        "fixture/oras:v1",
        &[(file.clone(), "application/wasm")],
        Some((b"{}", config_type)),
    );
    let (raw, raw_digest) = registry.oras_pull_manifest("fixture/oras:v1");
    assert_eq!(raw_digest, pushed);
    assert_eq!(registry.skopeo_digest("fixture/oras:v1"), pushed);
    let parsed: serde_json::Value = serde_json::from_slice(&raw).expect("a JSON manifest");
    assert_eq!(parsed["config"]["mediaType"], config_type);
    assert_eq!(parsed["layers"][0]["mediaType"], "application/wasm");
    let layout = files.path().join("layout");
    let copied = registry.skopeo_copy_to_layout("fixture/oras:v1", &layout);
    assert!(
        copied.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let index = std::fs::read_to_string(layout.join("index.json")).expect("the layout's index");
    assert!(index.contains(&pushed), "{index}");

    // Basic auth: anonymous is turned away; the helpers bring the credentials.
    let guarded = Registry::start_with_auth("skiff", "s3cret");
    let anonymous = http_request(guarded.addr, "GET", "/v2/", &[], b"").expect("GET /v2/");
    assert_eq!(anonymous.status, 401);
    assert!(anonymous.header("www-authenticate").is_some());
    let digest = guarded.raw_push(
        "fixture/tiny",
        "v1",
        &manifest,
        OCI_MANIFEST,
        &[&config, layer],
    );
    assert_eq!(guarded.skopeo_digest("fixture/tiny:v1"), digest);
    assert_eq!(guarded.oras_pull_manifest("fixture/tiny:v1").1, digest);

    // Fault proxies.
    let failing = FaultProxy::start(registry.addr, Fault::Status(500));
    let reply = http_request(failing.addr, "GET", "/v2/", &[], b"").expect("GET /v2/");
    assert_eq!(reply.status, 500);
    assert!(reply.text().contains("UNKNOWN"), "{}", reply.text());
    let blob = format!("/v2/fixture/tiny/blobs/{}", sha256_digest(layer));
    let cut = FaultProxy::start(registry.addr, Fault::CutBlobAfter(3));
    let error = http_request(cut.addr, "GET", &blob, &[], b"").expect_err("a cut body");
    assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "{error}");
    let manifest_path = "/v2/fixture/tiny/manifests/v1";
    let reply = http_request(
        cut.addr,
        "GET",
        manifest_path,
        &[("Accept", OCI_MANIFEST)],
        b"",
    )
    .expect("the manifest through the proxy");
    assert_eq!(reply.body, manifest);
    assert_eq!(
        cut.seen(),
        [format!("GET {blob}"), format!("GET {manifest_path}")]
    );
    let big = vec![b' '; 5 << 20];
    let serving = FaultProxy::start(
        registry.addr,
        Fault::ServeManifest {
            media_type: OCI_MANIFEST.to_string(),
            body: big.clone(),
        },
    );
    let reply = http_request(serving.addr, "GET", manifest_path, &[], b"").expect("GET");
    assert_eq!(reply.body.len(), big.len());
    assert_eq!(
        reply.header("docker-content-digest"),
        Some(sha256_digest(&big).as_str())
    );
}

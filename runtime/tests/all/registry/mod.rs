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

mod http;
mod proxy;
mod setup;

pub use http::{RawReply, http_request, http_request_within};
use http::{copy_chunked, read_head};
pub use proxy::{Fault, FaultProxy};
use setup::{ORAS_SCRIPT, base64, free_port, random_hex, registry_config, wait_ready};

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

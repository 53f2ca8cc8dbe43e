//! Talking to registries: push a Wasm artifact, pull anything into the content store.
//!
//! Built on `oci-client` (the distribution protocol, the WWW-Authenticate challenge flow for
//! basic and bearer auth). skiff adds what users expect from Docker around it: plain HTTP only
//! for loopback and `--insecure-registry` hosts, credentials per registry, bounded manifests,
//! every blob verified by the content store before it becomes visible, and retries for blobs
//! cut off mid-transfer.

use super::artifact::{ImageManifest, WasmArtifact};
use super::digest::Digest;
use super::media_types as mt;
use super::reference::ImageRef;
use super::store::{ContentStore, StoreError};
use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use std::collections::BTreeMap;
use std::time::Duration;

/// Largest manifest or index skiff accepts (as containerd does).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Attempts per blob before a download fails.
const BLOB_ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{reference} not found; check the name and tag, or push it first")]
    NotFound { reference: String },

    #[error(
        "{reference}: access denied by the registry; run `skiff login {registry}` or check your credentials"
    )]
    Unauthorized { reference: String, registry: String },

    #[error("{reference}: the registry failed ({detail}); try again later")]
    Server { reference: String, detail: String },

    #[error(
        "cannot reach registry {registry} for {reference}: {detail}; check the address and that the registry is running"
    )]
    Unreachable {
        reference: String,
        registry: String,
        detail: String,
    },

    #[error(
        "{reference}: the manifest is {size} bytes, over the {MAX_MANIFEST_BYTES}-byte limit; refusing it"
    )]
    ManifestTooLarge { reference: String, size: usize },

    #[error("{reference}: unsupported manifest media type `{media_type}`")]
    UnsupportedMediaType {
        reference: String,
        media_type: String,
    },

    #[error(
        "{reference}: no image for platform {platform}; available: {available}; pass --platform to choose one"
    )]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },

    #[error("{reference}: invalid manifest: {detail}")]
    InvalidManifest { reference: String, detail: String },

    #[error(
        "{reference}: the registry sent content that does not match digest {expected} (got {actual}); nothing was stored"
    )]
    Tampered {
        reference: String,
        expected: String,
        actual: String,
    },

    #[error(
        "{reference}: blob {digest} is {actual} bytes but the manifest says {expected}; the \
         manifest does not describe this blob, and nothing was stored"
    )]
    SizeMismatch {
        reference: String,
        digest: Digest,
        expected: u64,
        actual: u64,
    },

    #[error(
        "{reference}: blob {digest} failed after {BLOB_ATTEMPTS} attempts: {detail}; check the network and try again"
    )]
    Download {
        reference: String,
        digest: Digest,
        detail: String,
    },

    #[error("{reference}: {error}")]
    Store {
        reference: String,
        error: StoreError,
    },

    #[error("{reference}: push failed: {detail}")]
    Push { reference: String, detail: String },
}

type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// How to reach registries. Empty by default: HTTPS everywhere but loopback, anonymous.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// Registries (`host[:port]`) reached over plain HTTP besides loopback, as Docker's
    /// `--insecure-registry`.
    pub insecure: Vec<String>,
    /// Username and password per registry host.
    pub credentials: BTreeMap<String, (String, String)>,
    /// The platform chosen from multi-platform indexes (default: this machine's, `linux/amd64`
    /// on x86_64).
    pub platform: Option<Platform>,
}

/// An `os/architecture[/variant]` pair as in image indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// This machine, in OCI's spelling.
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            other => other,
        };
        Self {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: None,
        }
    }
}

impl std::str::FromStr for Platform {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut parts = text.split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(os), Some(arch), variant, None) if !os.is_empty() && !arch.is_empty() => {
                Ok(Self {
                    os: os.into(),
                    architecture: arch.into(),
                    variant: variant.map(str::to_string),
                })
            }
            _ => Err(format!(
                "invalid platform `{text}`; write OS/ARCH[/VARIANT], e.g. linux/amd64"
            )),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(variant) => write!(f, "/{variant}"),
            None => Ok(()),
        }
    }
}

/// What a pull stored: the manifest chosen for this platform and its blobs.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// Digest of the top-level manifest or index the reference named.
    pub digest: Digest,
    /// Digest of the image manifest (differs from `digest` when an index was resolved).
    pub manifest_digest: Digest,
    pub manifest: ImageManifest,
    /// Bytes fetched from the network (0 when every blob was already stored).
    pub fetched_bytes: u64,
}

/// Progress of a pull or push, reported per blob.
pub trait Progress: Send + Sync {
    fn blob_started(&self, _digest: &Digest, _size: u64) {}
    fn blob_advanced(&self, _digest: &Digest, _bytes: u64) {}
    fn blob_finished(&self, _digest: &Digest, _skipped: bool) {}
}

/// Reports nothing.
pub struct Quiet;
impl Progress for Quiet {}

/// A registry client for one operation's worth of references.
pub struct Registry {
    config: RegistryConfig,
}

impl Registry {
    pub fn new(config: RegistryConfig) -> Self {
        // reqwest is built without a TLS provider of its own: use ring, which wasmtime's
        // HTTP support already links. Installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self { config }
    }

    fn client(&self, reference: &ImageRef) -> oci_client::Client {
        let plain_http = plain_http(reference, &self.config.insecure);
        let protocol = if plain_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        oci_client::Client::new(ClientConfig {
            protocol,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            ..ClientConfig::default()
        })
    }

    fn auth(&self, reference: &ImageRef) -> RegistryAuth {
        match self.config.credentials.get(reference.registry()) {
            Some((user, password)) => RegistryAuth::Basic(user.clone(), password.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    /// Checks the credentials configured for `registry` (`host[:port]`) by asking it for a
    /// manifest: "not found" means they were accepted, 401 means they were not.
    pub async fn check_login(&self, registry: &str) -> Result<()> {
        let probe: ImageRef = format!("{registry}/skiff/login-check:latest")
            .parse()
            .map_err(
                |e: super::reference::ReferenceError| RegistryError::InvalidManifest {
                    reference: registry.to_string(),
                    detail: e.to_string(),
                },
            )?;
        let client = self.client(&probe);
        match client
            .pull_manifest_raw(probe.as_oci(), &self.auth(&probe), mt::ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| map_error(&probe, e))
        {
            Ok(_) | Err(RegistryError::NotFound { .. }) => Ok(()),
            Err(RegistryError::Unauthorized { .. }) => Err(RegistryError::Unauthorized {
                reference: registry.to_string(),
                registry: registry.to_string(),
            }),
            Err(other) => Err(other),
        }
    }

    /// Pushes a packaged Wasm artifact; returns the manifest digest.
    #[tracing::instrument(skip_all, fields(reference = %reference), err(level = "debug"))]
    pub async fn push_artifact(
        &self,
        reference: &ImageRef,
        artifact: &WasmArtifact,
    ) -> Result<Digest> {
        let blobs = [&artifact.config, &artifact.layer];
        let manifest_type = mt::OCI_MANIFEST;
        self.push_raw(
            reference,
            &blobs.map(|b| b.as_slice()),
            &artifact.manifest,
            manifest_type,
        )
        .await?;
        Ok(artifact.manifest_digest.clone())
    }

    /// Pushes blobs (skipping those the registry has) and then a manifest.
    pub async fn push_raw(
        &self,
        reference: &ImageRef,
        blobs: &[&[u8]],
        manifest: &[u8],
        media_type: &str,
    ) -> Result<()> {
        let client = self.client(reference);
        let oci = reference.as_oci();
        let push_err = |e: OciDistributionError| map_error(reference, e);
        client
            .auth(
                oci,
                &self.auth(reference),
                oci_client::RegistryOperation::Push,
            )
            .await
            .map_err(push_err)?;
        for blob in blobs {
            let digest = Digest::of(blob).to_string();
            let present = client.blob_exists(oci, &digest).await.unwrap_or(false);
            if !present {
                client
                    .push_blob(oci, blob.to_vec(), &digest)
                    .await
                    .map_err(push_err)?;
            }
        }
        let content_type =
            http::HeaderValue::from_str(media_type).map_err(|e| RegistryError::Push {
                reference: reference.to_string(),
                detail: e.to_string(),
            })?;
        client
            .push_manifest_raw(oci, manifest.to_vec(), content_type)
            .await
            .map_err(push_err)?;
        Ok(())
    }

    /// Pulls `reference` into `store`: the manifest (choosing this platform from an index),
    /// its config and layers, each verified; blobs already stored are not fetched again.
    #[tracing::instrument(skip_all, fields(reference = %reference), err(level = "debug"))]
    pub async fn pull(
        &self,
        reference: &ImageRef,
        store: &ContentStore,
        progress: &dyn Progress,
    ) -> Result<Pulled> {
        let client = self.client(reference);
        let auth = self.auth(reference);
        let (top, top_digest, top_type) = self.fetch_manifest(&client, &auth, reference).await?;
        let (manifest_bytes, manifest_digest) = match top_type.as_str() {
            mt::OCI_INDEX | mt::DOCKER_MANIFEST_LIST => {
                let child = self.choose_platform(reference, &top)?;
                let pinned = reference.with_digest(&child);
                let (bytes, digest, media_type) =
                    self.fetch_manifest(&client, &auth, &pinned).await?;
                if !matches!(media_type.as_str(), mt::OCI_MANIFEST | mt::DOCKER_MANIFEST) {
                    return Err(RegistryError::UnsupportedMediaType {
                        reference: reference.to_string(),
                        media_type,
                    });
                }
                (bytes, digest)
            }
            _ => (top.clone(), top_digest.clone()),
        };
        let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes).map_err(|e| {
            RegistryError::InvalidManifest {
                reference: reference.to_string(),
                detail: e.to_string(),
            }
        })?;
        if manifest.config.media_type == mt::WASM_CONFIG {
            // Refuse an artifact skiff cannot run before fetching any of it.
            super::image::wasm_layer(&reference.to_string(), &manifest).map_err(|e| {
                RegistryError::InvalidManifest {
                    reference: reference.to_string(),
                    detail: e.to_string(),
                }
            })?;
        }
        // Blobs this pull adds are removed again if it fails: a refused pull changes nothing.
        let mut added = Vec::new();
        let fetch = BlobFetch {
            client: &client,
            reference,
            store,
            progress,
        };
        let fetched = fetch.all(&manifest, &mut added).await.and_then(|fetched| {
            // Manifests last: a stored manifest means its blobs are all there.
            let store_err = |source| RegistryError::Store {
                reference: reference.to_string(),
                error: source,
            };
            for (bytes, digest) in [(&manifest_bytes, &manifest_digest), (&top, &top_digest)] {
                if !store.contains(digest) {
                    store.put(bytes, Some(digest)).map_err(store_err)?;
                    added.push(digest.clone());
                }
            }
            Ok(fetched)
        });
        let fetched = match fetched {
            Ok(fetched) => fetched,
            Err(e) => {
                for digest in &added {
                    let _ = store.delete(digest);
                }
                return Err(e);
            }
        };
        Ok(Pulled {
            digest: top_digest,
            manifest_digest,
            manifest,
            fetched_bytes: fetched,
        })
    }

    /// Fetches a manifest or index: bounded in size, verified against its digest (and against
    /// the reference's pinned digest). Returns bytes, digest and media type.
    async fn fetch_manifest(
        &self,
        client: &oci_client::Client,
        auth: &RegistryAuth,
        reference: &ImageRef,
    ) -> Result<(Vec<u8>, Digest, String)> {
        let (bytes, _claimed) = client
            .pull_manifest_raw(reference.as_oci(), auth, mt::ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| map_error(reference, e))?;
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(RegistryError::ManifestTooLarge {
                reference: reference.to_string(),
                size: bytes.len(),
            });
        }
        let digest = Digest::of(&bytes);
        if let Some(pinned) = reference.digest()
            && pinned != digest.to_string()
        {
            return Err(RegistryError::Tampered {
                reference: reference.to_string(),
                expected: pinned.to_string(),
                actual: digest.to_string(),
            });
        }
        let media_type =
            manifest_media_type(&bytes).ok_or_else(|| RegistryError::InvalidManifest {
                reference: reference.to_string(),
                detail: "no mediaType and neither layers nor manifests".into(),
            })?;
        if !mt::ACCEPTED_MANIFESTS.contains(&media_type.as_str()) {
            return Err(RegistryError::UnsupportedMediaType {
                reference: reference.to_string(),
                media_type,
            });
        }
        Ok((bytes.to_vec(), digest, media_type))
    }

    fn choose_platform(&self, reference: &ImageRef, index: &[u8]) -> Result<String> {
        let want = self.config.platform.clone().unwrap_or_else(Platform::host);
        let index: serde_json::Value =
            serde_json::from_slice(index).map_err(|e| RegistryError::InvalidManifest {
                reference: reference.to_string(),
                detail: e.to_string(),
            })?;
        let entries = index["manifests"].as_array().cloned().unwrap_or_default();
        let platform_of = |entry: &serde_json::Value| {
            let p = &entry["platform"];
            Platform {
                os: p["os"].as_str().unwrap_or("").into(),
                architecture: p["architecture"].as_str().unwrap_or("").into(),
                variant: p["variant"].as_str().map(str::to_string),
            }
        };
        let matches = |p: &Platform| {
            p.os == want.os
                && p.architecture == want.architecture
                && (want.variant.is_none() || p.variant == want.variant)
        };
        // A Wasm image published in an index carries the `wasi/wasm` platform: accept it too.
        let wasm = |p: &Platform| p.architecture == "wasm";
        let chosen = entries
            .iter()
            .find(|e| matches(&platform_of(e)))
            .or_else(|| entries.iter().find(|e| wasm(&platform_of(e))));
        match chosen.and_then(|e| e["digest"].as_str()) {
            Some(digest) => Ok(digest.to_string()),
            None => Err(RegistryError::NoPlatform {
                reference: reference.to_string(),
                platform: want.to_string(),
                available: entries
                    .iter()
                    .map(|e| platform_of(e).to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

/// One pull's blob downloads: where from, where to, whom to tell.
struct BlobFetch<'a> {
    client: &'a oci_client::Client,
    reference: &'a ImageRef,
    store: &'a ContentStore,
    progress: &'a dyn Progress,
}

impl BlobFetch<'_> {
    async fn all(&self, manifest: &ImageManifest, added: &mut Vec<Digest>) -> Result<u64> {
        let mut fetched = 0;
        for descriptor in std::iter::once(&manifest.config).chain(&manifest.layers) {
            let bytes = self.blob(&descriptor.digest, descriptor.size).await?;
            if bytes > 0 {
                added.push(descriptor.digest.clone());
            }
            fetched += bytes;
        }
        Ok(fetched)
    }

    /// Downloads one blob into the store unless present; retries cut-off transfers.
    /// Returns the bytes fetched.
    async fn blob(&self, digest: &Digest, size: u64) -> Result<u64> {
        if self.store.contains(digest) {
            self.progress.blob_finished(digest, true);
            return Ok(0);
        }
        self.progress.blob_started(digest, size);
        let mut last_error = String::new();
        for attempt in 1..=BLOB_ATTEMPTS {
            match self.try_blob(digest, size).await {
                Ok(()) => {
                    self.progress.blob_finished(digest, false);
                    return Ok(size);
                }
                Err(FetchError::Fatal(e)) => return Err(e),
                Err(FetchError::Retry(detail)) => {
                    tracing::warn!(%digest, attempt, %detail, "blob download failed; retrying");
                    last_error = detail;
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
            }
        }
        Err(RegistryError::Download {
            reference: self.reference.to_string(),
            digest: digest.clone(),
            detail: last_error,
        })
    }

    async fn try_blob(&self, digest: &Digest, size: u64) -> Result<(), FetchError> {
        let digest_text = digest.to_string();
        let mut stream = match self
            .client
            .pull_blob_stream(self.reference.as_oci(), digest_text.as_str())
            .await
        {
            Ok(stream) => stream,
            Err(e @ OciDistributionError::RequestError(_)) => {
                return Err(FetchError::Retry(e.to_string()));
            }
            Err(e) => return Err(FetchError::Fatal(map_error(self.reference, e))),
        };
        let store_err = |source| {
            FetchError::Fatal(RegistryError::Store {
                reference: self.reference.to_string(),
                error: source,
            })
        };
        // The registry's own length for the blob: when it disagrees with the manifest the
        // manifest is wrong, and retrying cannot help.
        if let Some(announced) = stream.content_length
            && announced != size
        {
            return Err(FetchError::Fatal(RegistryError::SizeMismatch {
                reference: self.reference.to_string(),
                digest: digest.clone(),
                expected: size,
                actual: announced,
            }));
        }
        let mut ingest = self.store.ingest(Some(size)).map_err(store_err)?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| stream_error(self.reference, digest, e))?;
            if ingest.write_chunk(&chunk).is_err() {
                return Err(FetchError::Fatal(RegistryError::SizeMismatch {
                    reference: self.reference.to_string(),
                    digest: digest.clone(),
                    expected: size,
                    actual: ingest.written() + chunk.len() as u64,
                }));
            }
            self.progress.blob_advanced(digest, chunk.len() as u64);
        }
        match ingest.commit(digest) {
            Ok(_) => Ok(()),
            // Fewer bytes than announced: the connection was cut; try again.
            Err(StoreError::SizeMismatch { actual, .. }) => Err(FetchError::Retry(format!(
                "connection closed after {actual} of {size} bytes"
            ))),
            Err(StoreError::DigestMismatch { expected, actual }) => {
                Err(FetchError::Fatal(RegistryError::Tampered {
                    reference: self.reference.to_string(),
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                }))
            }
            Err(source) => Err(store_err(source)),
        }
    }
}

/// Plain HTTP only for this machine's registries and those named `--insecure-registry`, as
/// Docker does; HTTPS everywhere else.
fn plain_http(reference: &ImageRef, insecure: &[String]) -> bool {
    reference.is_loopback() || insecure.iter().any(|r| r == reference.registry())
}

enum FetchError {
    Retry(String),
    Fatal(RegistryError),
}

/// An error inside a blob stream: oci-client verifies digests as bytes arrive and reports a
/// mismatch as an I/O error carrying its `DigestError`; that is tampering, not a network
/// hiccup, and is not retried.
fn stream_error(reference: &ImageRef, digest: &Digest, err: std::io::Error) -> FetchError {
    use oci_client::errors::DigestError;
    match err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<DigestError>())
    {
        Some(DigestError::VerificationError { actual, .. }) => {
            FetchError::Fatal(RegistryError::Tampered {
                reference: reference.to_string(),
                expected: digest.to_string(),
                actual: actual.clone(),
            })
        }
        _ => FetchError::Retry(err.to_string()),
    }
}

/// A manifest's media type: its `mediaType` field, or inferred from its shape.
fn manifest_media_type(bytes: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if let Some(media_type) = json["mediaType"].as_str() {
        return Some(media_type.to_string());
    }
    if json.get("manifests").is_some() {
        Some(mt::OCI_INDEX.into())
    } else if json.get("layers").is_some() {
        Some(mt::OCI_MANIFEST.into())
    } else {
        None
    }
}

/// Turns oci-client's errors into messages that say what to do.
fn map_error(reference: &ImageRef, err: OciDistributionError) -> RegistryError {
    let reference_text = reference.to_string();
    let unauthorized = || RegistryError::Unauthorized {
        reference: reference_text.clone(),
        registry: reference.registry().to_string(),
    };
    match err {
        OciDistributionError::ImageManifestNotFoundError(_) => RegistryError::NotFound {
            reference: reference_text,
        },
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => unauthorized(),
        OciDistributionError::ServerError { code, message, .. } => match code {
            404 => RegistryError::NotFound {
                reference: reference_text,
            },
            401 | 403 => unauthorized(),
            _ => RegistryError::Server {
                reference: reference_text,
                detail: format!("HTTP {code}: {}", message.trim()),
            },
        },
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                )
            }) {
                RegistryError::NotFound {
                    reference: reference_text,
                }
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                unauthorized()
            } else {
                RegistryError::Server {
                    reference: reference_text,
                    detail: envelope.to_string(),
                }
            }
        }
        OciDistributionError::DigestError(oci_client::errors::DigestError::VerificationError {
            expected,
            actual,
        }) => RegistryError::Tampered {
            reference: reference_text,
            expected,
            actual,
        },
        OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
            RegistryError::Unreachable {
                reference: reference_text,
                registry: reference.registry().to_string(),
                detail: root_cause(&e),
            }
        }
        other => RegistryError::Server {
            reference: reference_text,
            detail: other.to_string(),
        },
    }
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_for_loopback_and_named_registries() {
        let insecure = vec!["registry.lan:5000".to_string()];
        let plain = |r: &str| plain_http(&r.parse().unwrap(), &insecure);
        // (oci-spec's reference grammar does not take IPv6 literals such as [::1]:5000.)
        assert!(plain("localhost:5000/a:1") && plain("127.0.0.1:5000/a:1"));
        assert!(plain("registry.lan:5000/a:1"));
        assert!(
            !plain("registry.lan/a:1"),
            "the port is part of the name, as in Docker"
        );
        assert!(!plain("ghcr.io/a:1") && !plain("busybox"));
    }

    #[test]
    fn platforms_parse_and_print() {
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert!("linux".parse::<Platform>().unwrap_err().contains("OS/ARCH"));
        assert_eq!(Platform::host().os, "linux");
    }

    #[test]
    fn media_types_are_read_or_inferred() {
        assert_eq!(
            manifest_media_type(br#"{"mediaType":"x/y"}"#).as_deref(),
            Some("x/y")
        );
        assert_eq!(
            manifest_media_type(br#"{"manifests":[]}"#).as_deref(),
            Some(mt::OCI_INDEX)
        );
        assert_eq!(
            manifest_media_type(br#"{"layers":[]}"#).as_deref(),
            Some(mt::OCI_MANIFEST)
        );
        assert_eq!(manifest_media_type(b"{}"), None);
        assert_eq!(manifest_media_type(b"not json"), None);
    }

    #[test]
    fn an_index_without_this_platform_names_what_it_has() {
        let registry = Registry::new(RegistryConfig {
            platform: Some("linux/riscv64".parse().unwrap()),
            ..RegistryConfig::default()
        });
        let index = br#"{"manifests":[
            {"digest":"sha256:aa","platform":{"os":"linux","architecture":"amd64"}},
            {"digest":"sha256:bb","platform":{"os":"linux","architecture":"arm64","variant":"v8"}}]}"#;
        let reference: ImageRef = "localhost:5000/x:1".parse().unwrap();
        let err = registry
            .choose_platform(&reference, index)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no image for platform linux/riscv64"), "{err}");
        assert!(
            err.contains("linux/amd64, linux/arm64/v8") && err.contains("--platform"),
            "{err}"
        );
    }
}

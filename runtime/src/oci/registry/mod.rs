//! Talking to registries: push a Wasm artifact, pull anything into the content store.
//!
//! Built on `oci-client` (the distribution protocol, the WWW-Authenticate challenge flow for
//! basic and bearer auth). skiff adds what users expect from Docker around it: plain HTTP only
//! for loopback and `--insecure-registry` hosts, credentials per registry, bounded manifests,
//! every blob verified by the content store before it becomes visible, and retries for blobs
//! cut off mid-transfer.

mod error;
mod fetch;
mod platform;

pub use error::RegistryError;
pub use platform::Platform;

use crate::oci::artifact::{ImageManifest, WasmArtifact};
use crate::oci::digest::Digest;
use crate::oci::media_types as mt;
use crate::oci::reference::ImageRef;
use crate::oci::store::ContentStore;
use error::{Result, map_error};
use fetch::BlobFetch;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use std::collections::BTreeMap;
use std::time::Duration;

/// Largest manifest or index skiff accepts (as containerd does).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Attempts per blob before a download fails.
const BLOB_ATTEMPTS: u32 = 3;

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
                let child = platform::choose(
                    &self.config.platform.clone().unwrap_or_else(Platform::host),
                    reference,
                    &top,
                )?;
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
}
/// Plain HTTP only for this machine's registries and those named `--insecure-registry`, as
/// Docker does; HTTPS everywhere else.
fn plain_http(reference: &ImageRef, insecure: &[String]) -> bool {
    reference.is_loopback() || insecure.iter().any(|r| r == reference.registry())
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
}

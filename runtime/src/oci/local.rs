//! Local images: the content store plus the name index, and the operations users name by
//! verb (pull, push, remove, inspect), each leaving store and index consistent.

use super::artifact::{self, ArtifactError, ImageManifest};
use super::digest::Digest;
use super::image::{self, ImageError, ImageKind};
use super::images::{ImageIndex, ImageRecord, IndexError};
use super::packed::{self, Found};
use super::reference::{ImageRef, ReferenceError};
use super::registry::{Progress, Registry, RegistryError};
use super::store::{ContentStore, StoreError};
use std::collections::BTreeSet;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{name}: {error}")]
    Packed {
        name: String,
        error: super::packed::PackedError,
    },
    #[error("image {name} is not stored; run `skiff pull {name}` or check `skiff images`")]
    Unknown { name: String },
    #[error(
        "stored manifest {digest} is unreadable ({detail}); remove it with `skiff rmi` and pull again"
    )]
    Corrupt { digest: Digest, detail: String },
    #[error("cannot read {path}: {error}")]
    ReadFile {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
}

type Result<T, E = ImagesError> = std::result::Result<T, E>;

/// The images on this node.
pub struct LocalImages {
    pub store: ContentStore,
    pub index: ImageIndex,
}

impl LocalImages {
    pub fn open(data_dir: &Path) -> Result<Self> {
        Ok(Self {
            store: ContentStore::open(data_dir.join("content"))?,
            index: ImageIndex::open(data_dir),
        })
    }

    /// Pulls `reference` and names it locally.
    pub async fn pull(
        &self,
        registry: &Registry,
        reference: &ImageRef,
        progress: &dyn Progress,
    ) -> Result<ImageRecord> {
        let pulled = registry.pull(reference, &self.store, progress).await?;
        let config = self.store.read(&pulled.manifest.config.digest)?;
        let kind = image::classify(&pulled.manifest, &config);
        if kind == ImageKind::Wasm {
            // Refuse what skiff cannot run before it gets a name; a `wasi/wasm` platform
            // image keeps its code in a tar layer, found at run time.
            match image::wasm_layer(&reference.to_string(), &pulled.manifest) {
                Ok(_) | Err(ImageError::PackedWasm { .. }) => {}
                Err(other) => return Err(other.into()),
            }
        }
        let record = ImageRecord {
            name: reference.to_string(),
            digest: pulled.digest,
            manifest: pulled.manifest_digest,
            kind,
            size: image_size(&pulled.manifest),
        };
        self.index.upsert(record.clone())?;
        Ok(record)
    }

    /// Packages a `.wasm` file as a CNCF Wasm artifact, stores it, names it and pushes it.
    pub async fn push_file(
        &self,
        registry: &Registry,
        file: &Path,
        reference: &ImageRef,
    ) -> Result<ImageRecord> {
        let wasm = std::fs::read(file).map_err(|source| ImagesError::ReadFile {
            path: file.to_path_buf(),
            error: source,
        })?;
        let title = file.file_name().map_or_else(
            || "module.wasm".into(),
            |n| n.to_string_lossy().into_owned(),
        );
        let artifact = artifact::package(&title, wasm, created_now())?;
        registry.push_artifact(reference, &artifact).await?;
        for blob in [&artifact.config, &artifact.layer, &artifact.manifest] {
            self.store.put(blob, None)?;
        }
        let manifest: ImageManifest =
            serde_json::from_slice(&artifact.manifest).expect("we just wrote it");
        let record = ImageRecord {
            name: reference.to_string(),
            digest: artifact.manifest_digest.clone(),
            manifest: artifact.manifest_digest,
            kind: ImageKind::Wasm,
            size: image_size(&manifest),
        };
        self.index.upsert(record.clone())?;
        Ok(record)
    }

    /// Pushes a stored image under `target` (another name or registry).
    pub async fn push_stored(
        &self,
        registry: &Registry,
        record: &ImageRecord,
        target: &ImageRef,
    ) -> Result<()> {
        let manifest_bytes = self.store.read(&record.manifest)?;
        let manifest = self.manifest(record)?;
        let mut blobs = Vec::new();
        for descriptor in std::iter::once(&manifest.config).chain(&manifest.layers) {
            blobs.push(self.store.read(&descriptor.digest)?);
        }
        let blob_refs: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
        let media_type = manifest
            .media_type
            .clone()
            .unwrap_or_else(|| super::media_types::OCI_MANIFEST.into());
        registry
            .push_raw(target, &blob_refs, &manifest_bytes, &media_type)
            .await?;
        Ok(())
    }

    /// The record a user's name refers to.
    pub fn get(&self, name: &str) -> Result<ImageRecord> {
        let normalised = name
            .parse::<ImageRef>()
            .map(|r| r.to_string())
            .unwrap_or_else(|_| name.to_string());
        let found = match self.index.find(&normalised)? {
            Some(record) => Some(record),
            None => self.index.find(name)?,
        };
        found.ok_or_else(|| ImagesError::Unknown {
            name: name.to_string(),
        })
    }

    /// The image manifest of a record.
    pub fn manifest(&self, record: &ImageRecord) -> Result<ImageManifest> {
        let bytes = self.store.read(&record.manifest)?;
        serde_json::from_slice(&bytes).map_err(|e| ImagesError::Corrupt {
            digest: record.manifest.clone(),
            detail: e.to_string(),
        })
    }

    /// A Wasm image's module or component bytes: its Wasm layer, or for a `wasi/wasm`
    /// platform image, the `.wasm` file its entrypoint names inside its tar layers.
    pub fn wasm_bytes(&self, record: &ImageRecord) -> Result<Vec<u8>> {
        let manifest = self.manifest(record)?;
        match image::wasm_layer(&record.name, &manifest) {
            Ok(layer) => Ok(self.store.read(&layer.digest)?),
            Err(ImageError::PackedWasm { .. }) => self.packed_entrypoint(record, &manifest),
            Err(other) => Err(other.into()),
        }
    }

    fn packed_entrypoint(&self, record: &ImageRecord, manifest: &ImageManifest) -> Result<Vec<u8>> {
        let config: serde_json::Value =
            serde_json::from_slice(&self.store.read(&manifest.config.digest)?).map_err(|e| {
                ImagesError::Corrupt {
                    digest: manifest.config.digest.clone(),
                    detail: e.to_string(),
                }
            })?;
        let entrypoint = config["config"]["Entrypoint"][0]
            .as_str()
            .or_else(|| config["config"]["Cmd"][0].as_str())
            .ok_or_else(|| ImageError::NoEntrypoint {
                name: record.name.clone(),
            })?;
        let packed_err = |source| ImagesError::Packed {
            name: record.name.clone(),
            error: source,
        };
        for layer in manifest.layers.iter().rev() {
            let blob = self.store.open_blob(&layer.digest)?;
            let tar = packed::layer_reader(&layer.media_type, std::io::BufReader::new(blob))
                .map_err(packed_err)?;
            match packed::find_in_layer(tar, entrypoint).map_err(packed_err)? {
                Found::File(bytes) => return Ok(bytes),
                Found::Deleted => break,
                Found::Absent => {}
            }
        }
        Err(ImageError::MissingEntrypoint {
            name: record.name.clone(),
            path: entrypoint.to_string(),
        }
        .into())
    }

    /// Manifest and config as JSON, for `skiff inspect`.
    pub fn inspect(&self, record: &ImageRecord) -> Result<serde_json::Value> {
        let manifest = self.manifest(record)?;
        let config = self.store.read(&manifest.config.digest)?;
        Ok(serde_json::json!({
            "Name": record.name,
            "Digest": record.digest,
            "Kind": record.kind,
            "Size": record.size,
            "Manifest": manifest,
            "Config": serde_json::from_slice::<serde_json::Value>(&config).unwrap_or(serde_json::Value::Null),
        }))
    }

    /// Removes a name, then every blob no remaining image references. Returns blobs removed.
    pub fn remove(&self, name: &str) -> Result<usize> {
        let record = self.get(name)?;
        self.index.remove(&record.name)?;
        self.prune()
    }

    /// The sha256 (hex) of every stored Wasm image's code: what compiled code to keep.
    pub fn wasm_code_digests(&self) -> Result<std::collections::HashSet<String>> {
        let mut digests = std::collections::HashSet::new();
        for record in self.index.list()? {
            if record.kind == ImageKind::Wasm
                && let Ok(manifest) = self.manifest(&record)
                && let Ok(layer) = image::wasm_layer(&record.name, &manifest)
            {
                digests.insert(layer.digest.hex().to_string());
            }
        }
        Ok(digests)
    }

    /// Removes blobs that no named image references, and stale ingest files.
    pub fn prune(&self) -> Result<usize> {
        let mut keep = BTreeSet::new();
        for record in self.index.list()? {
            keep.insert(record.digest.clone());
            keep.insert(record.manifest.clone());
            if let Ok(manifest) = self.manifest(&record) {
                keep.insert(manifest.config.digest.clone());
                keep.extend(manifest.layers.iter().map(|l| l.digest.clone()));
            }
        }
        let mut removed = 0;
        for digest in self.store.digests()? {
            if !keep.contains(&digest) && self.store.delete(&digest)? {
                removed += 1;
            }
        }
        self.store
            .prune_ingest(std::time::Duration::from_secs(3600))?;
        Ok(removed)
    }
}

fn image_size(manifest: &ImageManifest) -> u64 {
    manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>()
}

/// RFC 3339 UTC, as OCI configs write `created`.
fn created_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, seconds) = (now / 86_400, now % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_415), (2025, 11, 23));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(created_now().len(), "2026-11-23T00:00:00Z".len());
    }
}

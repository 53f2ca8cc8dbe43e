//! Step "prepare" of the data flow: a stored Linux image becomes the overlayfs lower dirs of
//! its containers.
//!
//! Owns `<data_dir>/linux/snapshots` (mode 0700, so the setuid files and devices-free but
//! still privileged trees inside are unreachable from the host), one directory per layer named
//! by the hex of the layer's OCI ChainID, holding that layer alone with whiteouts in overlayfs
//! form. Snapshots are shared by every container and image that has the same layer chain.
//!
//! A snapshot appears whole or not at all: a layer is unpacked into `.tmp-<pid>-*` beside the
//! snapshots, its DiffID checked against the image config, and the directory renamed into
//! place; a concurrent preparer that loses the rename uses the winner's. [`Snapshots::prune`]
//! removes snapshots no image names and temp dirs whose process is gone.
//!
//! It does not mount anything, create a container's upper dir, or know which containers run;
//! it unpacks through [`super::unpack`], which owns confinement.

use super::unpack::{UnpackError, UnpackLimits, unpack_layer};
use crate::oci::artifact::{Descriptor, ImageManifest};
use crate::oci::digest::{Digest, DigestError};
use crate::oci::image::ImageKind;
use crate::oci::images::ImageRecord;
use crate::oci::local::{ImagesError, LocalImages};
use crate::oci::packed::{self, PackedError};
use crate::oci::store::StoreError;
use oci_spec::image::ImageConfiguration;
use sha2::{Digest as _, Sha256};
use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Images(#[from] ImagesError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "image config {digest} is unreadable ({detail}); remove the image with `skiff rmi` and \
         pull it again"
    )]
    Config { digest: Digest, detail: String },
    #[error(
        "image config {digest} lists {diff_ids} layers but the manifest has {layers}; the image \
         is malformed, rebuild it"
    )]
    LayerCount {
        digest: Digest,
        diff_ids: usize,
        layers: usize,
    },
    #[error("image config names a malformed layer diff id: {error}; rebuild the image")]
    DiffId { error: DigestError },
    #[error("layer {layer}: {error}")]
    Layer { layer: Digest, error: PackedError },
    #[error("layer {layer}: {error}")]
    Unpack { layer: Digest, error: UnpackError },
    #[error(
        "layer {layer} unpacks to diff id {actual}, but the image config says {expected}; the \
         image is corrupt or was tampered with, remove it with `skiff rmi` and pull it again"
    )]
    DiffIdMismatch {
        layer: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error("snapshot store {path}: {error}")]
    Io { path: PathBuf, error: io::Error },
}

type Result<T, E = SnapshotError> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |error| SnapshotError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Temp dirs start with this, then the pid of their process.
const TEMP_PREFIX: &str = ".tmp-";

/// An image ready for a container: its lower dirs and its config.
#[derive(Debug)]
pub struct PreparedImage {
    /// Snapshot dirs, topmost layer first: the order overlayfs's `lowerdir=` wants. Empty for
    /// an image with no layers.
    pub lowers: Vec<PathBuf>,
    pub config: ImageConfiguration,
}

/// The layer snapshots on this node.
pub struct Snapshots {
    root: PathBuf,
}

impl Snapshots {
    /// Opens (creating if needed, mode 0700) `<data_dir>/linux/snapshots`.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let root = data_dir.join("linux/snapshots");
        fs::create_dir_all(&root).map_err(io_err(&root))?;
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).map_err(io_err(&root))?;
        Ok(Self { root })
    }

    /// The directory of the snapshot named by a chain id.
    pub fn path(&self, chain_id: &Digest) -> PathBuf {
        self.root.join(chain_id.hex())
    }

    /// Unpacks every layer of `record` that has no snapshot yet, each checked against the
    /// DiffID its config names.
    #[tracing::instrument(skip_all, fields(image = %record.name), err(level = "debug"))]
    pub fn prepare(
        &self,
        images: &LocalImages,
        record: &ImageRecord,
        limits: &UnpackLimits,
    ) -> Result<PreparedImage> {
        let manifest = images.manifest(record)?;
        let config = image_config(images, &manifest)?;
        let config_digest = &manifest.config.digest;
        let diff_ids = diff_ids(&config)?;
        if diff_ids.len() != manifest.layers.len() {
            return Err(SnapshotError::LayerCount {
                digest: config_digest.clone(),
                diff_ids: diff_ids.len(),
                layers: manifest.layers.len(),
            });
        }
        let chain = chain_of(&diff_ids);
        for ((layer, diff_id), chain_id) in manifest.layers.iter().zip(&diff_ids).zip(&chain) {
            if !self.path(chain_id).is_dir() {
                self.unpack(images, layer, diff_id, chain_id, limits)?;
            }
        }
        Ok(PreparedImage {
            lowers: chain.iter().rev().map(|id| self.path(id)).collect(),
            config,
        })
    }

    /// One layer into a temp dir, verified, then renamed into place.
    fn unpack(
        &self,
        images: &LocalImages,
        layer: &Descriptor,
        diff_id: &Digest,
        chain_id: &Digest,
        limits: &UnpackLimits,
    ) -> Result<()> {
        let temp = tempfile::Builder::new()
            .prefix(&format!("{TEMP_PREFIX}{}-", std::process::id()))
            .tempdir_in(&self.root)
            .map_err(io_err(&self.root))?;
        // The layer's root entry, if it has one, overrides this.
        fs::set_permissions(temp.path(), fs::Permissions::from_mode(0o755))
            .map_err(io_err(temp.path()))?;
        let blob = images.store.open_blob(&layer.digest)?;
        let tar =
            packed::layer_reader(&layer.media_type, io::BufReader::new(blob)).map_err(|error| {
                SnapshotError::Layer {
                    layer: layer.digest.clone(),
                    error,
                }
            })?;
        let report =
            unpack_layer(tar, temp.path(), limits).map_err(|error| SnapshotError::Unpack {
                layer: layer.digest.clone(),
                error,
            })?;
        if &report.diff_id != diff_id {
            return Err(SnapshotError::DiffIdMismatch {
                layer: layer.digest.clone(),
                expected: diff_id.clone(),
                actual: report.diff_id,
            });
        }
        // The rename must not become visible before the files it names are on disk.
        let dir = fs::File::open(temp.path()).map_err(io_err(temp.path()))?;
        nix::unistd::syncfs(&dir).map_err(|e| io_err(temp.path())(e.into()))?;
        let target = self.path(chain_id);
        let temp_path = temp.keep();
        if let Err(error) = fs::rename(&temp_path, &target) {
            fs::remove_dir_all(&temp_path).map_err(io_err(&temp_path))?;
            if !target.is_dir() {
                return Err(io_err(&target)(error));
            }
            tracing::debug!(%chain_id, "another preparer unpacked this layer first");
            return Ok(());
        }
        tracing::info!(
            layer = %layer.digest,
            %chain_id,
            expanded_bytes = report.expanded_bytes,
            skipped = report.skipped.len(),
            "layer unpacked"
        );
        Ok(())
    }

    /// Removes snapshots whose chain id is not in `keep`, and temp dirs whose process has
    /// exited. Returns the number of snapshots removed.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub fn prune(&self, keep: &HashSet<Digest>) -> Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.root).map_err(io_err(&self.root))? {
            let entry = entry.map_err(io_err(&self.root))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if let Some(rest) = name.strip_prefix(TEMP_PREFIX) {
                if !owner_alive(rest) {
                    fs::remove_dir_all(&path).map_err(io_err(&path))?;
                }
                continue;
            }
            let Ok(chain_id) = format!("sha256:{name}").parse::<Digest>() else {
                continue;
            };
            if keep.contains(&chain_id) {
                continue;
            }
            // Out of sight first, so a half-removed snapshot never looks whole.
            let doomed = self
                .root
                .join(format!("{TEMP_PREFIX}{}-rm-{name}", std::process::id()));
            fs::rename(&path, &doomed).map_err(io_err(&path))?;
            fs::remove_dir_all(&doomed).map_err(io_err(&doomed))?;
            removed += 1;
        }
        Ok(removed)
    }
}

/// The chain ids of every stored Linux image's layers: what [`Snapshots::prune`] keeps.
/// An image whose config cannot be read keeps nothing (it cannot be run either).
pub fn images_chain_ids(images: &LocalImages) -> Result<HashSet<Digest>> {
    let mut keep = HashSet::new();
    for record in images.index.list().map_err(ImagesError::from)? {
        if record.kind != ImageKind::Linux {
            continue;
        }
        let chain = images
            .manifest(&record)
            .map_err(SnapshotError::from)
            .and_then(|manifest| image_config(images, &manifest))
            .and_then(|config| chain_ids(&config));
        match chain {
            Ok(chain) => keep.extend(chain),
            Err(error) => tracing::warn!(image = %record.name, %error, "image config unreadable"),
        }
    }
    Ok(keep)
}

/// The OCI ChainIDs of an image's layers, bottom first: ChainID(L0) = DiffID(L0), and
/// ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln)).
pub fn chain_ids(config: &ImageConfiguration) -> Result<Vec<Digest>> {
    Ok(chain_of(&diff_ids(config)?))
}

fn chain_of(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut chain: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => diff_id.clone(),
            Some(parent) => {
                let mut hasher = Sha256::new();
                hasher.update(format!("{parent} {diff_id}"));
                Digest::from_hasher(hasher)
            }
        };
        chain.push(next);
    }
    chain
}

/// The config's DiffIDs, validated: a chain id names a directory.
fn diff_ids(config: &ImageConfiguration) -> Result<Vec<Digest>> {
    config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|text| {
            text.parse()
                .map_err(|error| SnapshotError::DiffId { error })
        })
        .collect()
}

fn image_config(images: &LocalImages, manifest: &ImageManifest) -> Result<ImageConfiguration> {
    let bytes = images.store.read(&manifest.config.digest)?;
    serde_json::from_slice(&bytes).map_err(|e| SnapshotError::Config {
        digest: manifest.config.digest.clone(),
        detail: e.to_string(),
    })
}

/// Whether the process that named a temp dir `<pid>-…` still runs.
fn owner_alive(rest: &str) -> bool {
    let pid = rest.split('-').next().and_then(|p| p.parse::<i32>().ok());
    let Some(pid) = pid.filter(|&pid| pid > 0) else {
        return false;
    };
    if pid == std::process::id() as i32 {
        return true;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::media_types as mt;
    use std::collections::BTreeMap;
    use std::io::Write;

    fn digest(hex_of: &[u8]) -> Digest {
        Digest::of(hex_of)
    }

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let (a, b, c) = (digest(b"a"), digest(b"b"), digest(b"c"));
        // printf 'sha256:<a> sha256:<b>' | sha256sum, and so on.
        let expected = [
            "sha256:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb",
            "sha256:51c0c8ace48498d6f5fee6b0592cc06f2da0f3cbe09c5a34a97dce85c3889676",
            "sha256:2fce7f8ce91bcf0a1428b36e1024639fdbd9469eea762dba98aa749631885106",
        ];
        let chain: Vec<String> = chain_of(&[a, b, c]).iter().map(|d| d.to_string()).collect();
        assert_eq!(chain, expected);
        assert!(chain_of(&[]).is_empty());
    }

    #[test]
    fn malformed_diff_ids_are_refused() {
        let config: ImageConfiguration = serde_json::from_value(serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": ["sha256:../../etc"]}
        }))
        .unwrap();
        assert!(matches!(
            chain_ids(&config),
            Err(SnapshotError::DiffId { .. })
        ));
    }

    /// A data dir with one stored Linux image made of `layers` (each a list of files);
    /// `wrong_diff_id` makes the config lie about the last layer.
    struct Fixture {
        data: tempfile::TempDir,
        images: LocalImages,
        record: ImageRecord,
    }

    fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, bytes) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_cksum();
            builder.append_data(&mut header, path, *bytes).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn fixture(layers: &[&[(&str, &[u8])]], wrong_diff_id: bool) -> Fixture {
        let data = tempfile::tempdir().unwrap();
        let images = LocalImages::open(data.path()).unwrap();
        let descriptor = |media_type: &str, bytes: &[u8]| Descriptor {
            media_type: media_type.into(),
            digest: images.store.put(bytes, None).unwrap(),
            size: bytes.len() as u64,
            annotations: BTreeMap::new(),
        };
        let mut descriptors = Vec::new();
        let mut diff_ids = Vec::new();
        for files in layers {
            let tar = layer_tar(files);
            diff_ids.push(Digest::of(&tar).to_string());
            descriptors.push(descriptor(mt::OCI_LAYER_GZIP, &gzip(&tar)));
        }
        if wrong_diff_id && let Some(last) = diff_ids.last_mut() {
            *last = Digest::of(b"not this layer").to_string();
        }
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids}
        }))
        .unwrap();
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(mt::OCI_MANIFEST.into()),
            artifact_type: None,
            config: descriptor(mt::OCI_CONFIG, &config),
            layers: descriptors,
            annotations: BTreeMap::new(),
        };
        let manifest_digest = images
            .store
            .put(&serde_json::to_vec(&manifest).unwrap(), None)
            .unwrap();
        let record = ImageRecord {
            name: "localhost/skiff/test:1".into(),
            digest: manifest_digest.clone(),
            manifest: manifest_digest,
            kind: ImageKind::Linux,
            size: 0,
        };
        images.index.upsert(record.clone()).unwrap();
        Fixture {
            data,
            images,
            record,
        }
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_two_layer_image_is_unpacked_once() {
        let image = fixture(
            &[&[("bin/sh", b"v1")], &[("bin/sh", b"v2"), ("etc/x", b"x")]],
            false,
        );
        let snapshots = Snapshots::open(image.data.path()).unwrap();
        let limits = UnpackLimits::default();
        let prepared = snapshots
            .prepare(&image.images, &image.record, &limits)
            .unwrap();
        assert_eq!(prepared.lowers.len(), 2);
        assert_eq!(fs::read(prepared.lowers[0].join("bin/sh")).unwrap(), b"v2");
        assert_eq!(fs::read(prepared.lowers[1].join("bin/sh")).unwrap(), b"v1");
        let chain = chain_ids(&prepared.config).unwrap();
        assert_eq!(prepared.lowers[1], snapshots.path(&chain[0]));
        assert_eq!(prepared.lowers[0], snapshots.path(&chain[1]));
        let root = image.data.path().join("linux/snapshots");
        assert_eq!(
            fs::metadata(&root).unwrap().permissions().mode() & 0o777,
            0o700
        );

        // Without its layer blobs, a second prepare can only succeed by unpacking nothing.
        let manifest = image.images.manifest(&image.record).unwrap();
        for layer in &manifest.layers {
            assert!(image.images.store.delete(&layer.digest).unwrap());
        }
        let again = snapshots
            .prepare(&image.images, &image.record, &limits)
            .unwrap();
        assert_eq!(again.lowers, prepared.lowers);
        assert_eq!(entries(&root).len(), 2);
    }

    #[test]
    fn a_wrong_diff_id_leaves_no_snapshot() {
        let image = fixture(&[&[("a", b"a")], &[("b", b"b")]], true);
        let snapshots = Snapshots::open(image.data.path()).unwrap();
        let error = snapshots
            .prepare(&image.images, &image.record, &UnpackLimits::default())
            .unwrap_err();
        assert!(
            matches!(error, SnapshotError::DiffIdMismatch { .. }),
            "{error}"
        );
        // The first layer is good and stays; the bad one left neither snapshot nor temp dir.
        assert_eq!(entries(&image.data.path().join("linux/snapshots")).len(), 1);
    }

    #[test]
    fn an_image_without_layers_has_no_lowers() {
        let image = fixture(&[], false);
        let snapshots = Snapshots::open(image.data.path()).unwrap();
        let prepared = snapshots
            .prepare(&image.images, &image.record, &UnpackLimits::default())
            .unwrap();
        assert!(prepared.lowers.is_empty());
    }

    #[test]
    fn prune_keeps_what_images_name() {
        let image = fixture(&[&[("a", b"a")], &[("b", b"b")]], false);
        let snapshots = Snapshots::open(image.data.path()).unwrap();
        let limits = UnpackLimits::default();
        let prepared = snapshots
            .prepare(&image.images, &image.record, &limits)
            .unwrap();
        let root = image.data.path().join("linux/snapshots");
        let orphan = snapshots.path(&Digest::of(b"orphan"));
        fs::create_dir(&orphan).unwrap();
        let abandoned = root.join(".tmp-999999999-abc");
        fs::create_dir(&abandoned).unwrap();
        let in_flight = root.join(format!(".tmp-{}-def", std::process::id()));
        fs::create_dir(&in_flight).unwrap();

        let keep = images_chain_ids(&image.images).unwrap();
        assert_eq!(keep.len(), 2);
        assert_eq!(snapshots.prune(&keep).unwrap(), 1);
        assert!(!orphan.exists() && !abandoned.exists() && in_flight.exists());
        assert!(prepared.lowers.iter().all(|l| l.is_dir()));

        image.images.index.remove(&image.record.name).unwrap();
        let keep = images_chain_ids(&image.images).unwrap();
        assert_eq!(snapshots.prune(&keep).unwrap(), 2);
        assert!(prepared.lowers.iter().all(|l| !l.exists()));
    }
}

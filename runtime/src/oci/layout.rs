//! Image archives: `skiff load` reads an OCI image layout or a `docker save` tarball into the
//! content store and names its images; `skiff save` writes stored images as an OCI image
//! layout tarball.
//!
//! Load makes one pass over the tar, so a pipe works as well as a file. Every regular file is
//! streamed through the store's ingest and commit, never held in memory: a file under
//! `blobs/sha256/` must match the digest its path names; any other (the layers and configs of
//! a `docker save` archive) is known by the digest computed on the way in. Only `oci-layout`,
//! `index.json` and `manifest.json` are read into memory, at most 4 MiB each. The images are
//! then resolved from the store: each manifest `index.json` lists (choosing this machine's
//! platform from an index), or each `manifest.json` entry turned into a Docker image manifest.
//! A load that fails removes every blob it added and names nothing; one that succeeds removes
//! the blobs it added that no loaded image uses. An entry with an absolute path or `..`
//! refuses the archive; nothing is ever written outside the store.
//!
//! This module neither unpacks layers (the Linux executor's job) nor decompresses archives
//! (it says how to decompress one first).

use super::artifact::{Descriptor, ImageManifest};
use super::digest::Digest;
use super::image::{self, ImageError, ImageKind};
use super::images::{ImageRecord, IndexError};
use super::local::{ImagesError, LocalImages};
use super::media_types as mt;
use super::reference::ImageRef;
use super::registry::{MAX_MANIFEST_BYTES, Platform};
use super::store::{ContentStore, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// containerd's annotation naming an image in a layout's index: the full reference.
pub const IMAGE_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// OCI's annotation naming an image in a layout's index: by the spec, usually just the tag.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

const OCI_LAYOUT: &str = "oci-layout";
const INDEX_JSON: &str = "index.json";
const MANIFEST_JSON: &str = "manifest.json";
/// The `oci-layout` file skiff writes.
const LAYOUT_VERSION: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;
/// How deep indexes may nest inside a layout.
const MAX_INDEX_DEPTH: usize = 4;
/// How many links a `manifest.json` path may go through.
const MAX_LINKS: usize = 8;
/// Bytes read from an archive at a time.
const CHUNK: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("cannot open {path}: {error}; check the path")]
    Open { path: PathBuf, error: io::Error },

    #[error(
        "{archive} is {format}-compressed; decompress it first, e.g. \
         `{format} -dc FILE | skiff load -i -`"
    )]
    Compressed {
        archive: String,
        format: &'static str,
    },

    #[error(
        "{archive} is not a tar archive, or is cut short or damaged ({detail}); load a tar \
         written by `skiff save`, `docker save` or `skopeo copy ... oci-archive:FILE`"
    )]
    Damaged { archive: String, detail: String },

    #[error("{archive}: entry `{entry}` has an absolute path or `..`; refusing the archive")]
    UnsafePath { archive: String, entry: String },

    #[error(
        "{archive} is neither an OCI image layout (no index.json at its top) nor a `docker save` \
         archive (no manifest.json); to archive a layout folder, run `tar -C DIR -cf FILE .`"
    )]
    Unrecognised { archive: String },

    #[error("{archive}: {entry} lists no images; nothing was loaded")]
    Empty {
        archive: String,
        entry: &'static str,
    },

    #[error("{archive}: {entry} is over the {MAX_MANIFEST_BYTES}-byte limit; refusing it")]
    TooLarge { archive: String, entry: String },

    #[error("{archive}: {entry} is invalid: {detail}")]
    Invalid {
        archive: String,
        entry: String,
        detail: String,
    },

    #[error(
        "{archive}: {entry} does not match its digest: expected {expected}, got {actual}; the \
         archive is corrupt or was tampered with, and nothing was loaded"
    )]
    Tampered {
        archive: String,
        entry: String,
        expected: Digest,
        actual: Digest,
    },

    #[error(
        "{archive}: {entry} says blob {digest} is {expected} bytes, but it is {actual}; the \
         archive is corrupt, and nothing was loaded"
    )]
    SizeMismatch {
        archive: String,
        entry: String,
        digest: Digest,
        expected: u64,
        actual: u64,
    },

    #[error(
        "{archive}: {entry} names blob {digest}, which is not in the archive; the archive is \
         incomplete, and nothing was loaded"
    )]
    MissingBlob {
        archive: String,
        entry: String,
        digest: Digest,
    },

    #[error(
        "{archive}: manifest.json names `{path}`, which is not in the archive; the archive is \
         incomplete, and nothing was loaded"
    )]
    MissingFile { archive: String, path: String },

    #[error(
        "{archive}: {entry} has media type `{media_type}`; skiff loads OCI and Docker image \
         manifests and indexes"
    )]
    UnsupportedMediaType {
        archive: String,
        entry: String,
        media_type: String,
    },

    #[error("{archive}: {entry} has no image for platform {platform}; available: {available}")]
    NoPlatform {
        archive: String,
        entry: String,
        platform: String,
        available: String,
    },

    #[error("{archive}: cannot store {entry}: {error}")]
    Ingest {
        archive: String,
        entry: String,
        error: io::Error,
    },

    #[error("{archive}: {error}")]
    Store { archive: String, error: StoreError },

    #[error("{archive}: {error}")]
    Image { archive: String, error: ImageError },

    #[error(transparent)]
    Images(#[from] ImagesError),

    #[error(transparent)]
    Index(#[from] IndexError),

    #[error("cannot write {path}: {error}; check that its folder exists and is writable")]
    Write { path: PathBuf, error: io::Error },
}

type Result<T, E = LayoutError> = std::result::Result<T, E>;

/// A layout's `index.json`, or an index inside it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LayoutIndex {
    #[serde(default)]
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    manifests: Vec<IndexEntry>,
}

/// A descriptor in an index: a manifest (or a nested index), its names and platform.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    #[serde(default)]
    media_type: String,
    digest: Digest,
    size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    platform: Option<EntryPlatform>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EntryPlatform {
    os: String,
    architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
}

/// One image in a `docker save` archive's `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

/// An image's name from its annotations in a layout's index: containerd's full name, else
/// OCI's ref name when it is a whole reference. A bare tag (`1.0`, what skopeo and umoci
/// write) names no repository, so the image stays unnamed, as containerd leaves it.
pub fn name_from_annotations(annotations: &BTreeMap<String, String>) -> Option<ImageRef> {
    let full = annotations.get(IMAGE_NAME_ANNOTATION);
    // A tag has neither `/` nor `:`; anything with them is a repository, maybe with a tag.
    let oci = annotations
        .get(REF_NAME_ANNOTATION)
        .filter(|name| name.contains(['/', ':', '@']));
    full.into_iter().chain(oci).find_map(|name| {
        name.parse()
            .inspect_err(|e| tracing::warn!(%name, error = %e, "ignoring an unusable image name"))
            .ok()
    })
}

/// Loads the archive at `path`; see [`load`].
pub fn load_file(images: &LocalImages, path: &Path) -> Result<Vec<ImageRecord>> {
    let file = std::fs::File::open(path).map_err(|error| LayoutError::Open {
        path: path.to_path_buf(),
        error,
    })?;
    load(images, file, &path.display().to_string())
}

/// Loads every image of the tar archive `reader` yields (`archive` names it in messages) and
/// names them; returns their records. On failure the store and names are as they were.
#[tracing::instrument(skip_all, fields(archive = %archive), err(level = "debug"))]
pub fn load(images: &LocalImages, reader: impl Read, archive: &str) -> Result<Vec<ImageRecord>> {
    let mut load = Load {
        images,
        archive: archive.to_string(),
        added: Vec::new(),
    };
    let loaded = load.run(reader);
    if loaded.is_err() {
        for digest in &load.added {
            let _ = images.store.delete(digest);
        }
    }
    loaded
}

/// What one pass over an archive found.
#[derive(Default)]
struct Scan {
    /// `oci-layout`, `index.json` and `manifest.json`, when present.
    metadata: BTreeMap<&'static str, Vec<u8>>,
    /// Every regular file, now in the store.
    files: BTreeMap<String, ScannedFile>,
    /// Symbolic and hard links: the archive path each points to.
    links: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
struct ScannedFile {
    digest: Digest,
    size: u64,
    gzip: bool,
}

impl Scan {
    /// The file at `path`, following links.
    fn file(&self, path: &str) -> Option<&ScannedFile> {
        let mut path = path;
        for _ in 0..=MAX_LINKS {
            if let Some(file) = self.files.get(path) {
                return Some(file);
            }
            path = self.links.get(path)?;
        }
        None
    }
}

/// A load in progress, and the blobs it added to the store.
struct Load<'a> {
    images: &'a LocalImages,
    archive: String,
    added: Vec<Digest>,
}

impl Load<'_> {
    fn run(&mut self, reader: impl Read) -> Result<Vec<ImageRecord>> {
        let scan = self.scan(reader)?;
        let (records, entry) = if scan.metadata.contains_key(INDEX_JSON) {
            (self.layout_images(&scan)?, INDEX_JSON)
        } else if scan.metadata.contains_key(MANIFEST_JSON) {
            (self.docker_images(&scan)?, MANIFEST_JSON)
        } else {
            return Err(LayoutError::Unrecognised {
                archive: self.archive.clone(),
            });
        };
        if records.is_empty() {
            return Err(LayoutError::Empty {
                archive: self.archive.clone(),
                entry,
            });
        }
        // One record per name: the last, as it would win in the index anyway.
        let mut seen = BTreeSet::new();
        let mut records: Vec<ImageRecord> = records
            .into_iter()
            .rev()
            .filter(|r| seen.insert(r.name.clone()))
            .collect();
        records.reverse();
        self.remove_unused(&records)?;
        self.name_all(&records)?;
        Ok(records)
    }

    fn scan(&mut self, reader: impl Read) -> Result<Scan> {
        let mut reader = BufReader::with_capacity(CHUNK, reader);
        let head = reader.fill_buf().map_err(|e| self.damaged(e))?;
        if let Some(format) = compression(head) {
            return Err(LayoutError::Compressed {
                archive: self.archive.clone(),
                format,
            });
        }
        let mut archive = tar::Archive::new(reader);
        let mut scan = Scan::default();
        for entry in archive.entries().map_err(|e| self.damaged(e))? {
            let mut entry = entry.map_err(|e| self.damaged(e))?;
            self.scan_entry(&mut entry, &mut scan)?;
        }
        Ok(scan)
    }

    fn scan_entry(&mut self, entry: &mut tar::Entry<'_, impl Read>, scan: &mut Scan) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let path = entry_path(&raw).ok_or_else(|| self.unsafe_path(&raw))?;
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry.link_name_bytes().unwrap_or_default().into_owned();
            let resolved = link_target(&path, &target, kind.is_symlink()).ok_or_else(|| {
                self.unsafe_path(
                    format!("{path} -> {}", String::from_utf8_lossy(&target)).as_bytes(),
                )
            })?;
            scan.links.insert(path, resolved);
        } else if kind.is_file() || kind.is_contiguous() {
            let size = entry.size();
            match [OCI_LAYOUT, INDEX_JSON, MANIFEST_JSON]
                .into_iter()
                .find(|m| *m == path)
            {
                Some(name) => {
                    let bytes = self.read_metadata(entry, name, size)?;
                    scan.metadata.insert(name, bytes);
                }
                None => {
                    let file = self.ingest(entry, &path, size)?;
                    scan.files.insert(path, file);
                }
            }
        }
        Ok(())
    }

    /// Reads a small metadata file whole, refusing one over the limit.
    fn read_metadata(&self, entry: &mut impl Read, name: &str, size: u64) -> Result<Vec<u8>> {
        let limit = MAX_MANIFEST_BYTES as u64;
        let mut bytes = Vec::with_capacity(size.min(limit) as usize);
        entry
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.damaged(e))?;
        if size > limit || bytes.len() as u64 > limit {
            return Err(LayoutError::TooLarge {
                archive: self.archive.clone(),
                entry: name.to_string(),
            });
        }
        Ok(bytes)
    }

    /// Streams one file into the store, verified against the digest its path names (if any).
    /// A blob already stored is only verified, not written again.
    fn ingest(&mut self, entry: &mut impl Read, path: &str, size: u64) -> Result<ScannedFile> {
        let store = &self.images.store;
        let expected = blob_digest(path);
        let mut ingest = match &expected {
            Some(digest) if store.contains(digest) => None,
            _ => Some(store.ingest(Some(size)).map_err(|e| self.store_err(e))?),
        };
        let mut hasher = Sha256::new();
        let mut head: Vec<u8> = Vec::with_capacity(2);
        let mut buf = vec![0; CHUNK];
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.damaged(e)),
            };
            let chunk = &buf[..n];
            hasher.update(chunk);
            head.extend(chunk.iter().take(2 - head.len()));
            if let Some(ingest) = &mut ingest {
                ingest
                    .write_chunk(chunk)
                    .map_err(|error| LayoutError::Ingest {
                        archive: self.archive.clone(),
                        entry: path.to_string(),
                        error,
                    })?;
            }
        }
        let actual = Digest::from_hasher(hasher);
        if let Some(expected) = expected
            && expected != actual
        {
            return Err(self.tampered(path, expected, actual));
        }
        if let Some(ingest) = ingest
            && !store.contains(&actual)
        {
            ingest.commit(&actual).map_err(|e| self.store_err(e))?;
            self.added.push(actual.clone());
        }
        Ok(ScannedFile {
            digest: actual,
            size,
            gzip: head == [0x1f, 0x8b],
        })
    }

    /// The images of an OCI image layout, each under its name from the annotations.
    fn layout_images(&mut self, scan: &Scan) -> Result<Vec<ImageRecord>> {
        if let Some(bytes) = scan.metadata.get(OCI_LAYOUT) {
            let layout: serde_json::Value = self.parse(OCI_LAYOUT, bytes)?;
            let version = layout["imageLayoutVersion"].as_str().unwrap_or("");
            if !version.starts_with("1.") {
                return Err(self.invalid(
                    OCI_LAYOUT,
                    format!("image layout version `{version}` is not supported; skiff reads 1.x"),
                ));
            }
        }
        let index: LayoutIndex = self.parse(INDEX_JSON, &scan.metadata[INDEX_JSON])?;
        let mut records = Vec::new();
        for (name, entry) in self.by_name(&index.manifests)? {
            records.push(self.layout_image(name, entry)?);
        }
        Ok(records)
    }

    /// The index's entries under their names; of entries sharing a name, the one for this
    /// machine (as when several platforms of one image are listed side by side).
    fn by_name<'e>(
        &self,
        entries: &'e [IndexEntry],
    ) -> Result<Vec<(Option<ImageRef>, &'e IndexEntry)>> {
        // An unnamed image goes by its digest: the same digest twice is one image.
        let key = |name: &Option<ImageRef>, entry: &IndexEntry| {
            name.as_ref()
                .map_or_else(|| entry.digest.to_string(), ToString::to_string)
        };
        let mut groups: Vec<(Option<ImageRef>, Vec<&IndexEntry>)> = Vec::new();
        for entry in entries {
            let name = name_from_annotations(&entry.annotations);
            match groups
                .iter_mut()
                .find(|(other, group)| key(other, group[0]) == key(&name, entry))
            {
                Some((_, group)) => group.push(entry),
                None => groups.push((name, vec![entry])),
            }
        }
        groups
            .into_iter()
            .map(|(name, group)| match choose_platform(&group) {
                Some(entry) => Ok((name, entry)),
                None => Err(self.no_platform(INDEX_JSON, &group)),
            })
            .collect()
    }

    /// Follows `top` through nested indexes to this machine's image manifest.
    fn layout_image(&mut self, name: Option<ImageRef>, top: &IndexEntry) -> Result<ImageRecord> {
        let mut entry = top.clone();
        let mut referrer = INDEX_JSON.to_string();
        for _ in 0..MAX_INDEX_DEPTH {
            let bytes = self.read_blob(&entry.digest, Some(entry.size), &referrer)?;
            let what = format!("manifest {}", entry.digest);
            match media_type(&entry.media_type, &bytes).as_str() {
                mt::OCI_INDEX | mt::DOCKER_MANIFEST_LIST => {
                    let nested: LayoutIndex = self.parse(&what, &bytes)?;
                    let group: Vec<&IndexEntry> = nested.manifests.iter().collect();
                    let chosen =
                        choose_platform(&group).ok_or_else(|| self.no_platform(&what, &group))?;
                    entry = chosen.clone();
                    referrer = what;
                }
                mt::OCI_MANIFEST | mt::DOCKER_MANIFEST => {
                    let manifest: ImageManifest = self.parse(&what, &bytes)?;
                    for layer in &manifest.layers {
                        self.check_blob(&layer.digest, Some(layer.size), &what)?;
                    }
                    let config = &manifest.config;
                    let config = self.read_blob(&config.digest, Some(config.size), &what)?;
                    let name = name.map_or_else(|| top.digest.to_string(), |n| n.to_string());
                    return self.record(name, &top.digest, &entry.digest, &manifest, &config);
                }
                other => {
                    return Err(LayoutError::UnsupportedMediaType {
                        archive: self.archive.clone(),
                        entry: what,
                        media_type: other.to_string(),
                    });
                }
            }
        }
        Err(self.invalid(
            format!("manifest {}", top.digest),
            format!("indexes nest more than {MAX_INDEX_DEPTH} deep"),
        ))
    }

    /// The images of a `docker save` archive, as Docker image manifests under their tags.
    fn docker_images(&mut self, scan: &Scan) -> Result<Vec<ImageRecord>> {
        let entries: Vec<DockerEntry> = self.parse(MANIFEST_JSON, &scan.metadata[MANIFEST_JSON])?;
        let mut records = Vec::new();
        for entry in &entries {
            records.extend(self.docker_image(scan, entry)?);
        }
        Ok(records)
    }

    fn docker_image(&mut self, scan: &Scan, entry: &DockerEntry) -> Result<Vec<ImageRecord>> {
        let config_file = self.docker_file(scan, &entry.config)?;
        let config = self.read_blob(&config_file.digest, None, MANIFEST_JSON)?;
        let mut layers = Vec::new();
        for path in &entry.layers {
            let file = self.docker_file(scan, path)?;
            let media_type = if file.gzip {
                mt::DOCKER_LAYER_GZIP
            } else {
                mt::DOCKER_LAYER_TAR
            };
            layers.push(descriptor(media_type, file.digest, file.size));
        }
        self.check_diff_ids(&entry.config, &config, &entry.layers, &layers)?;
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(mt::DOCKER_MANIFEST.into()),
            artifact_type: None,
            config: descriptor(mt::DOCKER_CONFIG, config_file.digest, config_file.size),
            layers,
            annotations: BTreeMap::new(),
        };
        let bytes = serde_json::to_vec(&manifest).expect("a manifest always serialises");
        let digest = Digest::of(&bytes);
        if !self.images.store.contains(&digest) {
            self.images
                .store
                .put(&bytes, Some(&digest))
                .map_err(|e| self.store_err(e))?;
            self.added.push(digest.clone());
        }
        let mut names = Vec::new();
        for tag in entry.repo_tags.iter().flatten() {
            let name: ImageRef = tag.parse().map_err(|e| self.invalid(MANIFEST_JSON, e))?;
            names.push(name.to_string());
        }
        if names.is_empty() {
            names.push(digest.to_string());
        }
        names
            .into_iter()
            .map(|name| self.record(name, &digest, &digest, &manifest, &config))
            .collect()
    }

    /// A file `manifest.json` names. Docker names a config by its digest (`<hex>.json`): such
    /// a name must match the content.
    fn docker_file(&self, scan: &Scan, path: &str) -> Result<ScannedFile> {
        let missing = || LayoutError::MissingFile {
            archive: self.archive.clone(),
            path: path.to_string(),
        };
        let normal = entry_path(path.as_bytes()).ok_or_else(missing)?;
        let file = scan.file(&normal).ok_or_else(missing)?.clone();
        let stem = normal.rsplit('/').next().unwrap_or_default();
        if let Some(hex) = stem.strip_suffix(".json")
            && let Ok(named) = format!("sha256:{hex}").parse::<Digest>()
            && named != file.digest
        {
            return Err(self.tampered(path, named, file.digest));
        }
        Ok(file)
    }

    /// An uncompressed layer's digest is its diff ID: check it against the config's
    /// `rootfs.diff_ids`, as `docker load` does. (A gzip layer's diff ID is that of its
    /// decompressed bytes; the executor that unpacks it checks it.)
    fn check_diff_ids(
        &self,
        config_path: &str,
        config: &[u8],
        paths: &[String],
        layers: &[Descriptor],
    ) -> Result<()> {
        let config: serde_json::Value = self.parse(config_path, config)?;
        let Some(diff_ids) = config["rootfs"]["diff_ids"].as_array() else {
            return Ok(());
        };
        if diff_ids.len() != layers.len() {
            let detail = format!(
                "it lists {} diff_ids for {} layers in manifest.json",
                diff_ids.len(),
                layers.len()
            );
            return Err(self.invalid(config_path, detail));
        }
        for ((path, layer), diff_id) in paths.iter().zip(layers).zip(diff_ids) {
            let diff_id: Digest = serde_json::from_value(diff_id.clone())
                .map_err(|e| self.invalid(config_path, e))?;
            if layer.media_type == mt::DOCKER_LAYER_TAR && diff_id != layer.digest {
                return Err(self.tampered(path, diff_id, layer.digest.clone()));
            }
        }
        Ok(())
    }

    /// The record naming an image. A Wasm artifact with several Wasm layers is refused, as on
    /// pull; a Wasm image packed in tar layers is not (skiff finds its entrypoint in them).
    fn record(
        &self,
        name: String,
        digest: &Digest,
        manifest_digest: &Digest,
        manifest: &ImageManifest,
        config: &[u8],
    ) -> Result<ImageRecord> {
        let kind = image::classify(manifest, config);
        if kind == ImageKind::Wasm
            && let Err(error @ ImageError::WasmLayers { .. }) = image::wasm_layer(&name, manifest)
        {
            return Err(LayoutError::Image {
                archive: self.archive.clone(),
                error,
            });
        }
        Ok(ImageRecord {
            name,
            digest: digest.clone(),
            manifest: manifest_digest.clone(),
            kind,
            size: manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>(),
        })
    }

    /// Checks that a blob a descriptor names is stored, with the size the descriptor states;
    /// returns its size.
    fn check_blob(&self, digest: &Digest, size: Option<u64>, referrer: &str) -> Result<u64> {
        let stored = match self.images.store.size(digest) {
            Ok(stored) => stored,
            Err(StoreError::NotFound { .. }) => {
                return Err(LayoutError::MissingBlob {
                    archive: self.archive.clone(),
                    entry: referrer.to_string(),
                    digest: digest.clone(),
                });
            }
            Err(e) => return Err(self.store_err(e)),
        };
        match size {
            Some(expected) if expected != stored => Err(LayoutError::SizeMismatch {
                archive: self.archive.clone(),
                entry: referrer.to_string(),
                digest: digest.clone(),
                expected,
                actual: stored,
            }),
            _ => Ok(stored),
        }
    }

    /// A manifest, index or config from the store, checked as [`Self::check_blob`] does and
    /// at most 4 MiB.
    fn read_blob(&self, digest: &Digest, size: Option<u64>, referrer: &str) -> Result<Vec<u8>> {
        if self.check_blob(digest, size, referrer)? > MAX_MANIFEST_BYTES as u64 {
            return Err(LayoutError::TooLarge {
                archive: self.archive.clone(),
                entry: format!("blob {digest}"),
            });
        }
        self.images
            .store
            .read(digest)
            .map_err(|e| self.store_err(e))
    }

    /// Removes the blobs this load added that no loaded image uses (a `docker save` archive's
    /// legacy metadata, blobs a layout kept after their image was gone).
    fn remove_unused(&mut self, records: &[ImageRecord]) -> Result<()> {
        let mut used = BTreeSet::new();
        for record in records {
            let manifest = self.images.manifest(record)?;
            used.extend([record.digest.clone(), record.manifest.clone()]);
            used.insert(manifest.config.digest);
            used.extend(manifest.layers.into_iter().map(|l| l.digest));
        }
        let (kept, unused): (Vec<Digest>, Vec<Digest>) = std::mem::take(&mut self.added)
            .into_iter()
            .partition(|d| used.contains(d));
        self.added = kept;
        for digest in unused {
            let _ = self.images.store.delete(&digest);
        }
        Ok(())
    }

    /// Names the loaded images. If the index cannot be written, the names are put back.
    fn name_all(&self, records: &[ImageRecord]) -> Result<()> {
        let index = &self.images.index;
        let before = index.list()?;
        for (done, record) in records.iter().enumerate() {
            if let Err(e) = index.upsert(record.clone()) {
                for undo in &records[..done] {
                    let _ = match before.iter().find(|r| r.name == undo.name) {
                        Some(old) => index.upsert(old.clone()),
                        None => index.remove(&undo.name).map(|_| ()),
                    };
                }
                return Err(e.into());
            }
        }
        Ok(())
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, entry: &str, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|e| self.invalid(entry, e))
    }

    fn damaged(&self, err: io::Error) -> LayoutError {
        LayoutError::Damaged {
            archive: self.archive.clone(),
            detail: err.to_string(),
        }
    }

    fn unsafe_path(&self, raw: &[u8]) -> LayoutError {
        LayoutError::UnsafePath {
            archive: self.archive.clone(),
            entry: String::from_utf8_lossy(raw).into_owned(),
        }
    }

    fn invalid(&self, entry: impl Into<String>, detail: impl ToString) -> LayoutError {
        LayoutError::Invalid {
            archive: self.archive.clone(),
            entry: entry.into(),
            detail: detail.to_string(),
        }
    }

    fn tampered(&self, entry: &str, expected: Digest, actual: Digest) -> LayoutError {
        LayoutError::Tampered {
            archive: self.archive.clone(),
            entry: entry.to_string(),
            expected,
            actual,
        }
    }

    fn store_err(&self, error: StoreError) -> LayoutError {
        LayoutError::Store {
            archive: self.archive.clone(),
            error,
        }
    }

    fn no_platform(&self, entry: &str, group: &[&IndexEntry]) -> LayoutError {
        let available: Vec<String> = group
            .iter()
            .map(|e| match &e.platform {
                Some(p) => format!("{}/{}", p.os, p.architecture),
                None => format!("{} (no platform)", e.digest),
            })
            .collect();
        LayoutError::NoPlatform {
            archive: self.archive.clone(),
            entry: entry.to_string(),
            platform: Platform::host().to_string(),
            available: available.join(", "),
        }
    }
}

/// Of several manifests, the one for this machine, else a Wasm one (it runs anywhere); when
/// none states a platform, the first.
fn choose_platform<'e>(entries: &[&'e IndexEntry]) -> Option<&'e IndexEntry> {
    let host = Platform::host();
    let find = |wanted: &dyn Fn(&EntryPlatform) -> bool| {
        let mut found = entries.iter().copied();
        found.find(|e| e.platform.as_ref().is_some_and(wanted))
    };
    find(&|p| p.os == host.os && p.architecture == host.architecture)
        .or_else(|| find(&|p| p.architecture == "wasm"))
        .or_else(|| {
            let unstated = entries.iter().all(|e| e.platform.is_none());
            entries.first().copied().filter(|_| unstated)
        })
}

/// A descriptor's media type, else the manifest's own, else inferred from its shape.
fn media_type(stated: &str, bytes: &[u8]) -> String {
    if !stated.is_empty() {
        return stated.to_string();
    }
    let json: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    match json["mediaType"].as_str() {
        Some(own) => own.to_string(),
        None if json.get("manifests").is_some() => mt::OCI_INDEX.into(),
        None => mt::OCI_MANIFEST.into(),
    }
}

fn descriptor(media_type: &str, digest: Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest,
        size,
        annotations: BTreeMap::new(),
    }
}

/// The compression an archive starts with, if any.
fn compression(head: &[u8]) -> Option<&'static str> {
    const MAGIC: &[(&[u8], &str)] = &[
        (&[0x1f, 0x8b], "gzip"),
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
        (b"BZh", "bzip2"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0], "xz"),
    ];
    MAGIC
        .iter()
        .find(|(magic, _)| head.starts_with(magic))
        .map(|(_, format)| *format)
}

/// The digest a layout's blob path names: `blobs/sha256/<hex>`.
fn blob_digest(path: &str) -> Option<Digest> {
    let hex = path.strip_prefix("blobs/sha256/")?;
    format!("sha256:{hex}").parse().ok()
}

/// An entry's path as `a/b/c`, without `.` parts; `None` if it is absolute or has `..`.
fn entry_path(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    if text.starts_with('/') {
        return None;
    }
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

/// Where a link points, as an archive path: a symbolic link's target is relative to its own
/// folder, a hard link's to the archive's top. `None` if it is absolute or leaves the archive.
fn link_target(link: &str, target: &[u8], symbolic: bool) -> Option<String> {
    let target = String::from_utf8_lossy(target);
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = match link.rsplit_once('/') {
        Some((folder, _)) if symbolic => folder.split('/').collect(),
        _ => Vec::new(),
    };
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

/// Writes the images `names` name to `output` as an OCI image layout tar, replacing it only
/// once complete; returns their records.
#[tracing::instrument(skip_all, fields(output = %output.display()), err(level = "debug"))]
pub fn save(images: &LocalImages, names: &[String], output: &Path) -> Result<Vec<ImageRecord>> {
    let store_err = |error| LayoutError::Store {
        archive: output.display().to_string(),
        error,
    };
    let mut records = Vec::new();
    let mut manifests = Vec::new();
    let mut blobs = BTreeSet::new();
    for name in names {
        let record = images.get(name)?;
        if records.contains(&record) {
            continue;
        }
        let manifest = images.manifest(&record)?;
        manifests.push(IndexEntry {
            media_type: manifest
                .media_type
                .unwrap_or_else(|| mt::OCI_MANIFEST.into()),
            digest: record.manifest.clone(),
            size: images.store.size(&record.manifest).map_err(store_err)?,
            annotations: name_annotations(&record.name),
            platform: None,
        });
        blobs.extend([record.manifest.clone(), manifest.config.digest]);
        blobs.extend(manifest.layers.into_iter().map(|l| l.digest));
        records.push(record);
    }
    let index = LayoutIndex {
        schema_version: 2,
        media_type: Some(mt::OCI_INDEX.into()),
        manifests,
    };
    write_layout(&images.store, &index, &blobs, output)?;
    Ok(records)
}

/// The annotations naming an image in a layout's index: containerd's full name and OCI's tag.
/// An image known only by its digest gets none.
fn name_annotations(name: &str) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::new();
    if name.parse::<Digest>().is_err() {
        annotations.insert(IMAGE_NAME_ANNOTATION.into(), name.into());
        if let Some(tag) = name
            .parse::<ImageRef>()
            .ok()
            .and_then(|r| r.tag().map(str::to_string))
        {
            annotations.insert(REF_NAME_ANNOTATION.into(), tag);
        }
    }
    annotations
}

/// Writes the layout to a temporary file beside `output`, then renames it into place.
fn write_layout(
    store: &ContentStore,
    index: &LayoutIndex,
    blobs: &BTreeSet<Digest>,
    output: &Path,
) -> Result<()> {
    let write_err = |error| LayoutError::Write {
        path: output.to_path_buf(),
        error,
    };
    let store_err = |error| LayoutError::Store {
        archive: output.display().to_string(),
        error,
    };
    let folder = match output.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => Path::new("."),
    };
    let tmp = tempfile::NamedTempFile::new_in(folder).map_err(write_err)?;
    let mut tar = tar::Builder::new(io::BufWriter::new(tmp));
    let index_json = serde_json::to_vec(index).expect("an index always serialises");
    let layout = LAYOUT_VERSION.as_bytes();
    append(&mut tar, OCI_LAYOUT, layout.len() as u64, layout).map_err(write_err)?;
    append(
        &mut tar,
        INDEX_JSON,
        index_json.len() as u64,
        &index_json[..],
    )
    .map_err(write_err)?;
    for folder in ["blobs/", "blobs/sha256/"] {
        append(&mut tar, folder, 0, io::empty()).map_err(write_err)?;
    }
    for digest in blobs {
        let size = store.size(digest).map_err(store_err)?;
        let blob = store.open_blob(digest).map_err(store_err)?;
        let path = format!("blobs/sha256/{}", digest.hex());
        append(&mut tar, &path, size, blob).map_err(write_err)?;
    }
    let tmp = tar
        .into_inner()
        .map_err(write_err)?
        .into_inner()
        .map_err(|e| write_err(e.into_error()))?;
    use std::os::unix::fs::PermissionsExt;
    let file = tmp.as_file();
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
        .and_then(|()| file.sync_all())
        .map_err(write_err)?;
    tmp.persist(output).map_err(|e| write_err(e.error))?;
    Ok(())
}

/// Appends an entry owned by root and dated now: a folder when `path` ends in `/`.
fn append(
    tar: &mut tar::Builder<impl Write>,
    path: &str,
    size: u64,
    data: impl Read,
) -> io::Result<()> {
    let folder = path.ends_with('/');
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(match folder {
        true => tar::EntryType::Directory,
        false => tar::EntryType::Regular,
    });
    header.set_mode(if folder { 0o755 } else { 0o644 });
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    header.set_mtime(now.map_or(0, |d| d.as_secs()));
    tar.append_data(&mut header, path, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::artifact;
    use crate::oci::images::ImageRecord;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn name(pairs: &[(&str, &str)]) -> Option<String> {
        name_from_annotations(&annotations(pairs)).map(|r| r.to_string())
    }

    #[test]
    fn names_come_from_containerd_else_a_whole_oci_ref_name() {
        let full = "localhost:5000/app:1.0";
        assert_eq!(
            name(&[(IMAGE_NAME_ANNOTATION, full), (REF_NAME_ANNOTATION, "1.0")]).as_deref(),
            Some(full)
        );
        assert_eq!(
            name(&[(REF_NAME_ANNOTATION, "busybox:1.36")]).as_deref(),
            Some("docker.io/library/busybox:1.36")
        );
        assert_eq!(
            name(&[(REF_NAME_ANNOTATION, "ghcr.io/x/y")]).as_deref(),
            Some("ghcr.io/x/y:latest")
        );
        // A bare tag names no repository: unnamed, as containerd leaves it.
        assert_eq!(name(&[(REF_NAME_ANNOTATION, "1.0")]), None);
        assert_eq!(name(&[(REF_NAME_ANNOTATION, "latest")]), None);
        assert_eq!(name(&[]), None);
        // An unusable containerd name falls back to the OCI one.
        assert_eq!(
            name(&[
                (IMAGE_NAME_ANNOTATION, "Not A Name"),
                (REF_NAME_ANNOTATION, "a/b:2")
            ])
            .as_deref(),
            Some("docker.io/a/b:2")
        );
        // What save writes, load reads back.
        let saved = name_annotations("docker.io/library/busybox:latest");
        assert_eq!(saved[REF_NAME_ANNOTATION], "latest");
        assert_eq!(
            name_from_annotations(&saved).unwrap().to_string(),
            "docker.io/library/busybox:latest"
        );
        assert!(name_annotations(&Digest::of(b"x").to_string()).is_empty());
    }

    #[test]
    fn of_several_platforms_this_machines_is_chosen() {
        let entry = |platform: Option<(&str, &str)>| IndexEntry {
            media_type: mt::OCI_MANIFEST.into(),
            digest: Digest::of(format!("{platform:?}").as_bytes()),
            size: 1,
            annotations: BTreeMap::new(),
            platform: platform.map(|(os, architecture)| EntryPlatform {
                os: os.into(),
                architecture: architecture.into(),
                variant: None,
            }),
        };
        let host = Platform::host();
        let here = entry(Some(("linux", &host.architecture)));
        let (other, wasm) = (
            entry(Some(("plan9", "mips"))),
            entry(Some(("wasi", "wasm"))),
        );
        let unstated = entry(None);
        let chosen = |entries: &[&IndexEntry]| choose_platform(entries).map(|e| e.digest.clone());
        assert_eq!(chosen(&[&other, &wasm, &here]), Some(here.digest.clone()));
        assert_eq!(chosen(&[&other, &wasm]), Some(wasm.digest.clone()));
        assert_eq!(chosen(&[&other]), None);
        assert_eq!(chosen(&[&other, &unstated]), None);
        assert_eq!(chosen(&[&unstated]), Some(unstated.digest.clone()));
    }

    #[test]
    fn entry_paths_stay_inside_the_archive() {
        assert_eq!(
            entry_path(b"./blobs/sha256/ab").as_deref(),
            Some("blobs/sha256/ab")
        );
        assert_eq!(entry_path(b"index.json").as_deref(), Some("index.json"));
        for bad in [&b"/etc/passwd"[..], b"../x", b"blobs/../../x", b"a/.."] {
            assert_eq!(entry_path(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(
            link_target("abc/layer.tar", b"../def/layer.tar", true).as_deref(),
            Some("def/layer.tar")
        );
        assert_eq!(
            link_target("abc/layer.tar", b"def/layer.tar", false).as_deref(),
            Some("def/layer.tar")
        );
        assert_eq!(
            link_target("abc/layer.tar", b"../../etc/passwd", true),
            None
        );
        assert_eq!(link_target("abc/layer.tar", b"/etc/passwd", true), None);
    }

    fn local() -> (tempfile::TempDir, LocalImages) {
        let dir = tempfile::tempdir().unwrap();
        let images = LocalImages::open(dir.path()).unwrap();
        (dir, images)
    }

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, bytes) in files {
            append(&mut tar, path, bytes.len() as u64, *bytes).unwrap();
        }
        tar.into_inner().unwrap()
    }

    /// A Wasm artifact as a layout: (manifest digest, the layout's files).
    fn wasm_layout(name: Option<&str>) -> (Digest, Vec<(String, Vec<u8>)>) {
        let wasm = b"\0asm\x01\0\0\0".to_vec();
        let built = artifact::package("m.wasm", wasm, "2026-01-01T00:00:00Z".into()).unwrap();
        let entry = IndexEntry {
            media_type: mt::OCI_MANIFEST.into(),
            digest: built.manifest_digest.clone(),
            size: built.manifest.len() as u64,
            annotations: name.map(name_annotations).unwrap_or_default(),
            platform: None,
        };
        let index = LayoutIndex {
            schema_version: 2,
            media_type: None,
            manifests: vec![entry],
        };
        let mut files = vec![
            (OCI_LAYOUT.to_string(), LAYOUT_VERSION.as_bytes().to_vec()),
            (INDEX_JSON.to_string(), serde_json::to_vec(&index).unwrap()),
        ];
        for blob in [built.layer, built.config, built.manifest] {
            files.push((format!("blobs/sha256/{}", Digest::of(&blob).hex()), blob));
        }
        (built.manifest_digest, files)
    }

    fn load_files(images: &LocalImages, files: &[(String, Vec<u8>)]) -> Result<Vec<ImageRecord>> {
        let files: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(p, b)| (p.as_str(), b.as_slice()))
            .collect();
        load(images, &tar_of(&files)[..], "test.tar")
    }

    #[test]
    fn a_layout_loads_named_or_by_digest() {
        let (_dir, images) = local();
        let (digest, files) = wasm_layout(Some("localhost:5000/app:1"));
        let records = load_files(&images, &files).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].name, "localhost:5000/app:1");
        assert_eq!(
            (&records[0].digest, records[0].kind),
            (&digest, ImageKind::Wasm)
        );
        assert_eq!(images.store.digests().unwrap().len(), 3);

        let (_dir, images) = local();
        let (digest, files) = wasm_layout(None);
        let records = load_files(&images, &files).unwrap();
        assert_eq!(records[0].name, digest.to_string());
        assert_eq!(images.get(&digest.hex()[..12]).unwrap().digest, digest);
    }

    #[test]
    fn a_nested_index_resolves_to_this_machines_image() {
        let (_dir, images) = local();
        let (manifest, mut files) = wasm_layout(None);
        let top: LayoutIndex = serde_json::from_slice(&files[1].1).unwrap();
        let mut wasm = top.manifests[0].clone();
        wasm.platform = serde_json::from_str(r#"{"os":"wasip1","architecture":"wasm"}"#).ok();
        let mut elsewhere = wasm.clone();
        elsewhere.digest = Digest::of(b"a manifest for another machine, not in the archive");
        elsewhere.platform = serde_json::from_str(r#"{"os":"plan9","architecture":"mips"}"#).ok();
        let nested = LayoutIndex {
            schema_version: 2,
            media_type: Some(mt::OCI_INDEX.into()),
            manifests: vec![elsewhere, wasm],
        };
        let nested = serde_json::to_vec(&nested).unwrap();
        let mut entry = top.manifests[0].clone();
        entry.annotations = name_annotations("localhost:5000/multi:1");
        (entry.media_type, entry.digest) = (mt::OCI_INDEX.into(), Digest::of(&nested));
        entry.size = nested.len() as u64;
        files[1].1 = serde_json::to_vec(&serde_json::json!({"manifests": [entry]})).unwrap();
        files.push((
            format!("blobs/sha256/{}", Digest::of(&nested).hex()),
            nested,
        ));
        let record = load_files(&images, &files).unwrap().remove(0);
        assert_eq!(record.name, "localhost:5000/multi:1");
        assert_eq!((record.digest, record.manifest), (entry.digest, manifest));
    }

    #[test]
    fn a_tampered_blob_is_refused_and_the_store_is_left_as_it_was() {
        let (_dir, images) = local();
        let (_, mut files) = wasm_layout(Some("localhost:5000/app:1"));
        // The config was stored before; the layer is new; the manifest is tampered with.
        let config = files[3].1.clone();
        images.store.put(&config, None).unwrap();
        files.last_mut().unwrap().1.push(b' ');
        let err = load_files(&images, &files).unwrap_err();
        assert!(matches!(err, LayoutError::Tampered { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.starts_with("test.tar: blobs/sha256/")
                && message.contains("nothing was loaded"),
            "{message}"
        );
        assert_eq!(images.store.digests().unwrap(), [Digest::of(&config)]);
        assert!(images.index.list().unwrap().is_empty());
    }

    #[test]
    fn a_manifest_naming_a_missing_blob_is_refused() {
        let (_dir, images) = local();
        let (_, mut files) = wasm_layout(None);
        files.remove(2); // the layer
        let err = load_files(&images, &files).unwrap_err();
        assert!(matches!(err, LayoutError::MissingBlob { .. }), "{err}");
        assert!(images.store.digests().unwrap().is_empty());
    }

    #[test]
    fn a_docker_save_archive_becomes_a_docker_manifest() {
        let (_dir, images) = local();
        let layer = tar_of(&[("hello.txt", b"hello\n")]);
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [Digest::of(&layer)]},
        }))
        .unwrap();
        let config_name = format!("{}.json", Digest::of(&config).hex());
        let manifest = serde_json::to_vec(&serde_json::json!([{
            "Config": config_name, "RepoTags": ["app:1"], "Layers": ["abc/layer.tar"],
        }]))
        .unwrap();
        let files = [
            ("abc/VERSION".to_string(), b"1.0".to_vec()),
            ("abc/layer.tar".to_string(), layer.clone()),
            (config_name, config),
            (MANIFEST_JSON.to_string(), manifest),
        ];
        let records = load_files(&images, &files).unwrap();
        assert_eq!(records[0].name, "docker.io/library/app:1");
        assert_eq!(records[0].kind, ImageKind::Linux);
        let stored = images.manifest(&records[0]).unwrap();
        assert_eq!(stored.config.media_type, mt::DOCKER_CONFIG);
        assert_eq!(stored.layers[0].media_type, mt::DOCKER_LAYER_TAR);
        assert_eq!(stored.layers[0].digest, Digest::of(&layer));
        assert_eq!(
            images.store.digests().unwrap().len(),
            3,
            "VERSION is not kept"
        );
    }

    #[test]
    fn save_writes_a_layout_that_loads_back() {
        let (dir, from) = local();
        let (_, files) = wasm_layout(Some("localhost:5000/app:1"));
        let loaded = load_files(&from, &files).unwrap();
        let output = dir.path().join("out.tar");
        save(&from, &["localhost:5000/app:1".to_string()], &output).unwrap();
        let (_other, to) = local();
        assert_eq!(load_file(&to, &output).unwrap(), loaded);
    }

    #[test]
    fn compressed_and_foreign_archives_are_refused_with_a_hint() {
        let (_dir, images) = local();
        let err = load(&images, &[0x1f, 0x8b, 8, 0][..], "x.tar.gz").unwrap_err();
        assert!(err.to_string().contains("gzip -dc"), "{err}");
        let err = load(&images, &tar_of(&[("readme", b"hi")])[..], "x.tar").unwrap_err();
        assert!(matches!(err, LayoutError::Unrecognised { .. }), "{err}");
        let err = load(&images, &[b'x'; 1024][..], "x.tar").unwrap_err();
        assert!(matches!(err, LayoutError::Damaged { .. }), "{err}");
        assert!(images.store.digests().unwrap().is_empty());
    }
}

//! Image archives: `skiff load` reads an OCI image layout or a `docker save` tarball into the
//! content store and names its images; `skiff save` writes stored images as an OCI image
//! layout tarball.
//!
//! A load is one pass over the tar that streams every file into the store (`scan.rs`), then
//! the images resolved from what was stored: each manifest `index.json` lists (`load.rs`), or
//! each `manifest.json` entry turned into a Docker image manifest (`docker.rs`). A load that
//! fails removes every blob it added and names nothing. `save.rs` writes the other way.
//!
//! This file owns the public API, [`LayoutError`], the index types a layout's `index.json` is
//! made of, and how an image's name is written to and read from its annotations. The module
//! neither unpacks layers (the Linux executor's job) nor decompresses archives (it says how to
//! decompress one first).

mod docker;
mod load;
mod save;
mod scan;

pub use load::{load, load_file};
pub use save::save;

use crate::oci::digest::Digest;
use crate::oci::image::ImageError;
use crate::oci::images::IndexError;
use crate::oci::local::ImagesError;
use crate::oci::reference::ImageRef;
use crate::oci::registry::MAX_MANIFEST_BYTES;
use crate::oci::store::StoreError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

/// containerd's annotation naming an image in a layout's index: the full reference.
pub const IMAGE_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// OCI's annotation naming an image in a layout's index: by the spec, usually just the tag.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

const OCI_LAYOUT: &str = "oci-layout";
const INDEX_JSON: &str = "index.json";
const MANIFEST_JSON: &str = "manifest.json";
/// The `oci-layout` file skiff writes.
const LAYOUT_VERSION: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

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

/// Fixtures the unit tests of every part share: a store, tars, and a Wasm artifact as a layout.
#[cfg(test)]
mod fixtures {
    use super::save::append;
    use super::*;
    use crate::oci::artifact;
    use crate::oci::images::ImageRecord;
    use crate::oci::local::LocalImages;
    use crate::oci::media_types as mt;

    pub(super) fn local() -> (tempfile::TempDir, LocalImages) {
        let dir = tempfile::tempdir().unwrap();
        let images = LocalImages::open(dir.path()).unwrap();
        (dir, images)
    }

    pub(super) fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, bytes) in files {
            append(&mut tar, path, bytes.len() as u64, *bytes).unwrap();
        }
        tar.into_inner().unwrap()
    }

    /// A Wasm artifact as a layout: (manifest digest, the layout's files).
    pub(super) fn wasm_layout(name: Option<&str>) -> (Digest, Vec<(String, Vec<u8>)>) {
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

    pub(super) fn load_files(
        images: &LocalImages,
        files: &[(String, Vec<u8>)],
    ) -> Result<Vec<ImageRecord>> {
        let files: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(p, b)| (p.as_str(), b.as_slice()))
            .collect();
        load(images, &tar_of(&files)[..], "test.tar")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

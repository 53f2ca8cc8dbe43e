//! `skiff load` of a `docker save` archive: each `manifest.json` entry becomes a Docker image
//! manifest, stored, and named by each of its tags (by its digest when it has none).
//!
//! The files `manifest.json` names were stored by the scan under their computed digests: a
//! config named by its digest must match it, an uncompressed layer must match its config's diff
//! ID, and a layer is gzip or tar as its first bytes say. This file neither reads the tar
//! (`scan.rs`) nor names the images or decides which blobs stay (`load.rs` does, and removes
//! the legacy metadata no image uses).

use super::load::Load;
use super::scan::{Scan, ScannedFile, entry_path};
use super::{LayoutError, MANIFEST_JSON, Result};
use crate::oci::artifact::{Descriptor, ImageManifest};
use crate::oci::digest::Digest;
use crate::oci::images::ImageRecord;
use crate::oci::media_types as mt;
use crate::oci::reference::ImageRef;
use serde::Deserialize;
use std::collections::BTreeMap;

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

impl Load<'_> {
    /// The images of a `docker save` archive, as Docker image manifests under their tags.
    pub(super) fn docker_images(&mut self, scan: &Scan) -> Result<Vec<ImageRecord>> {
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
}

fn descriptor(media_type: &str, digest: Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest,
        size,
        annotations: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::image::ImageKind;
    use crate::oci::layout::fixtures::{load_files, local, tar_of};

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
}

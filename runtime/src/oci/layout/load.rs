//! `skiff load`, once the archive is scanned: resolves its images from the store, checks every
//! blob they name, then keeps and names them, or undoes the load.
//!
//! An OCI image layout's images are the manifests `index.json` lists, each under its name from
//! the annotations, followed through nested indexes to this machine's platform. A load that
//! fails removes every blob it added and names nothing; one that succeeds removes the blobs it
//! added that no loaded image uses. This file owns `Load`, the state a load carries, and the
//! errors it reports; it neither reads the tar (`scan.rs`) nor converts a `docker save`
//! archive (`docker.rs`).

use super::scan::Scan;
use super::{
    EntryPlatform, INDEX_JSON, IndexEntry, LayoutError, LayoutIndex, MANIFEST_JSON, OCI_LAYOUT,
    Result, name_from_annotations,
};
use crate::oci::artifact::ImageManifest;
use crate::oci::digest::Digest;
use crate::oci::image::{self, ImageError, ImageKind};
use crate::oci::images::ImageRecord;
use crate::oci::local::LocalImages;
use crate::oci::media_types as mt;
use crate::oci::reference::ImageRef;
use crate::oci::registry::{MAX_MANIFEST_BYTES, Platform};
use crate::oci::store::StoreError;
use std::collections::BTreeSet;
use std::io::{self, Read};
use std::path::Path;

/// How deep indexes may nest inside a layout.
const MAX_INDEX_DEPTH: usize = 4;

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

/// A load in progress, and the blobs it added to the store.
pub(super) struct Load<'a> {
    pub(super) images: &'a LocalImages,
    pub(super) archive: String,
    pub(super) added: Vec<Digest>,
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

    /// The record naming an image. A Wasm artifact with several Wasm layers is refused, as on
    /// pull; a Wasm image packed in tar layers is not (skiff finds its entrypoint in them).
    pub(super) fn record(
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
    pub(super) fn read_blob(
        &self,
        digest: &Digest,
        size: Option<u64>,
        referrer: &str,
    ) -> Result<Vec<u8>> {
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

    pub(super) fn parse<T: serde::de::DeserializeOwned>(
        &self,
        entry: &str,
        bytes: &[u8],
    ) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|e| self.invalid(entry, e))
    }

    pub(super) fn damaged(&self, err: io::Error) -> LayoutError {
        LayoutError::Damaged {
            archive: self.archive.clone(),
            detail: err.to_string(),
        }
    }

    pub(super) fn unsafe_path(&self, raw: &[u8]) -> LayoutError {
        LayoutError::UnsafePath {
            archive: self.archive.clone(),
            entry: String::from_utf8_lossy(raw).into_owned(),
        }
    }

    pub(super) fn invalid(&self, entry: impl Into<String>, detail: impl ToString) -> LayoutError {
        LayoutError::Invalid {
            archive: self.archive.clone(),
            entry: entry.into(),
            detail: detail.to_string(),
        }
    }

    pub(super) fn tampered(&self, entry: &str, expected: Digest, actual: Digest) -> LayoutError {
        LayoutError::Tampered {
            archive: self.archive.clone(),
            entry: entry.to_string(),
            expected,
            actual,
        }
    }

    pub(super) fn store_err(&self, error: StoreError) -> LayoutError {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::layout::fixtures::{load_files, local, wasm_layout};
    use crate::oci::layout::name_annotations;
    use std::collections::BTreeMap;

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
}

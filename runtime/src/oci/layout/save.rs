//! `skiff save`: stored images written as an OCI image layout tar.
//!
//! Each image is one entry of `index.json`, named by containerd's and OCI's annotations, with
//! its manifest, config and layers under `blobs/sha256/`. The tar is written to a temporary
//! file beside the output and renamed into place only once complete. This file reads the store
//! and never changes it.

use super::{
    INDEX_JSON, IndexEntry, LAYOUT_VERSION, LayoutError, LayoutIndex, OCI_LAYOUT, Result,
    name_annotations,
};
use crate::oci::digest::Digest;
use crate::oci::images::ImageRecord;
use crate::oci::local::LocalImages;
use crate::oci::media_types as mt;
use crate::oci::store::ContentStore;
use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::path::Path;

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
pub(super) fn append(
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
    use crate::oci::layout::fixtures::{load_files, local, wasm_layout};
    use crate::oci::layout::load_file;

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
}

//! `skiff load`, first step: one pass over the tar, so a pipe works as well as a file.
//!
//! Every regular file is streamed through the store's ingest and commit, never held in memory:
//! a file under `blobs/sha256/` must match the digest its path names; any other (the layers and
//! configs of a `docker save` archive) is known by the digest computed on the way in. Only
//! `oci-layout`, `index.json` and `manifest.json` are read into memory, at most 4 MiB each. An
//! entry with an absolute path or `..` refuses the archive; nothing is ever written outside
//! the store. This file owns `Scan`, what the pass found; it neither parses the metadata it
//! keeps nor decides which blobs stay (`load.rs` does).

use super::load::Load;
use super::{INDEX_JSON, LayoutError, MANIFEST_JSON, OCI_LAYOUT, Result};
use crate::oci::digest::Digest;
use crate::oci::registry::MAX_MANIFEST_BYTES;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read};

/// How many links a `manifest.json` path may go through.
const MAX_LINKS: usize = 8;
/// Bytes read from an archive at a time.
const CHUNK: usize = 64 << 10;

/// What one pass over an archive found.
#[derive(Default)]
pub(super) struct Scan {
    /// `oci-layout`, `index.json` and `manifest.json`, when present.
    pub(super) metadata: BTreeMap<&'static str, Vec<u8>>,
    /// Every regular file, now in the store.
    files: BTreeMap<String, ScannedFile>,
    /// Symbolic and hard links: the archive path each points to.
    links: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub(super) struct ScannedFile {
    pub(super) digest: Digest,
    pub(super) size: u64,
    pub(super) gzip: bool,
}

impl Scan {
    /// The file at `path`, following links.
    pub(super) fn file(&self, path: &str) -> Option<&ScannedFile> {
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

impl Load<'_> {
    pub(super) fn scan(&mut self, reader: impl Read) -> Result<Scan> {
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
pub(super) fn entry_path(raw: &[u8]) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::layout::fixtures::{local, tar_of};
    use crate::oci::layout::load;

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

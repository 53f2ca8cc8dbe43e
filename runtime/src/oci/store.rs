//! The content store: blobs by sha256 under `<root>/blobs/sha256/<hex>`.
//!
//! Writes follow containerd's ingest and commit: bytes land in a temporary file under
//! `<root>/ingest/`, hashed and counted as they arrive; `commit` checks digest and size, syncs,
//! and renames into place. A reader therefore sees a whole, verified blob or nothing: a crash,
//! a dropped connection or a tampered source leaves at most an orphaned temp file (removed by
//! `prune_ingest`), never a visible partial blob. Concurrent writers of one blob each write
//! their own temp file and the renames are atomic, so they cannot corrupt each other.

use super::digest::Digest;
use sha2::{Digest as _, Sha256};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "content does not match its digest: expected {expected}, got {actual}; the source is \
         corrupt or was tampered with, and nothing was stored"
    )]
    DigestMismatch { expected: Digest, actual: Digest },

    #[error("{digest}: expected {expected} bytes, got {actual}; nothing was stored")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },

    #[error("blob {digest} is not in the store; pull the image again")]
    NotFound { digest: Digest },

    #[error("content store {path}: {error}")]
    Io { path: PathBuf, error: io::Error },
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        error: source,
    }
}

/// Blobs by digest on local disk.
#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
}

impl ContentStore {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let store = Self { root: root.into() };
        for dir in [store.blobs_dir(), store.ingest_dir()] {
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        Ok(store)
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    /// Where a committed blob lives. The digest is validated, so the path stays in the store.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// The size of a stored blob.
    pub fn size(&self, digest: &Digest) -> Result<u64> {
        match std::fs::metadata(self.blob_path(digest)) {
            Ok(meta) => Ok(meta.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::NotFound {
                digest: digest.clone(),
            }),
            Err(e) => Err(io_err(&self.blob_path(digest))(e)),
        }
    }

    /// Opens a stored blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<std::fs::File> {
        let path = self.blob_path(digest);
        std::fs::File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::NotFound {
                digest: digest.clone(),
            },
            _ => io_err(&path)(e),
        })
    }

    /// Reads a whole blob into memory; for manifests and configs, which callers bound by size.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        let path = self.blob_path(digest);
        self.open_blob(digest)?
            .read_to_end(&mut bytes)
            .map_err(io_err(&path))?;
        Ok(bytes)
    }

    /// Stores `bytes`, verifying them against `expected` when given; returns their digest.
    pub fn put(&self, bytes: &[u8], expected: Option<&Digest>) -> Result<Digest> {
        let actual = Digest::of(bytes);
        let expected = expected.unwrap_or(&actual);
        let mut ingest = self.ingest(Some(bytes.len() as u64))?;
        ingest
            .write_chunk(bytes)
            .map_err(io_err(&self.ingest_dir()))?;
        ingest.commit(expected)
    }

    /// Starts writing a blob. `expected_size`, when known, stops an over-long source early.
    pub fn ingest(&self, expected_size: Option<u64>) -> Result<Ingest> {
        let dir = self.ingest_dir();
        let file = tempfile::NamedTempFile::new_in(&dir).map_err(io_err(&dir))?;
        Ok(Ingest {
            file,
            hasher: Sha256::new(),
            written: 0,
            expected_size,
            blobs_dir: self.blobs_dir(),
        })
    }

    /// Removes a blob; returns whether it was there.
    pub fn delete(&self, digest: &Digest) -> Result<bool> {
        let path = self.blob_path(digest);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Every stored blob's digest (files with names that are not digests are ignored).
    pub fn digests(&self) -> Result<Vec<Digest>> {
        let dir = self.blobs_dir();
        let mut digests: Vec<Digest> = std::fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                format!("sha256:{}", entry.file_name().to_string_lossy())
                    .parse()
                    .ok()
            })
            .collect();
        digests.sort();
        Ok(digests)
    }

    /// Removes ingest files older than `age`: the leftovers of interrupted writes.
    pub fn prune_ingest(&self, age: Duration) -> Result<usize> {
        let dir = self.ingest_dir();
        let cutoff = SystemTime::now()
            .checked_sub(age)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut removed = 0;
        for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))?.flatten() {
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t <= cutoff);
            if stale && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// A blob being written: hashed and counted as it goes, invisible until `commit`.
pub struct Ingest {
    file: tempfile::NamedTempFile,
    hasher: Sha256,
    written: u64,
    expected_size: Option<u64>,
    blobs_dir: PathBuf,
}

impl Ingest {
    /// Appends a chunk. Fails as soon as the bytes pass the expected size.
    pub fn write_chunk(&mut self, chunk: &[u8]) -> io::Result<()> {
        let next = self.written + chunk.len() as u64;
        if let Some(expected) = self.expected_size
            && next > expected
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("more bytes than the {expected} announced"),
            ));
        }
        self.file.write_all(chunk)?;
        self.hasher.update(chunk);
        self.written = next;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Verifies size and digest, then makes the blob visible by an atomic rename.
    /// On any mismatch the temporary file is removed and nothing becomes visible.
    pub fn commit(self, expected: &Digest) -> Result<Digest> {
        if let Some(size) = self.expected_size
            && size != self.written
        {
            return Err(StoreError::SizeMismatch {
                digest: expected.clone(),
                expected: size,
                actual: self.written,
            });
        }
        let actual = Digest::from_hasher(self.hasher);
        if &actual != expected {
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let target = self.blobs_dir.join(actual.hex());
        self.file.as_file().sync_all().map_err(io_err(&target))?;
        self.file
            .persist(&target)
            .map_err(|e| io_err(&target)(e.error))?;
        if let Ok(dir) = std::fs::File::open(&self.blobs_dir) {
            let _ = dir.sync_all();
        }
        Ok(actual)
    }
}

impl Write for Ingest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_chunk(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ContentStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path().join("content")).unwrap();
        (dir, store)
    }

    fn visible(store: &ContentStore) -> Vec<Digest> {
        store.digests().unwrap()
    }

    fn ingest_files(store: &ContentStore) -> usize {
        std::fs::read_dir(store.ingest_dir()).unwrap().count()
    }

    #[test]
    fn committed_blobs_are_readable_by_digest() {
        let (_dir, store) = store();
        let digest = store.put(b"hello", None).unwrap();
        assert_eq!(digest, Digest::of(b"hello"));
        assert_eq!(store.read(&digest).unwrap(), b"hello");
        assert_eq!(store.size(&digest).unwrap(), 5);
        assert_eq!(visible(&store), std::slice::from_ref(&digest));
        assert!(store.delete(&digest).unwrap());
        assert!(matches!(
            store.read(&digest),
            Err(StoreError::NotFound { .. })
        ));
    }

    #[test]
    fn a_tampered_blob_is_refused_and_leaves_nothing() {
        let (_dir, store) = store();
        let claimed = Digest::of(b"the real thing");
        let err = store.put(b"something else", Some(&claimed)).unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains("nothing was stored"));
        assert!(visible(&store).is_empty());
        assert_eq!(ingest_files(&store), 0, "the temp file is removed");
    }

    #[test]
    fn short_and_long_sources_are_refused() {
        let (_dir, store) = store();
        let digest = Digest::of(b"12345");
        let mut short = store.ingest(Some(5)).unwrap();
        short.write_chunk(b"123").unwrap();
        assert!(matches!(
            short.commit(&digest),
            Err(StoreError::SizeMismatch { actual: 3, .. })
        ));
        let mut long = store.ingest(Some(5)).unwrap();
        assert!(
            long.write_chunk(b"123456").is_err(),
            "stops at the announced size"
        );
        drop(long);
        assert!(visible(&store).is_empty());
        assert_eq!(ingest_files(&store), 0);
    }

    #[test]
    fn an_interrupted_write_is_never_visible() {
        let (_dir, store) = store();
        let mut ingest = store.ingest(None).unwrap();
        ingest.write_chunk(b"half of a bl").unwrap();
        // A crash here: the ingest is leaked, not committed.
        std::mem::forget(ingest);
        assert!(visible(&store).is_empty());
        assert_eq!(store.prune_ingest(Duration::ZERO).unwrap(), 1);
        assert_eq!(ingest_files(&store), 0);
    }

    #[test]
    fn concurrent_writers_of_one_blob_do_not_corrupt_it() {
        let (_dir, store) = store();
        let blob: Vec<u8> = (0..1_000_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let digest = Digest::of(&blob);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    let mut ingest = store.ingest(Some(blob.len() as u64)).unwrap();
                    for chunk in blob.chunks(64 << 10) {
                        ingest.write_chunk(chunk).unwrap();
                    }
                    assert_eq!(ingest.commit(&digest).unwrap(), digest);
                });
            }
        });
        assert_eq!(Digest::of(&store.read(&digest).unwrap()), digest);
        assert_eq!(visible(&store), [digest]);
    }
}

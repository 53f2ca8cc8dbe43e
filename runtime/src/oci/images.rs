//! The local image names: which reference names which stored manifest.
//!
//! A JSON file in the data dir (SQLite arrives with the daemon's state), read-modify-written
//! under an exclusive file lock and replaced by an atomic rename, so concurrent `skiff`
//! processes neither lose nor half-write an entry.

use super::digest::Digest;
use super::image::ImageKind;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One named image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The normalised reference it was pulled, pushed or loaded as.
    pub name: String,
    /// The digest the name resolves to (an index for multi-platform images).
    pub digest: Digest,
    /// The image manifest chosen for this machine.
    pub manifest: Digest,
    pub kind: ImageKind,
    /// Bytes of config and layers.
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("image index {path}: {error}")]
pub struct IndexError {
    path: PathBuf,
    error: std::io::Error,
}

/// The name → image table.
pub struct ImageIndex {
    path: PathBuf,
}

impl ImageIndex {
    pub fn open(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join("images.json"),
        }
    }

    fn err(&self) -> impl FnOnce(std::io::Error) -> IndexError + '_ {
        |source| IndexError {
            path: self.path.clone(),
            error: source,
        }
    }

    /// Every named image, sorted by name.
    pub fn list(&self) -> Result<Vec<ImageRecord>, IndexError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| self.err()(e.into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(self.err()(e)),
        }
    }

    /// The image `name` names: a full reference, or a digest (or its unique prefix).
    pub fn find(&self, name: &str) -> Result<Option<ImageRecord>, IndexError> {
        let records = self.list()?;
        if let Some(record) = records.iter().find(|r| r.name == name) {
            return Ok(Some(record.clone()));
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut by_digest = records
                .into_iter()
                .filter(|r| r.digest.hex().starts_with(hex));
            if let (Some(first), None) = (by_digest.next(), by_digest.next()) {
                return Ok(Some(first));
            }
        }
        Ok(None)
    }

    /// Adds or replaces the record with this name.
    pub fn upsert(&self, record: ImageRecord) -> Result<(), IndexError> {
        self.update(|records| {
            records.retain(|r| r.name != record.name);
            records.push(record);
        })
        .map(|_| ())
    }

    /// Removes the record with this name; returns it.
    pub fn remove(&self, name: &str) -> Result<Option<ImageRecord>, IndexError> {
        let mut removed = None;
        self.update(|records| {
            if let Some(i) = records.iter().position(|r| r.name == name) {
                removed = Some(records.remove(i));
            }
        })?;
        Ok(removed)
    }

    fn update(
        &self,
        change: impl FnOnce(&mut Vec<ImageRecord>),
    ) -> Result<Vec<ImageRecord>, IndexError> {
        let dir = self.path.parent().expect("the index lives in the data dir");
        std::fs::create_dir_all(dir).map_err(self.err())?;
        let lock = std::fs::File::create(dir.join("images.lock")).map_err(self.err())?;
        lock.lock().map_err(self.err())?;
        let mut records = self.list()?;
        change(&mut records);
        records.sort_by(|a, b| a.name.cmp(&b.name));
        let json = serde_json::to_vec_pretty(&records).expect("records always serialise");
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(self.err())?;
        tmp.write_all(&json).map_err(self.err())?;
        tmp.as_file().sync_all().map_err(self.err())?;
        tmp.persist(&self.path).map_err(|e| self.err()(e.error))?;
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, bytes: &[u8]) -> ImageRecord {
        ImageRecord {
            name: name.into(),
            digest: Digest::of(bytes),
            manifest: Digest::of(bytes),
            kind: ImageKind::Wasm,
            size: 1,
        }
    }

    #[test]
    fn names_are_added_replaced_found_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let index = ImageIndex::open(dir.path());
        assert!(index.list().unwrap().is_empty());
        index.upsert(record("b:1", b"one")).unwrap();
        index.upsert(record("a:1", b"two")).unwrap();
        index.upsert(record("b:1", b"three")).unwrap();
        let names: Vec<_> = index.list().unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["a:1", "b:1"]);
        assert_eq!(
            index.find("b:1").unwrap().unwrap().digest,
            Digest::of(b"three")
        );
        let two = Digest::of(b"two");
        let prefix = &two.hex()[..12];
        assert_eq!(index.find(prefix).unwrap().unwrap().name, "a:1");
        assert_eq!(index.remove("a:1").unwrap().unwrap().name, "a:1");
        assert!(index.find("a:1").unwrap().is_none());
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::thread::scope(|scope| {
            for i in 0..8 {
                let path = dir.path();
                scope.spawn(move || {
                    ImageIndex::open(path)
                        .upsert(record(&format!("img:{i}"), &[i]))
                        .unwrap()
                });
            }
        });
        assert_eq!(ImageIndex::open(dir.path()).list().unwrap().len(), 8);
    }
}

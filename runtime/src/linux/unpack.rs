//! Step "prepare", first half: one layer's uncompressed tar stream becomes a directory that
//! overlayfs can use as a lower layer.
//!
//! This is where most container CVEs live, so every entry is confined to `dest`:
//!
//! - paths are normalised lexically; a leading `/` is dropped (an absolute path is a path in
//!   the image), and a `..` that climbs above the layer root is an error;
//! - nothing already on disk is ever followed: each parent of an entry is checked with
//!   `lstat`, and a symlink there is an error; an entry whose own path exists is unlinked and
//!   created afresh with `O_EXCL | O_NOFOLLOW`;
//! - symlinks are created verbatim (`/bin/busybox` is a normal target) and never resolved;
//! - hard links must name an entry earlier in the same layer, resolved inside `dest`;
//! - character and block devices and fifos are dropped and reported in [`UnpackReport`];
//! - OCI whiteouts become overlayfs whiteouts (`whiteout`);
//! - the stream is hashed (the layer's DiffID) and counted while it is read, and unpacking
//!   stops once it expands past [`UnpackLimits::max_expanded_bytes`].
//!
//! Ownership, modes (setuid and setgid included: the snapshot root is mode 0700, so they are
//! not reachable from the host), mtimes and `SCHILY.xattr.*` extended attributes are applied
//! from the headers; that needs root. Checks are path based: `dest` must be a fresh directory
//! nobody else writes to while it is unpacked (the snapshot store's temp dir), so nothing can
//! swap a checked directory for a symlink underneath us.
//!
//! It does not decompress (`oci::packed::layer_reader`), verify the DiffID against the image
//! config, or decide where `dest` lives: [`super::snapshot`] does.

mod paths;
mod whiteout;

#[cfg(test)]
mod tests;

use crate::oci::digest::Digest;
use paths::{Relative, confine};
use sha2::{Digest as _, Sha256};
use std::cell::Cell;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Bounds on one layer.
#[derive(Debug, Clone)]
pub struct UnpackLimits {
    /// Uncompressed bytes one layer may expand to (its tar stream, plus the holes of sparse
    /// files). Default 16 GiB: larger than any sane layer, small enough that a gzip bomb
    /// stops long before it fills a disk.
    pub max_expanded_bytes: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self {
            max_expanded_bytes: 16 << 30,
        }
    }
}

/// What unpacking one layer did.
#[derive(Debug, Clone)]
pub struct UnpackReport {
    /// sha256 of the uncompressed tar stream, every byte of it.
    pub diff_id: Digest,
    /// Bytes the layer expanded to.
    pub expanded_bytes: u64,
    /// Entries deliberately not created.
    pub skipped: Vec<Skipped>,
}

/// An entry that was not created, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The entry's path as the tar stream names it.
    pub path: String,
    pub reason: SkipReason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    CharDevice,
    BlockDevice,
    Fifo,
    /// An AUFS metadata entry (`.wh..wh.*` other than the opaque marker).
    AufsMetadata,
    /// An extended attribute overlayfs would trust (`trusted.overlay.*`): an image must not
    /// forge overlay metadata such as redirects.
    OverlayXattr(String),
    /// An extended attribute the file system refused.
    Xattr(String),
    /// A tar entry type with no file behind it, by its type byte.
    EntryType(u8),
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::CharDevice => f.write_str("character device"),
            Self::BlockDevice => f.write_str("block device"),
            Self::Fifo => f.write_str("fifo"),
            Self::AufsMetadata => f.write_str("aufs metadata"),
            Self::OverlayXattr(name) => write!(f, "overlayfs extended attribute {name}"),
            Self::Xattr(name) => write!(f, "extended attribute {name} not supported here"),
            Self::EntryType(byte) => write!(f, "unsupported tar entry type {:?}", *byte as char),
        }
    }
}

/// Why a hard link was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HardlinkProblem {
    Outside,
    Missing,
    Directory,
}

impl std::fmt::Display for HardlinkProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Outside => "which is outside the layer root",
            Self::Missing => "which is not an earlier entry of the same layer",
            Self::Directory => "which is a directory",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error(
        "layer entry {path} climbs out of the layer root; the image is malformed or malicious, \
         do not run it"
    )]
    Escape { path: String },
    #[error(
        "layer entry {path} would be written through the symlink {symlink}; the image is \
         malformed or malicious, do not run it"
    )]
    ThroughSymlink { path: String, symlink: String },
    #[error(
        "layer entry {path} needs {parent} to be a directory, but the layer made it something \
         else; rebuild the image"
    )]
    NotADirectory { path: String, parent: String },
    #[error(
        "layer entry {path} would replace the layer root with a non-directory; rebuild the image"
    )]
    RootNotDirectory { path: String },
    #[error("hard link {path} points at {target}, {problem}; rebuild the image")]
    Hardlink {
        path: String,
        target: String,
        problem: HardlinkProblem,
    },
    #[error(
        "layer expands past the limit of {limit} bytes (at entry {path}); if the image is \
         trusted and really this large, raise it with `--max-layer-size` (SKIFF_MAX_LAYER_SIZE)"
    )]
    TooLarge { path: String, limit: u64 },
    #[error(
        "cannot read the layer at entry {path}: {error}; the blob may be corrupt, pull the image again"
    )]
    Read { path: String, error: io::Error },
    #[error("cannot create layer entry {path}: {error}")]
    Write { path: String, error: io::Error },
}

type Result<T, E = UnpackError> = std::result::Result<T, E>;

/// Unpacks one layer's uncompressed tar stream into `dest`, an existing directory.
///
/// On error `dest` is left half written; the caller removes it.
pub fn unpack_layer(
    tar: impl Read,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<UnpackReport, UnpackError> {
    let budget = Budget {
        used: Rc::new(Cell::new(0)),
        limit: limits.max_expanded_bytes,
    };
    let reader = Hashed {
        inner: tar,
        hasher: Sha256::new(),
        budget: budget.clone(),
    };
    let mut archive = tar::Archive::new(reader);
    let mut unpacker = Unpacker {
        dest,
        budget,
        skipped: Vec::new(),
        dirs: Vec::new(),
        last: String::new(),
    };
    let entries = archive.entries().map_err(|e| unpacker.read_error(e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| unpacker.read_error(e))?;
        unpacker.entry(&mut entry)?;
    }
    unpacker.finish_dirs()?;
    let mut reader = archive.into_inner();
    // The DiffID covers the whole stream, end-of-archive blocks and padding included.
    io::copy(&mut reader, &mut io::sink()).map_err(|e| unpacker.read_error(e))?;
    Ok(UnpackReport {
        diff_id: Digest::from_hasher(reader.hasher),
        expanded_bytes: unpacker.budget.used.get(),
        skipped: unpacker.skipped,
    })
}

/// The expanded bytes so far, shared by the stream reader and the file writer.
#[derive(Clone)]
struct Budget {
    used: Rc<Cell<u64>>,
    limit: u64,
}

impl Budget {
    fn charge(&self, bytes: u64) -> io::Result<()> {
        self.used.set(self.used.get().saturating_add(bytes));
        if self.exceeded() {
            return Err(io::Error::other("expanded size limit reached"));
        }
        Ok(())
    }

    fn exceeded(&self) -> bool {
        self.used.get() > self.limit
    }
}

/// The tar stream, hashed and charged to the budget as it is read.
struct Hashed<R> {
    inner: R,
    hasher: Sha256,
    budget: Budget,
}

impl<R: Read> Read for Hashed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.budget.charge(n as u64)?;
        Ok(n)
    }
}

/// A directory's metadata, applied after its children are written (they change its mtime).
struct DirTimes {
    path: PathBuf,
    mtime: u64,
}

/// Who and what a header says an entry is.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: u64,
}

struct Unpacker<'a> {
    dest: &'a Path,
    budget: Budget,
    skipped: Vec<Skipped>,
    dirs: Vec<DirTimes>,
    /// The entry being unpacked, for messages.
    last: String,
}

impl Unpacker<'_> {
    fn read_error(&self, error: io::Error) -> UnpackError {
        if self.budget.exceeded() {
            UnpackError::TooLarge {
                path: self.last.clone(),
                limit: self.budget.limit,
            }
        } else {
            UnpackError::Read {
                path: self.last.clone(),
                error,
            }
        }
    }

    fn write_error(&self, error: io::Error) -> UnpackError {
        if self.budget.exceeded() {
            return self.read_error(error);
        }
        UnpackError::Write {
            path: self.last.clone(),
            error,
        }
    }

    fn skip(&mut self, reason: SkipReason) {
        tracing::warn!(path = %self.last, %reason, "layer entry skipped");
        self.skipped.push(Skipped {
            path: self.last.clone(),
            reason,
        });
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        self.last = String::from_utf8_lossy(&raw).into_owned();
        let rel = confine(&raw).ok_or_else(|| UnpackError::Escape {
            path: self.last.clone(),
        })?;
        let kind = entry.header().entry_type();
        if let Some(name) = rel.file_name()
            && name.as_bytes().starts_with(whiteout::PREFIX)
        {
            return whiteout::apply(self, &rel, name);
        }
        use tar::EntryType as T;
        let skip = match kind {
            T::Regular | T::Continuous | T::GNUSparse => return self.file(entry, &rel),
            T::Directory => return self.dir(entry, &rel),
            T::Symlink => return self.symlink(entry, &rel),
            T::Link => return self.hardlink(entry, &rel),
            T::XGlobalHeader => return Ok(()),
            T::Char => SkipReason::CharDevice,
            T::Block => SkipReason::BlockDevice,
            T::Fifo => SkipReason::Fifo,
            other => SkipReason::EntryType(other.as_byte()),
        };
        self.skip(skip);
        Ok(())
    }

    fn meta(&self, header: &tar::Header) -> Result<Meta> {
        let read = |e: io::Error| UnpackError::Read {
            path: self.last.clone(),
            error: e,
        };
        let id = |v: u64| {
            u32::try_from(v)
                .map_err(|_| read(io::Error::other(format!("owner id {v} is out of range"))))
        };
        Ok(Meta {
            uid: id(header.uid().map_err(read)?)?,
            gid: id(header.gid().map_err(read)?)?,
            mode: header.mode().map_err(read)? & 0o7777,
            mtime: header.mtime().map_err(read)?,
        })
    }

    /// The on-disk path of a non-root entry, its parents made safe; refuses the root itself.
    fn target(&self, rel: &Relative) -> Result<PathBuf> {
        if rel.is_root() {
            return Err(UnpackError::RootNotDirectory {
                path: self.last.clone(),
            });
        }
        paths::make_parents(self.dest, rel, &self.last)?;
        Ok(rel.under(self.dest))
    }

    fn file<R: Read>(&mut self, entry: &mut tar::Entry<R>, rel: &Relative) -> Result<()> {
        let meta = self.meta(entry.header())?;
        let stored = entry.header().entry_size().unwrap_or(0);
        let target = self.target(rel)?;
        paths::clear(&target, false).map_err(|e| self.write_error(e))?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .mode(0o600)
            .open(&target)
            .map_err(|e| self.write_error(e))?;
        let mut written = 0u64;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = entry.read(&mut buf).map_err(|e| self.read_error(e))?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n]).map_err(|e| self.write_error(e))?;
            // Sparse files write more than the stream holds: charge the holes too.
            let beyond = (written + n as u64).saturating_sub(stored.max(written));
            written += n as u64;
            self.budget.charge(beyond).map_err(|e| self.read_error(e))?;
        }
        drop(file);
        self.apply(&target, &meta, true)?;
        self.xattrs(entry, &target)
    }

    fn dir<R: Read>(&mut self, entry: &mut tar::Entry<R>, rel: &Relative) -> Result<()> {
        let meta = self.meta(entry.header())?;
        let target = if rel.is_root() {
            self.dest.to_path_buf()
        } else {
            let target = self.target(rel)?;
            if !paths::clear(&target, true).map_err(|e| self.write_error(e))? {
                fs::create_dir(&target).map_err(|e| self.write_error(e))?;
            }
            target
        };
        self.apply(&target, &meta, false)?;
        self.xattrs(entry, &target)?;
        self.dirs.push(DirTimes {
            path: target,
            mtime: meta.mtime,
        });
        Ok(())
    }

    fn symlink<R: Read>(&mut self, entry: &mut tar::Entry<R>, rel: &Relative) -> Result<()> {
        let meta = self.meta(entry.header())?;
        let link = entry.link_name_bytes().unwrap_or_default().into_owned();
        let target = self.target(rel)?;
        paths::clear(&target, false).map_err(|e| self.write_error(e))?;
        std::os::unix::fs::symlink(OsStr::from_bytes(&link), &target)
            .map_err(|e| self.write_error(e))?;
        std::os::unix::fs::lchown(&target, Some(meta.uid), Some(meta.gid))
            .map_err(|e| self.write_error(e))?;
        set_mtime(&target, meta.mtime).map_err(|e| self.write_error(e))
    }

    fn hardlink<R: Read>(&mut self, entry: &mut tar::Entry<R>, rel: &Relative) -> Result<()> {
        let raw = entry.link_name_bytes().unwrap_or_default().into_owned();
        let refuse = |problem| UnpackError::Hardlink {
            path: self.last.clone(),
            target: String::from_utf8_lossy(&raw).into_owned(),
            problem,
        };
        let source = confine(&raw).ok_or_else(|| refuse(HardlinkProblem::Outside))?;
        if source.is_root() {
            return Err(refuse(HardlinkProblem::Directory));
        }
        if &source == rel {
            return Ok(());
        }
        paths::check_parents(self.dest, &source, &self.last)?;
        let source_path = source.under(self.dest);
        match fs::symlink_metadata(&source_path) {
            Ok(m) if m.is_dir() => return Err(refuse(HardlinkProblem::Directory)),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(refuse(HardlinkProblem::Missing));
            }
            Err(e) => return Err(self.write_error(e)),
        }
        let target = self.target(rel)?;
        paths::clear(&target, false).map_err(|e| self.write_error(e))?;
        // link(2) never follows a symlink at its source, so this links the entry itself.
        fs::hard_link(&source_path, &target).map_err(|e| self.write_error(e))
    }

    /// Owner, then mode (chown clears setuid and setgid), then mtime (files only: a
    /// directory's is set when its children are done).
    fn apply(&self, target: &Path, meta: &Meta, mtime: bool) -> Result<()> {
        let err = |e| self.write_error(e);
        std::os::unix::fs::lchown(target, Some(meta.uid), Some(meta.gid)).map_err(err)?;
        fs::set_permissions(target, fs::Permissions::from_mode(meta.mode)).map_err(err)?;
        if mtime {
            set_mtime(target, meta.mtime).map_err(err)?;
        }
        Ok(())
    }

    /// `SCHILY.xattr.*` PAX records (file capabilities, ACLs), except overlayfs's own.
    fn xattrs<R: Read>(&mut self, entry: &mut tar::Entry<R>, target: &Path) -> Result<()> {
        let mut wanted = Vec::new();
        if let Some(extensions) = entry.pax_extensions().map_err(|e| self.read_error(e))? {
            for extension in extensions {
                let extension = extension.map_err(|e| self.read_error(e))?;
                if let Some(name) = extension.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                    wanted.push((name.to_vec(), extension.value_bytes().to_vec()));
                }
            }
        }
        for (name, value) in wanted {
            let shown = String::from_utf8_lossy(&name).into_owned();
            if name.starts_with(b"trusted.overlay.") {
                self.skip(SkipReason::OverlayXattr(shown));
            } else if xattr::set(target, OsStr::from_bytes(&name), &value).is_err() {
                self.skip(SkipReason::Xattr(shown));
            }
        }
        Ok(())
    }

    /// Directory mtimes, deepest first, once nothing more is written into them.
    fn finish_dirs(&mut self) -> Result<()> {
        for dir in std::mem::take(&mut self.dirs).into_iter().rev() {
            if let Err(error) = set_mtime(&dir.path, dir.mtime) {
                return Err(UnpackError::Write {
                    path: dir.path.display().to_string(),
                    error,
                });
            }
        }
        Ok(())
    }
}

/// Sets atime and mtime without following a symlink.
fn set_mtime(path: &Path, seconds: u64) -> io::Result<()> {
    let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
    let time = nix::sys::time::TimeVal::new(seconds, 0);
    nix::sys::stat::lutimes(path, &time, &time).map_err(io::Error::from)
}

//! OCI whiteouts in overlayfs form, since each layer is its own overlayfs lower dir:
//! `D/.wh.NAME` becomes a 0:0 character device `D/NAME`, and `D/.wh..wh..opq` becomes the
//! xattr `trusted.overlay.opaque=y` on `D`.
//!
//! A whiteout only ever replaces its own path: it never deletes a sibling, and it is made
//! with the same confinement as any other entry.

use super::{Relative, Result, SkipReason, UnpackError, Unpacker, paths};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// Names starting with this are whiteouts (or AUFS metadata).
pub(super) const PREFIX: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";
const AUFS_META: &[u8] = b".wh..wh.";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Applies the whiteout entry at `rel`, whose file name `name` starts with [`PREFIX`].
pub(super) fn apply(unpacker: &mut Unpacker<'_>, rel: &Relative, name: &OsStr) -> Result<()> {
    let name = name.as_bytes();
    let dest = unpacker.dest;
    paths::make_parents(dest, rel, &unpacker.last)?;
    let mut dir = dest.to_path_buf();
    dir.extend(rel.parent());
    if name == OPAQUE {
        return xattr::set(&dir, OPAQUE_XATTR, b"y").map_err(|e| unpacker.write_error(e));
    }
    if name.starts_with(AUFS_META) {
        unpacker.skip(SkipReason::AufsMetadata);
        return Ok(());
    }
    let hidden = &name[PREFIX.len()..];
    if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.contains(&b'/') {
        return Err(UnpackError::Escape {
            path: unpacker.last.clone(),
        });
    }
    let target = dir.join(OsStr::from_bytes(hidden));
    paths::clear(&target, false).map_err(|e| unpacker.write_error(e))?;
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    mknod(&target, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
        .map_err(|e| unpacker.write_error(e.into()))?;
    std::os::unix::fs::lchown(&target, Some(0), Some(0)).map_err(|e| unpacker.write_error(e))
}

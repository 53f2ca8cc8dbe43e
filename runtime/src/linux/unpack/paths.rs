//! Entry paths confined to the layer root: lexical normalisation, and parents walked with
//! `lstat` so that nothing already on disk is followed.

use super::{Result, UnpackError};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A path inside the layer root, as its normal components (none is `.`, `..` or empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Relative(Vec<OsString>);

impl Relative {
    pub(super) fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn file_name(&self) -> Option<&OsStr> {
        self.0.last().map(OsString::as_os_str)
    }

    /// The parent directory's components.
    pub(super) fn parent(&self) -> &[OsString] {
        &self.0[..self.0.len().saturating_sub(1)]
    }

    /// The on-disk path under `root`.
    pub(super) fn under(&self, root: &Path) -> PathBuf {
        let mut path = root.to_path_buf();
        path.extend(&self.0);
        path
    }
}

/// Normalises a tar path: a leading `/` and `.` components are dropped, `..` removes the
/// previous component; `None` when a `..` would climb above the root.
pub(super) fn confine(raw: &[u8]) -> Option<Relative> {
    let mut components: Vec<OsString> = Vec::new();
    for component in raw.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                components.pop()?;
            }
            name => components.push(OsStr::from_bytes(name).to_os_string()),
        }
    }
    Some(Relative(components))
}

/// Ensures every parent of `rel` is a real directory under `root`, creating missing ones
/// (mode 0755, owned by us); refuses a symlink or non-directory on the way.
pub(super) fn make_parents(root: &Path, rel: &Relative, entry: &str) -> Result<()> {
    walk_parents(root, rel.parent(), entry, true)
}

/// Like [`make_parents`] for a path that must already exist: a hard link's source.
pub(super) fn check_parents(root: &Path, rel: &Relative, entry: &str) -> Result<()> {
    walk_parents(root, rel.parent(), entry, false)
}

fn walk_parents(root: &Path, components: &[OsString], entry: &str, create: bool) -> Result<()> {
    let mut path = root.to_path_buf();
    let write_err = |error| UnpackError::Write {
        path: entry.to_string(),
        error,
    };
    for (depth, component) in components.iter().enumerate() {
        path.push(component);
        let shown = || display(&components[..=depth]);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(UnpackError::ThroughSymlink {
                    path: entry.to_string(),
                    symlink: shown(),
                });
            }
            Ok(_) => {
                return Err(UnpackError::NotADirectory {
                    path: entry.to_string(),
                    parent: shown(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&path)
                    .map_err(write_err)?;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).map_err(write_err)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(UnpackError::Hardlink {
                    path: entry.to_string(),
                    target: shown(),
                    problem: super::HardlinkProblem::Missing,
                });
            }
            Err(e) => return Err(write_err(e)),
        }
    }
    Ok(())
}

/// Removes whatever is at `path` (never following it) so a new entry can be created there.
/// With `keep_dir`, an existing directory stays; returns whether one did.
pub(super) fn clear(path: &Path, keep_dir: bool) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() && keep_dir => Ok(true),
        // remove_dir_all does not follow symlinks inside the tree it removes.
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map(|()| false),
        Ok(_) => fs::remove_file(path).map(|()| false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn display(components: &[OsString]) -> String {
    let joined: PathBuf = components.iter().collect();
    joined.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(raw: &str) -> Option<Vec<String>> {
        confine(raw.as_bytes()).map(|r| {
            r.0.iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect()
        })
    }

    #[test]
    fn paths_are_normalised_inside_the_root() {
        assert_eq!(names("./a/b").unwrap(), ["a", "b"]);
        assert_eq!(names("/etc//x").unwrap(), ["etc", "x"]);
        assert_eq!(names("a/../b").unwrap(), ["b"]);
        assert!(names("./").unwrap().is_empty());
        assert_eq!(names("../x"), None);
        assert_eq!(names("a/../../x"), None);
        assert_eq!(names("/../x"), None);
    }
}

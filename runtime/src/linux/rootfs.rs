//! The container's filesystem, built inside its new mount namespace: the overlay (or the
//! bundle's) root, the spec's mounts, a minimal `/dev`, then `pivot_root`, masked and
//! read-only paths.
//!
//! Every mount destination is resolved inside the root without following links out of it
//! ([`secure_join`]); a bind source must exist on the host. Mounts made here vanish with the
//! mount namespace, so a crashed container leaves none behind on the host.

use super::syscall::{FileKind, Syscall};
use nix::mount::{MntFlags, MsFlags};
use oci_spec::runtime::{Mount, Spec};
use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};

/// Device nodes every container gets: name, major, minor.
const DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Links in `/dev`, as runc makes them.
const DEV_LINKS: &[(&str, &str)] = &[
    ("/proc/self/fd", "fd"),
    ("/proc/self/fd/0", "stdin"),
    ("/proc/self/fd/1", "stdout"),
    ("/proc/self/fd/2", "stderr"),
    ("pts/ptmx", "ptmx"),
];

/// Symlink hops allowed while resolving one path inside the root.
const MAX_LINK_HOPS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("the spec has no root.path; set root.path in config.json")]
    NoRoot,
    #[error("cannot {step} {path}: {error}")]
    Step {
        step: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("volume source {path} does not exist on the host; create it or fix the -v path")]
    MissingSource { path: PathBuf },
    #[error("mount {destination} has no source; give the mount a source")]
    NoSource { destination: PathBuf },
    #[error("mount destination {path} is not absolute; give an absolute path in the container")]
    RelativeDestination { path: PathBuf },
    #[error("invalid sysctl key {key:?}; write it as dotted names, e.g. net.ipv4.ip_forward")]
    Sysctl { key: String },
}

type Result<T, E = RootfsError> = std::result::Result<T, E>;

fn step(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RootfsError {
    let path = path.to_path_buf();
    move |error| RootfsError::Step { step, path, error }
}

/// An overlay root for `skiff run`: the image's snapshots plus this container's own upper dir.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Overlay {
    /// Snapshot directories, topmost layer first (at least one: an empty dir for no layers).
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
}

impl Overlay {
    fn options(&self) -> String {
        let lowers: Vec<String> = self
            .lowers
            .iter()
            .map(|l| l.display().to_string())
            .collect();
        format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            self.upper.display(),
            self.work.display()
        )
    }
}

/// The root path named by the spec.
pub fn root_path(spec: &Spec) -> Result<PathBuf> {
    spec.root()
        .as_ref()
        .map(|r| r.path().clone())
        .ok_or(RootfsError::NoRoot)
}

/// Everything up to and including `pivot_root`; afterwards `/` is the container's root.
pub fn prepare(sys: &dyn Syscall, spec: &Spec, overlay: Option<&Overlay>) -> Result<()> {
    let root = root_path(spec)?;
    let propagation = spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().clone())
        .and_then(|p| parse_options(&[p]).0.into_iter().next())
        .unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    // Nothing mounted from here on may leak to the host.
    sys.mount(None, Path::new("/"), None, propagation, None)
        .map_err(step("make private", Path::new("/")))?;
    match overlay {
        Some(overlay) => sys
            .mount(
                Some(Path::new("overlay")),
                &root,
                Some("overlay"),
                MsFlags::empty(),
                Some(&overlay.options()),
            )
            .map_err(step("mount the overlay root at", &root))?,
        // pivot_root needs the root to be a mount point.
        None => sys
            .mount(
                Some(&root),
                &root,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )
            .map_err(step("bind the root", &root))?,
    }
    let mut dev_is_tmpfs = false;
    for mount in spec.mounts().as_deref().unwrap_or_default() {
        if mount.destination() == Path::new("/dev") && mount.typ().as_deref() == Some("tmpfs") {
            dev_is_tmpfs = true;
        }
        mount_one(sys, &root, mount)?;
    }
    if dev_is_tmpfs {
        create_devices(sys, &root)?;
    }
    pivot(sys, &root)
}

/// Everything after `pivot_root`: sysctls, masked and read-only paths, a read-only root.
pub fn finish(sys: &dyn Syscall, spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();
    // Before /proc/sys turns read-only.
    for (key, value) in linux.and_then(|l| l.sysctl().clone()).unwrap_or_default() {
        let path = sysctl_path(&key)?;
        sys.write_file(&path, &value)
            .map_err(step("set the sysctl", &path))?;
    }
    for path in linux
        .and_then(|l| l.masked_paths().clone())
        .unwrap_or_default()
    {
        mask(sys, Path::new(&path))?;
    }
    for path in linux
        .and_then(|l| l.readonly_paths().clone())
        .unwrap_or_default()
    {
        read_only(sys, Path::new(&path))?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        sys.mount(None, Path::new("/"), None, flags, None)
            .map_err(step("make read-only", Path::new("/")))?;
    }
    Ok(())
}

fn mount_one(sys: &dyn Syscall, root: &Path, mount: &Mount) -> Result<()> {
    let destination = mount.destination();
    if !destination.is_absolute() {
        return Err(RootfsError::RelativeDestination {
            path: destination.clone(),
        });
    }
    let options = mount.options().clone().unwrap_or_default();
    let (flags, data) = parse_options(&options);
    let target = secure_join(root, destination);
    let typ = mount.typ().as_deref().unwrap_or("none");
    if typ == "bind" || flags.contains(MsFlags::MS_BIND) {
        let source = mount.source().as_ref().ok_or(RootfsError::NoSource {
            destination: destination.clone(),
        })?;
        let Some(kind) = sys.file_kind(source) else {
            return Err(RootfsError::MissingSource {
                path: source.clone(),
            });
        };
        match kind {
            FileKind::Dir => sys.mkdir_all(&target),
            FileKind::File => target
                .parent()
                .map_or(Ok(()), |p| sys.mkdir_all(p))
                .and_then(|_| sys.touch(&target)),
        }
        .map_err(step("create the mount point", &target))?;
        let bind = MsFlags::MS_BIND | (flags & MsFlags::MS_REC);
        sys.mount(Some(source), &target, None, bind, None)
            .map_err(step("bind-mount onto", &target))?;
        // Flags other than propagation only take effect on a remount of a bind mount.
        let rest = flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | propagation_flags());
        if !rest.is_empty() {
            let remount = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | rest;
            sys.mount(None, &target, None, remount, None)
                .map_err(step("remount", &target))?;
        }
        let propagation = flags & propagation_flags();
        if !propagation.is_empty() {
            sys.mount(
                None,
                &target,
                None,
                propagation | (flags & MsFlags::MS_REC),
                None,
            )
            .map_err(step("set propagation of", &target))?;
        }
        return Ok(());
    }
    if typ == "cgroup" || typ == "cgroup2" {
        // The unified hierarchy is mounted as the container's cgroup namespace sees it; a v1
        // or hybrid host leaves /sys/fs/cgroup empty inside (the read-only /sys shows nothing).
        if sys
            .file_kind(Path::new("/sys/fs/cgroup/cgroup.controllers"))
            .is_none()
        {
            tracing::debug!(target = %target.display(), "cgroup v1 host: no cgroup mount");
            return Ok(());
        }
        sys.mkdir_all(&target)
            .map_err(step("create the mount point", &target))?;
        return sys
            .mount(
                Some(Path::new("cgroup2")),
                &target,
                Some("cgroup2"),
                flags,
                None,
            )
            .map_err(step("mount cgroup2 at", &target));
    }
    sys.mkdir_all(&target)
        .map_err(step("create the mount point", &target))?;
    let source = mount.source().clone().unwrap_or_else(|| typ.into());
    let data = (!data.is_empty()).then_some(data.as_str());
    sys.mount(Some(&source), &target, Some(typ), flags, data)
        .map_err(step("mount", &target))
}

fn propagation_flags() -> MsFlags {
    MsFlags::MS_PRIVATE | MsFlags::MS_SLAVE | MsFlags::MS_SHARED | MsFlags::MS_UNBINDABLE
}

fn create_devices(sys: &dyn Syscall, root: &Path) -> Result<()> {
    let dev = root.join("dev");
    for (name, major, minor) in DEVICES {
        let path = dev.join(name);
        sys.mknod_char(&path, 0o666, *major, *minor)
            .map_err(step("create device", &path))?;
    }
    for (target, name) in DEV_LINKS {
        let link = dev.join(name);
        sys.symlink(Path::new(target), &link)
            .map_err(step("create link", &link))?;
    }
    Ok(())
}

/// runc's `pivot_root(".", ".")`: the old root ends up stacked on the new one and is then
/// lazily unmounted, with no directory left behind in the image.
fn pivot(sys: &dyn Syscall, root: &Path) -> Result<()> {
    sys.chdir(root).map_err(step("enter", root))?;
    let here = Path::new(".");
    sys.pivot_root(here, here)
        .map_err(step("pivot_root into", root))?;
    sys.mount(None, here, None, MsFlags::MS_SLAVE | MsFlags::MS_REC, None)
        .map_err(step("make slave", Path::new("the old root")))?;
    sys.umount(here, MntFlags::MNT_DETACH)
        .map_err(step("unmount", Path::new("the old root")))?;
    sys.chdir(Path::new("/"))
        .map_err(step("enter", Path::new("/")))
}

fn mask(sys: &dyn Syscall, path: &Path) -> Result<()> {
    match sys.file_kind(path) {
        None => Ok(()),
        Some(FileKind::Dir) => sys
            .mount(
                Some(Path::new("tmpfs")),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None,
            )
            .map_err(step("mask", path)),
        Some(FileKind::File) => sys
            .mount(
                Some(Path::new("/dev/null")),
                path,
                None,
                MsFlags::MS_BIND,
                None,
            )
            .map_err(step("mask", path)),
    }
}

fn read_only(sys: &dyn Syscall, path: &Path) -> Result<()> {
    if sys.file_kind(path).is_none() {
        return Ok(());
    }
    sys.mount(
        Some(path),
        path,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .map_err(step("bind", path))?;
    let flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    sys.mount(None, path, None, flags, None)
        .map_err(step("make read-only", path))
}

/// `net.ipv4.ip_forward` → `/proc/sys/net/ipv4/ip_forward`; a key that could leave
/// `/proc/sys` is refused.
fn sysctl_path(key: &str) -> Result<PathBuf> {
    let valid = !key.is_empty()
        && key
            .split('.')
            .all(|part| !part.is_empty() && part != ".." && !part.contains('/'));
    if !valid {
        return Err(RootfsError::Sysctl { key: key.into() });
    }
    Ok(Path::new("/proc/sys").join(key.replace('.', "/")))
}

/// Mount options split into flags and the filesystem's own data string.
pub fn parse_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for option in options {
        let (set, clear) = match option.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "private" => (MsFlags::MS_PRIVATE, MsFlags::empty()),
            "rprivate" => (MsFlags::MS_PRIVATE | MsFlags::MS_REC, MsFlags::empty()),
            "slave" => (MsFlags::MS_SLAVE, MsFlags::empty()),
            "rslave" => (MsFlags::MS_SLAVE | MsFlags::MS_REC, MsFlags::empty()),
            "shared" => (MsFlags::MS_SHARED, MsFlags::empty()),
            "rshared" => (MsFlags::MS_SHARED | MsFlags::MS_REC, MsFlags::empty()),
            "unbindable" => (MsFlags::MS_UNBINDABLE, MsFlags::empty()),
            "runbindable" => (MsFlags::MS_UNBINDABLE | MsFlags::MS_REC, MsFlags::empty()),
            // Options only mount(8) understands.
            "defaults" | "nofail" | "auto" | "noauto" => continue,
            other => {
                data.push(other.to_string());
                continue;
            }
        };
        flags = (flags | set) & !clear;
    }
    (flags, data.join(","))
}

/// `path` (as the container sees it) resolved under `root`, following symlinks as the
/// container would, but never out of `root`: an absolute link target or `..` past the top
/// stays at `root`. Parts that do not exist yet are joined as they are.
pub fn secure_join(root: &Path, path: &Path) -> PathBuf {
    let mut resolved = PathBuf::new();
    let mut pending: Vec<std::ffi::OsString> = components(path);
    pending.reverse();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let on_host = root.join(&candidate);
        match std::fs::symlink_metadata(&on_host) {
            Ok(meta) if meta.file_type().is_symlink() && hops < MAX_LINK_HOPS => {
                hops += 1;
                let Ok(target) = std::fs::read_link(&on_host) else {
                    resolved = candidate;
                    continue;
                };
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                let mut parts = components(&target);
                parts.reverse();
                pending.extend(parts);
            }
            _ => resolved = candidate,
        }
    }
    root.join(resolved)
}

fn components(path: &Path) -> Vec<std::ffi::OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::syscall::{Call, RecordingSyscall};

    #[test]
    fn secure_join_keeps_links_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("/", root.join("escape")).unwrap();
        std::os::unix::fs::symlink("../../../../..", root.join("up")).unwrap();
        std::os::unix::fs::symlink("/usr/lib", root.join("lib")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        let join = |p: &str| secure_join(&root, Path::new(p));
        assert_eq!(join("/escape/etc"), root.join("etc"));
        assert_eq!(join("/up/etc/passwd"), root.join("etc/passwd"));
        assert_eq!(join("/../../etc"), root.join("etc"));
        assert_eq!(join("/lib/x"), root.join("usr/lib/x"));
        assert_eq!(join("/new/dir"), root.join("new/dir"));
        // A loop stops after the hop limit, still inside the root.
        assert!(join("/loop/x").starts_with(&root));
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let options: Vec<String> = ["nosuid", "ro", "mode=755", "size=65536k", "rbind"]
            .map(String::from)
            .to_vec();
        let (flags, data) = parse_options(&options);
        assert_eq!(
            flags,
            MsFlags::MS_NOSUID | MsFlags::MS_RDONLY | MsFlags::MS_BIND | MsFlags::MS_REC
        );
        assert_eq!(data, "mode=755,size=65536k");
    }

    fn spec(mounts: Vec<Mount>) -> Spec {
        let mut spec = Spec::default();
        let mut root = oci_spec::runtime::Root::default();
        root.set_path("/c/rootfs".into());
        spec.set_root(Some(root)).set_mounts(Some(mounts));
        spec
    }

    #[test]
    fn mounts_happen_in_order_and_the_root_pivots_last() {
        let sys = RecordingSyscall::default();
        let spec = spec(oci_spec::runtime::get_default_mounts()[..2].to_vec());
        let overlay = Overlay {
            lowers: vec!["/s/b".into(), "/s/a".into()],
            upper: "/c/upper".into(),
            work: "/c/work".into(),
        };
        prepare(&sys, &spec, Some(&overlay)).unwrap();
        let calls = sys.calls();
        let targets: Vec<String> = calls
            .iter()
            .filter_map(|c| match c {
                Call::Mount { target, .. } => Some(target.display().to_string()),
                Call::MknodChar(path, ..) => Some(format!("mknod {}", path.display())),
                Call::PivotRoot(..) => Some("pivot".into()),
                _ => None,
            })
            .collect();
        assert_eq!(
            targets[..5],
            [
                "/",
                "/c/rootfs",
                "/c/rootfs/proc",
                "/c/rootfs/dev",
                "mknod /c/rootfs/dev/null"
            ]
        );
        assert!(matches!(
            &calls[1],
            Call::Mount { data: Some(d), .. } if d == "lowerdir=/s/b:/s/a,upperdir=/c/upper,workdir=/c/work"
        ));
        let pivot = targets.iter().position(|t| t == "pivot").unwrap();
        assert!(targets[..pivot].iter().any(|t| t.ends_with("dev/tty")));
        assert_eq!(targets.len() - pivot, 2, "{targets:?}");
    }

    #[test]
    fn a_missing_bind_source_is_refused() {
        let sys = RecordingSyscall::default();
        let mut mount = Mount::default();
        mount
            .set_destination("/data".into())
            .set_typ(Some("bind".into()))
            .set_source(Some("/definitely/not/here".into()))
            .set_options(Some(vec!["rbind".into()]));
        // The fake says every path exists; the real check is covered by the container tests.
        let sys_real = super::super::syscall::LinuxSyscall;
        assert!(matches!(
            mount_one(&sys_real, Path::new("/nonexistent-root"), &mount),
            Err(RootfsError::MissingSource { .. })
        ));
        mount_one(&sys, Path::new("/r"), &mount).unwrap();
        assert!(sys.calls().contains(&Call::Mount {
            source: Some("/definitely/not/here".into()),
            target: "/r/data".into(),
            fstype: None,
            flags: MsFlags::MS_BIND | MsFlags::MS_REC,
            data: None,
        }));
    }

    #[test]
    fn sysctls_are_written_before_proc_sys_turns_read_only() {
        let sys = RecordingSyscall::default();
        let mut spec = Spec::default();
        let mut linux = spec.linux().clone().unwrap();
        linux.set_sysctl(Some(
            [("net.ipv4.ping_group_range".to_string(), "0 0".to_string())].into(),
        ));
        spec.set_linux(Some(linux.clone()));
        finish(&sys, &spec).unwrap();
        let calls = sys.calls();
        let write = calls
            .iter()
            .position(|c| {
                *c == Call::WriteFile("/proc/sys/net/ipv4/ping_group_range".into(), "0 0".into())
            })
            .expect("the sysctl is written");
        let read_only = calls
            .iter()
            .position(
                |c| matches!(c, Call::Mount { target, .. } if target == Path::new("/proc/sys")),
            )
            .expect("/proc/sys is made read-only");
        assert!(write < read_only);
        for bad in ["../../etc/passwd", "net..x", "a/b", ""] {
            linux.set_sysctl(Some([(bad.to_string(), "1".to_string())].into()));
            spec.set_linux(Some(linux.clone()));
            assert!(
                matches!(finish(&sys, &spec), Err(RootfsError::Sysctl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn masked_files_get_dev_null_and_dirs_an_empty_tmpfs() {
        let sys = RecordingSyscall::with_files(&["/proc/kcore"]);
        mask(&sys, Path::new("/proc/kcore")).unwrap();
        mask(&sys, Path::new("/proc/acpi")).unwrap();
        let calls = sys.calls();
        assert!(
            matches!(&calls[0], Call::Mount { source: Some(s), flags, .. } if s == Path::new("/dev/null") && *flags == MsFlags::MS_BIND)
        );
        assert!(
            matches!(&calls[1], Call::Mount { fstype: Some(t), flags, .. } if t == "tmpfs" && *flags == MsFlags::MS_RDONLY)
        );
    }
}

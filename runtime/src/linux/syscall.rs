//! Every kernel call a container's setup makes, behind one small trait.
//!
//! [`LinuxSyscall`] makes the calls; [`RecordingSyscall`] records them, so the order of
//! namespace, mount and privilege steps is unit-tested without root (youki's `Syscall` and
//! `TestHelperSyscall`). Real-kernel tests then confirm the result from inside a container.
//!
//! Calls return `io::Result`; the caller says what it was doing.

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxCapabilities, LinuxSeccomp};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The kernel, as container setup sees it.
pub trait Syscall {
    fn unshare(&self, flags: CloneFlags) -> io::Result<()>;
    /// Joins the namespace the file at `path` (e.g. `/proc/PID/ns/net`) refers to.
    fn setns(&self, path: &Path, flags: CloneFlags) -> io::Result<()>;
    /// What is at `path`, without following a final symlink; `None` when nothing is.
    fn file_kind(&self, path: &Path) -> Option<FileKind>;
    fn sethostname(&self, name: &str) -> io::Result<()>;
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()>;
    fn umount(&self, target: &Path, flags: MntFlags) -> io::Result<()>;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()>;
    fn chdir(&self, path: &Path) -> io::Result<()>;
    /// A character device node, `major:minor`, mode `perm`.
    fn mknod_char(&self, path: &Path, perm: u32, major: u64, minor: u64) -> io::Result<()>;
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    fn mkdir_all(&self, path: &Path) -> io::Result<()>;
    /// An empty file to bind-mount a file onto; an existing one is kept.
    fn touch(&self, path: &Path) -> io::Result<()>;
    /// Supplementary groups, then gid, then uid; capabilities survive for `set_capabilities`.
    fn set_ids(&self, uid: u32, gid: u32, groups: &[u32]) -> io::Result<()>;
    /// Writes `contents` to an existing file (a sysctl under `/proc/sys`).
    fn write_file(&self, path: &Path, contents: &str) -> io::Result<()>;
    fn set_capabilities(&self, caps: &LinuxCapabilities) -> io::Result<()>;
    fn set_no_new_privs(&self) -> io::Result<()>;
    fn load_seccomp(&self, profile: &LinuxSeccomp) -> io::Result<()>;
}

/// What a path names, as far as mounting onto it is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Dir,
    File,
}

/// The real kernel.
pub struct LinuxSyscall;

fn errno(e: nix::Error) -> io::Error {
    io::Error::from(e)
}

impl Syscall for LinuxSyscall {
    fn unshare(&self, flags: CloneFlags) -> io::Result<()> {
        nix::sched::unshare(flags).map_err(errno)
    }

    fn setns(&self, path: &Path, flags: CloneFlags) -> io::Result<()> {
        let file = std::fs::File::open(path)?;
        nix::sched::setns(file, flags).map_err(errno)
    }

    fn file_kind(&self, path: &Path) -> Option<FileKind> {
        let meta = std::fs::symlink_metadata(path).ok()?;
        Some(if meta.is_dir() {
            FileKind::Dir
        } else {
            FileKind::File
        })
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        nix::unistd::sethostname(name).map_err(errno)
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data).map_err(errno)
    }

    fn umount(&self, target: &Path, flags: MntFlags) -> io::Result<()> {
        nix::mount::umount2(target, flags).map_err(errno)
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        nix::unistd::pivot_root(new_root, put_old).map_err(errno)
    }

    fn chdir(&self, path: &Path) -> io::Result<()> {
        nix::unistd::chdir(path).map_err(errno)
    }

    fn mknod_char(&self, path: &Path, perm: u32, major: u64, minor: u64) -> io::Result<()> {
        use nix::sys::stat::{Mode, SFlag, makedev, mknod};
        mknod(
            path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(perm),
            makedev(major, minor),
        )
        .map_err(errno)
    }

    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }

    fn mkdir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn touch(&self, path: &Path) -> io::Result<()> {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map(drop)
    }

    fn set_ids(&self, uid: u32, gid: u32, groups: &[u32]) -> io::Result<()> {
        use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};
        // Keep the permitted set across the uid change; `set_capabilities` then sets exactly
        // what the spec grants (and a non-root user's effective set, as Docker does).
        caps::securebits::set_keepcaps(true).map_err(io::Error::other)?;
        let groups: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
        setgroups(&groups).map_err(errno)?;
        let gid = Gid::from_raw(gid);
        setresgid(gid, gid, gid).map_err(errno)?;
        let uid = Uid::from_raw(uid);
        setresuid(uid, uid, uid).map_err(errno)?;
        caps::securebits::set_keepcaps(false).map_err(io::Error::other)
    }

    fn write_file(&self, path: &Path, contents: &str) -> io::Result<()> {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .write_all(contents.as_bytes())
    }

    fn set_capabilities(&self, caps: &LinuxCapabilities) -> io::Result<()> {
        super::security::apply_capabilities(caps)
    }

    fn set_no_new_privs(&self) -> io::Result<()> {
        super::security::set_no_new_privs()
    }

    fn load_seccomp(&self, profile: &LinuxSeccomp) -> io::Result<()> {
        super::security::load_seccomp(profile)
    }
}

/// One recorded call, with its arguments as the test wants to compare them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Unshare(CloneFlags),
    Setns(PathBuf, CloneFlags),
    Sethostname(String),
    Mount {
        source: Option<PathBuf>,
        target: PathBuf,
        fstype: Option<String>,
        flags: MsFlags,
        data: Option<String>,
    },
    Umount(PathBuf),
    PivotRoot(PathBuf, PathBuf),
    Chdir(PathBuf),
    MknodChar(PathBuf, u64, u64),
    Symlink(PathBuf, PathBuf),
    MkdirAll(PathBuf),
    Touch(PathBuf),
    SetIds(u32, u32, Vec<u32>),
    WriteFile(PathBuf, String),
    SetCapabilities,
    SetNoNewPrivs,
    LoadSeccomp,
}

/// Records every call and succeeds, for unit tests of ordering. Every path it is asked
/// about exists and is a directory, unless listed in `files`.
#[derive(Default)]
pub struct RecordingSyscall {
    calls: Mutex<Vec<Call>>,
    pub files: Vec<PathBuf>,
}

impl RecordingSyscall {
    /// A fake on which these paths are files.
    pub fn with_files(files: &[&str]) -> Self {
        Self {
            files: files.iter().map(PathBuf::from).collect(),
            ..Self::default()
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("recording lock").clone()
    }

    fn record(&self, call: Call) -> io::Result<()> {
        self.calls.lock().expect("recording lock").push(call);
        Ok(())
    }
}

impl Syscall for RecordingSyscall {
    fn unshare(&self, flags: CloneFlags) -> io::Result<()> {
        self.record(Call::Unshare(flags))
    }
    fn setns(&self, path: &Path, flags: CloneFlags) -> io::Result<()> {
        self.record(Call::Setns(path.into(), flags))
    }
    fn file_kind(&self, path: &Path) -> Option<FileKind> {
        Some(if self.files.iter().any(|f| f == path) {
            FileKind::File
        } else {
            FileKind::Dir
        })
    }
    fn sethostname(&self, name: &str) -> io::Result<()> {
        self.record(Call::Sethostname(name.into()))
    }
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        self.record(Call::Mount {
            source: source.map(Path::to_path_buf),
            target: target.to_path_buf(),
            fstype: fstype.map(str::to_string),
            flags,
            data: data.map(str::to_string),
        })
    }
    fn umount(&self, target: &Path, _flags: MntFlags) -> io::Result<()> {
        self.record(Call::Umount(target.to_path_buf()))
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        self.record(Call::PivotRoot(new_root.into(), put_old.into()))
    }
    fn chdir(&self, path: &Path) -> io::Result<()> {
        self.record(Call::Chdir(path.into()))
    }
    fn mknod_char(&self, path: &Path, _perm: u32, major: u64, minor: u64) -> io::Result<()> {
        self.record(Call::MknodChar(path.into(), major, minor))
    }
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        self.record(Call::Symlink(target.into(), link.into()))
    }
    fn mkdir_all(&self, path: &Path) -> io::Result<()> {
        self.record(Call::MkdirAll(path.into()))
    }
    fn touch(&self, path: &Path) -> io::Result<()> {
        self.record(Call::Touch(path.into()))
    }
    fn set_ids(&self, uid: u32, gid: u32, groups: &[u32]) -> io::Result<()> {
        self.record(Call::SetIds(uid, gid, groups.to_vec()))
    }
    fn write_file(&self, path: &Path, contents: &str) -> io::Result<()> {
        self.record(Call::WriteFile(path.into(), contents.into()))
    }
    fn set_capabilities(&self, _caps: &LinuxCapabilities) -> io::Result<()> {
        self.record(Call::SetCapabilities)
    }
    fn set_no_new_privs(&self) -> io::Result<()> {
        self.record(Call::SetNoNewPrivs)
    }
    fn load_seccomp(&self, _profile: &LinuxSeccomp) -> io::Result<()> {
        self.record(Call::LoadSeccomp)
    }
}

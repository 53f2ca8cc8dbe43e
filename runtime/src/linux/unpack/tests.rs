//! Malicious and ordinary layers, built in memory, unpacked into `dest` inside a larger temp
//! dir whose other contents must stay untouched.

use super::*;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use tar::EntryType;

/// A layer under construction. Names are written raw into the header, so `..` and absolute
/// paths the tar builder would refuse can be expressed.
struct Layer(tar::Builder<Vec<u8>>);

impl Layer {
    fn new() -> Self {
        Self(tar::Builder::new(Vec::new()))
    }

    fn entry(&mut self, kind: EntryType, path: &str, link: &str, data: &[u8], mode: u32) {
        self.owned(kind, path, link, data, mode, 0);
    }

    fn owned(&mut self, kind: EntryType, path: &str, link: &str, data: &[u8], mode: u32, id: u64) {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_uid(id);
        header.set_gid(id);
        header.set_mtime(1_000_000);
        let old = header.as_old_mut();
        old.name[..path.len()].copy_from_slice(path.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_cksum();
        self.0.append(&header, data).unwrap();
    }

    fn file(&mut self, path: &str, data: &[u8]) -> &mut Self {
        self.entry(EntryType::Regular, path, "", data, 0o644);
        self
    }

    fn dir(&mut self, path: &str) -> &mut Self {
        self.entry(EntryType::Directory, path, "", b"", 0o755);
        self
    }

    fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.entry(EntryType::Symlink, path, target, b"", 0o777);
        self
    }

    fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.entry(EntryType::Link, path, target, b"", 0o644);
        self
    }

    fn bytes(&mut self) -> Vec<u8> {
        let builder = std::mem::replace(&mut self.0, tar::Builder::new(Vec::new()));
        builder.into_inner().unwrap()
    }
}

/// `outer/dest` to unpack into, next to `outer/sentinel`, which must survive unchanged.
struct Sandbox {
    outer: tempfile::TempDir,
    dest: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let outer = tempfile::tempdir().unwrap();
        let dest = outer.path().join("dest");
        fs::create_dir(&dest).unwrap();
        fs::write(outer.path().join("sentinel"), b"keep").unwrap();
        Self { outer, dest }
    }

    fn unpack(&self, layer: &mut Layer) -> Result<UnpackReport> {
        self.unpack_limited(layer, &UnpackLimits::default())
    }

    fn unpack_limited(&self, layer: &mut Layer, limits: &UnpackLimits) -> Result<UnpackReport> {
        let result = unpack_layer(&layer.bytes()[..], &self.dest, limits);
        self.assert_contained();
        result
    }

    /// Nothing was written beside `dest`.
    fn assert_contained(&self) {
        let mut names: Vec<String> = fs::read_dir(self.outer.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["dest", "sentinel"]);
        let sentinel = self.outer.path().join("sentinel");
        assert_eq!(fs::read(&sentinel).unwrap(), b"keep");
        assert!(fs::symlink_metadata(&sentinel).unwrap().is_file());
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dest.join(rel)
    }
}

#[test]
fn dotdot_entries_are_refused() {
    for path in ["../x", "a/../../x", "./../../x"] {
        let sandbox = Sandbox::new();
        let error = sandbox
            .unpack(Layer::new().file(path, b"evil"))
            .unwrap_err();
        assert!(
            matches!(&error, UnpackError::Escape { path: p } if p == path),
            "{error}"
        );
        assert!(error.to_string().contains("climbs out"), "{error}");
    }
}

#[test]
fn absolute_paths_land_inside_dest() {
    let sandbox = Sandbox::new();
    sandbox
        .unpack(Layer::new().file("/etc/x", b"inside"))
        .unwrap();
    assert_eq!(fs::read(sandbox.path("etc/x")).unwrap(), b"inside");
    let implicit = fs::metadata(sandbox.path("etc")).unwrap();
    assert_eq!(implicit.mode() & 0o7777, 0o755);
}

#[test]
fn a_symlink_to_root_is_never_written_through() {
    let sandbox = Sandbox::new();
    let name = format!("skiff-unpack-test-{}", std::process::id());
    let error = sandbox
        .unpack(
            Layer::new()
                .symlink("link", "/")
                .file(&format!("link/{name}"), b"evil"),
        )
        .unwrap_err();
    assert!(
        matches!(&error, UnpackError::ThroughSymlink { symlink, .. } if symlink == "link"),
        "{error}"
    );
    assert!(!Path::new("/").join(&name).exists());
    // The symlink itself is created verbatim.
    assert_eq!(fs::read_link(sandbox.path("link")).unwrap(), Path::new("/"));
}

#[test]
fn a_symlink_climbing_out_is_never_written_through() {
    let sandbox = Sandbox::new();
    let error = sandbox
        .unpack(
            Layer::new()
                .symlink("link", "../..")
                .file("link/x", b"evil"),
        )
        .unwrap_err();
    assert!(
        matches!(error, UnpackError::ThroughSymlink { .. }),
        "{error}"
    );
    // `..` is resolved lexically, never through a symlink on disk: this stays inside.
    let sandbox = Sandbox::new();
    sandbox
        .unpack(
            Layer::new()
                .dir("a")
                .symlink("a/up", "../..")
                .file("a/up/../x", b"in"),
        )
        .unwrap();
    assert_eq!(fs::read(sandbox.path("a/x")).unwrap(), b"in");
}

#[test]
fn hardlinks_out_of_the_layer_are_refused() {
    let sandbox = Sandbox::new();
    let error = sandbox
        .unpack(Layer::new().hardlink("x", "../../outside"))
        .unwrap_err();
    assert!(
        matches!(
            &error,
            UnpackError::Hardlink {
                problem: HardlinkProblem::Outside,
                ..
            }
        ),
        "{error}"
    );
    let sandbox = Sandbox::new();
    let error = sandbox
        .unpack(Layer::new().hardlink("x", "../sentinel"))
        .unwrap_err();
    assert!(matches!(error, UnpackError::Hardlink { .. }), "{error}");
}

#[test]
fn absolute_hardlinks_resolve_inside_dest() {
    let sandbox = Sandbox::new();
    let error = sandbox
        .unpack(Layer::new().hardlink("x", "/etc/passwd"))
        .unwrap_err();
    assert!(
        matches!(
            &error,
            UnpackError::Hardlink {
                problem: HardlinkProblem::Missing,
                ..
            }
        ),
        "{error}"
    );
    assert!(!sandbox.path("x").exists());

    let sandbox = Sandbox::new();
    sandbox
        .unpack(
            Layer::new()
                .file("etc/passwd", b"root:x:0:0::/:/bin/sh\n")
                .hardlink("x", "/etc/passwd"),
        )
        .unwrap();
    let linked = fs::metadata(sandbox.path("x")).unwrap();
    assert_eq!(
        linked.ino(),
        fs::metadata(sandbox.path("etc/passwd")).unwrap().ino()
    );
    assert_ne!(linked.ino(), fs::metadata("/etc/passwd").unwrap().ino());
}

#[test]
fn a_hardlink_through_a_symlinked_parent_is_refused() {
    let sandbox = Sandbox::new();
    let outer = sandbox.outer.path().display().to_string();
    let error = sandbox
        .unpack(
            Layer::new()
                .symlink("up", &outer)
                .hardlink("x", "up/sentinel"),
        )
        .unwrap_err();
    assert!(
        matches!(error, UnpackError::ThroughSymlink { .. }),
        "{error}"
    );
}

#[test]
fn an_existing_symlink_is_replaced_not_written_through() {
    let sandbox = Sandbox::new();
    let sentinel = sandbox.outer.path().join("sentinel").display().to_string();
    sandbox
        .unpack(Layer::new().symlink("f", &sentinel).file("f", b"new"))
        .unwrap();
    let replaced = fs::symlink_metadata(sandbox.path("f")).unwrap();
    assert!(replaced.is_file());
    assert_eq!(fs::read(sandbox.path("f")).unwrap(), b"new");
}

#[test]
fn devices_and_fifos_are_dropped_and_reported() {
    let sandbox = Sandbox::new();
    let mut layer = Layer::new();
    layer.entry(EntryType::Char, "dev/null", "", b"", 0o666);
    layer.entry(EntryType::Block, "dev/sda", "", b"", 0o660);
    layer.entry(EntryType::Fifo, "run/pipe", "", b"", 0o600);
    let report = sandbox.unpack(&mut layer).unwrap();
    let skipped: Vec<(&str, &SkipReason)> = report
        .skipped
        .iter()
        .map(|s| (s.path.as_str(), &s.reason))
        .collect();
    assert_eq!(
        skipped,
        [
            ("dev/null", &SkipReason::CharDevice),
            ("dev/sda", &SkipReason::BlockDevice),
            ("run/pipe", &SkipReason::Fifo)
        ]
    );
    for path in ["dev/null", "dev/sda", "run/pipe"] {
        assert!(fs::symlink_metadata(sandbox.path(path)).is_err(), "{path}");
    }
}

#[test]
fn ownership_and_setuid_bits_are_kept() {
    let sandbox = Sandbox::new();
    let mut layer = Layer::new();
    layer.owned(EntryType::Regular, "bin/su", "", b"x", 0o4755, 0);
    layer.owned(EntryType::Regular, "bin/wall", "", b"x", 0o2755, 1000);
    layer.owned(EntryType::Directory, "home/skiff", "", b"", 0o700, 1000);
    layer.owned(EntryType::Symlink, "home/link", "skiff", b"", 0o777, 1000);
    sandbox.unpack(&mut layer).unwrap();
    let su = fs::metadata(sandbox.path("bin/su")).unwrap();
    assert_eq!((su.mode() & 0o7777, su.uid()), (0o4755, 0));
    let wall = fs::metadata(sandbox.path("bin/wall")).unwrap();
    assert_eq!(
        (wall.mode() & 0o7777, wall.uid(), wall.gid()),
        (0o2755, 1000, 1000)
    );
    let home = fs::metadata(sandbox.path("home/skiff")).unwrap();
    assert_eq!(
        (home.mode() & 0o7777, home.uid(), home.mtime()),
        (0o700, 1000, 1_000_000)
    );
    let link = fs::symlink_metadata(sandbox.path("home/link")).unwrap();
    assert_eq!((link.uid(), link.mtime()), (1000, 1_000_000));
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    let sandbox = Sandbox::new();
    let report = sandbox
        .unpack(
            Layer::new()
                .file("dir/keep", b"k")
                .file("dir/.wh.gone", b""),
        )
        .unwrap();
    assert!(report.skipped.is_empty());
    let whiteout = fs::symlink_metadata(sandbox.path("dir/gone")).unwrap();
    assert!(whiteout.file_type().is_char_device());
    assert_eq!((whiteout.rdev(), whiteout.uid()), (0, 0));
    assert!(!sandbox.path("dir/.wh.gone").exists());
    assert_eq!(fs::read(sandbox.path("dir/keep")).unwrap(), b"k");
}

#[test]
fn whiteouts_stay_on_their_own_path() {
    for path in ["dir/.wh..", "dir/.wh..."] {
        let sandbox = Sandbox::new();
        let error = sandbox
            .unpack(Layer::new().file("dir/keep", b"k").file(path, b""))
            .unwrap_err();
        assert!(
            matches!(error, UnpackError::Escape { .. }),
            "{path}: {error}"
        );
        assert_eq!(fs::read(sandbox.path("dir/keep")).unwrap(), b"k");
    }
    let sandbox = Sandbox::new();
    let error = sandbox
        .unpack(
            Layer::new()
                .symlink("up", "..")
                .file("up/.wh.sentinel", b""),
        )
        .unwrap_err();
    assert!(
        matches!(error, UnpackError::ThroughSymlink { .. }),
        "{error}"
    );
}

#[test]
fn opaque_markers_become_the_overlay_xattr() {
    let sandbox = Sandbox::new();
    let report = sandbox
        .unpack(
            Layer::new()
                .dir("dir")
                .file("dir/.wh..wh..opq", b"")
                .file("dir/new", b"n"),
        )
        .unwrap();
    assert!(report.skipped.is_empty());
    let opaque = xattr::get(sandbox.path("dir"), "trusted.overlay.opaque").unwrap();
    assert_eq!(opaque.as_deref(), Some(&b"y"[..]));
    assert!(!sandbox.path("dir/.wh..wh..opq").exists());
    assert!(sandbox.path("dir/new").exists());
}

#[test]
fn forged_overlay_xattrs_are_dropped() {
    let sandbox = Sandbox::new();
    let mut layer = Layer::new();
    layer
        .0
        .append_pax_extensions([
            ("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..]),
            ("SCHILY.xattr.user.note", &b"hi"[..]),
        ])
        .unwrap();
    layer.file("f", b"x");
    let report = sandbox.unpack(&mut layer).unwrap();
    let reasons: Vec<&SkipReason> = report.skipped.iter().map(|s| &s.reason).collect();
    assert_eq!(
        reasons,
        [&SkipReason::OverlayXattr("trusted.overlay.redirect".into())]
    );
    assert!(
        xattr::get(sandbox.path("f"), "trusted.overlay.redirect")
            .unwrap()
            .is_none()
    );
    assert_eq!(
        xattr::get(sandbox.path("f"), "user.note")
            .unwrap()
            .as_deref(),
        Some(&b"hi"[..])
    );
}

#[test]
fn expansion_past_the_limit_stops_with_a_clear_error() {
    let sandbox = Sandbox::new();
    let limits = UnpackLimits {
        max_expanded_bytes: 64 << 10,
    };
    let big = vec![0u8; 1 << 20];
    let error = sandbox
        .unpack_limited(Layer::new().file("small", b"s").file("big", &big), &limits)
        .unwrap_err();
    assert!(
        matches!(&error, UnpackError::TooLarge { path, limit: 65536 } if path == "big"),
        "{error}"
    );
    assert!(error.to_string().contains("--max-layer-size"), "{error}");
    let written = fs::metadata(sandbox.path("big")).map_or(0, |m| m.len());
    assert!(written <= 64 << 10, "{written}");
}

#[test]
fn the_diff_id_is_the_sha256_of_the_whole_stream() {
    let sandbox = Sandbox::new();
    let tar = Layer::new().dir("a").file("a/b", b"hello").bytes();
    let report = unpack_layer(&tar[..], &sandbox.dest, &UnpackLimits::default()).unwrap();
    assert_eq!(report.diff_id, Digest::of(&tar));
    assert_eq!(report.expanded_bytes, tar.len() as u64);
    assert_eq!(fs::read(sandbox.path("a/b")).unwrap(), b"hello");
}

#[test]
fn a_root_entry_sets_the_root_and_cannot_replace_it() {
    let sandbox = Sandbox::new();
    let mut layer = Layer::new();
    layer.entry(EntryType::Directory, "./", "", b"", 0o755);
    sandbox.unpack(&mut layer).unwrap();
    assert_eq!(fs::metadata(&sandbox.dest).unwrap().mode() & 0o7777, 0o755);
    let error = sandbox.unpack(Layer::new().file("./", b"x")).unwrap_err();
    assert!(
        matches!(error, UnpackError::RootNotDirectory { .. }),
        "{error}"
    );
}

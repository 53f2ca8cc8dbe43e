//! Safe layer unpacking through the command line: a malicious image loaded with `skiff load`
//! is refused by `skiff run`, naming the bad entry, and writes nothing outside the snapshot
//! being made, nor leaves that snapshot half-made. Needs root (`skiff run` of a Linux image);
//! skipped with a printed reason otherwise.

use crate::registry::sha256_digest;
use crate::support::*;
use std::path::Path;

/// One entry of a layer: a file, a symlink, or a file whose path is written raw (the tar
/// crate refuses to write `..`, as any honest tool does).
enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Link(&'a str, &'a str),
    RawFile(&'a str, &'a [u8]),
}

/// A header owned by root, as image builders write them.
fn root_owned(mut header: tar::Header, mode: u32) -> tar::Header {
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

fn layer_of(entries: &[Entry]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = root_owned(tar::Header::new_gnu(), 0o644);
        match entry {
            Entry::File(path, bytes) => {
                header.set_size(bytes.len() as u64);
                tar.append_data(&mut header, path, *bytes).unwrap();
            }
            Entry::Link(path, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                tar.append_link(&mut header, path, target).unwrap();
            }
            Entry::RawFile(path, bytes) => {
                let mut header = root_owned(tar::Header::new_old(), 0o644);
                header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
                header.set_size(bytes.len() as u64);
                header.set_entry_type(tar::EntryType::Regular);
                header.set_cksum();
                tar.append(&header, *bytes).unwrap();
            }
        }
    }
    tar.into_inner().unwrap()
}

/// An OCI image layout archive, as `skiff load -i` reads it: one uncompressed `layer`,
/// named `name`.
fn image_archive(name: &str, layer: &[u8]) -> Vec<u8> {
    let json = |value: serde_json::Value| serde_json::to_vec(&value).unwrap();
    let config = json(serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer)]},
    }));
    let descriptor = |media_type: &str, bytes: &[u8]| serde_json::json!({"mediaType": media_type, "digest": sha256_digest(bytes), "size": bytes.len()});
    let manifest = json(serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", layer)],
    }));
    let mut entry = descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
    entry["annotations"] = serde_json::json!({"io.containerd.image.name": name});
    let index = json(serde_json::json!({"schemaVersion": 2, "manifests": [entry]}));
    let blob = |bytes: &[u8]| {
        let path = format!("blobs/sha256/{}", &sha256_digest(bytes)["sha256:".len()..]);
        (path, bytes.to_vec())
    };
    let files = [
        (
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        blob(layer),
        blob(&config),
        blob(&manifest),
        ("index.json".into(), index),
    ];
    let files: Vec<Entry> = files.iter().map(|(p, b)| Entry::File(p, b)).collect();
    layer_of(&files)
}

/// Every path under `dir`, relative to it.
fn tree(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        found.push(name.clone());
        if entry.file_type().unwrap().is_dir() {
            found.extend(
                tree(&entry.path())
                    .into_iter()
                    .map(|p| format!("{name}/{p}")),
            );
        }
    }
    found.sort();
    found
}

/// Loads `layer` as image `name`, runs it, and checks the run is refused naming `bad_entry`
/// with nothing written where the layer aimed and no snapshot left.
fn refused(skiff: &Skiff, name: &str, layer: &[u8], bad_entry: &str, because: &str) {
    let archive = skiff.data_dir.path().join("image.tar");
    std::fs::write(&archive, image_archive(name, layer)).unwrap();
    skiff
        .run(["load", "-i", archive.to_str().unwrap()])
        .expect_code(0)
        .stdout_has(&format!("loaded {name}"));
    skiff
        .run(["run", "--net", "none", "--rm", name, "true"])
        .expect_code(125)
        .stderr_has(&format!("layer entry {bad_entry} {because}"))
        .stderr_has("do not run it");
    let snapshots = skiff.data_dir.path().join("linux/snapshots");
    assert_eq!(
        tree(&snapshots),
        Vec::<String>::new(),
        "a snapshot was left"
    );
}

#[test]
fn a_layer_climbing_out_with_dot_dot_is_refused_at_run() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipping: `skiff run` of a Linux image needs root");
        return;
    }
    // From `<data>/linux/snapshots/.tmp-*/`, `../../sentinel` is `<data>/linux/sentinel`;
    // the deeper path aims at the host's /tmp.
    let host = format!("/tmp/skiff-escape-{}", std::process::id());
    let deep = format!("../../../../../../../../../../../..{host}");
    for (bad, aim) in [("../../sentinel", None), (deep.as_str(), Some(&host))] {
        let layer = layer_of(&[
            Entry::File("hello.txt", b"an honest file first\n"),
            Entry::RawFile(bad, b"pwned\n"),
        ]);
        let skiff = Skiff::new();
        let sentinel = skiff.data_dir.path().join("linux/sentinel");
        std::fs::create_dir_all(sentinel.parent().unwrap()).unwrap();
        std::fs::write(&sentinel, "untouched\n").unwrap();
        let name = "example.com/evil/dotdot:1";
        refused(&skiff, name, &layer, bad, "climbs out");
        assert_eq!(std::fs::read_to_string(&sentinel).unwrap(), "untouched\n");
        if let Some(aim) = aim {
            assert!(!Path::new(aim).exists(), "{aim} was written");
        }
    }
}

#[test]
fn a_layer_writing_through_its_own_symlink_is_refused_at_run() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipping: `skiff run` of a Linux image needs root");
        return;
    }
    let aim = format!("/tmp/skiff-pwned-{}", std::process::id());
    let through = format!("link{aim}");
    let layer = layer_of(&[
        Entry::File("hello.txt", b"an honest file first\n"),
        Entry::Link("link", "/"),
        Entry::File(&through, b"pwned\n"),
    ]);
    refused(
        &Skiff::new(),
        "example.com/evil/symlink:1",
        &layer,
        &through,
        "would be written through the symlink link",
    );
    assert!(!Path::new(&aim).exists(), "{aim} was written");
}

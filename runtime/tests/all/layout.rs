//! `skiff save` and `skiff load`: image archives as OCI image layouts and `docker save`
//! tarballs, cross-checked with tools nobody here wrote (skopeo, umoci). Every refused archive
//! leaves the store and the names as they were.

use crate::registry::{Registry, sha256_digest};
use crate::support::*;
use std::path::Path;

fn load(skiff: &Skiff, archive: &Path) -> Ran {
    skiff.run(["load", "-i", archive.to_str().unwrap()])
}

/// `tar -C DIR -cf FILE .`, as a user archives a layout folder.
fn tar_folder(folder: &Path, archive: &Path) {
    let (folder, archive) = (folder.to_str().unwrap(), archive.to_str().unwrap());
    tool("tar", &["-C", folder, "-cf", archive, "."]);
}

/// One entry of a tar to build: a file, or a symbolic link to a path.
enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Link(&'a str, &'a str),
}

fn tar_of(entries: &[Entry]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
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
        }
    }
    tar.into_inner().unwrap()
}

fn json(value: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&value).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    sha256_digest(bytes)["sha256:".len()..].to_string()
}

/// A tar entry's bytes.
fn entry_of(archive: &Path, wanted: &str) -> Vec<u8> {
    use std::io::Read;
    let mut tar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap() == Path::new(wanted) {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            return bytes;
        }
    }
    panic!("{} has no {wanted}", archive.display());
}

#[test]
fn a_saved_image_loads_and_runs_elsewhere() {
    let registry = Registry::start();
    let reference = registry.reference("demo/hello:1.0");
    let digest = push(&Skiff::new(), &p1("hello"), &reference);
    let source = Skiff::new();
    source.run(["pull", &reference]).expect_code(0);
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("hello.tar");
    source
        .run(["save", &reference, "-o", archive.to_str().unwrap()])
        .expect_code(0)
        .stdout_has(&format!("saved {reference} ({digest})"));
    let files: Vec<_> = std::fs::read_dir(out.path()).unwrap().collect();
    assert_eq!(
        files.len(),
        1,
        "no temporary file is left beside the archive"
    );

    // The layout as containerd and skopeo read it.
    let layout: serde_json::Value =
        serde_json::from_slice(&entry_of(&archive, "oci-layout")).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index: serde_json::Value =
        serde_json::from_slice(&entry_of(&archive, "index.json")).unwrap();
    let entry = &index["manifests"][0];
    assert_eq!(entry["digest"], digest);
    assert_eq!(entry["annotations"]["io.containerd.image.name"], reference);
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        "1.0"
    );
    let oci_archive = format!("oci-archive:{}", archive.display());
    let raw = tool("skopeo", &["inspect", "--raw", &oci_archive]);
    assert_eq!(
        sha256_digest(&raw),
        digest,
        "skopeo reads the same manifest"
    );

    let target = Skiff::new();
    load(&target, &archive)
        .expect_code(0)
        .stdout_has(&format!("loaded {reference} ({digest})"));
    target
        .run(["run", &reference, "loaded"])
        .expect_code(0)
        .stdout_has("hello from skiff")
        .stdout_has("arg[1]=loaded");
    assert_eq!(stored_blobs(&target), stored_blobs(&source));

    // From standard input too.
    let piped = Skiff::new();
    let output = piped
        .command()
        .args(["load", "--input", "-"])
        .stdin(std::fs::File::open(&archive).unwrap())
        .output()
        .unwrap();
    Ran::from(output)
        .expect_code(0)
        .stdout_has(&format!("loaded {reference} ({digest})"));
}

#[test]
fn a_layout_skopeo_wrote_loads_and_runs_by_digest() {
    let registry = Registry::start();
    let reference = registry.reference("interop/hello:2");
    let digest = push(&Skiff::new(), &p1("hello"), &reference);
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("oci");
    let copied = registry.skopeo_copy_to_layout(&reference, &layout);
    assert!(
        copied.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&copied.stderr)
    );
    // skopeo names the image by its tag alone: there is no repository to load it under.
    let index = std::fs::read_to_string(layout.join("index.json")).unwrap();
    assert!(
        index.contains(r#""org.opencontainers.image.ref.name":"2""#),
        "{index}"
    );
    let archive = dir.path().join("skopeo.tar");
    tar_folder(&layout, &archive);

    let skiff = Skiff::new();
    load(&skiff, &archive)
        .expect_code(0)
        .stdout_has(&format!("loaded {digest} ({digest})"));
    skiff
        .run(["run", &digest])
        .expect_code(0)
        .stdout_has("hello from skiff");
    let short = &digest["sha256:".len()..][..12];
    skiff
        .run(["run", short])
        .expect_code(0)
        .stdout_has("hello from skiff");
}

#[test]
fn a_linux_image_from_umoci_loads_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let image = busybox_layout(dir.path(), "sh");
    // umoci tags by `org.opencontainers.image.ref.name` alone, and keeps the blobs of the
    // images `umoci config` replaced until `umoci gc`.
    let archive = dir.path().join("unnamed.tar");
    tar_folder(&image, &archive);
    let skiff = Skiff::new();
    let ran = load(&skiff, &archive);
    ran.expect_code(0).stdout_has("loaded sha256:");
    let digest = ran.stdout.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(
        stored_blobs(&skiff).len(),
        3,
        "manifest, config, layer; no leftovers"
    );
    let inspected = skiff.run(["inspect", &digest]);
    let details: serde_json::Value =
        serde_json::from_str(&inspected.expect_code(0).stdout).unwrap();
    assert_eq!(details["Kind"], "linux");
    assert_eq!(details["Config"]["config"]["Entrypoint"][0], "/bin/busybox");

    // With containerd's name annotation, it loads under that name.
    let index_path = image.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    index["manifests"][0]["annotations"]["io.containerd.image.name"] =
        "example.com/tools/busybox:1".into();
    std::fs::write(&index_path, json(index)).unwrap();
    let named = dir.path().join("named.tar");
    tar_folder(&image, &named);
    let skiff = Skiff::new();
    load(&skiff, &named)
        .expect_code(0)
        .stdout_has("loaded example.com/tools/busybox:1 (sha256:");
    let listed = images_listed(&skiff);
    let line = listed
        .lines()
        .find(|l| l.starts_with("example.com/tools/busybox "))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(line.contains(" 1 ") && line.contains("linux"), "{line}");
    skiff
        .run([
            "run",
            "--net",
            "none",
            "--rm",
            "example.com/tools/busybox:1",
            "echo",
            "loaded-and-ran",
        ])
        .expect_code(0)
        .stdout_has("loaded-and-ran");

    // skopeo writes the same image as a `docker save` archive: a layer named by its digest,
    // linked from a legacy `<id>/layer.tar`.
    let docker = dir.path().join("docker.tar");
    let source = format!("oci:{}:latest", image.display());
    let target = format!("docker-archive:{}:example/busybox:1", docker.display());
    skopeo_copy(&[], &source, &target);
    let skiff = Skiff::new();
    load(&skiff, &docker)
        .expect_code(0)
        .stdout_has("loaded docker.io/example/busybox:1 (sha256:");
    let inspected = skiff.run(["inspect", "example/busybox:1"]);
    let details: serde_json::Value =
        serde_json::from_str(&inspected.expect_code(0).stdout).unwrap();
    assert_eq!(details["Kind"], "linux");
    assert_eq!(details["Config"]["config"]["Entrypoint"][0], "/bin/busybox");
}

/// A `docker save` archive in the legacy layout: two images, the second sharing the first's
/// layer through a symbolic link, as `docker save` writes them.
fn docker_archive() -> Vec<u8> {
    let layer = tar_of(&[Entry::File("hello.txt", b"hello from a layer\n")]);
    let config = |created: &str| {
        json(serde_json::json!({
            "architecture": "amd64", "os": "linux", "created": created,
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(&layer)]},
        }))
    };
    let (first, second) = (
        config("2026-01-01T00:00:00Z"),
        config("2026-01-02T00:00:00Z"),
    );
    let (first_name, second_name) = (
        format!("{}.json", hex(&first)),
        format!("{}.json", hex(&second)),
    );
    let manifest = json(serde_json::json!([
        {"Config": first_name, "RepoTags": ["example/app:2"], "Layers": ["aaaa/layer.tar"]},
        {"Config": second_name, "RepoTags": ["example/app:latest", "localhost:5000/app:2"],
         "Layers": ["bbbb/layer.tar"]},
    ]));
    tar_of(&[
        Entry::File("aaaa/VERSION", b"1.0"),
        Entry::File("aaaa/json", b"{}"),
        Entry::File("aaaa/layer.tar", &layer),
        Entry::File("bbbb/VERSION", b"1.0"),
        Entry::Link("bbbb/layer.tar", "../aaaa/layer.tar"),
        Entry::File(&first_name, &first),
        Entry::File(&second_name, &second),
        Entry::File("repositories", b"{}"),
        Entry::File("manifest.json", &manifest),
    ])
}

#[test]
fn a_docker_save_archive_loads_under_its_tags() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("docker.tar");
    std::fs::write(&archive, docker_archive()).unwrap();
    let skiff = Skiff::new();
    load(&skiff, &archive)
        .expect_code(0)
        .stdout_has("loaded docker.io/example/app:2 (sha256:")
        .stdout_has("loaded docker.io/example/app:latest (sha256:")
        .stdout_has("loaded localhost:5000/app:2 (sha256:");
    let listed = images_listed(&skiff);
    let line = listed
        .lines()
        .find(|l| l.starts_with("docker.io/example/app ") && l.contains(" 2 "))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(line.contains("linux"), "{line}");
    assert_eq!(
        stored_blobs(&skiff).len(),
        5,
        "two manifests, two configs, one layer; no legacy metadata"
    );
    let inspected = skiff.run(["inspect", "localhost:5000/app:2"]);
    let json: serde_json::Value = serde_json::from_str(&inspected.expect_code(0).stdout).unwrap();
    let manifest = &json["Manifest"];
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar"
    );
    assert_eq!(json["Config"]["created"], "2026-01-02T00:00:00Z");
}

/// A hand-made OCI layout whose one manifest has two layers: `shared` (stored before the
/// test loads it) and a new one. Returns the layout's entries, in tar order.
fn layout_entries(shared: &[u8]) -> Vec<(String, Vec<u8>)> {
    let layer = tar_of(&[Entry::File("new.txt", b"a layer nobody stored yet\n")]);
    let config = json(serde_json::json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(shared), sha256_digest(&layer)]}}));
    let descriptor = |media_type: &str, bytes: &[u8]| {
        let digest = sha256_digest(bytes);
        serde_json::json!({"mediaType": media_type, "digest": digest, "size": bytes.len()})
    };
    let tar_type = "application/vnd.oci.image.layer.v1.tar";
    let manifest = json(serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": [descriptor(tar_type, shared), descriptor(tar_type, &layer)],
    }));
    let mut index_entry = descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
    index_entry["annotations"] =
        serde_json::json!({"io.containerd.image.name": "example.com/bad:1"});
    let index = json(serde_json::json!({"schemaVersion": 2, "manifests": [index_entry]}));
    let blob = |bytes: &[u8]| (format!("blobs/sha256/{}", hex(bytes)), bytes.to_vec());
    vec![
        (
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        blob(shared),
        blob(&layer),
        blob(&config),
        blob(&manifest),
        ("index.json".into(), index),
    ]
}

fn tar_entries(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let entries: Vec<Entry> = entries
        .iter()
        .map(|(path, bytes)| Entry::File(path, bytes))
        .collect();
    tar_of(&entries)
}

/// A tar whose one entry's path is written raw (the tar crate refuses to write `..`).
fn tar_with_raw_path(path: &str) -> Vec<u8> {
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
    header.set_size(2);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut tar = tar::Builder::new(Vec::new());
    tar.append(&header, &b"{}"[..]).unwrap();
    tar.into_inner().unwrap()
}

#[test]
fn bad_archives_are_refused_and_change_nothing() {
    let skiff = Skiff::new();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("docker.tar");
    std::fs::write(&good, docker_archive()).unwrap();
    load(&skiff, &good).expect_code(0);
    let before = (stored_blobs(&skiff), images_listed(&skiff));
    // The docker archive's layer, already stored: a refused load must not remove it.
    let shared = tar_of(&[Entry::File("hello.txt", b"hello from a layer\n")]);
    assert!(before.0.contains(&hex(&shared)));

    let refused = |name: &str, bytes: &[u8], needles: &[&str]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let ran = load(&skiff, &path);
        ran.expect_code(125)
            .stderr_has("skiff: error:")
            .stderr_has(path.to_str().unwrap());
        for needle in needles {
            ran.stderr_has(needle);
        }
        assert_eq!(stored_blobs(&skiff), before.0, "{name} changed the store");
        assert_eq!(images_listed(&skiff), before.1, "{name} changed the names");
    };

    refused(
        "notes.tar",
        "just some notes, not an archive\n".repeat(40).as_bytes(),
        &["is not a tar archive"],
    );
    refused(
        "empty.tar",
        b"",
        &["neither an OCI image layout", "tar -C DIR -cf FILE ."],
    );
    refused(
        "other.tar",
        &tar_of(&[Entry::File("readme.txt", b"hello")]),
        &["neither an OCI image layout", "nor a `docker save` archive"],
    );
    refused(
        "packed.tar.gz",
        &[0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0],
        &["gzip-compressed", "gzip -dc"],
    );

    // The shared layer is verified too, and the new layer this load stored is removed again.
    let mut entries = layout_entries(&shared);
    let config = entries[3].clone();
    entries[3].1.push(b'\n');
    refused(
        "tampered.tar",
        &tar_entries(&entries),
        &[&config.0, "does not match its digest", "nothing was loaded"],
    );
    let mut entries = layout_entries(&shared);
    let new_layer = entries.remove(2);
    refused(
        "incomplete.tar",
        &tar_entries(&entries),
        &[
            &format!(
                "names blob sha256:{}",
                &new_layer.0["blobs/sha256/".len()..]
            ),
            "not in the archive",
        ],
    );
    let docker = json(serde_json::json!([{"Config": "x.json", "RepoTags": ["a:1"], "Layers": []}]));
    refused(
        "docker-incomplete.tar",
        &tar_of(&[Entry::File("manifest.json", &docker)]),
        &["manifest.json names `x.json`", "not in the archive"],
    );
    refused(
        "escape.tar",
        &tar_with_raw_path("../index.json"),
        &["`../index.json`", "absolute path or `..`"],
    );
    refused(
        "absolute.tar",
        &tar_with_raw_path("/index.json"),
        &["`/index.json`", "absolute path or `..`"],
    );

    // The layout itself is sound: it loads, and keeps the shared layer.
    let sound = dir.path().join("sound.tar");
    std::fs::write(&sound, tar_entries(&layout_entries(&shared))).unwrap();
    load(&skiff, &sound)
        .expect_code(0)
        .stdout_has("loaded example.com/bad:1");
    assert!(stored_blobs(&skiff).contains(&hex(&shared)));

    let missing = dir.path().join("missing.tar");
    load(&skiff, &missing)
        .expect_code(125)
        .stderr_has(&format!("cannot open {}", missing.display()))
        .stderr_has("check the path");
}

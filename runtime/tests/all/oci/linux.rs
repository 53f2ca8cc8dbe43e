//! Linux images and `wasi/wasm` platform images: formats, compression, platforms.

use super::*;

#[test]
fn linux_images_pull_in_oci_and_docker_formats_and_run() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = busybox_layout(work.path(), "true");
    let skiff = Skiff::new();
    let pull = |tag: &str| {
        let reference = registry.reference(&format!("linux/{tag}:{tag}"));
        let pulled = skiff.run(["pull", &reference]);
        pulled.expect_code(0).stdout_has("linux");
        assert!(
            pulled.stdout.contains(&registry.skopeo_digest(&reference)),
            "{}",
            pulled.stdout
        );
    };
    // One repository each: skopeo reuses blobs already in the destination repository.
    skopeo_push(&layout, &registry.reference("linux/oci-gzip:oci-gzip"), &[]);
    pull("oci-gzip");
    skopeo_push(
        &layout,
        &registry.reference("linux/docker:docker"),
        &["--format", "v2s2"],
    );
    pull("docker");
    // zstd: recompressed into a local layout, then pushed byte for byte (skopeo's blob cache
    // would swap the known gzip layer back in on a registry push).
    let zstd = work.path().join("zstd");
    skopeo_copy(
        &["--dest-compress", "--dest-compress-format", "zstd"],
        &format!("oci:{}:latest", layout.display()),
        &format!("oci:{}:latest", zstd.display()),
    );
    raw_push_layout(&registry, &zstd, "linux/oci-zstd", "oci-zstd");
    pull("oci-zstd");

    let listed = images_listed(&skiff);
    assert_eq!(listed.matches(" linux ").count(), 3, "{listed}");
    let inspected = skiff.run(["inspect", &registry.reference("linux/docker:docker")]);
    let json: serde_json::Value = serde_json::from_str(&inspected.expect_code(0).stdout).unwrap();
    assert_eq!(
        json["Manifest"]["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(json["Config"]["config"]["Entrypoint"][0], "/bin/busybox");
    // gzip and docker share the same layer bytes: stored once.
    let layers: std::collections::HashSet<String> = ["oci-gzip", "oci-zstd", "docker"]
        .iter()
        .map(|tag| {
            let json: serde_json::Value = serde_json::from_str(
                &skiff
                    .run([
                        "inspect",
                        &registry.reference(&format!("linux/{tag}:{tag}")),
                    ])
                    .stdout,
            )
            .unwrap();
            json["Manifest"]["layers"][0]["digest"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        layers.len(),
        2,
        "one gzip layer shared by two images, one zstd layer"
    );
    let blobs = stored_blobs(&skiff).len();
    assert!(
        blobs <= 3 * 2 + 2,
        "{blobs} blobs for 3 manifests, their configs and 2 layers"
    );

    // Each format's layers unpack into snapshots and run (the image's entrypoint is busybox).
    for image in [
        "linux/oci-gzip:oci-gzip",
        "linux/docker:docker",
        "linux/oci-zstd:oci-zstd",
    ] {
        let reference = registry.reference(image);
        skiff
            .run([
                "run",
                "--net",
                "none",
                "--rm",
                &reference,
                "echo",
                "pulled-and-ran",
            ])
            .expect_code(0)
            .stdout_has("pulled-and-ran");
    }
}

/// Pushes the single image of an OCI layout directory byte for byte.
fn raw_push_layout(registry: &Registry, layout: &Path, repo: &str, tag: &str) {
    let read = |digest: &str| {
        std::fs::read(
            layout
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = read(index["manifests"][0]["digest"].as_str().unwrap());
    let json: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(
        json["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let mut blobs = vec![read(json["config"]["digest"].as_str().unwrap())];
    blobs.extend(
        json["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| read(l["digest"].as_str().unwrap())),
    );
    let blob_refs: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
    registry.raw_push(repo, tag, &manifest, OCI_MANIFEST, &blob_refs);
}

#[test]
fn the_platform_is_chosen_from_an_index() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = busybox_layout(work.path(), "true");
    let amd64 = registry.reference("multi/busybox:amd64");
    skopeo_push(&layout, &amd64, &[]);
    let (manifest, digest) = registry.oras_pull_manifest(&amd64);
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len(),
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len(),
             "platform": {"os": "linux", "architecture": "amd64"}},
        ],
    });
    let index_digest = registry.raw_push(
        "multi/busybox",
        "all",
        index.to_string().as_bytes(),
        OCI_INDEX,
        &[],
    );
    let reference = registry.reference("multi/busybox:all");
    let skiff = Skiff::new();
    skiff
        .run(["pull", &reference])
        .expect_code(0)
        .stdout_has(&index_digest);
    skiff
        .run(["pull", "--platform", "linux/arm64/v8", &reference])
        .expect_code(0);
    let ran = Skiff::new().run(["pull", "--platform", "linux/s390x", &reference]);
    ran.expect_code(125)
        .stderr_has("no image for platform linux/s390x")
        .stderr_has("linux/arm64/v8, linux/amd64");
    // A digest pin is verified: the index's own digest pulls, a wrong one does not.
    let pinned = format!("{}@{index_digest}", registry.reference("multi/busybox"));
    Skiff::new().run(["pull", &pinned]).expect_code(0);
}

#[test]
fn a_wasi_platform_image_runs_its_wasm_entrypoint() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let hello = p1("hello");
    let layout = umoci_layout(
        work.path(),
        &[(&hello, "app/hello.wasm")],
        &[
            "--architecture",
            "wasm",
            "--os",
            "wasi",
            "--config.entrypoint",
            "/app/hello.wasm",
        ],
    );
    let reference = registry.reference("platform/hello:1");
    skopeo_push(&layout, &reference, &[]);

    let skiff = Skiff::new();
    skiff
        .run(["pull", &reference])
        .expect_code(0)
        .stdout_has("wasm");
    skiff
        .run(["run", &reference, "packed"])
        .expect_code(0)
        .stdout_has("hello from skiff")
        .stdout_has("arg[1]=packed");
}

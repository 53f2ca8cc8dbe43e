//! Images through a real registry (Debian's docker-registry on loopback), cross-checked with
//! clients nobody here wrote (skopeo, oras-py). Every refused input leaves the store as it was.

use crate::registry::{Fault, FaultProxy, OCI_INDEX, OCI_MANIFEST, Registry, sha256_digest};
use crate::support::*;
use std::path::Path;

#[test]
fn a_pushed_module_pulls_and_runs_anywhere() {
    let registry = Registry::start();
    let reference = registry.reference("demo/hello:1.0");
    let pusher = Skiff::new();
    let digest = push(&pusher, &p1("hello"), &reference);
    assert_eq!(
        registry.skopeo_digest(&reference),
        digest,
        "skopeo sees the same manifest"
    );

    let puller = Skiff::new();
    puller
        .run(["pull", &reference])
        .expect_code(0)
        .stdout_has(&digest)
        .stdout_has("wasm");
    let listed = images_listed(&puller);
    assert!(
        listed.contains(&registry.reference("demo/hello"))
            && listed.contains("1.0")
            && listed.contains("wasm"),
        "{listed}"
    );
    let ran = puller.run(["run", &reference, "from-an-image"]);
    ran.expect_code(0)
        .stdout_has("hello from skiff")
        .stdout_has("arg[1]=from-an-image");

    let inspected = puller.run(["inspect", &reference]);
    let json: serde_json::Value = serde_json::from_str(&inspected.expect_code(0).stdout).unwrap();
    assert_eq!(
        json["Manifest"]["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(
        json["Manifest"]["layers"][0]["mediaType"],
        "application/wasm"
    );
    assert_eq!(
        json["Manifest"]["layers"][0]["annotations"]["org.opencontainers.image.title"],
        "hello.wasm"
    );
    assert_eq!(json["Config"]["architecture"], "wasm");
    assert_eq!(json["Config"]["os"], "wasip1");
    assert_eq!(
        json["Config"]["layerDigests"][0],
        sha256_digest(&std::fs::read(p1("hello")).unwrap())
    );

    puller
        .run(["rmi", &reference])
        .expect_code(0)
        .stdout_has("untagged");
    assert!(
        stored_blobs(&puller).is_empty(),
        "rmi leaves no unreferenced blobs"
    );
    assert!(!images_listed(&puller).contains("demo/hello"));
}

#[test]
fn a_component_artifact_records_its_world_and_serves() {
    let registry = Registry::start();
    let reference = registry.reference("demo/http:1");
    push(&Skiff::new(), &p2("http_hello"), &reference);
    let skiff = Skiff::new();
    // `run` pulls what is not stored yet.
    let server = skiff.serve([reference.as_str()]);
    assert_eq!(
        get(server.addr, "/from-registry").body,
        "Hello from skiff! path=/from-registry\n"
    );
    drop(server);
    let json: serde_json::Value =
        serde_json::from_str(&skiff.run(["inspect", &reference]).stdout).unwrap();
    assert_eq!(json["Config"]["os"], "wasip2");
    let component = &json["Config"]["component"];
    assert!(
        component["target"]
            .as_str()
            .unwrap()
            .starts_with("wasi:http/proxy@0.2"),
        "{component}"
    );
    let exports = component["exports"].as_array().unwrap();
    assert!(
        exports.iter().any(|e| e
            .as_str()
            .unwrap()
            .starts_with("wasi:http/incoming-handler@")),
        "{exports:?}"
    );
    let imports = component["imports"].as_array().unwrap();
    assert!(
        imports
            .iter()
            .any(|e| e.as_str().unwrap().starts_with("wasi:cli/")),
        "{imports:?}"
    );
}

#[test]
fn other_tools_read_what_skiff_pushes() {
    let registry = Registry::start();
    let reference = registry.reference("interop/hello:2");
    let digest = push(&Skiff::new(), &p1("hello"), &reference);
    let (manifest, oras_digest) = registry.oras_pull_manifest(&reference);
    assert_eq!(oras_digest, digest);
    assert_eq!(sha256_digest(&manifest), digest);
    let out = tempfile::tempdir().unwrap();
    let files = registry.oras_pull(&reference, out.path());
    let pulled = files
        .iter()
        .find(|f| f.file_name().unwrap() == "hello.wasm")
        .expect("oras writes the titled layer");
    assert_eq!(
        std::fs::read(pulled).unwrap(),
        std::fs::read(p1("hello")).unwrap()
    );
    let layout = tempfile::tempdir().unwrap();
    let copied = registry.skopeo_copy_to_layout(&reference, &layout.path().join("oci"));
    assert!(
        copied.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.path().join("oci/index.json")).unwrap())
            .unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest);
}

#[test]
fn skiff_runs_what_other_tools_push() {
    let registry = Registry::start();
    let wasm = p1("hello");
    // CNCF layout, Spin's layer type and the legacy module type, pushed by oras.
    for (tag, layer_type, config) in [
        (
            "cncf",
            "application/wasm",
            Some("application/vnd.wasm.config.v0+json"),
        ),
        ("spin", "application/vnd.wasm.content.layer.v1+wasm", None),
        (
            "legacy",
            "application/vnd.module.wasm.content.layer.v1+wasm",
            None,
        ),
    ] {
        let reference = registry.reference(&format!("oras/hello:{tag}"));
        let config_json = br#"{"architecture":"wasm","os":"wasip1","layerDigests":[]}"#;
        let digest = registry.oras_push(
            &reference,
            &[(wasm.clone(), layer_type)],
            config.map(|c| (&config_json[..], c)),
        );
        let skiff = Skiff::new();
        skiff
            .run(["pull", &reference])
            .expect_code(0)
            .stdout_has(&digest)
            .stdout_has("wasm");
        skiff
            .run(["run", &reference])
            .expect_code(0)
            .stdout_has("hello from skiff");
    }
}

#[test]
fn a_stored_image_pushes_to_another_registry() {
    let (first, second) = (Registry::start(), Registry::start());
    let source = first.reference("copy/hello:1");
    let digest = push(&Skiff::new(), &p1("hello"), &source);
    let skiff = Skiff::new();
    skiff.run(["pull", &source]).expect_code(0);
    let target = second.reference("copied/hello:1");
    skiff.run(["push", &source, &target]).expect_code(0);
    assert_eq!(
        second.skopeo_digest(&target),
        digest,
        "the same bytes under a new name"
    );
}

/// Runs `skiff pull REF` expecting failure: checks the message and that nothing was stored.
fn pull_fails(reference: &str, needles: &[&str]) {
    let skiff = Skiff::new();
    let ran = skiff.run(["pull", reference]);
    ran.expect_code(125).stderr_has("skiff: error:");
    for needle in needles {
        ran.stderr_has(needle);
    }
    assert!(
        stored_blobs(&skiff).is_empty(),
        "a refused pull stored blobs: {:?}",
        stored_blobs(&skiff)
    );
    assert!(
        !images_listed(&skiff).contains("127.0.0.1"),
        "a refused pull named an image"
    );
}

#[test]
fn a_tampered_blob_is_refused() {
    let registry = Registry::start();
    let reference = registry.reference("bad/tampered:1");
    push(&Skiff::new(), &p1("hello"), &reference);
    let layer = sha256_digest(&std::fs::read(p1("hello")).unwrap());
    let path = registry.blob_path(&layer);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    pull_fails(
        &reference,
        &[&reference, "does not match digest", "nothing was stored"],
    );
}

#[test]
fn missing_images_and_registries_say_so() {
    let registry = Registry::start();
    pull_fails(
        &registry.reference("nothing/here:1"),
        &["not found", "check the name and tag"],
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    pull_fails(
        &format!("{closed}/app:1"),
        &["cannot reach registry", "check the address"],
    );
    let ran = Skiff::new().run(["pull", "UPPER/Case:1"]);
    ran.expect_code(2)
        .stderr_has("invalid image reference")
        .stderr_has("NAME[:TAG]");
}

#[test]
fn registry_errors_401_and_500_are_explained() {
    let locked = Registry::start_with_auth("alice", "secret");
    pull_fails(
        &locked.reference("private/app:1"),
        &["access denied", "skiff login"],
    );
    let open = Registry::start();
    let broken = FaultProxy::start(open.addr, Fault::Status(500));
    pull_fails(
        &broken.reference("app:1"),
        &["the registry failed", "try again later"],
    );
}

#[test]
fn a_connection_cut_mid_blob_is_retried_then_fails_cleanly() {
    let registry = Registry::start();
    let reference = registry.reference("flaky/hello:1");
    push(&Skiff::new(), &p1("hello"), &reference);
    let proxy = FaultProxy::start(registry.addr, Fault::CutBlobAfter(1000));
    let through_proxy = proxy.reference("flaky/hello:1");
    pull_fails(
        &through_proxy,
        &["failed after 3 attempts", "check the network"],
    );
    let layer = sha256_digest(&std::fs::read(p1("hello")).unwrap());
    let tries = proxy.seen().iter().filter(|r| r.contains(&layer)).count();
    assert!(
        tries >= 3,
        "the layer was fetched {tries} times: {:?}",
        proxy.seen()
    );
}

#[test]
fn odd_manifests_are_refused() {
    let registry = Registry::start();
    let config = br#"{"architecture":"wasm","os":"wasip1"}"#;
    let wasm = std::fs::read(p1("hello")).unwrap();
    let descriptor = |media_type: &str, bytes: &[u8]| serde_json::json!({"mediaType": media_type, "digest": sha256_digest(bytes), "size": bytes.len()});
    // A Wasm artifact with two layers.
    let two_layers = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.wasm.config.v0+json", config),
        "layers": [descriptor("application/wasm", &wasm), descriptor("application/wasm", config)],
    });
    registry.raw_push(
        "odd/two",
        "1",
        two_layers.to_string().as_bytes(),
        OCI_MANIFEST,
        &[config, &wasm],
    );
    pull_fails(&registry.reference("odd/two:1"), &["exactly one"]);

    // An index with no image for this machine.
    let plan9 = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", config), "layers": [],
    });
    let plan9_digest = registry.raw_push(
        "odd/index",
        "plan9",
        plan9.to_string().as_bytes(),
        OCI_MANIFEST,
        &[config],
    );
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": plan9_digest, "size": plan9.to_string().len(),
                        "platform": {"os": "plan9", "architecture": "mips"}}],
    });
    registry.raw_push(
        "odd/index",
        "multi",
        index.to_string().as_bytes(),
        OCI_INDEX,
        &[],
    );
    pull_fails(
        &registry.reference("odd/index:multi"),
        &["no image for platform linux/", "plan9/mips", "--platform"],
    );

    // A manifest over 4 MiB and one of an unknown type, served by a proxy.
    let huge = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","pad":"{}"}}"#,
        "x".repeat(5 << 20)
    );
    let proxy = FaultProxy::start(
        registry.addr,
        Fault::ServeManifest {
            media_type: OCI_MANIFEST.into(),
            body: huge.into_bytes(),
        },
    );
    pull_fails(
        &proxy.reference("odd/huge:1"),
        &["over the 4194304-byte limit"],
    );
    let unknown = br#"{"schemaVersion":2,"mediaType":"application/x-not-a-manifest"}"#.to_vec();
    let proxy = FaultProxy::start(
        registry.addr,
        Fault::ServeManifest {
            media_type: "application/x-not-a-manifest".into(),
            body: unknown,
        },
    );
    pull_fails(
        &proxy.reference("odd/unknown:1"),
        &["unsupported manifest media type"],
    );
}

#[test]
fn login_opens_a_private_registry_and_logout_closes_it() {
    use std::io::Write;
    let registry = Registry::start_with_auth("alice", "s3cret");
    let reference = registry.reference("private/hello:1");
    let hello = p1("hello");
    let skiff = Skiff::new();
    let auth_file = skiff.data_dir.path().join("auth.json");
    skiff
        .run(["push", hello.to_str().unwrap(), &reference])
        .expect_code(125)
        .stderr_has("skiff login");

    let login = |password: &str| {
        let mut child = skiff
            .command()
            .args(["login", "-u", "alice", "--password-stdin", &registry.host()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        Ran::from(child.wait_with_output().unwrap())
    };
    login("wrong").expect_code(125).stderr_has("access denied");
    assert!(!auth_file.exists(), "refused credentials are not stored");
    login("s3cret").expect_code(0).stdout_has("login succeeded");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&auth_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    skiff
        .run(["push", hello.to_str().unwrap(), &reference])
        .expect_code(0);
    skiff.run(["pull", &reference]).expect_code(0);
    skiff
        .run(["run", &reference])
        .expect_code(0)
        .stdout_has("hello from skiff");

    // Docker's own config file is honoured too.
    let other = Skiff::new();
    let docker_dir = other.data_dir.path().join("docker");
    std::fs::create_dir_all(&docker_dir).unwrap();
    let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "alice:s3cret");
    std::fs::write(
        docker_dir.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    other.run(["pull", &reference]).expect_code(0);

    skiff.run(["logout", &registry.host()]).expect_code(0);
    skiff
        .run(["pull", &reference])
        .expect_code(125)
        .stderr_has("access denied");
}

/// Copies the layout's image to `reference` with skopeo, plus extra skopeo flags.
fn skopeo_push(layout: &Path, reference: &str, extra: &[&str]) {
    skopeo_copy(
        &[&["--dest-tls-verify=false"], extra].concat(),
        &format!("oci:{}:latest", layout.display()),
        &format!("docker://{reference}"),
    );
}

#[test]
fn linux_images_pull_in_oci_and_docker_formats_and_say_they_cannot_run_yet() {
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

    let ran = skiff.run(["run", &registry.reference("linux/oci-gzip:oci-gzip")]);
    ran.expect_code(125)
        .stderr_has("is a Linux image")
        .stderr_has("cannot run Linux images yet");
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
fn system_prune_keeps_what_images_use() {
    let registry = Registry::start();
    let (kept, dropped) = (
        registry.reference("prune/kept:1"),
        registry.reference("prune/dropped:1"),
    );
    push(&Skiff::new(), &p1("hello"), &kept);
    push(&Skiff::new(), &p1("trap"), &dropped);
    let skiff = Skiff::new();
    skiff.run(["run", &kept]).expect_code(0);
    skiff.run(["run", &dropped]).expect_code(134);
    skiff.run(["run", p1("loop").to_str().unwrap(), "--timeout", "10ms"]);
    assert_eq!(skiff.cache_entries().len(), 3);
    skiff.run(["rmi", &dropped]).expect_code(0);
    // A stray blob nothing names (rmi already removed the dropped image's blobs).
    let stray = skiff
        .data_dir
        .path()
        .join("content/blobs/sha256")
        .join(&sha256_digest(b"stray")[7..]);
    std::fs::write(&stray, b"stray").unwrap();
    let pruned = skiff.run(["system", "prune"]);
    pruned
        .expect_code(0)
        .stdout_has("removed 1 blobs")
        .stdout_has("compiled code of 2 programs");
    assert!(!stray.exists());
    assert_eq!(
        skiff.cache_entries().len(),
        1,
        "only the kept image's code remains"
    );
    let ran = skiff.run_debug(["run", &kept]);
    ran.expect_code(0).stderr_has("compile cache hit");
}

#[test]
fn pulls_show_a_bar_per_blob_on_a_terminal_and_one_line_otherwise() {
    let registry = Registry::start();
    let reference = registry.reference("progress/hello:1");
    push(&Skiff::new(), &p1("hello"), &reference);
    let piped = Skiff::new().run(["pull", &reference]);
    assert_eq!(
        piped.expect_code(0).stdout.lines().count(),
        1,
        "one summary line in a pipe: {}",
        piped.stdout
    );
    // util-linux `script` gives skiff a pseudo-terminal.
    let skiff = Skiff::new();
    let command = format!("{} pull {reference}", env!("CARGO_BIN_EXE_skiff"));
    let tty = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("SKIFF_DATA_DIR", skiff.data_dir.path())
        .env("DOCKER_CONFIG", skiff.data_dir.path().join("docker"))
        .output()
        .expect("script (util-linux) is installed");
    let shown = String::from_utf8_lossy(&tty.stdout);
    assert!(tty.status.success(), "{shown}");
    let layer = sha256_digest(&std::fs::read(p1("hello")).unwrap());
    assert!(
        shown.contains(&layer[7..19]) && shown.contains("[="),
        "a bar named by the blob: {shown}"
    );
    assert!(shown.contains("pulled "), "{shown}");
}

#[test]
fn a_manifest_that_misstates_a_blob_size_is_refused_without_retries() {
    let registry = Registry::start();
    let config = br#"{"architecture":"wasm","os":"wasip1","layerDigests":[]}"#;
    let wasm = std::fs::read(p1("hello")).unwrap();
    for (tag, claimed) in [("short", wasm.len() - 10), ("long", wasm.len() + 10)] {
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": sha256_digest(config), "size": config.len()},
            "layers": [{"mediaType": "application/wasm", "digest": sha256_digest(&wasm), "size": claimed}],
        });
        registry.raw_push(
            "sizes/hello",
            tag,
            manifest.to_string().as_bytes(),
            OCI_MANIFEST,
            &[config, &wasm],
        );
        let proxy = FaultProxy::start(registry.addr, Fault::PassThrough);
        let reference = proxy.reference(&format!("sizes/hello:{tag}"));
        pull_fails(
            &reference,
            &[
                &format!("is {} bytes but the manifest says {claimed}", wasm.len()),
                "nothing was stored",
            ],
        );
        let fetches = proxy
            .seen()
            .iter()
            .filter(|r| r.contains(&sha256_digest(&wasm)))
            .count();
        assert_eq!(
            fetches,
            1,
            "no retries for a lying manifest: {:?}",
            proxy.seen()
        );
    }
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

#[test]
fn bearer_token_challenges_are_answered_with_the_logged_in_credentials() {
    let registry = Registry::start();
    let reference = registry.reference("tokens/hello:1");
    let digest = push(&Skiff::new(), &p1("hello"), &reference);
    let gate = FaultProxy::start(
        registry.addr,
        Fault::BearerAuth {
            user: "carol".into(),
            password: "t0ken-pass".into(),
            token: "opaque-token-123".into(),
        },
    );
    let through_gate = gate.reference("tokens/hello:1");
    pull_fails(&through_gate, &["access denied", "skiff login"]);

    let skiff = Skiff::new();
    skiff
        .run(["login", "-u", "carol", "-p", "wrong", &gate.host()])
        .expect_code(125)
        .stderr_has("access denied");
    skiff
        .run(["login", "-u", "carol", "-p", "t0ken-pass", &gate.host()])
        .expect_code(0);
    skiff
        .run(["pull", &through_gate])
        .expect_code(0)
        .stdout_has(&digest);
    skiff
        .run(["run", &through_gate])
        .expect_code(0)
        .stdout_has("hello from skiff");
    let asked_for_token = gate.seen().iter().any(|r| {
        r.starts_with("GET /token?") && r.contains("scope=repository%3Atokens%2Fhello%3Apull")
    });
    assert!(
        asked_for_token,
        "the client followed the challenge's realm with its scope: {:?}",
        gate.seen()
    );
}

#[test]
fn a_pinned_digest_is_verified_against_what_the_registry_serves() {
    let registry = Registry::start();
    let reference = registry.reference("pinned/hello:1");
    let digest = push(&Skiff::new(), &p1("hello"), &reference);
    let pinned = format!("{}@{digest}", registry.reference("pinned/hello"));
    Skiff::new()
        .run(["pull", &pinned])
        .expect_code(0)
        .stdout_has(&digest);
    // A registry (here a proxy) that answers a pinned request with other bytes is caught.
    let (manifest, _) = registry.oras_pull_manifest(&reference);
    let mut forged = manifest.clone();
    forged.extend_from_slice(b"\n");
    let liar = FaultProxy::start(
        registry.addr,
        Fault::ServeManifest {
            media_type: OCI_MANIFEST.into(),
            body: forged,
        },
    );
    let through_liar = format!("{}@{digest}", liar.reference("pinned/hello"));
    pull_fails(&through_liar, &["does not match digest", &digest]);
}

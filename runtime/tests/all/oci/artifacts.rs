//! Wasm artifacts through a real registry: push, pull, run, interop with skopeo and oras-py,
//! pushing a stored image elsewhere, pruning and progress.

use super::*;

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

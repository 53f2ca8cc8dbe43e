//! Bad input from registries: each refused pull says what was wrong and what to do, and
//! leaves the store and the image names as they were.

use super::*;

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

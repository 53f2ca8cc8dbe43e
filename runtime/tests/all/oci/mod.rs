//! Images through a real registry (Debian's docker-registry on loopback), cross-checked with
//! clients nobody here wrote (skopeo, oras-py). Every refused input leaves the store as it was.

use crate::registry::{Fault, FaultProxy, OCI_INDEX, OCI_MANIFEST, Registry, sha256_digest};
use crate::support::*;
use std::path::Path;

mod artifacts;
mod auth;
mod linux;
mod refused;

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

/// Copies the layout's image to `reference` with skopeo, plus extra skopeo flags.
fn skopeo_push(layout: &Path, reference: &str, extra: &[&str]) {
    skopeo_copy(
        &[&["--dest-tls-verify=false"], extra].concat(),
        &format!("oci:{}:latest", layout.display()),
        &format!("docker://{reference}"),
    );
}

//! Media types skiff produces and accepts (see "Formats" in the design).
//!
//! skiff pushes the CNCF TAG Runtime Wasm artifact layout. On pull it also accepts what
//! runwasi, Spin and older tools publish. The `oci-client` crate's own Wasm constants are not
//! the CNCF values and are deliberately not used.

/// OCI image manifest: what skiff pushes for Wasm artifacts.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index (multi-platform).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker v2 schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (multi-platform).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// CNCF Wasm artifact config.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// CNCF Wasm artifact layer: the `.wasm` bytes.
pub const WASM_LAYER: &str = "application/wasm";

/// Layers other tools publish that skiff also runs as Wasm.
pub const RUNWASI_COMPONENT_LAYER: &str =
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";
pub const SPIN_WASM_LAYER: &str = "application/vnd.wasm.content.layer.v1+wasm";
pub const LEGACY_MODULE_LAYER: &str = "application/vnd.module.wasm.content.layer.v1+wasm";

/// Every layer media type whose bytes are a Wasm module or component.
pub const WASM_LAYERS: &[&str] = &[
    WASM_LAYER,
    RUNWASI_COMPONENT_LAYER,
    SPIN_WASM_LAYER,
    LEGACY_MODULE_LAYER,
];

/// OCI and Docker image configs (a Linux image, or a `wasi/wasm` platform image).
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Image layers as tar archives.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// Manifest types skiff asks registries for, most specific first.
pub const ACCEPTED_MANIFESTS: &[&str] = &[
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// The annotation naming a layer's file.
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";

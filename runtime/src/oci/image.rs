//! A stored image: what kind it is (decided from the image, never from a flag), and where a
//! Wasm image's code is.

use super::artifact::{Descriptor, ImageManifest};
use super::media_types as mt;
use serde::{Deserialize, Serialize};

/// Wasm or Linux, as the design decides it: a Wasm config media type, Wasm layers, or
/// `architecture: wasm` in the config mean Wasm; anything else is a Linux image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageKind {
    Wasm,
    Linux,
}

impl std::fmt::Display for ImageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ImageKind::Wasm => "wasm",
            ImageKind::Linux => "linux",
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    #[error(
        "{name} is a Wasm artifact with {count} Wasm layers; a Wasm artifact must have exactly one"
    )]
    WasmLayers { name: String, count: usize },
    #[error("{name} is a Wasm image whose code is packed in a tar layer")]
    PackedWasm { name: String },
    #[error(
        "{name} is a Wasm image with no entrypoint; set its Entrypoint to the .wasm file in the image"
    )]
    NoEntrypoint { name: String },
    #[error("{name}: its entrypoint {path} is not in any layer; check the image's Entrypoint")]
    MissingEntrypoint { name: String, path: String },
}

/// Decides the kind from the manifest and the config bytes.
pub fn classify(manifest: &ImageManifest, config: &[u8]) -> ImageKind {
    let wasm_config = manifest.config.media_type == mt::WASM_CONFIG;
    let wasm_layers = !manifest.layers.is_empty()
        && manifest
            .layers
            .iter()
            .all(|l| mt::WASM_LAYERS.contains(&l.media_type.as_str()));
    let wasm_architecture = serde_json::from_slice::<serde_json::Value>(config)
        .ok()
        .and_then(|c| c["architecture"].as_str().map(|a| a == "wasm"))
        .unwrap_or(false);
    if wasm_config || wasm_layers || wasm_architecture {
        ImageKind::Wasm
    } else {
        ImageKind::Linux
    }
}

/// The one layer holding a Wasm image's module or component.
pub fn wasm_layer<'m>(
    name: &str,
    manifest: &'m ImageManifest,
) -> Result<&'m Descriptor, ImageError> {
    let wasm: Vec<&Descriptor> = manifest
        .layers
        .iter()
        .filter(|l| mt::WASM_LAYERS.contains(&l.media_type.as_str()))
        .collect();
    match wasm.as_slice() {
        [one] if manifest.layers.len() == 1 => Ok(one),
        [] => Err(ImageError::PackedWasm {
            name: name.to_string(),
        }),
        _ => Err(ImageError::WasmLayers {
            name: name.to_string(),
            count: manifest.layers.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Digest;
    use std::collections::BTreeMap;

    fn descriptor(media_type: &str) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: Digest::of(media_type.as_bytes()),
            size: 1,
            annotations: BTreeMap::new(),
        }
    }

    fn manifest(config: &str, layers: &[&str]) -> ImageManifest {
        ImageManifest {
            schema_version: 2,
            media_type: Some(mt::OCI_MANIFEST.into()),
            artifact_type: None,
            config: descriptor(config),
            layers: layers.iter().map(|l| descriptor(l)).collect(),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn the_kind_comes_from_the_image() {
        let cncf = manifest(mt::WASM_CONFIG, &[mt::WASM_LAYER]);
        assert_eq!(classify(&cncf, b"{}"), ImageKind::Wasm);
        let spin = manifest(
            "application/vnd.fermyon.spin.application.v1+config",
            &[mt::SPIN_WASM_LAYER],
        );
        assert_eq!(classify(&spin, b"{}"), ImageKind::Wasm);
        let runwasi = manifest(mt::OCI_CONFIG, &[mt::RUNWASI_COMPONENT_LAYER]);
        assert_eq!(
            classify(&runwasi, br#"{"architecture":"wasm","os":"wasip2"}"#),
            ImageKind::Wasm
        );
        let linux = manifest(mt::OCI_CONFIG, &[mt::OCI_LAYER_GZIP]);
        assert_eq!(
            classify(&linux, br#"{"architecture":"amd64","os":"linux"}"#),
            ImageKind::Linux
        );
        let wasi_platform = manifest(mt::OCI_CONFIG, &[mt::OCI_LAYER_GZIP]);
        assert_eq!(
            classify(&wasi_platform, br#"{"architecture":"wasm","os":"wasi"}"#),
            ImageKind::Wasm
        );
    }

    #[test]
    fn a_wasm_artifact_has_exactly_one_layer() {
        let one = manifest(mt::WASM_CONFIG, &[mt::WASM_LAYER]);
        assert_eq!(wasm_layer("x", &one).unwrap().media_type, mt::WASM_LAYER);
        let two = manifest(mt::WASM_CONFIG, &[mt::WASM_LAYER, mt::LEGACY_MODULE_LAYER]);
        assert_eq!(
            wasm_layer("x", &two),
            Err(ImageError::WasmLayers {
                name: "x".into(),
                count: 2
            })
        );
        let packed = manifest(mt::OCI_CONFIG, &[mt::OCI_LAYER_GZIP]);
        assert!(matches!(
            wasm_layer("x", &packed),
            Err(ImageError::PackedWasm { .. })
        ));
    }
}

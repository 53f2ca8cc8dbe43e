//! The CNCF Wasm OCI artifact: building one from a `.wasm` file, and recognising Wasm in what
//! other tools publish.
//!
//! Layout (CNCF TAG Runtime "Wasm OCI Artifact layout"): an OCI image manifest whose config is
//! `application/vnd.wasm.config.v0+json` and whose single layer is `application/wasm`.

use super::digest::Digest;
use super::media_types as mt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The config blob of a Wasm artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmConfig {
    pub created: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    pub architecture: String,
    pub os: String,
    pub layer_digests: Vec<Digest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component: Option<ComponentInfo>,
}

/// What a component imports and exports, read from its binary.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ComponentInfo {
    pub exports: Vec<String>,
    pub imports: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// A descriptor as it appears in manifests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An OCI image manifest, as much of it as skiff reads and writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A Wasm artifact ready to push: its blobs and manifest, each with its digest.
#[derive(Debug, Clone)]
pub struct WasmArtifact {
    pub config: Vec<u8>,
    pub layer: Vec<u8>,
    pub manifest: Vec<u8>,
    pub manifest_digest: Digest,
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error(
        "{name} is not a WebAssembly file (it does not start with `\\0asm`); push a .wasm module or component"
    )]
    NotWasm { name: String },
    #[error("{name} is not a valid WebAssembly component: {reason}")]
    InvalidComponent { name: String, reason: String },
}

/// Packages `wasm` (named `title` in the layer's annotation) as a CNCF Wasm artifact.
pub fn package(title: &str, wasm: Vec<u8>, created: String) -> Result<WasmArtifact, ArtifactError> {
    let (os, component) = match &wasm.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => ("wasip1", None),
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => ("wasip2", Some(component_info(title, &wasm)?)),
        _ => {
            return Err(ArtifactError::NotWasm {
                name: title.to_string(),
            });
        }
    };
    let layer_digest = Digest::of(&wasm);
    let config = WasmConfig {
        created,
        author: None,
        architecture: "wasm".into(),
        os: os.into(),
        layer_digests: vec![layer_digest.clone()],
        component,
    };
    let config = serde_json::to_vec(&config).expect("a config always serialises");
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(mt::OCI_MANIFEST.into()),
        artifact_type: None,
        config: Descriptor {
            media_type: mt::WASM_CONFIG.into(),
            digest: Digest::of(&config),
            size: config.len() as u64,
            annotations: BTreeMap::new(),
        },
        layers: vec![Descriptor {
            media_type: mt::WASM_LAYER.into(),
            digest: layer_digest,
            size: wasm.len() as u64,
            annotations: BTreeMap::from([(mt::TITLE_ANNOTATION.to_string(), title.to_string())]),
        }],
        annotations: BTreeMap::new(),
    };
    let manifest = serde_json::to_vec(&manifest).expect("a manifest always serialises");
    Ok(WasmArtifact {
        manifest_digest: Digest::of(&manifest),
        config,
        layer: wasm,
        manifest,
    })
}

/// Reads a component's top-level imports and exports; the target world is inferred from the
/// export that defines it (`wasi:http/incoming-handler` or `wasi:cli/run`).
fn component_info(name: &str, wasm: &[u8]) -> Result<ComponentInfo, ArtifactError> {
    use wasmparser::{Parser, Payload};
    let invalid = |e: wasmparser::BinaryReaderError| ArtifactError::InvalidComponent {
        name: name.to_string(),
        reason: e.to_string(),
    };
    let mut info = ComponentInfo::default();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(invalid)? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(imports) if depth == 0 => {
                for import in imports {
                    info.imports
                        .push(import.map_err(invalid)?.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(exports) if depth == 0 => {
                for export in exports {
                    info.exports
                        .push(export.map_err(invalid)?.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    info.target = target_world(&info.exports);
    Ok(info)
}

fn target_world(exports: &[String]) -> Option<String> {
    let versioned = |export: &str, world: &str| {
        let version = export
            .split_once('@')
            .map(|(_, v)| format!("@{v}"))
            .unwrap_or_default();
        format!("{world}{version}")
    };
    exports.iter().find_map(|export| {
        let interface = export.split('@').next().unwrap_or(export);
        match interface {
            "wasi:http/incoming-handler" => Some(versioned(export, "wasi:http/proxy")),
            "wasi:cli/run" => Some(versioned(export, "wasi:cli/command")),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created() -> String {
        "2026-11-23T00:00:00Z".into()
    }

    #[test]
    fn a_module_becomes_a_wasip1_artifact() {
        let wasm = wat::parse_str("(module)").unwrap();
        let artifact = package("empty.wasm", wasm.clone(), created()).unwrap();
        let manifest: ImageManifest = serde_json::from_slice(&artifact.manifest).unwrap();
        assert_eq!(manifest.config.media_type, mt::WASM_CONFIG);
        assert_eq!(manifest.layers.len(), 1);
        assert_eq!(manifest.layers[0].media_type, mt::WASM_LAYER);
        assert_eq!(
            manifest.layers[0].annotations[mt::TITLE_ANNOTATION],
            "empty.wasm"
        );
        let config: WasmConfig = serde_json::from_slice(&artifact.config).unwrap();
        assert_eq!(
            (config.architecture.as_str(), config.os.as_str()),
            ("wasm", "wasip1")
        );
        assert_eq!(config.layer_digests, [Digest::of(&wasm)]);
        assert!(config.component.is_none());
        let json: serde_json::Value = serde_json::from_slice(&artifact.config).unwrap();
        assert!(
            json.get("layerDigests").is_some(),
            "camelCase as the CNCF layout spells it"
        );
    }

    #[test]
    fn a_component_records_its_imports_exports_and_target() {
        let wasm = wat::parse_str(
            r#"(component
                 (import "wasi:cli/stdout@0.2.6" (instance))
                 (core module $m (func (export "run") (result i32) i32.const 0))
                 (core instance $i (instantiate $m))
                 (func $run (result (result)) (canon lift (core func $i "run")))
                 (instance $r (export "run" (func $run)))
                 (export "wasi:cli/run@0.2.6" (instance $r)))"#,
        )
        .unwrap();
        let artifact = package("cmd.wasm", wasm, created()).unwrap();
        let config: WasmConfig = serde_json::from_slice(&artifact.config).unwrap();
        assert_eq!(config.os, "wasip2");
        let component = config.component.unwrap();
        assert_eq!(component.imports, ["wasi:cli/stdout@0.2.6"]);
        assert_eq!(component.exports, ["wasi:cli/run@0.2.6"]);
        assert_eq!(component.target.as_deref(), Some("wasi:cli/command@0.2.6"));
    }

    #[test]
    fn other_files_are_refused() {
        let err = package("notes.txt", b"hello".to_vec(), created()).unwrap_err();
        assert!(err.to_string().contains("not a WebAssembly file"), "{err}");
    }
}

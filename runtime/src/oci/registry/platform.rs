//! Platforms (`os/architecture[/variant]`) and choosing one from a multi-platform index.

use super::error::{RegistryError, Result};
use crate::oci::reference::ImageRef;

/// An `os/architecture[/variant]` pair as in image indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// This machine, in OCI's spelling.
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            other => other,
        };
        Self {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: None,
        }
    }
}

impl std::str::FromStr for Platform {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut parts = text.split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(os), Some(arch), variant, None) if !os.is_empty() && !arch.is_empty() => {
                Ok(Self {
                    os: os.into(),
                    architecture: arch.into(),
                    variant: variant.map(str::to_string),
                })
            }
            _ => Err(format!(
                "invalid platform `{text}`; write OS/ARCH[/VARIANT], e.g. linux/amd64"
            )),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(variant) => write!(f, "/{variant}"),
            None => Ok(()),
        }
    }
}

/// Picks `want`'s manifest from an index (or a `wasi/wasm` one, which any machine runs).
pub(super) fn choose(want: &Platform, reference: &ImageRef, index: &[u8]) -> Result<String> {
    let index: serde_json::Value =
        serde_json::from_slice(index).map_err(|e| RegistryError::InvalidManifest {
            reference: reference.to_string(),
            detail: e.to_string(),
        })?;
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    let platform_of = |entry: &serde_json::Value| {
        let p = &entry["platform"];
        Platform {
            os: p["os"].as_str().unwrap_or("").into(),
            architecture: p["architecture"].as_str().unwrap_or("").into(),
            variant: p["variant"].as_str().map(str::to_string),
        }
    };
    let matches = |p: &Platform| {
        p.os == want.os
            && p.architecture == want.architecture
            && (want.variant.is_none() || p.variant == want.variant)
    };
    // A Wasm image published in an index carries the `wasi/wasm` platform: accept it too.
    let wasm = |p: &Platform| p.architecture == "wasm";
    let chosen = entries
        .iter()
        .find(|e| matches(&platform_of(e)))
        .or_else(|| entries.iter().find(|e| wasm(&platform_of(e))));
    match chosen.and_then(|e| e["digest"].as_str()) {
        Some(digest) => Ok(digest.to_string()),
        None => Err(RegistryError::NoPlatform {
            reference: reference.to_string(),
            platform: want.to_string(),
            available: entries
                .iter()
                .map(|e| platform_of(e).to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_and_print() {
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert!("linux".parse::<Platform>().unwrap_err().contains("OS/ARCH"));
        assert_eq!(Platform::host().os, "linux");
    }

    #[test]
    fn an_index_without_this_platform_names_what_it_has() {
        let want: Platform = "linux/riscv64".parse().unwrap();
        let index = br#"{"manifests":[
            {"digest":"sha256:aa","platform":{"os":"linux","architecture":"amd64"}},
            {"digest":"sha256:bb","platform":{"os":"linux","architecture":"arm64","variant":"v8"}}]}"#;
        let reference: ImageRef = "localhost:5000/x:1".parse().unwrap();
        let err = choose(&want, &reference, index).unwrap_err().to_string();
        assert!(err.contains("no image for platform linux/riscv64"), "{err}");
        assert!(
            err.contains("linux/amd64, linux/arm64/v8") && err.contains("--platform"),
            "{err}"
        );
    }
}

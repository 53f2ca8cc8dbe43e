//! What can go wrong talking to a registry, and oci-client's errors turned into messages
//! that say what to do.

use super::{BLOB_ATTEMPTS, MAX_MANIFEST_BYTES};
use crate::oci::digest::Digest;
use crate::oci::reference::ImageRef;
use crate::oci::store::StoreError;
use oci_client::errors::{OciDistributionError, OciErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{reference} not found; check the name and tag, or push it first")]
    NotFound { reference: String },

    #[error(
        "{reference}: access denied by the registry; run `skiff login {registry}` or check your credentials"
    )]
    Unauthorized { reference: String, registry: String },

    #[error("{reference}: the registry failed ({detail}); try again later")]
    Server { reference: String, detail: String },

    #[error(
        "cannot reach registry {registry} for {reference}: {detail}; check the address and that the registry is running"
    )]
    Unreachable {
        reference: String,
        registry: String,
        detail: String,
    },

    #[error(
        "{reference}: the manifest is {size} bytes, over the {MAX_MANIFEST_BYTES}-byte limit; refusing it"
    )]
    ManifestTooLarge { reference: String, size: usize },

    #[error("{reference}: unsupported manifest media type `{media_type}`")]
    UnsupportedMediaType {
        reference: String,
        media_type: String,
    },

    #[error(
        "{reference}: no image for platform {platform}; available: {available}; pass --platform to choose one"
    )]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },

    #[error("{reference}: invalid manifest: {detail}")]
    InvalidManifest { reference: String, detail: String },

    #[error(
        "{reference}: the registry sent content that does not match digest {expected} (got {actual}); nothing was stored"
    )]
    Tampered {
        reference: String,
        expected: String,
        actual: String,
    },

    #[error(
        "{reference}: blob {digest} is {actual} bytes but the manifest says {expected}; the \
         manifest does not describe this blob, and nothing was stored"
    )]
    SizeMismatch {
        reference: String,
        digest: Digest,
        expected: u64,
        actual: u64,
    },

    #[error(
        "{reference}: blob {digest} failed after {BLOB_ATTEMPTS} attempts: {detail}; check the network and try again"
    )]
    Download {
        reference: String,
        digest: Digest,
        detail: String,
    },

    #[error("{reference}: {error}")]
    Store {
        reference: String,
        error: StoreError,
    },

    #[error("{reference}: push failed: {detail}")]
    Push { reference: String, detail: String },
}

pub(crate) type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// Turns oci-client's errors into messages that say what to do.
pub(super) fn map_error(reference: &ImageRef, err: OciDistributionError) -> RegistryError {
    let reference_text = reference.to_string();
    let unauthorized = || RegistryError::Unauthorized {
        reference: reference_text.clone(),
        registry: reference.registry().to_string(),
    };
    match err {
        OciDistributionError::ImageManifestNotFoundError(_) => RegistryError::NotFound {
            reference: reference_text,
        },
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => unauthorized(),
        OciDistributionError::ServerError { code, message, .. } => match code {
            404 => RegistryError::NotFound {
                reference: reference_text,
            },
            401 | 403 => unauthorized(),
            _ => RegistryError::Server {
                reference: reference_text,
                detail: format!("HTTP {code}: {}", message.trim()),
            },
        },
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                )
            }) {
                RegistryError::NotFound {
                    reference: reference_text,
                }
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                unauthorized()
            } else {
                RegistryError::Server {
                    reference: reference_text,
                    detail: envelope.to_string(),
                }
            }
        }
        OciDistributionError::DigestError(oci_client::errors::DigestError::VerificationError {
            expected,
            actual,
        }) => RegistryError::Tampered {
            reference: reference_text,
            expected,
            actual,
        },
        OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
            RegistryError::Unreachable {
                reference: reference_text,
                registry: reference.registry().to_string(),
                detail: root_cause(&e),
            }
        }
        other => RegistryError::Server {
            reference: reference_text,
            detail: other.to_string(),
        },
    }
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

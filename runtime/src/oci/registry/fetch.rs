//! One pull's blob downloads: streamed into the content store, verified, retried when cut off.

use super::error::{RegistryError, Result, map_error};
use super::{BLOB_ATTEMPTS, Progress};
use crate::oci::artifact::ImageManifest;
use crate::oci::digest::Digest;
use crate::oci::reference::ImageRef;
use crate::oci::store::{ContentStore, StoreError};
use futures_util::StreamExt;
use oci_client::errors::OciDistributionError;
use std::time::Duration;

/// One pull's blob downloads: where from, where to, whom to tell.
pub(super) struct BlobFetch<'a> {
    pub(super) client: &'a oci_client::Client,
    pub(super) reference: &'a ImageRef,
    pub(super) store: &'a ContentStore,
    pub(super) progress: &'a dyn Progress,
}

impl BlobFetch<'_> {
    pub(super) async fn all(
        &self,
        manifest: &ImageManifest,
        added: &mut Vec<Digest>,
    ) -> Result<u64> {
        let mut fetched = 0;
        for descriptor in std::iter::once(&manifest.config).chain(&manifest.layers) {
            let bytes = self.blob(&descriptor.digest, descriptor.size).await?;
            if bytes > 0 {
                added.push(descriptor.digest.clone());
            }
            fetched += bytes;
        }
        Ok(fetched)
    }

    /// Downloads one blob into the store unless present; retries cut-off transfers.
    /// Returns the bytes fetched.
    async fn blob(&self, digest: &Digest, size: u64) -> Result<u64> {
        if self.store.contains(digest) {
            self.progress.blob_finished(digest, true);
            return Ok(0);
        }
        self.progress.blob_started(digest, size);
        let mut last_error = String::new();
        for attempt in 1..=BLOB_ATTEMPTS {
            match self.try_blob(digest, size).await {
                Ok(()) => {
                    self.progress.blob_finished(digest, false);
                    return Ok(size);
                }
                Err(FetchError::Fatal(e)) => return Err(e),
                Err(FetchError::Retry(detail)) => {
                    tracing::warn!(%digest, attempt, %detail, "blob download failed; retrying");
                    last_error = detail;
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
            }
        }
        Err(RegistryError::Download {
            reference: self.reference.to_string(),
            digest: digest.clone(),
            detail: last_error,
        })
    }

    async fn try_blob(&self, digest: &Digest, size: u64) -> Result<(), FetchError> {
        let digest_text = digest.to_string();
        let mut stream = match self
            .client
            .pull_blob_stream(self.reference.as_oci(), digest_text.as_str())
            .await
        {
            Ok(stream) => stream,
            Err(e @ OciDistributionError::RequestError(_)) => {
                return Err(FetchError::Retry(e.to_string()));
            }
            Err(e) => return Err(FetchError::Fatal(map_error(self.reference, e))),
        };
        let store_err = |source| {
            FetchError::Fatal(RegistryError::Store {
                reference: self.reference.to_string(),
                error: source,
            })
        };
        // The registry's own length for the blob: when it disagrees with the manifest the
        // manifest is wrong, and retrying cannot help.
        if let Some(announced) = stream.content_length
            && announced != size
        {
            return Err(FetchError::Fatal(RegistryError::SizeMismatch {
                reference: self.reference.to_string(),
                digest: digest.clone(),
                expected: size,
                actual: announced,
            }));
        }
        let mut ingest = self.store.ingest(Some(size)).map_err(store_err)?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| stream_error(self.reference, digest, e))?;
            if ingest.write_chunk(&chunk).is_err() {
                return Err(FetchError::Fatal(RegistryError::SizeMismatch {
                    reference: self.reference.to_string(),
                    digest: digest.clone(),
                    expected: size,
                    actual: ingest.written() + chunk.len() as u64,
                }));
            }
            self.progress.blob_advanced(digest, chunk.len() as u64);
        }
        match ingest.commit(digest) {
            Ok(_) => Ok(()),
            // Fewer bytes than announced: the connection was cut; try again.
            Err(StoreError::SizeMismatch { actual, .. }) => Err(FetchError::Retry(format!(
                "connection closed after {actual} of {size} bytes"
            ))),
            Err(StoreError::DigestMismatch { expected, actual }) => {
                Err(FetchError::Fatal(RegistryError::Tampered {
                    reference: self.reference.to_string(),
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                }))
            }
            Err(source) => Err(store_err(source)),
        }
    }
}

enum FetchError {
    Retry(String),
    Fatal(RegistryError),
}

/// An error inside a blob stream: oci-client verifies digests as bytes arrive and reports a
/// mismatch as an I/O error carrying its `DigestError`; that is tampering, not a network
/// hiccup, and is not retried.
fn stream_error(reference: &ImageRef, digest: &Digest, err: std::io::Error) -> FetchError {
    use oci_client::errors::DigestError;
    match err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<DigestError>())
    {
        Some(DigestError::VerificationError { actual, .. }) => {
            FetchError::Fatal(RegistryError::Tampered {
                reference: reference.to_string(),
                expected: digest.to_string(),
                actual: actual.clone(),
            })
        }
        _ => FetchError::Retry(err.to_string()),
    }
}

//! OCI: from a reference to verified bytes on disk.
//!
//! This module owns digests, the content store (blobs by sha256, written through
//! ingest-and-commit so nothing half-written is ever visible), and, as they land, references,
//! media types, manifests and the registry client. It depends on nothing else in skiff:
//! the executors read from it, never the other way round.

pub mod artifact;
pub mod credentials;
pub mod digest;
pub mod image;
pub mod images;
pub mod layout;
pub mod local;
pub mod media_types;
pub mod packed;
pub mod reference;
pub mod registry;
pub mod store;

pub use digest::{Digest, DigestError};
pub use store::{ContentStore, StoreError};

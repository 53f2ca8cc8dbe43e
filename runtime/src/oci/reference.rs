//! Image references, normalised as Docker does: `busybox` is
//! `docker.io/library/busybox:latest`; `name@sha256:...` pins a digest.

use std::fmt;
use std::str::FromStr;

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef(oci_client::Reference);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid image reference `{text}`: {reason}; write NAME[:TAG] or NAME@sha256:DIGEST, \
     e.g. localhost:5000/app:1.0"
)]
pub struct ReferenceError {
    pub text: String,
    pub reason: String,
}

impl ImageRef {
    pub fn registry(&self) -> &str {
        self.0.registry()
    }

    pub fn repository(&self) -> &str {
        self.0.repository()
    }

    pub fn tag(&self) -> Option<&str> {
        self.0.tag()
    }

    pub fn digest(&self) -> Option<&str> {
        self.0.digest()
    }

    /// Whether the registry is this machine: reached over plain HTTP, as Docker does.
    pub fn is_loopback(&self) -> bool {
        let host = self
            .registry()
            .rsplit_once(':')
            .map_or(self.registry(), |(h, _)| h);
        host == "localhost" || host == "[::1]" || host.starts_with("127.")
    }

    /// The same repository at `digest`.
    pub fn with_digest(&self, digest: &str) -> ImageRef {
        ImageRef(oci_client::Reference::with_digest(
            self.registry().to_string(),
            self.repository().to_string(),
            digest.to_string(),
        ))
    }

    pub(crate) fn as_oci(&self) -> &oci_client::Reference {
        &self.0
    }
}

impl FromStr for ImageRef {
    type Err = ReferenceError;

    fn from_str(text: &str) -> Result<Self, ReferenceError> {
        let error = |reason: String| ReferenceError {
            text: text.to_string(),
            reason,
        };
        if text.trim() != text || text.is_empty() {
            return Err(error("it is empty or has surrounding spaces".into()));
        }
        let reference = oci_client::Reference::try_from(text).map_err(|e| error(e.to_string()))?;
        let repository_ok = reference
            .repository()
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b));
        if !repository_ok {
            return Err(error(format!(
                "repository `{}` must be lowercase letters, digits and . _ - /",
                reference.repository()
            )));
        }
        if let Some(digest) = reference.digest() {
            digest
                .parse::<super::Digest>()
                .map_err(|e| error(e.to_string()))?;
        }
        Ok(ImageRef(reference))
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_normalise_as_docker_does() {
        let r: ImageRef = "busybox".parse().unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        let r: ImageRef = "localhost:5000/shop/api:1.2".parse().unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("localhost:5000", "shop/api", Some("1.2"))
        );
        assert!(r.is_loopback());
        assert!(!"ghcr.io/x/y:1".parse::<ImageRef>().unwrap().is_loopback());
    }

    #[test]
    fn digests_pin_and_are_validated() {
        let pinned = format!("127.0.0.1:5000/app@sha256:{}", "a".repeat(64));
        let r: ImageRef = pinned.parse().unwrap();
        assert_eq!(
            r.digest(),
            Some(format!("sha256:{}", "a".repeat(64)).as_str())
        );
        for bad in [
            "",
            " busybox",
            "UPPER/case",
            "app@sha256:short",
            "a:b:c:d",
            "app:",
        ] {
            let err = bad.parse::<ImageRef>().unwrap_err();
            assert!(err.to_string().contains("NAME[:TAG]"), "{bad}: {err}");
        }
    }
}

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

    /// Docker's grammar and normalisation, parsed directly: oci-spec's parser compiles a large
    /// regex on first use, which cost every image command about 50 ms.
    fn from_str(text: &str) -> Result<Self, ReferenceError> {
        let error = |reason: &str| ReferenceError {
            text: text.to_string(),
            reason: reason.to_string(),
        };
        if text.is_empty() || text.len() > 255 + 128 + 72 || text.trim() != text {
            return Err(error("it is empty, too long or has surrounding spaces"));
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => {
                digest
                    .parse::<super::Digest>()
                    .map_err(|e| error(&e.to_string()))?;
                (rest, Some(digest))
            }
            None => (text, None),
        };
        // A tag is after the last ':' that is not part of the registry's host:port.
        let (name, tag) = match rest.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
            _ => (rest, None),
        };
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(error(
                "a tag is 1 to 128 letters, digits, _ . or -, not starting with . or -",
            ));
        }
        let (registry, repository) = split_registry(name);
        if !valid_registry(registry) {
            return Err(error(
                "the registry must be a host name or address, with an optional :port",
            ));
        }
        if repository.is_empty() || !repository.split('/').all(valid_path_component) {
            return Err(error(
                "repository path components are lowercase letters and digits, separated by . _ __ or -",
            ));
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_string()
        };
        let reference = match (tag, digest) {
            (Some(tag), Some(digest)) => oci_client::Reference::with_tag_and_digest(
                registry.into(),
                repository,
                tag.into(),
                digest.into(),
            ),
            (None, Some(digest)) => {
                oci_client::Reference::with_digest(registry.into(), repository, digest.into())
            }
            (tag, None) => oci_client::Reference::with_tag(
                registry.into(),
                repository,
                tag.unwrap_or("latest").into(),
            ),
        };
        Ok(ImageRef(reference))
    }
}

const DOCKER_HUB: &str = "docker.io";

/// Docker's rule: the first component names a registry when it has a `.` or `:` or is
/// `localhost`, and more components follow; otherwise the registry is Docker Hub.
fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            let registry = if first == "index.docker.io" {
                DOCKER_HUB
            } else {
                first
            };
            (registry, rest)
        }
        _ => (DOCKER_HUB, name),
    }
}

fn valid_registry(registry: &str) -> bool {
    let (host, port) = registry
        .rsplit_once(':')
        .map_or((registry, None), |(h, p)| (h, Some(p)));
    let host_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

/// `[a-z0-9]+` joined by one of `.`, `_`, `__` or a run of `-`.
fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut separator = String::new();
    for &b in bytes {
        if alnum(b) {
            if !(separator.is_empty()
                || separator == "."
                || separator == "_"
                || separator == "__"
                || separator.bytes().all(|s| s == b'-'))
            {
                return false;
            }
            separator.clear();
        } else if b"._-".contains(&b) {
            separator.push(b as char);
        } else {
            return false;
        }
    }
    true
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`
fn valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    !tag.is_empty()
        && tag.len() <= 128
        && word(tag.as_bytes()[0])
        && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-')
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
    fn the_grammar_matches_dockers() {
        for (text, normalised) in [
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("bitnami/redis", "docker.io/bitnami/redis:latest"),
            (
                "index.docker.io/library/alpine",
                "docker.io/library/alpine:latest",
            ),
            ("localhost/app", "localhost/app:latest"),
            (
                "ghcr.io/org/team/app_1.x-y:v1.2_rc-3",
                "ghcr.io/org/team/app_1.x-y:v1.2_rc-3",
            ),
            (
                "my-reg.example.com:5000/a__b/c---d",
                "my-reg.example.com:5000/a__b/c---d:latest",
            ),
        ] {
            assert_eq!(
                text.parse::<ImageRef>().unwrap().to_string(),
                normalised,
                "{text}"
            );
        }
        let both = format!("127.0.0.1:5000/app:1@sha256:{}", "b".repeat(64));
        let r: ImageRef = both.parse().unwrap();
        assert_eq!(
            (r.tag(), r.digest().map(|d| &d[..8])),
            (Some("1"), Some("sha256:b"))
        );
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

//! A container's `/etc/hosts` when it is given names (`skiff run --add-host NAME:IP`, or the
//! daemon naming the services of a container's app).
//!
//! The file is written into the container's own overlay upper dir before it starts, so it
//! replaces the image's copy for this container only, and the container may still edit it.
//! A container given no names keeps the image's file untouched. This module does not choose
//! the names: the CLI and the daemon do.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;

/// One `NAME:IP` entry, as Docker's `--add-host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraHost {
    pub name: String,
    pub address: IpAddr,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostsError {
    #[error("--add-host {entry:?}: {reason}; give NAME:IP, e.g. cache:10.89.0.5")]
    Invalid { entry: String, reason: &'static str },
}

impl ExtraHost {
    /// Whether `name` is a host name a resolver accepts: dot-separated labels of letters,
    /// digits and inner hyphens, 253 bytes at most.
    pub fn valid_name(name: &str) -> bool {
        let label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        !name.is_empty() && name.len() <= 253 && name.split('.').all(label)
    }
}

impl FromStr for ExtraHost {
    type Err = HostsError;

    fn from_str(entry: &str) -> Result<Self, HostsError> {
        let invalid = |reason| HostsError::Invalid {
            entry: entry.to_string(),
            reason,
        };
        let (name, address) = entry
            .split_once(':')
            .ok_or_else(|| invalid("no ':' between the name and the address"))?;
        if !ExtraHost::valid_name(name) {
            return Err(invalid(
                "the name must be letters, digits, '-' and '.' (a host name)",
            ));
        }
        let address = address
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| invalid("the address is not an IP address"))?;
        Ok(ExtraHost {
            name: name.to_string(),
            address,
        })
    }
}

impl fmt::Display for ExtraHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.address)
    }
}

/// The file's text: loopback names first (as Docker writes them), then one line per entry
/// in the order given (a resolver takes the first match, so earlier entries win).
pub fn render(extra: &[ExtraHost]) -> String {
    let mut text =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for host in extra {
        text.push_str(&format!("{}\t{}\n", host.address, host.name));
    }
    text
}

/// Writes `/etc/hosts` into a container's overlay `upper` dir; nothing when `extra` is empty.
pub fn write(upper: &Path, extra: &[ExtraHost]) -> std::io::Result<()> {
    if extra.is_empty() {
        return Ok(());
    }
    let etc = upper.join("etc");
    std::fs::create_dir_all(&etc)?;
    std::fs::write(etc.join("hosts"), render(extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_and_render_after_localhost() {
        let cache: ExtraHost = "cache:10.89.0.5".parse().unwrap();
        let v6: ExtraHost = "db.shop:[fd00::1]".parse().unwrap();
        assert_eq!(v6.address, "fd00::1".parse::<IpAddr>().unwrap());
        let text = render(&[cache, v6]);
        assert_eq!(
            text,
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             10.89.0.5\tcache\nfd00::1\tdb.shop\n"
        );
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        for (bad, why) in [
            ("cache", "no ':'"),
            ("ca che:10.0.0.1", "host name"),
            ("-cache:10.0.0.1", "host name"),
            (":10.0.0.1", "host name"),
            ("cache:10.0.0", "not an IP address"),
        ] {
            let error = bad.parse::<ExtraHost>().unwrap_err().to_string();
            assert!(error.contains(why) && error.contains(bad), "{bad}: {error}");
            assert!(error.contains("NAME:IP"), "{error}");
        }
    }

    #[test]
    fn no_entries_leave_the_images_file_alone() {
        let upper = tempfile::tempdir().unwrap();
        write(upper.path(), &[]).unwrap();
        assert!(!upper.path().join("etc").exists());
        write(upper.path(), &["web:10.0.0.2".parse().unwrap()]).unwrap();
        let text = std::fs::read_to_string(upper.path().join("etc/hosts")).unwrap();
        assert!(text.ends_with("10.0.0.2\tweb\n"), "{text}");
    }
}

//! Human-facing quantities: byte sizes and durations as operators type them.
//!
//! Sizes read the way Docker writes them (`512k`, `32m`, `1g`, plain bytes) and the way
//! Kubernetes and our manifests do (`32Mi`, `32MiB`, `1GiB`). Both spellings are binary
//! (1k = 1024), as in Docker. Durations use `humantime` (`500ms`, `10s`, `1m 30s`).

use std::{fmt, str::FromStr, time::Duration};

/// A size in bytes parsed from `32m`, `32MiB`, `1g`, `4096`, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// Why a size or duration could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnitError {
    #[error(
        "invalid size `{0}`; write a number with an optional unit such as 512k, 32m, 1g or 64MiB"
    )]
    Size(String),
    #[error("invalid duration `{0}`; write a number with a unit such as 500ms, 10s or 2m")]
    Duration(String),
}

impl ByteSize {
    pub const fn mib(n: u64) -> Self {
        Self(n << 20)
    }
}

impl FromStr for ByteSize {
    type Err = UnitError;

    fn from_str(text: &str) -> Result<Self, UnitError> {
        let bad = || UnitError::Size(text.to_string());
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (digits, unit) = trimmed.split_at(split);
        let number: u64 = digits.parse().map_err(|_| bad())?;
        let shift = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kb" | "ki" | "kib" => 10,
            "m" | "mb" | "mi" | "mib" => 20,
            "g" | "gb" | "gi" | "gib" => 30,
            "t" | "tb" | "ti" | "tib" => 40,
            _ => return Err(bad()),
        };
        number.checked_mul(1 << shift).map(ByteSize).ok_or_else(bad)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
        for (name, shift) in UNITS {
            if self.0 >= 1 << shift && self.0.is_multiple_of(1 << shift) {
                return write!(f, "{} {name}", self.0 >> shift);
            }
        }
        write!(f, "{} bytes", self.0)
    }
}

/// Parses `500ms`, `10s`, `2m`; a bare number means seconds, as in `timeout 10`.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let trimmed = text.trim();
    if let Ok(seconds) = trimmed.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(trimmed).map_err(|_| UnitError::Duration(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_docker_and_kubernetes_write_them() {
        for (text, bytes) in [
            ("4096", 4096),
            ("512k", 512 << 10),
            ("32m", 32 << 20),
            ("32M", 32 << 20),
            ("32MiB", 32 << 20),
            ("32Mi", 32 << 20),
            ("1g", 1 << 30),
            ("2GiB", 2 << 30),
        ] {
            assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(bytes)), "{text}");
        }
    }

    #[test]
    fn bad_sizes_say_how_to_write_one() {
        for text in ["", "m", "12x", "-1m", "99999999999999999999t"] {
            let err = text.parse::<ByteSize>().unwrap_err();
            assert!(err.to_string().contains("32m"), "{err}");
        }
    }

    #[test]
    fn sizes_display_in_the_largest_exact_unit() {
        assert_eq!(ByteSize::mib(32).to_string(), "32 MiB");
        assert_eq!(ByteSize(1 << 30).to_string(), "1 GiB");
        assert_eq!(ByteSize(1000).to_string(), "1000 bytes");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
    }
}

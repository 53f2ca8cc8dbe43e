//! The quantities a manifest is written in, and how they travel through serde.
//!
//! [`Cpu`] (`"500m"`, `"0.5"`, `2`) and [`Percent`] (`"70%"`) are owned here; sizes and durations
//! are [`crate::units`]' types, given serde support by the `with` modules below (only the ones
//! the specs use). Each reads what
//! an operator types in TOML and writes a string it reads back exactly, so a spec stored as JSON
//! round-trips losslessly. Range checks (a CPU target of 0%) belong to validation, not here.

use crate::units::{ByteSize, parse_duration};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use std::{fmt, marker::PhantomData, str::FromStr, time::Duration};

/// CPU in millicores: `"500m"` and `"0.5"` are half a core, `2` or `"2"` two cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cpu(pub u32);

impl Cpu {
    pub const fn millicores(self) -> u32 {
        self.0
    }

    fn from_cores(cores: f64) -> Result<Self, String> {
        let milli = (cores * 1000.0).round();
        if !cores.is_finite() || cores < 0.0 || milli > f64::from(u32::MAX) {
            return Err(format!(
                "invalid cpu `{cores}`; write cores such as 0.5 or 2, or millicores such as 500m"
            ));
        }
        // In range and rounded just above, so the cast is exact.
        Ok(Cpu(milli as u32))
    }
}

impl FromStr for Cpu {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid cpu `{text}`; write cores such as \"0.5\" or 2, or millicores such as \"500m\""
            )
        };
        let trimmed = text.trim();
        if let Some(milli) = trimmed.strip_suffix('m') {
            return milli.parse().map(Cpu).map_err(|_| bad());
        }
        let cores: f64 = trimmed.parse().map_err(|_| bad())?;
        Cpu::from_cores(cores).map_err(|_| bad())
    }
}

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}m", self.0)
    }
}

/// A percentage written `"70%"` (or a bare `70`); validation keeps it within 1–100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Percent(pub u32);

impl FromStr for Percent {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let digits = text.trim().strip_suffix('%').unwrap_or(text.trim());
        digits
            .trim()
            .parse()
            .map(Percent)
            .map_err(|_| format!("invalid percentage `{text}`; write one such as \"70%\""))
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

/// Reads a value written either as a string (parsed with `FromStr`) or as a number (converted
/// by `from_number`), so `cpu = 2` and `cpu = "2"` mean the same.
struct TextOrNumber<T> {
    expecting: &'static str,
    from_number: fn(f64) -> Result<T, String>,
    _marker: PhantomData<T>,
}

impl<T> TextOrNumber<T> {
    fn new(expecting: &'static str, from_number: fn(f64) -> Result<T, String>) -> Self {
        Self {
            expecting,
            from_number,
            _marker: PhantomData,
        }
    }
}

impl<T: FromStr<Err: fmt::Display>> de::Visitor<'_> for TextOrNumber<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        text.parse().map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<T, E> {
        if n < 0 {
            return Err(E::custom(format!("{n} is negative; {}", self.expecting)));
        }
        self.visit_u64(n as u64)
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<T, E> {
        // Whole numbers go through the string form so that large sizes stay exact.
        self.visit_str(&n.to_string())
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<T, E> {
        (self.from_number)(n).map_err(E::custom)
    }
}

fn no_fractions<T>(n: f64) -> Result<T, String> {
    Err(format!("{n} is not a whole number; drop the fraction"))
}

impl Serialize for Cpu {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cpu {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextOrNumber::new(
            "cores such as 0.5 or millicores such as \"500m\"",
            Cpu::from_cores,
        ))
    }
}

impl Serialize for Percent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextOrNumber::new(
            "a percentage such as \"70%\"",
            no_fractions,
        ))
    }
}

/// Writes a size in the largest unit that keeps it exact (`"64MiB"`, `"1000"`), a form
/// [`ByteSize`]'s parser reads back.
fn size_text(size: ByteSize) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if size.0 >= 1 << shift && size.0.is_multiple_of(1 << shift) {
            return format!("{}{unit}", size.0 >> shift);
        }
    }
    size.0.to_string()
}

/// A [`Duration`] as [`parse_duration`] reads it; a bare number is seconds.
struct DurationText(Duration);

impl FromStr for DurationText {
    type Err = crate::units::UnitError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_duration(text).map(DurationText)
    }
}

/// serde `with` module for an optional [`ByteSize`]; pair it with `#[serde(default)]`.
pub mod option_byte_size {
    use super::*;

    pub fn serialize<S: Serializer>(
        size: &Option<ByteSize>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match size {
            Some(size) => serializer.serialize_some(&size_text(*size)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<ByteSize>, D::Error> {
        deserializer
            .deserialize_any(TextOrNumber::new("a size such as \"64MiB\"", no_fractions))
            .map(Some)
    }
}

/// serde `with` module for a [`Duration`]: `"10s"`, `"1m 30s"` or a number of seconds.
pub mod duration {
    use super::*;

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*duration))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text: DurationText = deserializer.deserialize_any(TextOrNumber::new(
            "a duration such as \"10s\"",
            no_fractions,
        ))?;
        Ok(text.0)
    }
}

/// serde `with` module for an optional [`Duration`]; pair it with `#[serde(default)]`.
pub mod option_duration {
    use super::*;

    pub fn serialize<S: Serializer>(
        duration: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => {
                serializer.serialize_some(&humantime::format_duration(*duration).to_string())
            }
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(deserializer).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_reads_cores_and_millicores() {
        for (text, milli) in [("500m", 500), ("0.5", 500), ("2", 2000), ("1.25", 1250)] {
            assert_eq!(text.parse::<Cpu>(), Ok(Cpu(milli)), "{text}");
        }
        for text in ["", "m", "half", "-1", "1.5m"] {
            let err = text.parse::<Cpu>().unwrap_err();
            assert!(err.contains("500m"), "{err}");
        }
    }

    #[test]
    fn percent_reads_with_or_without_the_sign() {
        assert_eq!("70%".parse::<Percent>(), Ok(Percent(70)));
        assert_eq!("70".parse::<Percent>(), Ok(Percent(70)));
        assert!("seventy".parse::<Percent>().unwrap_err().contains("70%"));
    }

    #[test]
    fn sizes_are_written_in_a_form_they_are_read_back_from() {
        for bytes in [0, 1000, 4096, 64 << 20, (64 << 20) + 1, 3 << 40] {
            let text = size_text(ByteSize(bytes));
            assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(bytes)), "{text}");
        }
        assert_eq!(size_text(ByteSize::mib(64)), "64MiB");
    }
}

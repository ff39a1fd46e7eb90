//! Helpers every section's validation shares: durations with defaults, and paths relative to the config.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::problem::Problem;
use crate::support::time::parse_duration;

/// `value` read as a duration, `default` when absent; an unreadable one is a problem of `key`
/// (`"value" is not a duration; ...`) and the default is used so that checking can go on.
pub fn duration_or(value: Option<&str>, key: &str, default: Duration, problems: &mut Vec<Problem>) -> Duration {
    match value.map(parse_duration) {
        None => default,
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            problems.push(Problem::new(key, e.to_string()));
            default
        }
    }
}

/// A path from the config file, relative to the file's directory unless absolute.
pub fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// `#[serde(default, deserialize_with = "duration")]`: a duration key, kept as its text (read later by
/// [`duration_or`]); anything but a text is refused as not a duration rather than as not a string.
pub fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct Text;
    impl<'de> serde::de::Visitor<'de> for Text {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(super::problem::DURATION_EXPECTED)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
    }
    d.deserialize_option(Text)
}

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

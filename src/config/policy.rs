//! The `policy:` section: which rules files are in force, and how changes to them are picked up.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::check::{duration_or, resolve};
use super::problem::Problem;

/// `policy:` as written in the config.
#[derive(Debug, Default, Deserialize)]
pub struct RawPolicy {
    /// Rules files or directories of them (*.yaml, *.yml). REQUIRED unless builtin_example is true.
    #[serde(default)]
    paths: Vec<PathBuf>,
    /// Use the built-in example policy (demo only). Default: false.
    #[serde(default)]
    builtin_example: bool,
    /// How often the rules files are checked for changes. Default: 2s.
    #[serde(default, deserialize_with = "super::check::duration")]
    reload_interval: Option<String>,
    /// How long a changed rules file must stay unchanged before it is applied, so a file caught half-way
    /// through being written is never in force. Default: 2s.
    #[serde(default, deserialize_with = "super::check::duration")]
    settle: Option<String>,
}

/// The validated `policy:` section.
#[derive(Debug, Clone)]
pub struct PolicySettings {
    pub paths: Vec<PathBuf>,
    pub builtin_example: bool,
    pub reload_interval: Duration,
    pub settle: Duration,
}

/// Validate `policy:`, resolving the paths against `base`.
pub fn validate(raw: RawPolicy, base: &Path, problems: &mut Vec<Problem>) -> PolicySettings {
    let paths: Vec<PathBuf> = raw.paths.iter().map(|p| resolve(base, p)).collect();
    if paths.is_empty() && !raw.builtin_example {
        problems.push(Problem::new("policy.paths", "required; list your rules files or directories (see policies/)"));
    }
    if !paths.is_empty() && raw.builtin_example {
        problems.push(Problem::new("policy", "set either paths or builtin_example, not both"));
    }
    let reload_interval =
        duration_or(raw.reload_interval.as_deref(), "policy.reload_interval", Duration::from_secs(2), problems);
    let settle = duration_or(raw.settle.as_deref(), "policy.settle", Duration::from_secs(2), problems);
    PolicySettings { paths, builtin_example: raw.builtin_example, reload_interval, settle }
}

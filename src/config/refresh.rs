//! The `refresh_tokens:` section: whether `docker login` gets a refresh token, how long it lives, and the
//! secret that signs it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::check::{duration_or, resolve};
use super::problem::Problem;

/// `refresh_tokens:` as written in the config.
#[derive(Debug, Default, Deserialize)]
pub struct RawRefresh {
    /// Issue refresh tokens when clients ask (docker login, access_type=offline). Default: true.
    enabled: Option<bool>,
    /// Refresh token lifetime. Default: 90d.
    #[serde(default, deserialize_with = "super::check::duration")]
    lifetime: Option<String>,
    /// File holding the HMAC secret (at least 32 bytes). Default: data_dir/refresh-secret, generated.
    secret_file: Option<PathBuf>,
}

/// The validated `refresh_tokens:` section.
#[derive(Debug, Clone)]
pub struct RefreshSettings {
    pub enabled: bool,
    pub lifetime: Duration,
    pub secret_file: PathBuf,
}

/// Validate `refresh_tokens:`; `data_dir` holds the generated secret by default.
pub fn validate(raw: RawRefresh, base: &Path, data_dir: &Path, problems: &mut Vec<Problem>) -> RefreshSettings {
    let enabled = raw.enabled.unwrap_or(true);
    let lifetime =
        duration_or(raw.lifetime.as_deref(), "refresh_tokens.lifetime", Duration::from_secs(7776000), problems);
    if lifetime < Duration::from_secs(300) {
        problems.push(Problem::new("refresh_tokens.lifetime", "must be at least 5m"));
    }
    let secret_file = raw.secret_file.map(|p| resolve(base, &p)).unwrap_or_else(|| data_dir.join("refresh-secret"));
    RefreshSettings { enabled, lifetime, secret_file }
}

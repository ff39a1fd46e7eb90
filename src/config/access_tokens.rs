//! The `access_tokens:` section: personal and group access tokens (`tollgate token create`), how long they
//! may live, how fresh the login that creates one must be, who may create a group's, and the server secret
//! that keys their hashes at rest.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::check::{duration_or, resolve};
use super::problem::Problem;

/// `access_tokens:` as written in the config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessTokens {
    /// Accept and create access tokens. Default: true.
    enabled: Option<bool>,
    /// The longest expiry a token may be created with. Default: 90d.
    #[serde(default, deserialize_with = "super::check::duration")]
    max_lifetime: Option<String>,
    /// How old the interactive login behind a refresh token may be to create or rotate a token. Default: 10m.
    #[serde(default, deserialize_with = "super::check::duration")]
    max_auth_age: Option<String>,
    /// Groups whose members may create tokens owned by a group they belong to. Default: none.
    #[serde(default)]
    group_admins: Vec<String>,
    /// File holding the HMAC key of token hashes (at least 32 bytes). Default: data_dir/access-token-secret,
    /// generated.
    secret_file: Option<PathBuf>,
}

/// The validated `access_tokens:` section.
#[derive(Debug, Clone)]
pub struct AccessTokenSettings {
    pub enabled: bool,
    pub max_lifetime: Duration,
    pub max_auth_age: Duration,
    pub group_admins: Vec<String>,
    pub secret_file: PathBuf,
}

/// Validate `access_tokens:`; `data_dir` holds the generated secret by default.
pub fn validate(
    raw: RawAccessTokens,
    base: &Path,
    data_dir: &Path,
    problems: &mut Vec<Problem>,
) -> AccessTokenSettings {
    let enabled = raw.enabled.unwrap_or(true);
    let day = 24 * 3600;
    let max_lifetime =
        duration_or(raw.max_lifetime.as_deref(), "access_tokens.max_lifetime", Duration::from_secs(90 * day), problems);
    if max_lifetime < Duration::from_secs(3600) || max_lifetime > Duration::from_secs(3 * 366 * day) {
        problems.push(Problem::new("access_tokens.max_lifetime", "must be between 1h and 3 years"));
    }
    let max_auth_age =
        duration_or(raw.max_auth_age.as_deref(), "access_tokens.max_auth_age", Duration::from_secs(600), problems);
    if max_auth_age > Duration::from_secs(day) {
        problems.push(Problem::new("access_tokens.max_auth_age", "must be at most 1d: a fresh login is the point"));
    }
    for (i, g) in raw.group_admins.iter().enumerate() {
        if g.trim().is_empty() {
            problems.push(Problem::new(format!("access_tokens.group_admins[{i}]"), "must not be empty"));
        }
    }
    let secret_file =
        raw.secret_file.map(|p| resolve(base, &p)).unwrap_or_else(|| data_dir.join("access-token-secret"));
    AccessTokenSettings { enabled, max_lifetime, max_auth_age, group_admins: raw.group_admins, secret_file }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> (AccessTokenSettings, Vec<String>) {
        let raw: RawAccessTokens = serde_norway::from_str(yaml).unwrap();
        let mut problems = Vec::new();
        let s = validate(raw, Path::new("/etc/tg"), Path::new("/var/tg"), &mut problems);
        (s, problems.iter().map(|p| p.to_string()).collect())
    }

    #[test]
    fn defaults_and_limits() {
        let (s, p) = check("{}");
        assert!(p.is_empty(), "{p:?}");
        assert!(s.enabled);
        assert_eq!(s.max_lifetime, Duration::from_secs(90 * 24 * 3600));
        assert_eq!(s.max_auth_age, Duration::from_secs(600));
        assert_eq!(s.secret_file, Path::new("/var/tg/access-token-secret"));
        let (s, p) = check("{max_lifetime: 10m, max_auth_age: 2d, group_admins: [ci-admins, ''], secret_file: s}");
        assert_eq!(s.secret_file, Path::new("/etc/tg/s"));
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("access_tokens.max_lifetime"), "{p:?}");
        assert!(p[1].contains("access_tokens.max_auth_age"), "{p:?}");
        assert!(p[2].contains("access_tokens.group_admins[1]"), "{p:?}");
    }
}

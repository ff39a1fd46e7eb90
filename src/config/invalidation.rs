//! The `invalidation:` section: how access is ended at once when it ends at the source.
//!
//! Every signal (the `/invalidate` endpoint, `tollgate invalidate`, an IdP's back-channel logout) ends in
//! `crate::invalidate`. `secret_file` turns on the `/invalidate` endpoint (a bearer secret compared in
//! constant time); without it the endpoint answers 404. `backchannel_logout` turns on
//! `/oidc/<provider>/backchannel-logout` for every OIDC provider. `stream_length` caps the Redis stream that
//! carries invalidations to the other replicas (`state.store: redis`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::check::resolve;
use super::problem::Problem;

/// `invalidation:` as written in the config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInvalidation {
    /// A file holding the secret that callers of `/invalidate` send as `Authorization: Bearer …`.
    pub secret_file: Option<PathBuf>,
    /// Accept OpenID Connect back-channel logout tokens from each OIDC provider's IdP. Default: true.
    pub backchannel_logout: Option<bool>,
    /// About how many invalidations the Redis stream keeps. Default: 10000.
    pub stream_length: Option<u64>,
}

/// The validated `invalidation:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidationSettings {
    pub secret_file: Option<PathBuf>,
    pub backchannel_logout: bool,
    pub stream_length: u64,
}

impl Default for InvalidationSettings {
    fn default() -> Self {
        InvalidationSettings { secret_file: None, backchannel_logout: true, stream_length: 10_000 }
    }
}

/// The shortest secret accepted (bytes, after trimming).
pub const MIN_SECRET_LEN: usize = 32;

/// Validate `invalidation:`. The secret file is read at start (by `AppState`), where a problem with it
/// is reported with its path.
pub fn validate(raw: RawInvalidation, base: &Path, problems: &mut Vec<Problem>) -> InvalidationSettings {
    let stream_length = raw.stream_length.unwrap_or(10_000);
    if !(100..=1_000_000).contains(&stream_length) {
        problems.push(Problem::new("invalidation.stream_length", "must be between 100 and 1000000"));
    }
    InvalidationSettings {
        secret_file: raw.secret_file.map(|p| resolve(base, &p)),
        backchannel_logout: raw.backchannel_logout.unwrap_or(true),
        stream_length,
    }
}

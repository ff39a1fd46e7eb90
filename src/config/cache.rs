//! The `identity_cache:` section: how long a login is remembered, and how long a provider's outage is
//! bridged with what was remembered.

use std::time::Duration;

use serde::Deserialize;

use super::check::duration_or;
use super::problem::Problem;

/// `identity_cache:` as written in the config.
#[derive(Debug, Default, Deserialize)]
pub struct RawCache {
    /// How long a successful login is remembered. Default: 5m. 0s disables the cache.
    #[serde(default, deserialize_with = "super::check::duration")]
    ttl: Option<String>,
    /// Most cached identities. Default: 10000.
    capacity: Option<u64>,
    /// How long a refused password (or unknown user) is remembered, so repeating it costs the directory
    /// nothing. Keyed on the password too: it never locks out the right password. Default: 10s. 0s: off.
    #[serde(default, deserialize_with = "super::check::duration")]
    negative_ttl: Option<String>,
    /// When a provider is unavailable, keep serving identities up to this long past `ttl`. Default: 0s (off).
    #[serde(default, deserialize_with = "super::check::duration")]
    serve_stale_for: Option<String>,
}

/// The validated `identity_cache:` section.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub ttl: Duration,
    pub capacity: u64,
    pub negative_ttl: Duration,
    pub serve_stale_for: Duration,
}

/// Validate `identity_cache:`; every problem is pushed, each naming its key.
pub fn validate(raw: RawCache, problems: &mut Vec<Problem>) -> CacheSettings {
    let ttl = duration_or(raw.ttl.as_deref(), "identity_cache.ttl", Duration::from_secs(300), problems);
    let capacity = raw.capacity.unwrap_or(10_000);
    let negative_ttl =
        duration_or(raw.negative_ttl.as_deref(), "identity_cache.negative_ttl", Duration::from_secs(10), problems);
    let serve_stale_for =
        duration_or(raw.serve_stale_for.as_deref(), "identity_cache.serve_stale_for", Duration::ZERO, problems);
    CacheSettings { ttl, capacity, negative_ttl, serve_stale_for }
}

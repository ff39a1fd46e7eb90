//! The `state:` section: where the state that replicas must share lives (refresh-token revocations, device
//! and OIDC sessions, failed-login counts).
//!
//! `store: local` (the default) keeps it in files under `server.data_dir`, which is right for one replica.
//! `store: redis` puts it in Redis so that any number of replicas behind one name see the same state. The
//! Redis URL may carry a password, so it is read from a file (`redis_url_file`), never written inline.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::check::{duration_or, resolve};
use super::problem::Problem;

/// Which store holds the shared state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Files under `server.data_dir` (one replica, or replicas sharing one volume).
    #[default]
    Local,
    /// A Redis server shared by all replicas.
    Redis,
}

/// `state:` as written in the config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    /// `local` or `redis`. Default: local.
    pub store: Option<StoreKind>,
    /// REQUIRED with `store: redis`. A file holding the URL, e.g. `redis://:PASSWORD@redis:6379/0`.
    pub redis_url_file: Option<PathBuf>,
    /// Prepended to every key, so several tollgate deployments can share one Redis. Default: `tollgate:`.
    pub key_prefix: Option<String>,
    /// How long one connection attempt may take. Default: 2s.
    #[serde(default, deserialize_with = "super::check::duration")]
    pub connect_timeout: Option<String>,
    /// How long one Redis command may take before the request treats Redis as down. Default: 1s.
    #[serde(default, deserialize_with = "super::check::duration")]
    pub command_timeout: Option<String>,
}

/// The validated `state:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSettings {
    pub store: StoreKind,
    /// Set when `store` is redis.
    pub redis_url_file: Option<PathBuf>,
    pub key_prefix: String,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
}

impl Default for StateSettings {
    fn default() -> Self {
        StateSettings {
            store: StoreKind::Local,
            redis_url_file: None,
            key_prefix: "tollgate:".into(),
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(1),
        }
    }
}

/// A Redis timeout: a duration between 10ms and 60s.
fn timeout(value: Option<&str>, key: &str, default: Duration, errors: &mut Vec<Problem>) -> Duration {
    let d = duration_or(value, key, default, errors);
    if value.is_some() && !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&d) {
        errors.push(Problem::new(key, format!("{:?} must be between 10ms and 60s", value.unwrap_or_default())));
        return default;
    }
    d
}

/// Validate `state:`; every problem is pushed, each naming its key and the fix.
pub fn validate(raw: RawState, base: &Path, errors: &mut Vec<Problem>) -> StateSettings {
    let d = StateSettings::default();
    let store = raw.store.unwrap_or_default();
    let redis_url_file = raw.redis_url_file.as_deref().map(|p| resolve(base, p));
    match (store, &redis_url_file) {
        (StoreKind::Redis, None) => errors.push(Problem::new(
            "state.redis_url_file",
            "required with store: redis; point it at a file holding redis://[:PASSWORD@]HOST:PORT/DB",
        )),
        (StoreKind::Local, Some(_)) => errors
            .push(Problem::new("state.redis_url_file", "only used with store: redis; set store: redis or remove it")),
        _ => {}
    }
    let key_prefix = raw.key_prefix.unwrap_or(d.key_prefix);
    if key_prefix.is_empty() || key_prefix.len() > 64 || key_prefix.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        errors.push(Problem::new(
            "state.key_prefix",
            format!("{key_prefix:?} must be 1 to 64 characters without spaces, e.g. \"tollgate:\""),
        ));
    }
    StateSettings {
        store,
        redis_url_file,
        key_prefix,
        connect_timeout: timeout(raw.connect_timeout.as_deref(), "state.connect_timeout", d.connect_timeout, errors),
        command_timeout: timeout(raw.command_timeout.as_deref(), "state.command_timeout", d.command_timeout, errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_state_key_is_named() {
        let raw = RawState {
            store: Some(StoreKind::Redis),
            redis_url_file: None,
            key_prefix: Some("two words".into()),
            connect_timeout: Some("soon".into()),
            command_timeout: Some("5m".into()),
        };
        let mut errors = Vec::new();
        validate(raw, Path::new("/etc/tollgate"), &mut errors);
        let all = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
        for want in [
            "state.redis_url_file: required with store: redis",
            "state.key_prefix: \"two words\"",
            "state.connect_timeout: \"soon\" is not a duration",
            "state.command_timeout: \"5m\" must be between 10ms and 60s",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
    }

    #[test]
    fn the_default_is_local_and_relative_paths_follow_the_config() {
        let mut errors = Vec::new();
        assert_eq!(validate(RawState::default(), Path::new("/x"), &mut errors), StateSettings::default());
        let raw =
            RawState { store: Some(StoreKind::Redis), redis_url_file: Some("redis-url".into()), ..Default::default() };
        let s = validate(raw, Path::new("/etc/tollgate"), &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(s.redis_url_file.as_deref(), Some(Path::new("/etc/tollgate/redis-url")));
    }
}

//! The `state:` section: where the state that replicas must share lives (refresh-token revocations, device
//! and OIDC sessions, failed-login counts).
//!
//! `store: local` (the default) keeps it in files under `server.data_dir`, which is right for one replica.
//! `store: redis` puts it in Redis so that any number of replicas behind one name see the same state. The
//! Redis URL may carry a password, so it is read from a file (`redis_url_file`), never written inline.
//!
//! Redis itself runs as one server (`redis_url_file` names it) or under Sentinel (`sentinel:` lists the
//! sentinels and the master's name; the URL file then gives only the master's credentials and database).
//! `min_replicas_acked` makes every revocation wait until that many replicas have it (`WAIT`), so a failover
//! cannot forget it.

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
    /// How many replicas must acknowledge a revocation (`WAIT`) before it counts as done. Default: 0 (no wait:
    /// right for a Redis without replicas; set 1 or more with replicas, or a failover can lose a revocation).
    pub min_replicas_acked: Option<u32>,
    /// How long a revocation waits for those acknowledgements. Default: 1s.
    #[serde(default, deserialize_with = "super::check::duration")]
    pub replica_ack_timeout: Option<String>,
    /// How often Redis's `maxmemory-policy`, role and replicas are read again. Default: 15s.
    #[serde(default, deserialize_with = "super::check::duration")]
    pub health_interval: Option<String>,
    /// Redis under Sentinel: the master is asked of the sentinels, and asked again after a failover.
    pub sentinel: Option<RawSentinel>,
    /// A file holding the ACL user name for Redis (instead of one in the URL); with `password_file`.
    pub username_file: Option<PathBuf>,
    /// A file holding the password for Redis (instead of one in the URL).
    pub password_file: Option<PathBuf>,
    /// TLS to Redis (and the sentinels), with a `rediss://` URL.
    pub tls: Option<RawRedisTls>,
    /// Redis Cluster: the node serving tollgate's hash slot is asked of these seed nodes.
    pub cluster: Option<RawCluster>,
}

/// `state.cluster:` as written in the config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// REQUIRED. Some nodes of the cluster, `host:port` each; any one that answers is enough.
    pub nodes: Option<Vec<String>>,
}

/// `state.tls:` as written in the config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedisTls {
    /// REQUIRED. The CA certificate(s), PEM, that signed Redis's certificate.
    pub ca_file: Option<PathBuf>,
    /// A client certificate, PEM, for Redis's `tls-auth-clients`; with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key, PEM.
    pub key_file: Option<PathBuf>,
}

/// The validated `state.tls:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTls {
    pub ca_file: PathBuf,
    /// Certificate and key files, when Redis asks for a client certificate.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// `state.sentinel:` as written in the config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSentinel {
    /// REQUIRED. The sentinels, `host:port` each (26379 is Sentinel's usual port).
    pub nodes: Option<Vec<String>>,
    /// REQUIRED. The name the sentinels monitor the master under (`sentinel monitor NAME ...`).
    pub master_name: Option<String>,
    /// A file holding the sentinels' own password (`requirepass` in sentinel.conf), when they need one.
    pub password_file: Option<PathBuf>,
    /// A file holding the ACL user name for the sentinels, with `password_file`.
    pub username_file: Option<PathBuf>,
}

/// The validated `state.sentinel:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelSettings {
    /// `(host, port)` of each sentinel, in the order asked.
    pub nodes: Vec<(String, u16)>,
    pub master_name: String,
    pub password_file: Option<PathBuf>,
    pub username_file: Option<PathBuf>,
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
    pub min_replicas_acked: u32,
    pub replica_ack_timeout: Duration,
    pub health_interval: Duration,
    /// Set when Redis runs under Sentinel.
    pub sentinel: Option<SentinelSettings>,
    pub username_file: Option<PathBuf>,
    pub password_file: Option<PathBuf>,
    pub tls: Option<RedisTls>,
    /// Seed nodes, `(host, port)`, when Redis is a Cluster.
    pub cluster: Option<Vec<(String, u16)>>,
}

impl Default for StateSettings {
    fn default() -> Self {
        StateSettings {
            store: StoreKind::Local,
            redis_url_file: None,
            key_prefix: "tollgate:".into(),
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(1),
            min_replicas_acked: 0,
            replica_ack_timeout: Duration::from_secs(1),
            health_interval: Duration::from_secs(15),
            sentinel: None,
            username_file: None,
            password_file: None,
            tls: None,
            cluster: None,
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
    if key_prefix.is_empty()
        || key_prefix.len() > 64
        || key_prefix.chars().any(|c| c.is_whitespace() || c.is_control() || c == '{' || c == '}')
    {
        errors.push(Problem::new(
            "state.key_prefix",
            format!("{key_prefix:?} must be 1 to 64 characters without spaces or braces, e.g. \"tollgate:\""),
        ));
    }
    let min_replicas_acked = raw.min_replicas_acked.unwrap_or(d.min_replicas_acked);
    if min_replicas_acked > 16 {
        errors.push(Problem::new(
            "state.min_replicas_acked",
            format!("{min_replicas_acked} is more replicas than any sensible Redis has; use 0 to 16 (1 is usual)"),
        ));
    }
    let sentinel = raw.sentinel.map(|s| sentinel(s, base, errors));
    let cluster = raw.cluster.map(|c| match c.nodes {
        Some(list) if !list.is_empty() => host_ports(&list, "state.cluster.nodes", "redis-1:6379", errors),
        _ => {
            errors.push(Problem::new("state.cluster.nodes", "required: some nodes of the cluster as host:port"));
            Vec::new()
        }
    });
    if sentinel.is_some() && cluster.is_some() {
        errors.push(Problem::new("state.cluster", "sentinel and cluster exclude each other: keep the one you run"));
    }
    if raw.username_file.is_some() && raw.password_file.is_none() {
        errors.push(Problem::new("state.username_file", "needs password_file too (an ACL user has both)"));
    }
    let tls = raw.tls.map(|t| {
        let ca_file = t.ca_file.map(|p| resolve(base, &p)).unwrap_or_else(|| {
            errors.push(Problem::new("state.tls.ca_file", "required: the CA certificate (PEM) that signed Redis's"));
            PathBuf::new()
        });
        let client = match (t.cert_file, t.key_file) {
            (Some(c), Some(k)) => Some((resolve(base, &c), resolve(base, &k))),
            (None, None) => None,
            _ => {
                errors.push(Problem::new("state.tls.cert_file", "cert_file and key_file go together"));
                None
            }
        };
        RedisTls { ca_file, client }
    });
    if store == StoreKind::Local
        && (sentinel.is_some()
            || cluster.is_some()
            || min_replicas_acked > 0
            || tls.is_some()
            || raw.password_file.is_some())
    {
        errors.push(Problem::new(
            "state.store",
            "sentinel, min_replicas_acked, tls and password_file are Redis settings: set store: redis or remove them",
        ));
    }
    StateSettings {
        store,
        redis_url_file,
        key_prefix,
        connect_timeout: timeout(raw.connect_timeout.as_deref(), "state.connect_timeout", d.connect_timeout, errors),
        command_timeout: timeout(raw.command_timeout.as_deref(), "state.command_timeout", d.command_timeout, errors),
        min_replicas_acked,
        replica_ack_timeout: timeout(
            raw.replica_ack_timeout.as_deref(),
            "state.replica_ack_timeout",
            d.replica_ack_timeout,
            errors,
        ),
        health_interval: {
            let v = raw.health_interval.as_deref();
            let i = duration_or(v, "state.health_interval", d.health_interval, errors);
            if v.is_some() && !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&i) {
                errors.push(Problem::new(
                    "state.health_interval",
                    format!("{:?} must be between 1s and 1h", v.unwrap_or_default()),
                ));
            }
            i
        },
        sentinel,
        username_file: raw.username_file.map(|p| resolve(base, &p)),
        password_file: raw.password_file.map(|p| resolve(base, &p)),
        tls,
        cluster,
    }
}

/// `host:port` entries; each bad one is a problem naming its index.
fn host_ports(list: &[String], key: &str, example: &str, errors: &mut Vec<Problem>) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for (i, n) in list.iter().enumerate() {
        match n.rsplit_once(':').and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?))) {
            Some((h, p)) if !h.is_empty() && p > 0 => {
                out.push((h.trim_start_matches('[').trim_end_matches(']').to_string(), p))
            }
            _ => {
                errors.push(Problem::new(format!("{key}[{i}]"), format!("{n:?} is not host:port, e.g. \"{example}\"")))
            }
        }
    }
    out
}

/// Validate `state.sentinel:`.
fn sentinel(raw: RawSentinel, base: &Path, errors: &mut Vec<Problem>) -> SentinelSettings {
    let mut nodes = Vec::new();
    match raw.nodes {
        None => errors.push(Problem::new(
            "state.sentinel.nodes",
            "required: the sentinels as host:port, e.g. [\"sentinel-1:26379\", \"sentinel-2:26379\"]",
        )),
        Some(list) if list.is_empty() => {
            errors.push(Problem::new("state.sentinel.nodes", "empty: list at least one sentinel (three is usual)"))
        }
        Some(list) => nodes = host_ports(&list, "state.sentinel.nodes", "sentinel-1:26379", errors),
    }
    let master_name = raw.master_name.unwrap_or_default();
    if master_name.is_empty() || master_name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        errors.push(Problem::new(
            "state.sentinel.master_name",
            "required: the name the sentinels monitor the master under, e.g. mymaster",
        ));
    }
    if raw.username_file.is_some() && raw.password_file.is_none() {
        errors.push(Problem::new("state.sentinel.username_file", "needs password_file too (an ACL user has both)"));
    }
    SentinelSettings {
        nodes,
        master_name,
        password_file: raw.password_file.map(|p| resolve(base, &p)),
        username_file: raw.username_file.map(|p| resolve(base, &p)),
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
            min_replicas_acked: Some(99),
            sentinel: Some(RawSentinel {
                nodes: Some(vec!["s1:26379".into(), "nocolon".into()]),
                username_file: Some("u".into()),
                ..Default::default()
            }),
            username_file: Some("user".into()),
            tls: Some(RawRedisTls { cert_file: Some("c".into()), ..Default::default() }),
            cluster: Some(RawCluster { nodes: Some(vec!["r1:70000".into()]) }),
            ..Default::default()
        };
        let mut errors = Vec::new();
        validate(raw, Path::new("/etc/tollgate"), &mut errors);
        let all = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
        for want in [
            "state.redis_url_file: required with store: redis",
            "state.key_prefix: \"two words\"",
            "state.connect_timeout: \"soon\" is not a duration",
            "state.command_timeout: \"5m\" must be between 10ms and 60s",
            "state.min_replicas_acked: 99 is more replicas",
            "state.sentinel.nodes[1]: \"nocolon\" is not host:port",
            "state.sentinel.master_name: required",
            "state.sentinel.username_file: needs password_file too",
            "state.username_file: needs password_file too",
            "state.tls.ca_file: required",
            "state.tls.cert_file: cert_file and key_file go together",
            "state.cluster.nodes[0]: \"r1:70000\" is not host:port",
            "state.cluster: sentinel and cluster exclude each other",
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

//! The operations part of the config: TLS on the listener, the metrics listener, trusted proxies, the
//! readiness prober and failed-login rate limits.
//!
//! Kept apart from `config/mod.rs` so the raw structs and their validation sit together; `mod.rs` only
//! holds the fields and calls [`validate`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::check::{duration_or, resolve};
use super::problem::Problem;

/// `server.tls`: serve HTTPS on `server.listen` instead of plain HTTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// REQUIRED. PEM certificate chain, leaf first. Re-read on SIGHUP and when the file changes.
    pub cert_file: PathBuf,
    /// REQUIRED. PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// The `server:` keys this module owns.
#[derive(Debug, Default, Deserialize)]
pub struct RawServerOps {
    /// HTTPS on the main listener. Default: plain HTTP (run behind a TLS-terminating proxy).
    pub tls: Option<RawTls>,
    /// Serve `/metrics` on this address only (e.g. 127.0.0.1:9101). Default: on the main listener.
    pub metrics_listen: Option<String>,
    /// Peers (addresses or CIDR networks) whose `X-Forwarded-For` is believed. Default: none.
    pub trusted_proxies: Option<Vec<String>>,
    /// How often each provider is probed for `/readyz`. Default: 15s.
    #[serde(default, deserialize_with = "super::check::duration")]
    pub probe_interval: Option<String>,
    /// Connection deadlines and caps. See [`RawConnections`].
    pub connections: Option<RawConnections>,
}

/// `server.connections:`: what one client connection may hold, and for how long.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConnections {
    /// A connection that sends no byte within this is closed. Default: 5s.
    #[serde(default, deserialize_with = "super::check::duration")]
    pub first_byte_timeout: Option<String>,
    /// A request's headers (the first request's counted from the accept) must arrive within this. Default: 10s.
    #[serde(default, deserialize_with = "super::check::duration")]
    pub header_timeout: Option<String>,
    /// A request body must arrive within this of its headers. Default: 10s.
    #[serde(default, deserialize_with = "super::check::duration")]
    pub body_timeout: Option<String>,
    /// A connection with no request in flight is closed after this. Default: 60s.
    #[serde(default, deserialize_with = "super::check::duration")]
    pub idle_timeout: Option<String>,
    /// Most connections open at once; more are closed at accept. Default: 0, meaning the open-file limit
    /// (`ulimit -n`) minus 256 descriptors kept for providers, stores, reloads and logs.
    pub max: Option<usize>,
    /// Most connections open at once from one client address (trusted proxies are exempt). Default: 0,
    /// meaning a quarter of `max`: no single address can take the whole server, and an office behind one
    /// NAT address still gets hundreds.
    pub max_per_client: Option<usize>,
    /// Most concurrent HTTP/2 streams on one connection. Default: 32.
    pub http2_max_streams: Option<u32>,
}

/// `rate_limit:`: failed logins per client IP and per account.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Default: true.
    pub enabled: Option<bool>,
    /// Failed logins one client address may make per window for one account before that address gets 429
    /// for that account (and only that one). Default: 5.
    pub client_account_failures: Option<u32>,
    /// Accounts one client address may fail to log in to per window (each account counted once, so retries
    /// of one stale secret count once) before the address gets 429. Default: 30.
    pub ip_failures: Option<u32>,
    /// Failed logins one account may receive per window (from all addresses together) before addresses that
    /// never logged in to it get 429. Default: 20.
    pub account_failures: Option<u32>,
    /// The window over which a full budget refills (continuously, one failure at a time). Default: 5m.
    #[serde(default, deserialize_with = "super::check::duration")]
    pub window: Option<String>,
}

/// TLS files, resolved against the config directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Default deadlines of a connection (also the values the fault tests wait out).
pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Connection deadlines and caps of both listeners (`server.connections`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnLimits {
    pub first_byte_timeout: Duration,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    /// 0: from the open-file limit.
    pub max: usize,
    /// 0: a quarter of the effective `max`.
    pub max_per_client: usize,
    pub http2_max_streams: u32,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            first_byte_timeout: DEFAULT_FIRST_BYTE_TIMEOUT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max: 0,
            max_per_client: 0,
            http2_max_streams: 32,
        }
    }
}

/// Failed-login limits. Zero `enabled` means no limiting at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub client_account_failures: u32,
    pub ip_failures: u32,
    pub account_failures: u32,
    pub window: Duration,
}

/// The validated operations settings.
#[derive(Debug, Clone)]
pub struct OpsSettings {
    pub tls: Option<TlsSettings>,
    pub metrics_listen: Option<SocketAddr>,
    pub trusted_proxies: Vec<IpNet>,
    pub probe_interval: Duration,
    pub connections: ConnLimits,
    pub rate_limit: RateLimitSettings,
}

impl Default for OpsSettings {
    fn default() -> Self {
        OpsSettings {
            tls: None,
            metrics_listen: None,
            trusted_proxies: Vec::new(),
            probe_interval: Duration::from_secs(15),
            connections: ConnLimits::default(),
            rate_limit: RateLimitSettings {
                enabled: true,
                client_account_failures: 5,
                ip_failures: 30,
                account_failures: 20,
                window: Duration::from_secs(300),
            },
        }
    }
}

/// Validate the operations keys; every problem is pushed, each naming its key.
pub fn validate(server: RawServerOps, rate: RawRateLimit, base: &Path, errors: &mut Vec<Problem>) -> OpsSettings {
    let d = OpsSettings::default();
    let tls = server
        .tls
        .map(|t| TlsSettings { cert_file: resolve(base, &t.cert_file), key_file: resolve(base, &t.key_file) });
    let metrics_listen = server.metrics_listen.and_then(|s| match s.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            errors.push(Problem::new(
                "server.metrics_listen",
                format!("{s:?} is not an address; write e.g. 127.0.0.1:9101"),
            ));
            None
        }
    });
    let mut trusted_proxies = Vec::new();
    for (i, p) in server.trusted_proxies.unwrap_or_default().iter().enumerate() {
        // A bare address is a one-host network.
        let parsed = p.parse::<IpNet>().or_else(|_| p.parse::<std::net::IpAddr>().map(IpNet::from));
        match parsed {
            Ok(net) => trusted_proxies.push(net),
            Err(_) => errors.push(Problem::new(
                format!("server.trusted_proxies[{i}]"),
                format!("{p:?} is not an address or network; write e.g. 10.0.0.0/8 or 172.18.0.2"),
            )),
        }
    }
    let probe_interval =
        duration_or(server.probe_interval.as_deref(), "server.probe_interval", d.probe_interval, errors);
    if probe_interval < Duration::from_millis(100) {
        errors.push(Problem::new("server.probe_interval", "must be at least 100ms"));
    }
    let connections = connections(server.connections.unwrap_or_default(), errors);
    let window = duration_or(rate.window.as_deref(), "rate_limit.window", d.rate_limit.window, errors);
    let client_account_failures = rate.client_account_failures.unwrap_or(d.rate_limit.client_account_failures);
    let ip_failures = rate.ip_failures.unwrap_or(d.rate_limit.ip_failures);
    let account_failures = rate.account_failures.unwrap_or(d.rate_limit.account_failures);
    if client_account_failures == 0 || ip_failures == 0 || account_failures == 0 {
        errors.push(Problem::new(
            "rate_limit",
            "client_account_failures, ip_failures and account_failures must be at least 1 (set enabled: false to turn limiting off)",
        ));
    }
    if window < Duration::from_secs(1) {
        errors.push(Problem::new("rate_limit.window", "must be at least 1s"));
    }
    OpsSettings {
        tls,
        metrics_listen,
        trusted_proxies,
        probe_interval,
        connections,
        rate_limit: RateLimitSettings {
            enabled: rate.enabled.unwrap_or(true),
            client_account_failures,
            ip_failures,
            account_failures,
            window,
        },
    }
}

fn connections(raw: RawConnections, errors: &mut Vec<Problem>) -> ConnLimits {
    let d = ConnLimits::default();
    let mut timeout = |value: Option<String>, key: &str, default: Duration| {
        let key = format!("server.connections.{key}");
        let t = duration_or(value.as_deref(), &key, default, errors);
        if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&t) {
            errors.push(Problem::new(key.as_str(), "must be between 100ms and 1h"));
        }
        t
    };
    let limits = ConnLimits {
        first_byte_timeout: timeout(raw.first_byte_timeout, "first_byte_timeout", d.first_byte_timeout),
        header_timeout: timeout(raw.header_timeout, "header_timeout", d.header_timeout),
        body_timeout: timeout(raw.body_timeout, "body_timeout", d.body_timeout),
        idle_timeout: timeout(raw.idle_timeout, "idle_timeout", d.idle_timeout),
        max: raw.max.unwrap_or(d.max),
        max_per_client: raw.max_per_client.unwrap_or(d.max_per_client),
        http2_max_streams: raw.http2_max_streams.unwrap_or(d.http2_max_streams),
    };
    if limits.max != 0 && limits.max < limits.max_per_client {
        errors.push(Problem::new(
            "server.connections.max",
            "must be 0 (from the open-file limit) or at least max_per_client",
        ));
    }
    if !(1..=1000).contains(&limits.http2_max_streams) {
        errors.push(Problem::new("server.connections.http2_max_streams", "must be between 1 and 1000"));
    }
    limits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_ops_key_is_named() {
        let server = RawServerOps {
            tls: None,
            metrics_listen: Some("everywhere".into()),
            trusted_proxies: Some(vec!["10.0.0.0/8".into(), "172.18.0.2".into(), "proxy.local".into()]),
            probe_interval: Some("1ms".into()),
            connections: Some(RawConnections {
                idle_timeout: Some("0s".into()),
                max: Some(10),
                max_per_client: Some(20),
                ..Default::default()
            }),
        };
        let rate = RawRateLimit {
            enabled: None,
            client_account_failures: None,
            ip_failures: Some(0),
            account_failures: None,
            window: Some("soon".into()),
        };
        let mut errors = Vec::new();
        let s = validate(server, rate, Path::new("/etc/tollgate"), &mut errors);
        let all = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
        for want in [
            "server.metrics_listen: \"everywhere\"",
            "server.trusted_proxies[2]: \"proxy.local\"",
            "server.probe_interval: must be at least 100ms",
            "rate_limit: client_account_failures, ip_failures and account_failures must be at least 1",
            "rate_limit.window: \"soon\" is not a duration",
            "server.connections.idle_timeout: must be between 100ms and 1h",
            "server.connections.max: must be 0 (from the open-file limit) or at least max_per_client",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
        assert_eq!(s.trusted_proxies.len(), 2, "a bare address is accepted as a /32");
    }
}

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
    pub probe_interval: Option<String>,
}

/// `rate_limit:`: failed logins per client IP and per account.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Default: true.
    pub enabled: Option<bool>,
    /// Failed logins one client IP may make per window before getting 429. Default: 10.
    pub ip_failures: Option<u32>,
    /// Failed logins one account may receive per window (from all IPs together). Default: 20.
    pub account_failures: Option<u32>,
    /// The window over which a full budget refills (continuously, one failure at a time). Default: 5m.
    pub window: Option<String>,
}

/// TLS files, resolved against the config directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Failed-login limits. Zero `enabled` means no limiting at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSettings {
    pub enabled: bool,
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
    pub rate_limit: RateLimitSettings,
}

impl Default for OpsSettings {
    fn default() -> Self {
        OpsSettings {
            tls: None,
            metrics_listen: None,
            trusted_proxies: Vec::new(),
            probe_interval: Duration::from_secs(15),
            rate_limit: RateLimitSettings {
                enabled: true,
                ip_failures: 10,
                account_failures: 20,
                window: Duration::from_secs(300),
            },
        }
    }
}

/// Validate the operations keys; problems are appended to `errors`, each naming its key.
pub fn validate(server: RawServerOps, rate: RawRateLimit, base: &Path, errors: &mut Vec<String>) -> OpsSettings {
    let d = OpsSettings::default();
    let tls = server
        .tls
        .map(|t| TlsSettings { cert_file: resolve(base, &t.cert_file), key_file: resolve(base, &t.key_file) });
    let metrics_listen = server.metrics_listen.and_then(|s| match s.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            errors.push(format!("server.metrics_listen: {s:?} is not an address; write e.g. 127.0.0.1:9101"));
            None
        }
    });
    let mut trusted_proxies = Vec::new();
    for (i, p) in server.trusted_proxies.unwrap_or_default().iter().enumerate() {
        // A bare address is a one-host network.
        let parsed = p.parse::<IpNet>().or_else(|_| p.parse::<std::net::IpAddr>().map(IpNet::from));
        match parsed {
            Ok(net) => trusted_proxies.push(net),
            Err(_) => errors.push(format!(
                "server.trusted_proxies[{i}]: {p:?} is not an address or network; write e.g. 10.0.0.0/8 or 172.18.0.2"
            )),
        }
    }
    let probe_interval =
        duration_or(server.probe_interval.as_deref(), "server.probe_interval", d.probe_interval, errors);
    if probe_interval < Duration::from_millis(100) {
        errors.push("server.probe_interval: must be at least 100ms".into());
    }
    let window = duration_or(rate.window.as_deref(), "rate_limit.window", d.rate_limit.window, errors);
    let ip_failures = rate.ip_failures.unwrap_or(d.rate_limit.ip_failures);
    let account_failures = rate.account_failures.unwrap_or(d.rate_limit.account_failures);
    if ip_failures == 0 || account_failures == 0 {
        errors.push(
            "rate_limit: ip_failures and account_failures must be at least 1 (set enabled: false to turn limiting off)"
                .into(),
        );
    }
    if window < Duration::from_secs(1) {
        errors.push("rate_limit.window: must be at least 1s".into());
    }
    OpsSettings {
        tls,
        metrics_listen,
        trusted_proxies,
        probe_interval,
        rate_limit: RateLimitSettings { enabled: rate.enabled.unwrap_or(true), ip_failures, account_failures, window },
    }
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
        };
        let rate =
            RawRateLimit { enabled: None, ip_failures: Some(0), account_failures: None, window: Some("soon".into()) };
        let mut errors = Vec::new();
        let s = validate(server, rate, Path::new("/etc/tollgate"), &mut errors);
        let all = errors.join("\n");
        for want in [
            "server.metrics_listen: \"everywhere\"",
            "server.trusted_proxies[2]: \"proxy.local\"",
            "server.probe_interval: must be at least 100ms",
            "rate_limit: ip_failures and account_failures must be at least 1",
            "rate_limit.window: \"soon\" is not a duration",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
        assert_eq!(s.trusted_proxies.len(), 2, "a bare address is accepted as a /32");
    }
}

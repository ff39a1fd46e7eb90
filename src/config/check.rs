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

/// `#[serde(default, deserialize_with = "duration")]`: a duration key, kept as its text (read later by
/// [`duration_or`]); anything but a text is refused as not a duration rather than as not a string.
pub fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct Text;
    impl<'de> serde::de::Visitor<'de> for Text {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(super::problem::DURATION_EXPECTED)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
    }
    d.deserialize_option(Text)
}

/// A warning when `url` (the value of `key`) is plain HTTP to a host other than this machine: what comes
/// from it (signing keys, tokens; for OIDC the password grant's passwords go to it) travels unencrypted and
/// can be read or replaced on the way. Loopback is left alone: tests and sidecars use it.
pub fn plain_http_warning(key: &str, url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    let loopback =
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    (!loopback).then(|| {
        format!(
            "{key}: {url} is plain HTTP to another host: the keys and tokens it serves (and, for OIDC, the \
             passwords sent to it) travel unencrypted and can be read or replaced on the way; use https"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::plain_http_warning;

    #[test]
    fn plain_http_to_another_host_is_warned_about_and_loopback_is_not() {
        for quiet in
            ["https://sso.example.com/realms/x", "http://127.0.0.1:8080", "http://localhost/x", "http://[::1]:9/"]
        {
            assert_eq!(plain_http_warning("k", quiet), None, "{quiet}");
        }
        for loud in ["http://sso.example.com/realms/x", "http://user@10.0.0.1:80/jwks", "http://[2001:db8::1]/"] {
            let w = plain_http_warning("providers[2].issuer", loud).unwrap_or_default();
            assert!(w.starts_with(&format!("providers[2].issuer: {loud} is plain HTTP to another host")), "{w}");
        }
    }
}

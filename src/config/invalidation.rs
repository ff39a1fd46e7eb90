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
    /// Shared Signals transmitters whose security event tokens are accepted at `/ssf/<name>`.
    #[serde(default)]
    pub transmitters: Vec<RawTransmitter>,
}

/// One Shared Signals (SSF) transmitter, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTransmitter {
    /// REQUIRED. The name in the push endpoint's path (`/ssf/<name>`) and in the logs.
    pub name: Option<String>,
    /// REQUIRED. The `iss` of its tokens.
    pub issuer: Option<String>,
    /// REQUIRED. The `aud` its tokens must name (this receiver).
    pub audience: Option<String>,
    /// REQUIRED. Its public signing keys (a JWKS file).
    pub jwks_file: Option<PathBuf>,
    /// Which part of the event's subject is the tollgate username: email (default), email_local_part,
    /// sub (of an iss_sub subject), opaque (the id of an opaque subject).
    pub username_from: Option<String>,
    /// The tollgate provider the accounts belong to. Default: any.
    pub provider: Option<String>,
}

/// How a subject identifier becomes a username.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsernameFrom {
    Email,
    EmailLocalPart,
    Sub,
    Opaque,
}

/// A validated SSF transmitter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmitter {
    pub name: String,
    pub issuer: String,
    pub audience: String,
    pub jwks_file: PathBuf,
    pub username_from: UsernameFrom,
    pub provider: Option<String>,
}

/// The validated `invalidation:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidationSettings {
    pub secret_file: Option<PathBuf>,
    pub backchannel_logout: bool,
    pub stream_length: u64,
    pub transmitters: Vec<Transmitter>,
}

impl Default for InvalidationSettings {
    fn default() -> Self {
        InvalidationSettings {
            secret_file: None,
            backchannel_logout: true,
            stream_length: 10_000,
            transmitters: Vec::new(),
        }
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
    let mut transmitters: Vec<Transmitter> = Vec::new();
    for (i, t) in raw.transmitters.into_iter().enumerate() {
        let key = |k: &str| format!("invalidation.transmitters[{i}].{k}");
        let mut required = |v: Option<String>, k: &str| {
            v.filter(|s| !s.trim().is_empty()).unwrap_or_else(|| {
                problems.push(Problem::new(key(k), "required"));
                String::new()
            })
        };
        let name = required(t.name, "name");
        let issuer = required(t.issuer, "issuer");
        let audience = required(t.audience, "audience");
        if !name.is_empty() && !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
            problems
                .push(Problem::new(key("name"), "letters, digits, '-', '_' and '.' only (it is a URL path segment)"));
        }
        if transmitters.iter().any(|x| x.name == name) {
            problems.push(Problem::new(key("name"), format!("{name:?} is used by another transmitter")));
        }
        let jwks_file = match t.jwks_file {
            Some(p) => resolve(base, &p),
            None => {
                problems.push(Problem::new(key("jwks_file"), "required"));
                PathBuf::new()
            }
        };
        let username_from = match t.username_from.as_deref() {
            None | Some("email") => UsernameFrom::Email,
            Some("email_local_part") => UsernameFrom::EmailLocalPart,
            Some("sub") => UsernameFrom::Sub,
            Some("opaque") => UsernameFrom::Opaque,
            Some(other) => {
                problems.push(Problem::new(
                    key("username_from"),
                    format!("must be one of: email, email_local_part, sub, opaque; found {other:?}"),
                ));
                UsernameFrom::Email
            }
        };
        transmitters.push(Transmitter { name, issuer, audience, jwks_file, username_from, provider: t.provider });
    }
    InvalidationSettings {
        secret_file: raw.secret_file.map(|p| resolve(base, &p)),
        backchannel_logout: raw.backchannel_logout.unwrap_or(true),
        stream_length,
        transmitters,
    }
}

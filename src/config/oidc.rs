//! The `type: oidc` provider entry: its keys, defaults and validation.

use std::path::{Path, PathBuf};
use std::time::Duration;

use openidconnect::core::CoreJwsSigningAlgorithm;
use openidconnect::url;
use serde::Deserialize;

use super::check::{duration_or, resolve};
use super::problem::Problem;

/// Where the username and groups are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimsSource {
    /// The verified ID token (userinfo only when a response has no ID token, as Glewlwyd's refresh).
    #[default]
    IdToken,
    /// The userinfo endpoint, called with the access token (claims merged over the ID token's).
    Userinfo,
}

/// An OpenID Connect provider (`type: oidc`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// REQUIRED. Unique name; recorded in tokens and usable in rules (`provider:`).
    pub name: String,
    /// REQUIRED. The issuer URL. Discovery reads ISSUER/.well-known/openid-configuration, and ID tokens must
    /// carry exactly this `iss`.
    pub issuer: String,
    /// REQUIRED. tollgate's client id at the IdP; ID tokens must name it in `aud`.
    pub client_id: String,
    /// File holding the client secret (a confidential client; Keycloak and Glewlwyd require one for the
    /// password grant). Default: none (a public client).
    pub client_secret_file: Option<PathBuf>,
    /// Scopes asked for. Default: [openid, profile, email]. Add `offline_access` (or what the IdP wants) to
    /// receive IdP refresh tokens, which keep groups current (see README, "OIDC sessions").
    pub scopes: Option<Vec<String>>,
    /// The claim holding the username: preferred_username (default), email, sub, or any other.
    pub username_claim: Option<String>,
    /// Dotted path to the groups claim, a string or a list of strings: `groups` (default),
    /// `realm_access.roles`, `resource_access.CLIENT.roles`, GitLab's `groups_direct`.
    pub groups_claim: Option<String>,
    /// Where the username and groups are read: id_token (default) or userinfo.
    pub claims_source: Option<ClaimsSource>,
    /// Removed from the front of each group name when present, e.g. "/" for Keycloak group paths
    /// (`/team/devs` becomes `team/devs`). Default: none.
    pub strip_group_prefix: Option<String>,
    /// Put in front of each group name, to keep providers apart in rules (e.g. "gitlab-"). Default: none.
    pub group_prefix: Option<String>,
    /// Only usernames matching this regex (anchored) are tried at this IdP; the others go to the next
    /// provider. Needed to put several password-grant providers side by side. Default: every username.
    pub username_regex: Option<String>,
    /// Accept `docker login` with the IdP password (resource-owner password grant). Default: true.
    pub password_grant: Option<bool>,
    /// Offer device login (RFC 8628) through this provider. Default: true; needs a device endpoint,
    /// discovered or set below.
    pub device_grant: Option<bool>,
    /// The IdP's device authorization endpoint. Default: `device_authorization_endpoint` from discovery.
    pub device_authorization_endpoint: Option<String>,
    /// ID-token signature algorithms accepted. Default: [RS256, ES256, PS256, EdDSA].
    pub id_token_algs: Option<Vec<String>>,
    /// For sessions without an IdP refresh token: how old the group snapshot of a login may get before the
    /// refresh token needs a new login. Default: 12h.
    #[serde(default, deserialize_with = "super::check::duration")]
    pub max_group_age: Option<String>,
    /// How long a session with an IdP refresh token is kept (the IdP may end it sooner). Default: 90d.
    #[serde(default, deserialize_with = "super::check::duration")]
    pub session_lifetime: Option<String>,
    /// Timeout of each request to the IdP. Default: 10s.
    #[serde(default, deserialize_with = "super::check::duration")]
    pub timeout: Option<String>,
    /// PEM file with the CA(s) for the IdP's TLS certificate. Default: the system roots.
    pub ca_file: Option<PathBuf>,
}

/// The durations of an `oidc` entry, defaults applied.
#[derive(Debug, Clone, Copy)]
pub struct OidcTimes {
    pub timeout: Duration,
    pub max_group_age: Duration,
    pub session_lifetime: Duration,
}

impl OidcConfig {
    /// The durations, defaults applied; each unreadable one is pushed as a problem of `AT<key>`.
    fn times(&self, at: &str, errors: &mut Vec<Problem>) -> OidcTimes {
        let mut read = |value: &Option<String>, key: &str, default: Duration| {
            duration_or(value.as_deref(), &format!("{at}{key}"), default, errors)
        };
        OidcTimes {
            max_group_age: read(&self.max_group_age, "max_group_age", Duration::from_secs(12 * 3600)),
            session_lifetime: read(&self.session_lifetime, "session_lifetime", Duration::from_secs(90 * 86400)),
            timeout: read(&self.timeout, "timeout", Duration::from_secs(10)),
        }
    }
}

/// An `oidc` entry checked, with its paths resolved and its durations read: what
/// `identity::oidc::OidcProvider::new` takes. The optional keys keep their `None`; their defaults are
/// the provider's (see [`OidcConfig`]).
#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret_file: Option<PathBuf>,
    pub scopes: Option<Vec<String>>,
    pub username_claim: Option<String>,
    pub groups_claim: Option<String>,
    pub claims_source: Option<ClaimsSource>,
    pub strip_group_prefix: Option<String>,
    pub group_prefix: Option<String>,
    pub username_regex: Option<String>,
    pub password_grant: Option<bool>,
    pub device_grant: Option<bool>,
    pub device_authorization_endpoint: Option<String>,
    pub id_token_algs: Option<Vec<String>>,
    pub ca_file: Option<PathBuf>,
    pub times: OidcTimes,
}

/// A JWS algorithm name (`RS256`, `ES256`, ...) as the OIDC crate knows it.
pub fn id_token_alg(s: &str) -> Option<CoreJwsSigningAlgorithm> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
}

/// Check an `oidc` provider entry (`at` is e.g. `providers[1]`), resolving relative paths against `base`.
/// Every problem is pushed, each naming its key; the settings are returned when there was none.
pub fn validate(mut cfg: OidcConfig, at: &str, base: &Path, errors: &mut Vec<Problem>) -> Option<OidcSettings> {
    let before = errors.len();
    let key = |k: &str| format!("{at}.{k}");
    if cfg.name.trim().is_empty() {
        errors.push(Problem::new(key("name"), "required"));
    }
    match url::Url::parse(&cfg.issuer) {
        Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {}
        _ => errors.push(Problem::new(
            key("issuer"),
            format!("{:?} is not an http(s) URL; write the IdP's issuer URL", cfg.issuer),
        )),
    }
    if cfg.client_id.trim().is_empty() {
        errors.push(Problem::new(key("client_id"), "required; tollgate's client id at the IdP"));
    }
    cfg.client_secret_file = cfg.client_secret_file.as_deref().map(|f| resolve(base, f));
    cfg.ca_file = cfg.ca_file.as_deref().map(|f| resolve(base, f));
    if let Some(r) = &cfg.username_regex {
        if let Err(e) = regex::Regex::new(&format!("^(?:{r})$")) {
            errors.push(Problem::new(key("username_regex"), format!("{r:?} is not a valid regex: {e}")));
        }
    }
    if let Some(u) = &cfg.device_authorization_endpoint {
        if url::Url::parse(u).is_err() {
            errors.push(Problem::new(key("device_authorization_endpoint"), format!("{u:?} is not a URL")));
        }
    }
    for a in cfg.id_token_algs.iter().flatten() {
        if id_token_alg(a).is_none() || a == "none" {
            errors
                .push(Problem::new(key("id_token_algs"), format!("{a:?} is not a JWS algorithm (e.g. RS256, ES256)")));
        }
    }
    if cfg.groups_claim.as_deref().is_some_and(|g| g.split('.').any(str::is_empty)) {
        errors.push(Problem::new(key("groups_claim"), "empty segment in the dotted path"));
    }
    let times = cfg.times(&format!("{at}."), errors);
    (errors.len() == before).then_some(OidcSettings {
        name: cfg.name,
        issuer: cfg.issuer,
        client_id: cfg.client_id,
        client_secret_file: cfg.client_secret_file,
        scopes: cfg.scopes,
        username_claim: cfg.username_claim,
        groups_claim: cfg.groups_claim,
        claims_source: cfg.claims_source,
        strip_group_prefix: cfg.strip_group_prefix,
        group_prefix: cfg.group_prefix,
        username_regex: cfg.username_regex,
        password_grant: cfg.password_grant,
        device_grant: cfg.device_grant,
        device_authorization_endpoint: cfg.device_authorization_endpoint,
        id_token_algs: cfg.id_token_algs,
        ca_file: cfg.ca_file,
        times,
    })
}

/// An `oidc` entry written as YAML, checked (paths relative to the working directory): for tests.
#[cfg(test)]
pub(crate) fn settings_from_yaml(yaml: &str) -> Result<OidcSettings, Vec<Problem>> {
    let cfg: OidcConfig =
        serde_norway::from_str(yaml).map_err(|e| vec![Problem::new("providers[0]", e.to_string())])?;
    let mut problems = Vec::new();
    validate(cfg, "providers[0]", Path::new(""), &mut problems).ok_or(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_provider_files_are_valid() {
        for (file, text) in [
            ("keycloak.yaml", include_str!("../../providers/keycloak.yaml")),
            ("gitlab.yaml", include_str!("../../providers/gitlab.yaml")),
        ] {
            let entries: Vec<crate::config::ProviderConfig> =
                serde_norway::from_str(text).unwrap_or_else(|e| panic!("providers/{file}: {e}"));
            for (i, entry) in entries.into_iter().enumerate() {
                let crate::config::ProviderConfig::Oidc(cfg) = entry else { panic!("providers/{file}: not oidc") };
                let mut errors = Vec::new();
                validate(cfg, &format!("providers[{i}]"), Path::new("/etc/tollgate"), &mut errors);
                assert!(errors.is_empty(), "providers/{file}: {errors:?}");
            }
        }
    }

    #[test]
    fn config_problems_name_their_key() {
        let cfg: OidcConfig = serde_norway::from_str(
            "name: kc\nissuer: not a url\nclient_id: ''\nusername_regex: '('\nid_token_algs: [RS256, XX1]\ngroups_claim: a..b\nmax_group_age: forever\n",
        )
        .unwrap();
        let mut errors = Vec::new();
        validate(cfg, "providers[2]", Path::new("/etc/tollgate"), &mut errors);
        let all = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
        for want in [
            "providers[2].issuer: \"not a url\"",
            "providers[2].client_id: required",
            "providers[2].username_regex",
            "providers[2].id_token_algs: \"XX1\"",
            "providers[2].groups_claim: empty segment",
            "providers[2].max_group_age: \"forever\"",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
        let err =
            serde_norway::from_str::<OidcConfig>("name: a\nissuer: x\nclient_id: y\nclient_secret: z\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `client_secret`"), "{err}");
    }
}

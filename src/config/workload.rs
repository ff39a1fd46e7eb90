//! The `type: workload` provider entry: a trusted issuer of workload identity tokens (a CI platform's job
//! tokens, a Kubernetes cluster's service-account tokens), its keys, defaults and validation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use openidconnect::url;
use serde::Deserialize;

use super::check::{duration_or, resolve};
use super::problem::Problem;

/// A claim path in a username template or a required claim: at most this many dots, so that looking one
/// up (every split of the path is tried) stays cheap.
pub const MAX_PATH_DOTS: usize = 8;

/// A trusted workload issuer (`type: workload`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadConfig {
    /// REQUIRED. Unique name; recorded as the identity's provider and usable in rules (`provider:`).
    pub name: String,
    /// REQUIRED. The exact `iss` of the tokens. Discovery reads ISSUER/.well-known/openid-configuration,
    /// whose `issuer` must be exactly this.
    pub issuer: String,
    /// REQUIRED. The audience tokens must be minted for: `aud` (a string or a list) must contain it. Pick
    /// a value only this registry uses (its URL), so a token minted for another service is useless here.
    pub audience: Option<String>,
    /// The issuer's JWKS URL, instead of discovery.
    pub jwks_url: Option<String>,
    /// A JWKS document on disk, instead of discovery (clusters whose issuer cannot be reached).
    pub jwks_file: Option<PathBuf>,
    /// PEM file with the CA(s) for the issuer's TLS certificate. Default: the system roots.
    pub ca_file: Option<PathBuf>,
    /// Signature algorithms accepted. Default: [RS256, ES256]. `none` and the HS* family never are.
    pub algorithms: Option<Vec<String>>,
    /// The longest lifetime (`exp` - `iat`) a token may have. Default: 1h.
    #[serde(default, deserialize_with = "super::check::duration")]
    pub max_lifetime: Option<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`. Default: 60s.
    #[serde(default, deserialize_with = "super::check::duration")]
    pub leeway: Option<String>,
    /// A token naming an unknown `kid` refetches the keys at most once per this interval. Default: 60s.
    #[serde(default, deserialize_with = "super::check::duration")]
    pub jwks_refresh_interval: Option<String>,
    /// Keys older than this are refetched in the background (a removed key stops working). Default: 1h.
    #[serde(default, deserialize_with = "super::check::duration")]
    pub jwks_max_age: Option<String>,
    /// Timeout of each request to the issuer. Default: 10s.
    #[serde(default, deserialize_with = "super::check::duration")]
    pub timeout: Option<String>,
    /// Claims every token must carry, with these exact values (a list: any of them), checked before any
    /// rule: no rule can widen them. Pin numeric ids (`repository_owner_id`), which are never reused.
    #[serde(default)]
    pub required_claims: BTreeMap<String, serde_norway::Value>,
    /// The username: a template over claims, `{path}` being a claim (dotted paths into nested objects).
    /// Default: `{sub}`.
    pub username: Option<String>,
    /// Where groups come from.
    #[serde(default)]
    pub groups: WorkloadGroups,
}

/// The `groups:` of a workload entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadGroups {
    /// A claim path holding a string or a list of strings.
    pub claim: Option<String>,
    /// Groups every token of this issuer gets.
    #[serde(default)]
    pub fixed: Vec<String>,
}

/// Where the keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// ISSUER/.well-known/openid-configuration, then its `jwks_uri`.
    Discovery,
    Url(String),
    File(PathBuf),
}

/// One piece of a username template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Claim(String),
}

/// A workload entry checked and with its defaults applied: what `identity::workload::WorkloadProvider::new`
/// takes.
#[derive(Debug, Clone)]
pub struct Workload {
    pub name: String,
    pub issuer: String,
    pub audience: String,
    pub keys: KeySource,
    pub ca_file: Option<PathBuf>,
    pub algorithms: Vec<Algorithm>,
    pub max_lifetime: Duration,
    pub leeway: Duration,
    pub refresh_interval: Duration,
    pub max_age: Duration,
    pub timeout: Duration,
    /// (claim path, accepted values).
    pub required: Vec<(String, Vec<String>)>,
    pub username: Vec<Piece>,
    pub groups_claim: Option<String>,
    pub fixed_groups: Vec<String>,
}

/// The algorithms a workload token may be signed with: asymmetric ones only. An HS* token would be
/// checked against a secret, and the only "secret" at hand is the issuer's public key.
pub fn workload_alg(s: &str) -> Option<Algorithm> {
    let alg: Algorithm = s.parse().ok()?;
    matches!(
        alg,
        Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
            | Algorithm::ES256
            | Algorithm::ES384
            | Algorithm::EdDSA
    )
    .then_some(alg)
}

/// Parse a username template: text with `{claim.path}` pieces.
pub fn parse_template(t: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut rest = t;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err(format!("{t:?}: unbalanced `}}`"));
        }
        if open > 0 {
            out.push(Piece::Text(rest[..open].to_string()));
        }
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| format!("{t:?}: unbalanced `{{` (no closing `}}`)"))?;
        let path = &after[..close];
        check_path(path).map_err(|e| format!("{t:?}: {e}"))?;
        out.push(Piece::Claim(path.to_string()));
        rest = &after[close + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.to_string()));
    }
    if !out.iter().any(|p| matches!(p, Piece::Claim(_))) {
        return Err(format!("{t:?} names no claim: every token would get the same username; write e.g. \"{{sub}}\""));
    }
    Ok(out)
}

fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.split('.').any(str::is_empty) {
        return Err(format!("{path:?} is not a claim path (names joined by dots)"));
    }
    if path.contains(['{', '}']) {
        return Err(format!("{path:?}: unbalanced braces"));
    }
    if path.matches('.').count() > MAX_PATH_DOTS {
        return Err(format!("{path:?}: at most {MAX_PATH_DOTS} dots"));
    }
    Ok(())
}

/// Check a `workload` entry (`at` is e.g. `providers[1]`), resolving relative paths against `base`. Every
/// problem is pushed, each naming its key; the checked entry is returned when there was none.
pub fn validate(mut cfg: WorkloadConfig, at: &str, base: &Path, errors: &mut Vec<Problem>) -> Option<Workload> {
    let before = errors.len();
    let key = |k: &str| format!("{at}.{k}");
    match url::Url::parse(&cfg.issuer) {
        Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {}
        _ => errors.push(Problem::new(
            key("issuer"),
            format!("{:?} is not an http(s) URL; write the exact `iss` of the tokens", cfg.issuer),
        )),
    }
    let audience = match cfg.audience.as_deref().map(str::trim) {
        Some(a) if !a.is_empty() => a.to_string(),
        _ => {
            errors.push(Problem::new(
                key("audience"),
                "required; the audience tokens must be minted for (e.g. this registry's URL), so that a token meant for another service is refused",
            ));
            String::new()
        }
    };
    cfg.jwks_file = cfg.jwks_file.as_deref().map(|f| resolve(base, f));
    cfg.ca_file = cfg.ca_file.as_deref().map(|f| resolve(base, f));
    let keys = match (&cfg.jwks_url, &cfg.jwks_file) {
        (Some(_), Some(_)) => {
            errors.push(Problem::new(key("jwks_file"), "set jwks_url or jwks_file, not both"));
            KeySource::Discovery
        }
        (Some(u), None) => {
            if !url::Url::parse(u).is_ok_and(|u| u.scheme() == "https" || u.scheme() == "http") {
                errors.push(Problem::new(key("jwks_url"), format!("{u:?} is not an http(s) URL")));
            }
            KeySource::Url(u.clone())
        }
        (None, Some(f)) => KeySource::File(f.clone()),
        (None, None) => KeySource::Discovery,
    };
    let mut algorithms = Vec::new();
    for (j, a) in cfg.algorithms.iter().flatten().enumerate() {
        match workload_alg(a) {
            Some(alg) => algorithms.push(alg),
            None => errors.push(Problem::new(
                format!("{}[{j}]", key("algorithms")),
                format!("{a:?} is not allowed; use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA (never none or HS*)"),
            )),
        }
    }
    if cfg.algorithms.as_ref().is_some_and(Vec::is_empty) {
        errors.push(Problem::new(key("algorithms"), "empty list: no token could ever be accepted"));
    }
    if cfg.algorithms.is_none() {
        algorithms = vec![Algorithm::RS256, Algorithm::ES256];
    }
    let mut read =
        |value: &Option<String>, k: &str, default: Duration| duration_or(value.as_deref(), &key(k), default, errors);
    let max_lifetime = read(&cfg.max_lifetime, "max_lifetime", Duration::from_secs(3600));
    let leeway = read(&cfg.leeway, "leeway", Duration::from_secs(60));
    let refresh_interval = read(&cfg.jwks_refresh_interval, "jwks_refresh_interval", Duration::from_secs(60));
    let max_age = read(&cfg.jwks_max_age, "jwks_max_age", Duration::from_secs(3600));
    let timeout = read(&cfg.timeout, "timeout", Duration::from_secs(10));
    if max_lifetime.is_zero() {
        errors.push(Problem::new(key("max_lifetime"), "must be more than 0s"));
    }
    if leeway > Duration::from_secs(300) {
        errors.push(Problem::new(key("leeway"), "at most 5m; a longer skew keeps expired tokens alive"));
    }
    if refresh_interval < Duration::from_secs(1) {
        errors.push(Problem::new(
            key("jwks_refresh_interval"),
            "at least 1s; it bounds how often tokens with unknown key ids make tollgate call the issuer",
        ));
    }
    let mut required = Vec::new();
    for (path, value) in &cfg.required_claims {
        let at = format!("{}.{path}", key("required_claims"));
        if let Err(e) = check_path(path) {
            errors.push(Problem::new(at, e));
            continue;
        }
        let items = match value {
            serde_norway::Value::Sequence(items) => items.clone(),
            scalar => vec![scalar.clone()],
        };
        let mut values = Vec::new();
        for item in items {
            match item {
                serde_norway::Value::String(s) if !s.is_empty() => values.push(s),
                serde_norway::Value::Number(n) => values.push(n.to_string()),
                serde_norway::Value::Bool(b) => values.push(b.to_string()),
                other => errors.push(Problem::new(
                    at.as_str(),
                    format!("expected a non-empty string, number or boolean, got {other:?}"),
                )),
            }
        }
        if values.is_empty() {
            errors.push(Problem::new(at, "no value: a required claim needs the value(s) it must have"));
        }
        required.push((path.clone(), values));
    }
    let username = match parse_template(cfg.username.as_deref().unwrap_or("{sub}")) {
        Ok(t) => t,
        Err(e) => {
            errors.push(Problem::new(key("username"), e));
            Vec::new()
        }
    };
    if let Some(c) = &cfg.groups.claim {
        if let Err(e) = check_path(c) {
            errors.push(Problem::new(key("groups.claim"), e));
        }
    }
    for (j, g) in cfg.groups.fixed.iter().enumerate() {
        if g.trim().is_empty() {
            errors.push(Problem::new(format!("{}[{j}]", key("groups.fixed")), "empty group name"));
        }
    }
    (errors.len() == before).then(|| Workload {
        name: cfg.name.clone(),
        issuer: cfg.issuer.clone(),
        audience,
        keys,
        ca_file: cfg.ca_file.clone(),
        algorithms,
        max_lifetime,
        leeway,
        refresh_interval,
        max_age,
        timeout,
        required,
        username,
        groups_claim: cfg.groups.claim.clone(),
        fixed_groups: cfg.groups.fixed.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> (Option<Workload>, String) {
        let cfg: WorkloadConfig = serde_norway::from_str(yaml).unwrap();
        let mut errors = Vec::new();
        let checked = validate(cfg, "providers[3]", Path::new("/etc/tollgate"), &mut errors);
        (checked, errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
    }

    #[test]
    fn a_minimal_entry_gets_safe_defaults() {
        let (w, errors) = check(
            "name: gha\nissuer: https://token.actions.githubusercontent.com\naudience: https://registry.example.com\n",
        );
        let w = w.unwrap_or_else(|| panic!("{errors}"));
        assert_eq!(w.algorithms, vec![Algorithm::RS256, Algorithm::ES256]);
        assert_eq!(w.keys, KeySource::Discovery);
        assert_eq!(w.max_lifetime, Duration::from_secs(3600));
        assert_eq!(w.username, vec![Piece::Claim("sub".into())]);
    }

    #[test]
    fn every_problem_names_its_key() {
        let (w, all) = check(
            "name: x\nissuer: not-a-url\njwks_url: https://a/jwks\njwks_file: k.json\nalgorithms: [RS256, HS256, none]\nleeway: 1h\nmax_lifetime: soon\nrequired_claims: {a..b: x, owner: []}\nusername: 'gha:{repository'\ngroups: {claim: '', fixed: ['']}\n",
        );
        assert!(w.is_none());
        for want in [
            "providers[3].issuer: \"not-a-url\"",
            "providers[3].audience: required",
            "providers[3].jwks_file: set jwks_url or jwks_file, not both",
            "providers[3].algorithms[1]: \"HS256\" is not allowed",
            "providers[3].algorithms[2]: \"none\" is not allowed",
            "providers[3].leeway: at most 5m",
            "providers[3].max_lifetime: \"soon\"",
            "providers[3].required_claims.a..b",
            "providers[3].required_claims.owner: no value",
            "providers[3].username: \"gha:{repository\": unbalanced `{`",
            "providers[3].groups.claim",
            "providers[3].groups.fixed[0]: empty group name",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
        let err = serde_norway::from_str::<WorkloadConfig>("name: a\nissuer: https://x\naudiences: [y]\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `audiences`"), "{err}");
    }

    #[test]
    fn templates_split_into_text_and_claims() {
        assert_eq!(
            parse_template("k8s:{kubernetes.io.namespace}/{kubernetes.io.serviceaccount.name}").unwrap(),
            vec![
                Piece::Text("k8s:".into()),
                Piece::Claim("kubernetes.io.namespace".into()),
                Piece::Text("/".into()),
                Piece::Claim("kubernetes.io.serviceaccount.name".into()),
            ]
        );
        assert!(parse_template("ci-robot").unwrap_err().contains("names no claim"));
        assert!(parse_template("a}b{sub}").unwrap_err().contains("unbalanced `}`"));
        assert!(parse_template("{}").is_err());
    }

    #[test]
    fn the_example_provider_files_are_valid() {
        for (file, text) in [
            ("github-actions.yaml", include_str!("../../providers/github-actions.yaml")),
            ("gitlab-ci.yaml", include_str!("../../providers/gitlab-ci.yaml")),
            ("kubernetes.yaml", include_str!("../../providers/kubernetes.yaml")),
        ] {
            let entries: Vec<crate::config::ProviderConfig> =
                serde_norway::from_str(text).unwrap_or_else(|e| panic!("providers/{file}: {e}"));
            assert!(!entries.is_empty(), "providers/{file}: no entry");
            for (i, entry) in entries.into_iter().enumerate() {
                let crate::config::ProviderConfig::Workload(cfg) = entry else {
                    panic!("providers/{file}: not a workload entry")
                };
                let mut errors = Vec::new();
                let checked = validate(cfg, &format!("providers[{i}]"), Path::new("/etc/tollgate"), &mut errors);
                assert!(errors.is_empty() && checked.is_some(), "providers/{file}: {errors:?}");
            }
        }
    }
}

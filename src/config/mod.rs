//! Configuration: a YAML file (like the registry's own config.yml), environment overrides, validation.
//!
//! Loading is three layers: the file, then `TOLLGATE_SECTION__KEY=value` environment variables (values are
//! read as YAML scalars or flow lists; `__` separates levels, numbers index lists), then validation into
//! [`Settings`]. Validation reports every problem at once, each naming the key and the fix, because an
//! operator fixing a config one error per restart loses an afternoon. Secrets are never written inline: every
//! secret is a `*_file` path, so they can come from Docker or Kubernetes secrets.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub mod accounts;
pub mod check;
pub mod ldap;
pub mod load;
pub mod oidc;
pub mod ops;
pub mod state;
pub mod token;
pub mod workload;

use self::accounts::AccountEntry;
use self::check::{duration_or, resolve};
use self::token::{HeaderMode, KidFormat};

/// The configuration used when `serve` is started without `--config`: demo accounts, the example policy,
/// and a key generated on first start. Good for a first look, never for production.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.yaml");
/// The `origin` of settings loaded from [`EMBEDDED_DEFAULT`].
const EMBEDDED_ORIGIN: &str = "embedded default";

#[derive(Debug, Deserialize)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    token: RawToken,
    #[serde(default)]
    refresh_tokens: RawRefresh,
    #[serde(default)]
    providers: Vec<ProviderConfig>,
    #[serde(default)]
    identity_cache: RawCache,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    rate_limit: ops::RawRateLimit,
    #[serde(default)]
    state: state::RawState,
}

#[derive(Debug, Default, Deserialize)]
struct RawServer {
    /// Address to listen on. Default: 127.0.0.1:5001.
    listen: Option<String>,
    /// Where generated keys, the refresh secret and the revocation list live. Default: ./tollgate-data
    /// (relative paths are relative to the config file).
    data_dir: Option<PathBuf>,
    /// Largest accepted POST body. Default: 65536.
    max_body_bytes: Option<usize>,
    /// Most scopes accepted in one request. Default: 64.
    max_scopes: Option<usize>,
    /// HTTPS on `listen` (`cert_file`, `key_file`). Default: plain HTTP. See [`ops::RawTls`].
    tls: Option<ops::RawTls>,
    /// Serve `/metrics` only on this address. Default: on `listen`.
    metrics_listen: Option<String>,
    /// Addresses or networks whose X-Forwarded-For is believed. Default: none.
    trusted_proxies: Option<Vec<String>>,
    /// How often providers are probed for /readyz. Default: 15s.
    probe_interval: Option<String>,
    /// Connection deadlines and caps. See [`ops::RawConnections`].
    connections: Option<ops::RawConnections>,
}

#[derive(Debug, Default, Deserialize)]
struct RawToken {
    /// REQUIRED. The `iss` claim; the registry's `auth.token.issuer` must equal it.
    issuer: Option<String>,
    /// REQUIRED. The registry service names tokens may be issued for (the `aud` claim); the registry's
    /// `auth.token.service`. Requests for any other service get a 400.
    services: Option<Vec<String>>,
    /// Access token lifetime. Default: 5m. At least 60s (clients need time to use it).
    lifetime: Option<String>,
    /// libtrust (registry 2.x) or rfc7638 (registry v3). Default: libtrust.
    kid_format: Option<KidFormat>,
    /// x5c (certificate chain + kid; default) or kid (kid only).
    header: Option<HeaderMode>,
    /// Signing keys. Default: one EC key generated in data_dir on first start.
    #[serde(default)]
    keys: Vec<RawKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    /// REQUIRED. PKCS#8 PEM (EC P-256 or RSA) or PKCS#1 PEM (RSA).
    key_file: PathBuf,
    /// The key's certificate chain (PEM, leaf first). Required for header mode x5c.
    cert_file: Option<PathBuf>,
    /// Exactly one key signs; the others are only published. Default: the first key.
    #[serde(default)]
    active: bool,
}

#[derive(Debug, Default, Deserialize)]
struct RawRefresh {
    /// Issue refresh tokens when clients ask (docker login, access_type=offline). Default: true.
    enabled: Option<bool>,
    /// Refresh token lifetime. Default: 90d.
    lifetime: Option<String>,
    /// File holding the HMAC secret (at least 32 bytes). Default: data_dir/refresh-secret, generated.
    secret_file: Option<PathBuf>,
}

/// One identity provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
#[allow(clippy::large_enum_variant)] // read once at start-up; a Box would only add noise to every match
pub enum ProviderConfig {
    Static(StaticProviderConfig),
    Ldap(ldap::LdapConfig),
    /// An OpenID Connect provider (Keycloak, GitLab, …); see `identity::oidc`.
    Oidc(oidc::OidcConfig),
    /// A trusted issuer of workload identity tokens (CI jobs, pods); see `identity::workload`.
    Workload(workload::WorkloadConfig),
}

impl ProviderConfig {
    pub fn name(&self) -> &str {
        match self {
            ProviderConfig::Static(s) => &s.name,
            ProviderConfig::Ldap(l) => &l.name,
            ProviderConfig::Oidc(o) => &o.name,
            ProviderConfig::Workload(w) => &w.name,
        }
    }
}

/// The static accounts provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticProviderConfig {
    /// REQUIRED. Unique name; recorded in tokens and usable in rules (`provider:`).
    pub name: String,
    /// The accounts file (see providers/robots.yaml). Exactly one of `file` and `accounts`.
    pub file: Option<PathBuf>,
    /// Accounts written inline.
    pub accounts: Option<Vec<AccountEntry>>,
}

#[derive(Debug, Default, Deserialize)]
struct RawCache {
    /// How long a successful login is remembered. Default: 5m. 0s disables the cache.
    ttl: Option<String>,
    /// Most cached identities. Default: 10000.
    capacity: Option<u64>,
    /// How long a refused password (or unknown user) is remembered, so repeating it costs the directory
    /// nothing. Keyed on the password too: it never locks out the right password. Default: 10s. 0s: off.
    negative_ttl: Option<String>,
    /// When a provider is unavailable, keep serving identities up to this long past `ttl`. Default: 0s (off).
    serve_stale_for: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawPolicy {
    /// Rules files or directories of them (*.yaml, *.yml). REQUIRED unless builtin_example is true.
    #[serde(default)]
    paths: Vec<PathBuf>,
    /// Use the built-in example policy (demo only). Default: false.
    #[serde(default)]
    builtin_example: bool,
    /// How often the rules files are checked for changes. Default: 2s.
    reload_interval: Option<String>,
    /// How long a changed rules file must stay unchanged before it is applied, so a file caught half-way
    /// through being written is never in force. Default: 2s.
    settle: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawLog {
    /// json or text. Default: text.
    format: Option<String>,
    /// A tracing filter such as info or tollgate=debug. Default: info.
    level: Option<String>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// A key to load.
#[derive(Debug, Clone)]
pub struct KeySettings {
    pub key_file: PathBuf,
    pub cert_file: Option<PathBuf>,
    pub active: bool,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the config came from (a path, or "embedded default").
    pub origin: String,
    /// What loading noticed and let pass (environment variables ignored): logged by `serve`, printed by
    /// `check-config`.
    pub warnings: Vec<String>,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub max_body_bytes: usize,
    pub max_scopes: usize,
    pub issuer: String,
    pub services: Vec<String>,
    pub token_lifetime: Duration,
    pub kid_format: KidFormat,
    pub header_mode: HeaderMode,
    /// Empty: generate/use data_dir/signing.key.
    pub keys: Vec<KeySettings>,
    pub refresh_enabled: bool,
    pub refresh_lifetime: Duration,
    pub refresh_secret_file: PathBuf,
    pub providers: Vec<ProviderConfig>,
    pub cache_ttl: Duration,
    pub cache_capacity: u64,
    pub cache_negative_ttl: Duration,
    pub cache_serve_stale_for: Duration,
    pub policy_paths: Vec<PathBuf>,
    pub policy_builtin_example: bool,
    pub policy_reload_interval: Duration,
    pub policy_settle: Duration,
    pub log_format: LogFormat,
    pub log_level: String,
    /// TLS, metrics, proxies, probes, rate limits.
    pub ops: ops::OpsSettings,
    /// Where shared state lives (local files or Redis).
    pub state: state::StateSettings,
}

impl Settings {
    /// The generated key pair used when no keys are configured.
    pub fn default_key_paths(&self) -> (PathBuf, PathBuf) {
        (self.data_dir.join("signing.key"), self.data_dir.join("signing.crt"))
    }

    pub fn revocation_file(&self) -> PathBuf {
        self.data_dir.join("revocations.json")
    }

    /// Device-flow and OIDC login sessions (the embedded session store).
    pub fn sessions_file(&self) -> PathBuf {
        self.data_dir.join("sessions.json")
    }

    /// Whether these are the embedded demo settings (`serve` without `--config`): the only ones whose
    /// accounts may carry the published demo passwords.
    pub fn is_embedded_demo(&self) -> bool {
        self.origin == EMBEDDED_ORIGIN
    }

    /// [`Settings::load`] for `check-config`: every problem, and the settings whenever they could be read.
    pub fn load_all(path: Option<&Path>) -> (Option<Settings>, load::Findings) {
        let env: Vec<(String, String)> = std::env::vars().collect();
        match path {
            Some(p) => match std::fs::read_to_string(p) {
                Ok(text) => {
                    let base = p.parent().map(Path::to_path_buf).unwrap_or_default();
                    Settings::from_yaml_all(&text, &p.display().to_string(), &base, &env)
                }
                Err(e) => {
                    let findings =
                        load::Findings { errors: vec![format!("{}: {e}", p.display())], ..Default::default() };
                    (None, findings)
                }
            },
            None => Settings::from_yaml_all(EMBEDDED_DEFAULT, EMBEDDED_ORIGIN, Path::new("."), &env),
        }
    }

    /// Load from a file (or the embedded default when `path` is None) with the process environment.
    pub fn load(path: Option<&Path>) -> Result<Settings, Vec<String>> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| vec![format!("{}: {e}", p.display())])?;
                let base = p.parent().map(Path::to_path_buf).unwrap_or_default();
                Settings::from_yaml(&text, &p.display().to_string(), &base, &env)
            }
            None => Settings::from_yaml(EMBEDDED_DEFAULT, EMBEDDED_ORIGIN, Path::new("."), &env),
        }
    }

    /// Parse, apply environment overrides and validate. `base` resolves relative paths.
    pub fn from_yaml(text: &str, origin: &str, base: &Path, env: &[(String, String)]) -> Result<Settings, Vec<String>> {
        match Settings::from_yaml_all(text, origin, base, env) {
            (Some(settings), findings) if findings.errors.is_empty() => Ok(settings),
            (_, findings) => Err(findings.errors),
        }
    }

    /// Every problem of the config at once (see [`load`]), with the settings whenever the tree could be
    /// read at all, so that `check-config` can go on to the files they name.
    pub fn from_yaml_all(
        text: &str,
        origin: &str,
        base: &Path,
        env: &[(String, String)],
    ) -> (Option<Settings>, load::Findings) {
        let mut findings = load::Findings::default();
        let mut value: serde_norway::Value = match serde_norway::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                findings.errors.push(format!("{origin}: {e}"));
                return (None, findings);
            }
        };
        if value.is_null() {
            value = serde_norway::Value::Mapping(Default::default());
        }
        load::apply_env(&mut value, env, &mut findings, apply_override);
        let value = load::isolate(
            value,
            origin,
            text,
            &mut findings,
            |v| serde_norway::from_value::<RawConfig>(v).map_err(|e| e.to_string()),
            |v| serde_norway::from_value::<ProviderConfig>(v).map(|_| ()).map_err(|e| e.to_string()),
        );
        let mut unknown = Vec::new();
        let raw: RawConfig = match serde_ignored::deserialize(value, |p| unknown.push(p.to_string())) {
            Ok(r) => r,
            Err(e) => {
                findings.errors.push(format!("{origin}: {e}"));
                return (None, findings);
            }
        };
        for u in unknown {
            load::unknown_key(&u, origin, text, &mut findings);
        }
        let mut errors = Vec::new();
        let mut settings = validate(raw, origin, base, &mut errors, &findings.provider_index);
        // Each problem of a key says where the key is: its line in the file, or its variable.
        for e in errors {
            let key = e.split(':').next().unwrap_or("");
            let is_key = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || "._[]".contains(c));
            if is_key {
                let path = key.replace('[', ".").replace(']', "");
                findings.errors.push(format!("{}: {e}", load::place(&path, origin, text, &findings)));
            } else {
                findings.errors.push(e);
            }
        }
        for (i, p) in settings.providers.iter().enumerate() {
            if let ProviderConfig::Ldap(l) = p {
                findings.warnings.extend(ldap::warnings(l, &format!("providers[{i}]")));
            }
        }
        settings.warnings = findings.warnings.clone();
        (Some(settings), findings)
    }
}

/// Set `path` in a YAML tree to `raw` parsed as a YAML scalar or flow collection.
fn apply_override(root: &mut serde_norway::Value, path: &[String], raw: &str) -> Result<(), String> {
    use serde_norway::Value;
    let parsed: Value = serde_norway::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
    let mut node = root;
    for (i, key) in path.iter().enumerate() {
        if key.is_empty() {
            return Err("empty key segment (use __ only between keys)".into());
        }
        let last = i + 1 == path.len();
        if let Ok(index) = key.parse::<usize>() {
            let Value::Sequence(seq) = node else {
                return Err(format!("`{key}` indexes something that is not a list"));
            };
            if index > seq.len() {
                return Err(format!("list index {index} skips entries (the list has {})", seq.len()));
            }
            if index == seq.len() {
                seq.push(Value::Mapping(Default::default()));
            }
            node = &mut seq[index];
        } else {
            if node.is_null() {
                *node = Value::Mapping(Default::default());
            }
            let Value::Mapping(map) = node else { return Err(format!("`{key}` is under something that is not a map")) };
            let k = Value::String(key.clone());
            if !map.contains_key(&k) {
                let next_is_index = path.get(i + 1).is_some_and(|n| n.parse::<usize>().is_ok());
                map.insert(k.clone(), if next_is_index { Value::Sequence(vec![]) } else { Value::Null });
            }
            node = map.get_mut(&k).ok_or("internal: key vanished")?;
        }
        if last {
            *node = parsed.clone();
        }
    }
    Ok(())
}

fn validate(
    mut raw: RawConfig,
    origin: &str,
    base: &Path,
    errors: &mut Vec<String>,
    provider_index: &[usize],
) -> Settings {
    let server_ops = ops::RawServerOps {
        tls: raw.server.tls.take(),
        metrics_listen: raw.server.metrics_listen.take(),
        trusted_proxies: raw.server.trusted_proxies.take(),
        probe_interval: raw.server.probe_interval.take(),
        connections: raw.server.connections.take(),
    };
    let ops = ops::validate(server_ops, std::mem::take(&mut raw.rate_limit), base, errors);
    let state = state::validate(std::mem::take(&mut raw.state), base, errors);
    let listen_s = raw.server.listen.unwrap_or_else(|| "127.0.0.1:5001".into());
    let listen = listen_s.parse().unwrap_or_else(|_| {
        errors.push(format!("server.listen: {listen_s:?} is not an address; write e.g. 0.0.0.0:5001"));
        SocketAddr::from(([127, 0, 0, 1], 5001))
    });
    let data_dir = resolve(base, &raw.server.data_dir.unwrap_or_else(|| PathBuf::from("tollgate-data")));
    let max_body_bytes = raw.server.max_body_bytes.unwrap_or(65536);
    if !(1024..=16 << 20).contains(&max_body_bytes) {
        errors.push("server.max_body_bytes: must be between 1024 and 16777216".into());
    }
    let max_scopes = raw.server.max_scopes.unwrap_or(64);
    if !(1..=10_000).contains(&max_scopes) {
        errors.push("server.max_scopes: must be between 1 and 10000".into());
    }

    let issuer = raw.token.issuer.unwrap_or_default();
    if issuer.trim().is_empty() {
        errors.push("token.issuer: required; set it to the registry's auth.token.issuer".into());
    }
    let services = raw.token.services.unwrap_or_default();
    if services.is_empty() {
        errors.push("token.services: required; list the registry's auth.token.service name(s)".into());
    }
    for (i, s) in services.iter().enumerate() {
        if s.is_empty() || s.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
            errors.push(format!("token.services[{i}]: {s:?} must be non-empty printable ASCII without spaces"));
        }
    }
    let token_lifetime = duration_or(raw.token.lifetime.as_deref(), "token.lifetime", Duration::from_secs(300), errors);
    if token_lifetime < Duration::from_secs(60) || token_lifetime > Duration::from_secs(24 * 3600) {
        errors.push("token.lifetime: must be between 60s and 24h (clients need at least a minute)".into());
    }
    let header_mode = raw.token.header.unwrap_or_default();
    let keys: Vec<KeySettings> = raw
        .token
        .keys
        .into_iter()
        .map(|k| KeySettings {
            key_file: resolve(base, &k.key_file),
            cert_file: k.cert_file.map(|c| resolve(base, &c)),
            active: k.active,
        })
        .collect();
    let active = keys.iter().filter(|k| k.active).count();
    if active > 1 {
        errors.push("token.keys: more than one key has active: true; exactly one key signs".into());
    }
    if header_mode == HeaderMode::X5c {
        for (i, k) in keys.iter().enumerate() {
            if k.cert_file.is_none() {
                errors.push(format!("token.keys[{i}].cert_file: required with token.header x5c (or set header: kid)"));
            }
        }
    }

    let refresh_enabled = raw.refresh_tokens.enabled.unwrap_or(true);
    let refresh_lifetime = duration_or(
        raw.refresh_tokens.lifetime.as_deref(),
        "refresh_tokens.lifetime",
        Duration::from_secs(7776000),
        errors,
    );
    if refresh_lifetime < Duration::from_secs(300) {
        errors.push("refresh_tokens.lifetime: must be at least 5m".into());
    }
    let refresh_secret_file =
        raw.refresh_tokens.secret_file.map(|p| resolve(base, &p)).unwrap_or_else(|| data_dir.join("refresh-secret"));

    let mut providers = raw.providers;
    let mut names = std::collections::HashSet::new();
    for (i, p) in providers.iter_mut().enumerate() {
        // The entry's index in the file (entries that could not be read at all are left out).
        let i = provider_index.get(i).copied().unwrap_or(i);
        if p.name().is_empty() {
            errors.push(format!("providers[{i}].name: required"));
        }
        if !names.insert(p.name().to_string()) {
            errors.push(format!("providers[{i}].name: {:?} is used by an earlier provider", p.name()));
        }
        match p {
            ProviderConfig::Static(s) => {
                match (&s.file, &s.accounts) {
                    (Some(_), Some(_)) => errors.push(format!("providers[{i}]: set either file or accounts, not both")),
                    (None, None) => errors.push(format!("providers[{i}].file: required (or write accounts inline)")),
                    _ => {}
                }
                if let Some(f) = &s.file {
                    s.file = Some(resolve(base, f));
                }
            }
            ProviderConfig::Ldap(l) => {
                ldap::validate_config(l, &format!("providers[{i}]"), base, errors);
            }
            ProviderConfig::Oidc(o) => {
                oidc::validate(o, i, base, errors);
            }
            ProviderConfig::Workload(w) => {
                workload::validate(w, i, base, errors);
            }
        }
    }
    if providers.is_empty() {
        tracing::warn!("no identity providers configured: only anonymous requests can get tokens");
    }

    let cache_ttl =
        duration_or(raw.identity_cache.ttl.as_deref(), "identity_cache.ttl", Duration::from_secs(300), errors);
    let cache_capacity = raw.identity_cache.capacity.unwrap_or(10_000);
    let cache_negative_ttl = duration_or(
        raw.identity_cache.negative_ttl.as_deref(),
        "identity_cache.negative_ttl",
        Duration::from_secs(10),
        errors,
    );
    let cache_serve_stale_for = duration_or(
        raw.identity_cache.serve_stale_for.as_deref(),
        "identity_cache.serve_stale_for",
        Duration::from_secs(0),
        errors,
    );

    let policy_paths: Vec<PathBuf> = raw.policy.paths.iter().map(|p| resolve(base, p)).collect();
    if policy_paths.is_empty() && !raw.policy.builtin_example {
        errors.push("policy.paths: required; list your rules files or directories (see policies/)".into());
    }
    if !policy_paths.is_empty() && raw.policy.builtin_example {
        errors.push("policy: set either paths or builtin_example, not both".into());
    }
    let policy_reload_interval =
        duration_or(raw.policy.reload_interval.as_deref(), "policy.reload_interval", Duration::from_secs(2), errors);
    let policy_settle = duration_or(raw.policy.settle.as_deref(), "policy.settle", Duration::from_secs(2), errors);

    let log_format = match raw.log.format.as_deref().unwrap_or("text") {
        "json" => LogFormat::Json,
        "text" => LogFormat::Text,
        other => {
            errors.push(format!("log.format: {other:?} is not json or text"));
            LogFormat::Text
        }
    };
    Settings {
        origin: origin.to_string(),
        warnings: Vec::new(),
        listen,
        data_dir,
        max_body_bytes,
        max_scopes,
        issuer,
        services,
        token_lifetime,
        kid_format: raw.token.kid_format.unwrap_or_default(),
        header_mode,
        keys,
        refresh_enabled,
        refresh_lifetime,
        refresh_secret_file,
        providers,
        cache_ttl,
        cache_capacity,
        cache_negative_ttl,
        cache_serve_stale_for,
        policy_paths,
        policy_builtin_example: raw.policy.builtin_example,
        policy_reload_interval,
        policy_settle,
        log_format,
        log_level: raw.log.level.unwrap_or_else(|| "info".into()),
        ops,
        state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let s = Settings::from_yaml(EMBEDDED_DEFAULT, "embedded", Path::new("/x"), &[]).unwrap();
        assert!(s.policy_builtin_example);
        assert_eq!(s.providers.len(), 1);
        assert_eq!(s.data_dir, Path::new("/x/tollgate-data"));
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_key() {
        let text = "server:\n  listen: nowhere\n  lisen: x\ntoken:\n  lifetime: 5 parsecs\n  keys:\n    - key_file: a.key\n      active: true\n    - key_file: b.key\n      cert_file: b.crt\n      active: true\nproviders:\n  - type: static\n    name: local\n  - type: static\n    name: local\n    file: x\nrefresh_tokens:\n  lifetime: 1s\n";
        let errors = Settings::from_yaml(text, "t.yaml", Path::new("."), &[]).unwrap_err();
        let all = errors.join("\n");
        for want in [
            "server.listen: \"nowhere\" is not an address",
            "server.lisen: unknown key",
            "token.issuer: required",
            "token.services: required",
            "token.lifetime: \"5 parsecs\" is not a duration",
            "token.keys: more than one key has active: true",
            "token.keys[0].cert_file: required with token.header x5c",
            "providers[0].file: required",
            "providers[1].name: \"local\" is used by an earlier provider",
            "refresh_tokens.lifetime: must be at least 5m",
            "policy.paths: required",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
    }

    #[test]
    fn environment_overrides_apply_over_the_file() {
        let env = vec![
            ("TOLLGATE_TOKEN__ISSUER".to_string(), "from-env".to_string()),
            ("TOLLGATE_TOKEN__SERVICES".to_string(), "[a.example, b.example]".to_string()),
            ("TOLLGATE_SERVER__MAX_SCOPES".to_string(), "9".to_string()),
            ("TOLLGATE_CONFIG".to_string(), "ignored.yaml".to_string()),
            ("OTHER".to_string(), "x".to_string()),
        ];
        let text = "token:\n  issuer: from-file\n  services: [x]\npolicy:\n  builtin_example: true\n";
        let s = Settings::from_yaml(text, "t", Path::new("."), &env).unwrap();
        assert_eq!(s.issuer, "from-env");
        assert_eq!(s.services, vec!["a.example", "b.example"]);
        assert_eq!(s.max_scopes, 9);
        let bad = vec![("TOLLGATE_TOKEN__ISSUR".to_string(), "x".to_string())];
        let errors = Settings::from_yaml(text, "t", Path::new("."), &bad).unwrap_err();
        assert!(errors.iter().any(|e| e.contains("token.issur: unknown key")), "{errors:?}");
    }

    #[test]
    fn unknown_provider_fields_and_types_are_errors() {
        let text = "token: {issuer: i, services: [s]}\npolicy: {builtin_example: true}\nproviders:\n  - {type: static, name: a, file: f, colour: red}\n";
        let errors = Settings::from_yaml(text, "t", Path::new("."), &[]).unwrap_err();
        assert!(errors[0].contains("unknown field `colour`"), "{errors:?}");
        let text = "token: {issuer: i, services: [s]}\npolicy: {builtin_example: true}\nproviders:\n  - {type: kerberos, name: a}\n";
        let errors = Settings::from_yaml(text, "t", Path::new("."), &[]).unwrap_err();
        assert!(errors[0].contains("unknown variant `kerberos`"), "{errors:?}");
    }

    #[test]
    fn every_known_key_is_documented_and_its_typo_gets_it_suggested() {
        let reference = include_str!("../../docs/configuration.md");
        for (section, keys) in load::KNOWN_KEYS {
            for key in *keys {
                assert!(
                    reference.contains(&format!("{key}:")),
                    "docs/configuration.md does not document {section}.{key}"
                );
                let text = format!("# a typo\n{section}:\n  {key}x: 1\n");
                let env: Vec<(String, String)> = [("TOLLGATE_TOKEN__ISSUER", "t"), ("TOLLGATE_TOKEN__SERVICES", "[s]")]
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                let (_, findings) = Settings::from_yaml_all(&text, "t.yaml", Path::new("."), &env);
                let want = format!("t.yaml:3: {section}.{key}x: unknown key (did you mean `{section}.{key}`?)");
                assert!(findings.errors.contains(&want), "{want:?} not in {:?}", findings.errors);
            }
        }
    }

    #[test]
    fn tollgate_variables_outside_the_sections_are_ignored_with_one_warning() {
        let text = "token:\n  issuer: t\n  services: [s]\npolicy:\n  builtin_example: true\n";
        let env: Vec<(String, String)> = [
            ("TOLLGATE_PORT", "tcp://10.96.0.12:5001"),
            ("TOLLGATE_SERVICE_HOST", "10.96.0.12"),
            ("TOLLGATE_PORT_5001_TCP_ADDR", "10.96.0.12"),
            ("TOLLGATE_TOKEN__ISSUR", "x"),
            ("TOLLGATE_TOKEN__LIFETME", "5m"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let (settings, findings) = Settings::from_yaml_all(text, "t.yaml", Path::new("."), &env);
        assert_eq!(
            findings.errors,
            [
                "environment variable TOLLGATE_TOKEN__ISSUR: token.issur: unknown key (did you mean `token.issuer`?)",
                "environment variable TOLLGATE_TOKEN__LIFETME: token.lifetme: unknown key (did you mean `token.lifetime`?)"
            ]
        );
        let warnings = settings.unwrap().warnings;
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("TOLLGATE_PORT, TOLLGATE_PORT_5001_TCP_ADDR, TOLLGATE_SERVICE_HOST"),
            "{warnings:?}"
        );
    }
}

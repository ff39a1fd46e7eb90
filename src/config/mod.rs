//! Configuration: a YAML file (like the registry's own config.yml), environment overrides, validation.
//!
//! Loading is three layers: the file, then `TOLLGATE_SECTION__KEY=value` environment variables (values are
//! read as YAML scalars or flow lists; `__` separates levels, numbers index lists), then validation into
//! [`Settings`]. Validation reports every problem at once, each naming the key and the fix, because an
//! operator fixing a config one error per restart loses an afternoon. Secrets are never written inline: every
//! secret is a `*_file` path, so they can come from Docker or Kubernetes secrets.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_norway::Value;

pub mod access_tokens;
pub mod accounts;
pub mod cache;
pub mod check;
pub mod invalidation;
pub mod ldap;
pub mod load;
pub mod locate;
pub mod log;
pub mod oidc;
pub mod ops;
pub mod policy;
pub mod problem;
pub mod providers;
pub mod refresh;
pub mod server;
pub mod state;
pub mod token;
pub mod tracked;
pub mod workload;

use self::cache::CacheSettings;
pub use self::log::{LogFormat, LogSettings};
use self::policy::PolicySettings;
pub use self::problem::{Location, Problem};
pub use self::providers::{ProviderConfig, ProviderSettings, StaticProviderConfig};
use self::refresh::RefreshSettings;
use self::server::ServerSettings;
pub use self::token::{KeySettings, TokenSettings};
use self::tracked::KeyPath;

/// The configuration used when `serve` is started without `--config`: demo accounts, the example policy,
/// and a key generated on first start. Good for a first look, never for production.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.yaml");
/// The `origin` of settings loaded from [`EMBEDDED_DEFAULT`].
const EMBEDDED_ORIGIN: &str = "embedded default";

#[derive(Debug, Deserialize)]
struct RawConfig {
    #[serde(default)]
    server: server::RawServer,
    #[serde(default)]
    token: token::RawToken,
    #[serde(default)]
    refresh_tokens: refresh::RawRefresh,
    #[serde(default)]
    providers: Vec<ProviderConfig>,
    #[serde(default)]
    identity_cache: cache::RawCache,
    #[serde(default)]
    policy: policy::RawPolicy,
    #[serde(default)]
    log: log::RawLog,
    #[serde(default)]
    rate_limit: ops::RawRateLimit,
    #[serde(default)]
    state: state::RawState,
    #[serde(default)]
    access_tokens: access_tokens::RawAccessTokens,
    #[serde(default)]
    invalidation: invalidation::RawInvalidation,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the config came from (a path, or "embedded default").
    pub origin: String,
    /// What loading noticed and let pass (environment variables ignored): logged by `serve`, printed by
    /// `check-config`.
    pub warnings: Vec<String>,
    /// `server:` (its operations keys are in `ops`).
    pub server: ServerSettings,
    /// `token:`: what tokens say and the keys that sign them.
    pub token: TokenSettings,
    /// `refresh_tokens:`.
    pub refresh: RefreshSettings,
    /// The identity providers, in order, each checked.
    pub providers: Vec<ProviderSettings>,
    /// `identity_cache:`.
    pub cache: CacheSettings,
    pub policy: PolicySettings,
    pub log: LogSettings,
    /// TLS, metrics, proxies, probes, rate limits.
    pub ops: ops::OpsSettings,
    /// Where shared state lives (local files or Redis).
    pub state: state::StateSettings,
    /// `access_tokens:`: personal and group access tokens.
    pub access_tokens: access_tokens::AccessTokenSettings,
    /// `invalidation:`: the `/invalidate` endpoint, back-channel logout, the replica stream.
    pub invalidation: invalidation::InvalidationSettings,
}

impl Settings {
    /// The generated key pair used when no keys are configured.
    pub fn default_key_paths(&self) -> (PathBuf, PathBuf) {
        (self.server.data_dir.join("signing.key"), self.server.data_dir.join("signing.crt"))
    }

    pub fn revocation_file(&self) -> PathBuf {
        self.server.data_dir.join("revocations.json")
    }

    /// Device-flow and OIDC login sessions (the embedded session store).
    pub fn sessions_file(&self) -> PathBuf {
        self.server.data_dir.join("sessions.json")
    }

    /// Personal and group access tokens (the embedded store): hashes and metadata, never a secret.
    pub fn access_tokens_file(&self) -> PathBuf {
        self.server.data_dir.join("access-tokens.json")
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
                    let problem = Problem::file(&p.display().to_string(), e.to_string());
                    let findings = load::Findings { errors: vec![problem], ..Default::default() };
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
            (_, findings) => Err(findings.errors.iter().map(ToString::to_string).collect()),
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
        let mut value: Value = match serde_norway::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                findings.errors.push(Problem::file(origin, e.to_string()));
                return (None, findings);
            }
        };
        if value.is_null() {
            value = Value::Mapping(Default::default());
        }
        load::apply_env(&mut value, env, &mut findings, apply_override);
        let Value::Mapping(mut root) = value else {
            let sections = load::SECTIONS.join(", ");
            findings
                .errors
                .push(Problem::file(origin, format!("the config must be a mapping of sections ({sections})")));
            return (None, findings);
        };
        let mut reading = load::Reading::default();
        load::read_providers(&mut root, &mut reading, read_provider);
        let Some((raw, tree)) =
            load::read_tolerant::<RawConfig>(Value::Mapping(root), &KeyPath::default(), &mut reading)
        else {
            findings.errors.push(Problem::file(origin, "the config could not be read"));
            return (None, findings);
        };
        let mut problems = std::mem::take(&mut reading.problems);
        problems.extend(reading.unknown.iter().map(load::unknown_key));
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let mut settings = validate(raw, origin, base, &mut errors, &mut warnings);
        for problem in errors {
            // Validation saw the tree as read: its list indices are the file's once the entries taken
            // out are counted back in.
            let read = KeyPath::parse(&problem.key);
            let problem = Problem { key: reading.original_key(&problem.key), ..problem };
            if !load::follows_from_unread(&problem, &read, &reading, &tree) {
                problems.push(problem);
            }
        }
        // Each problem of a key says where the key is: its line in the file, or its variable.
        for problem in problems {
            let at = if problem.key.is_empty() {
                Location::File { origin: origin.to_string(), line: None }
            } else {
                load::place(&KeyPath::parse(&problem.key), origin, text, &findings)
            };
            findings.errors.push(problem.at(at));
        }
        load::sort(&mut findings.errors);
        findings.warnings.extend(warnings);
        settings.warnings = findings.warnings.clone();
        (Some(settings), findings)
    }
}

/// Read one provider entry (without its `type:`) as the type `kind` names; the entry as read, or None.
fn read_provider(kind: &str, entry: Value, at: &KeyPath, reading: &mut load::Reading) -> Option<Value> {
    fn read<T: serde::de::DeserializeOwned>(entry: Value, at: &KeyPath, reading: &mut load::Reading) -> Option<Value> {
        load::read_tolerant::<T>(entry, at, reading).map(|(_, tree)| tree)
    }
    match kind {
        "static" => read::<StaticProviderConfig>(entry, at, reading),
        "ldap" => read::<ldap::LdapConfig>(entry, at, reading),
        "oidc" => read::<oidc::OidcConfig>(entry, at, reading),
        "workload" => read::<workload::WorkloadConfig>(entry, at, reading),
        _ => None,
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

/// Validate every section on its own; every problem is pushed, each naming its key.
fn validate(
    mut raw: RawConfig,
    origin: &str,
    base: &Path,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<String>,
) -> Settings {
    let server_ops = raw.server.take_ops();
    let ops = ops::validate(server_ops, raw.rate_limit, base, problems);
    let state = state::validate(raw.state, base, problems);
    let invalidation = invalidation::validate(raw.invalidation, base, problems);
    let server = server::validate(raw.server, base, problems);
    let token = token::validate(raw.token, base, problems);
    let refresh = refresh::validate(raw.refresh_tokens, base, &server.data_dir, problems);
    let providers = providers::validate(raw.providers, base, problems, warnings);
    let cache = cache::validate(raw.identity_cache, problems);
    let policy = policy::validate(raw.policy, base, problems);
    let log = log::validate(raw.log, problems);
    let access_tokens = access_tokens::validate(raw.access_tokens, base, &server.data_dir, problems);
    warnings.extend(access_tokens::per_replica_secret_warning(&access_tokens, state.store, &server.data_dir));
    Settings {
        origin: origin.to_string(),
        warnings: Vec::new(),
        server,
        token,
        refresh,
        providers,
        cache,
        policy,
        log,
        ops,
        state,
        access_tokens,
        invalidation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let s = Settings::from_yaml(EMBEDDED_DEFAULT, "embedded", Path::new("/x"), &[]).unwrap();
        assert!(s.policy.builtin_example);
        assert_eq!(s.providers.len(), 1);
        assert_eq!(s.server.data_dir, Path::new("/x/tollgate-data"));
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
    fn a_registry_leeway_longer_than_the_lifetime_is_refused_and_a_valid_one_kept() {
        let base = "token:\n  issuer: t\n  services: [r]\n  lifetime: 60s\n  registry_leeway: LEEWAY\npolicy:\n  builtin_example: true\n";
        let errors =
            Settings::from_yaml(&base.replace("LEEWAY", "61s"), "t.yaml", Path::new("."), &[]).unwrap_err().join("\n");
        assert!(errors.contains("token.registry_leeway: must not exceed token.lifetime (60s)"), "{errors}");
        let s = Settings::from_yaml(&base.replace("LEEWAY", "60s"), "t.yaml", Path::new("."), &[]).unwrap();
        assert_eq!(s.token.registry_leeway, std::time::Duration::from_secs(60));
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
        assert_eq!(s.token.issuer, "from-env");
        assert_eq!(s.token.services, vec!["a.example", "b.example"]);
        assert_eq!(s.server.max_scopes, 9);
        let bad = vec![("TOLLGATE_TOKEN__ISSUR".to_string(), "x".to_string())];
        let errors = Settings::from_yaml(text, "t", Path::new("."), &bad).unwrap_err();
        assert!(errors.iter().any(|e| e.contains("token.issur: unknown key")), "{errors:?}");
    }

    #[test]
    fn unknown_provider_fields_and_types_are_errors() {
        let text = "token: {issuer: i, services: [s]}\npolicy: {builtin_example: true}\nproviders:\n  - {type: static, name: a, file: f, colour: red}\n";
        let errors = Settings::from_yaml(text, "t", Path::new("."), &[]).unwrap_err();
        assert_eq!(errors, ["t:4: providers[0].colour: unknown key (see docs/configuration.md for every key)"]);
        let text = "token: {issuer: i, services: [s]}\npolicy: {builtin_example: true}\nproviders:\n  - {type: kerberos, name: a}\n";
        let errors = Settings::from_yaml(text, "t", Path::new("."), &[]).unwrap_err();
        assert_eq!(
            errors,
            ["t:4: providers[0].type: must be one of: static, ldap, oidc, workload; found \"kerberos\""]
        );
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
                let errors: Vec<String> = findings.errors.iter().map(ToString::to_string).collect();
                assert!(errors.contains(&want), "{want:?} not in {errors:?}");
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
            findings.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
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

    /// Every problem of `text` (with `env`) as `check-config` prints it.
    fn problems(text: &str, env: &[(&str, &str)]) -> Vec<String> {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let (_, findings) = Settings::from_yaml_all(text, "t.yaml", Path::new("."), &env);
        findings.errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_string_where_a_list_is_wanted_is_its_own_problem_and_invents_none() {
        let text = "token: {services: registry.example.com, issuer: x}\npolicy: {builtin_example: true}\n";
        assert_eq!(
            problems(text, &[]),
            ["t.yaml:1: token.services: must be a list (write `[a, b]` or one `- item` per line); found \"registry.example.com\""]
        );
    }

    #[test]
    fn a_wrong_type_hides_neither_the_unknown_keys_nor_the_other_wrong_keys_of_its_section() {
        let text = "server: {listn: 127.0.0.1:1, max_body_bytes: lots}\ntoken: {issuer: x, services: [s]}\npolicy: {builtin_example: true}\n";
        assert_eq!(
            problems(text, &[]),
            [
                "t.yaml:1: server.max_body_bytes: must be a whole number; found \"lots\"",
                "t.yaml:1: server.listn: unknown key (did you mean `server.listen`?)",
            ]
        );
        let text = "server:\n  listn: 127.0.0.1:1\n  max_body_bytes: lots\n  max_scopes: [1]\n  listen: nowhere\ntoken: {issuer: x, services: [s]}\npolicy: {builtin_example: true}\n";
        assert_eq!(
            problems(text, &[]),
            [
                "t.yaml:2: server.listn: unknown key (did you mean `server.listen`?)",
                "t.yaml:3: server.max_body_bytes: must be a whole number; found \"lots\"",
                "t.yaml:4: server.max_scopes: must be a whole number; found a list",
                "t.yaml:5: server.listen: \"nowhere\" is not an address; write e.g. 0.0.0.0:5001",
            ]
        );
    }

    #[test]
    fn each_wrong_value_is_said_in_words_at_its_own_line() {
        let text = "token:\n  issuer: x\n  services:\n    - a\n    - [b, c]\n  kid_format: rfc7368\n  lifetime: 5\n  keys:\n    - key_file: a.key\n      cert_file: a.crt\n      active: maybe\n    - cert_file: b.crt\npolicy:\n  builtin_example: yes please\nstate: {store: redi, redis_url_file: url}\nserver:\n  connections:\n    max: -1\n    http2_max_streams: 99999999999\nlog: 5\n";
        assert_eq!(
            problems(text, &[]),
            [
                "t.yaml:5: token.services[1]: must be a text; found a list",
                "t.yaml:6: token.kid_format: must be one of: libtrust, rfc7638; found \"rfc7368\" (did you mean `rfc7638`?)",
                "t.yaml:7: token.lifetime: must be a duration such as 30s or 5m; found 5",
                "t.yaml:11: token.keys[0].active: must be true or false; found \"maybe\"",
                "t.yaml:12: token.keys[1].key_file: required",
                "t.yaml:14: policy.builtin_example: must be true or false; found \"yes please\"",
                "t.yaml:15: state.store: must be one of: local, redis; found \"redi\" (did you mean `redis`?)",
                "t.yaml:18: server.connections.max: must be a whole number of at least 0; found -1",
                "t.yaml:19: server.connections.http2_max_streams: must be a whole number no larger than 4294967295; found 99999999999",
                "t.yaml:20: log: must be a mapping (write `key: value` lines indented under it, or `{key: value}`); found 5",
            ]
        );
    }

    #[test]
    fn a_bad_value_in_a_provider_entry_is_found_at_its_key_and_the_entry_is_still_checked() {
        let text = "token: {issuer: x, services: [s]}\npolicy: {builtin_example: true}\nproviders:\n  - type: static\n    name: local\n    file: users.yaml\n  - type: ldap\n    name: corp\n    url: ldap://ldap.example.com\n    user_base_dn: dc=example,dc=com\n    pool_size: lots\n    groups: {nested: recursiv, lowercase: sure}\n  - type: static\n    accounts: nope\n  - type: oidc\n    name: kc\n    issuer: https://sso.example.com\n    clent_id: tollgate\n  - just a string\n  - type: ldpa\n    name: x\n  - type: static\n    name: local\n    file: other.yaml\n";
        assert_eq!(
            problems(text, &[]),
            [
                "t.yaml:11: providers[1].pool_size: must be a whole number; found \"lots\"",
                "t.yaml:12: providers[1].groups.nested: must be one of: none, in_chain, recursive; found \"recursiv\" (did you mean `recursive`?)",
                "t.yaml:12: providers[1].groups.lowercase: must be true or false; found \"sure\"",
                "t.yaml:13: providers[2].name: required",
                "t.yaml:14: providers[2].accounts: must be a list (write `[a, b]` or one `- item` per line); found \"nope\"",
                "t.yaml:18: providers[3].clent_id: unknown key (did you mean `providers[3].client_id`?)",
                "t.yaml:19: providers[4]: must be a mapping with `type:`, `name:` and the type's keys; found \"just a string\"",
                "t.yaml:20: providers[5].type: must be one of: static, ldap, oidc, workload; found \"ldpa\" (did you mean `ldap`?)",
                "t.yaml:23: providers[6].name: \"local\" is used by an earlier provider",
            ]
        );
    }

    #[test]
    fn keys_set_by_the_environment_are_placed_at_their_variable() {
        let text = "token: {issuer: x, services: [s]}\npolicy: {builtin_example: true}\n";
        let env = [("TOLLGATE_SERVER__MAX_BODY_BYTES", "lots"), ("TOLLGATE_TOKEN__HEADER", "x5d")];
        assert_eq!(
            problems(text, &env),
            [
                "environment variable TOLLGATE_SERVER__MAX_BODY_BYTES: server.max_body_bytes: must be a whole number; found \"lots\"",
                "environment variable TOLLGATE_TOKEN__HEADER: token.header: must be one of: x5c, kid; found \"x5d\" (did you mean `x5c`?)",
            ]
        );
    }

    #[test]
    fn a_key_named_in_a_comment_or_a_string_before_it_is_placed_at_its_own_line() {
        let text = "# server:\n#   max_scopes: 3\nserver:\n  # max_scopes is the most scopes of one request\n  listen: \"max_scopes: 5\"\n  data_dir: |\n    max_scopes: 6\n  max_scopes: many\ntoken:\n  issuer: x\n  services: [s]\n  keys:\n  - key_file: a.key\n  - key_file: b.key\n    cert_file: b.crt\npolicy: {builtin_example: true}\n";
        assert_eq!(
            problems(text, &[]),
            [
                "t.yaml:5: server.listen: \"max_scopes: 5\" is not an address; write e.g. 0.0.0.0:5001",
                "t.yaml:8: server.max_scopes: must be a whole number; found \"many\"",
                "t.yaml:13: token.keys[0].cert_file: required with token.header x5c (or set header: kid)",
            ]
        );
    }

    #[test]
    fn a_section_that_cannot_be_read_reports_nothing_else_of_itself() {
        let text = "token: lots\npolicy: [a]\n";
        assert_eq!(
            problems(text, &[]),
            [
                "t.yaml:1: token: must be a mapping (write `key: value` lines indented under it, or `{key: value}`); found \"lots\"",
                "t.yaml:2: policy: must be a mapping (write `key: value` lines indented under it, or `{key: value}`); found a list",
            ]
        );
        // A required key is still reported when nothing refused could have set it.
        assert_eq!(
            problems("server: {max_scopes: x}\npolicy: {builtin_example: true}\n", &[]),
            [
                "t.yaml:1: server.max_scopes: must be a whole number; found \"x\"",
                "t.yaml: token.issuer: required; set it to the registry's auth.token.issuer",
                "t.yaml: token.services: required; list the registry's auth.token.service name(s)",
            ]
        );
    }
}

//! The running server's state, built once from validated settings.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime};

use crate::config::{ProviderConfig, Settings};
use crate::identity::accounts::{Source, StaticProvider};
use crate::identity::cache::{CachePolicy, CacheStats, CachedProvider};
use crate::identity::chain::Chain;
use crate::identity::ldap::LdapProvider;
use crate::identity::oidc::OidcProvider;
use crate::identity::Provider;
use crate::policy::{Policy, PolicySource};
use crate::revocation::{FileStore, RevocationStore};
use crate::sessions::{FileSessionStore, SessionStore};
use crate::token::keys::{generate_key_files, write_private, KeySet, SigningKey};
use crate::token::refresh::RefreshTokens;
use crate::token::{random_id, TokenIssuer};

/// Everything a request handler needs. Shared behind an `Arc`.
pub struct AppState {
    pub settings: Settings,
    pub issuer: TokenIssuer,
    /// None when refresh tokens are disabled.
    pub refresh: Option<RefreshTokens>,
    pub chain: Chain,
    pub cache_stats: Vec<Arc<CacheStats>>,
    pub revocations: Arc<dyn RevocationStore>,
    /// Device-flow and OIDC login sessions (shared by replicas).
    pub sessions: Arc<dyn SessionStore>,
    pub policy: PolicyStore,
    /// Providers' last probe results, for /readyz (kept across reloads).
    pub health: Arc<crate::health::Health>,
    /// Failed-login limits (kept across reloads while `rate_limit` is unchanged).
    pub limiter: Arc<crate::http::ratelimit::LoginLimiter>,
}

impl AppState {
    /// Load keys (generating one on first start), secrets, providers and the policy. Every problem found is
    /// returned, each naming the file or key at fault.
    pub fn build(settings: Settings) -> Result<AppState, Vec<String>> {
        let mut errors = Vec::new();
        let keys = load_keys(&settings).map_err(|e| vec![e]);
        let refresh = if settings.refresh_enabled {
            match load_or_create_secret(&settings.refresh_secret_file)
                .and_then(|s| RefreshTokens::new(&s, &settings.issuer, settings.refresh_lifetime))
            {
                Ok(r) => Some(r),
                Err(e) => {
                    errors.push(format!("refresh_tokens.secret_file: {e}"));
                    None
                }
            }
        } else {
            None
        };
        let sessions: Arc<dyn SessionStore> = Arc::new(FileSessionStore::new(settings.sessions_file()));
        let mut providers: Vec<Arc<dyn Provider>> = Vec::new();
        let mut cache_stats = Vec::new();
        let cache_policy = CachePolicy {
            ttl: settings.cache_ttl,
            capacity: settings.cache_capacity,
            negative_ttl: settings.cache_negative_ttl,
            serve_stale_for: settings.cache_serve_stale_for,
        };
        for p in &settings.providers {
            match p {
                ProviderConfig::Static(s) => {
                    let source = match (&s.file, &s.accounts) {
                        (Some(f), _) => Source::File(f.clone()),
                        (None, Some(a)) => Source::Inline(a.clone()),
                        (None, None) => Source::Inline(Vec::new()),
                    };
                    match StaticProvider::new(&s.name, source) {
                        Ok(provider) => {
                            let cached = CachedProvider::with_policy(Arc::new(provider), cache_policy);
                            cache_stats.push(cached.stats.clone());
                            providers.push(Arc::new(cached));
                        }
                        Err(e) => errors.extend(e),
                    }
                }
                ProviderConfig::Ldap(l) => match LdapProvider::new(l) {
                    Ok(provider) => {
                        let cached = CachedProvider::with_policy(Arc::new(provider), cache_policy);
                        cache_stats.push(cached.stats.clone());
                        providers.push(Arc::new(cached));
                    }
                    Err(e) => errors.extend(e),
                },
                ProviderConfig::Oidc(o) => match OidcProvider::new(o.clone(), sessions.clone(), settings.cache_ttl) {
                    Ok(provider) => {
                        let cached = CachedProvider::with_policy(Arc::new(provider), cache_policy);
                        cache_stats.push(cached.stats.clone());
                        providers.push(Arc::new(cached));
                    }
                    Err(e) => errors.push(e),
                },
            }
        }
        let policy = PolicyStore::new(&settings).map_err(|e| errors.extend(e));
        let keys = match keys {
            Ok(k) => Some(k),
            Err(e) => {
                errors.extend(e);
                None
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let (Some(keys), Ok(policy)) = (keys, policy) else { return Err(vec!["internal: state incomplete".into()]) };
        let revocations: Arc<dyn RevocationStore> = Arc::new(FileStore::new(settings.revocation_file()));
        Ok(AppState {
            issuer: TokenIssuer { keys, issuer: settings.issuer.clone(), lifetime: settings.token_lifetime },
            refresh,
            chain: Chain::new(providers),
            cache_stats,
            revocations,
            sessions,
            policy,
            health: Arc::default(),
            limiter: Arc::new(crate::http::ratelimit::LoginLimiter::new(&settings.ops.rate_limit)),
            settings,
        })
    }
}

/// Load the configured keys, or the generated default key (creating it on first start).
pub fn load_keys(settings: &Settings) -> Result<KeySet, String> {
    let mut loaded = Vec::new();
    let mut active = 0;
    if settings.keys.is_empty() {
        let (key, cert) = settings.default_key_paths();
        if !key.exists() {
            generate_key_files(&key, &cert, "tollgate token signer").map_err(|e| e.to_string())?;
            tracing::warn!(key = %key.display(), cert = %cert.display(),
                "generated a new signing key; run `tollgate registry-config` to print the registry settings that trust it");
        }
        let k = SigningKey::load(&key, Some(&cert), settings.kid_format).map_err(|e| e.to_string())?;
        loaded.push(k.with_header(settings.header_mode).map_err(|e| format!("{}: {e}", key.display()))?);
    } else {
        for (i, ks) in settings.keys.iter().enumerate() {
            let k = SigningKey::load(&ks.key_file, ks.cert_file.as_deref(), settings.kid_format)
                .map_err(|e| format!("token.keys[{i}]: {e}"))?;
            loaded.push(k.with_header(settings.header_mode).map_err(|e| format!("token.keys[{i}]: {e}"))?);
            if ks.active {
                active = i;
            }
        }
    }
    KeySet::new(loaded, active)
}

/// Read the refresh secret, generating a random one if the file does not exist.
fn load_or_create_secret(path: &Path) -> Result<Vec<u8>, String> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let trimmed = String::from_utf8_lossy(&bytes).trim().as_bytes().to_vec();
            Ok(trimmed)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            let secret = random_id(32);
            write_private(path, secret.as_bytes()).map_err(|e| e.to_string())?;
            Ok(secret.into_bytes())
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

type Stamps = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

/// The compiled policy, reloaded when its files change. An invalid new version is reported and the running
/// one kept, so a typo in a rules file never opens or closes the registry.
pub struct PolicyStore {
    paths: Vec<PathBuf>,
    builtin: bool,
    interval: std::time::Duration,
    current: RwLock<Arc<Policy>>,
    check: Mutex<(Instant, Stamps)>,
}

impl PolicyStore {
    pub fn new(settings: &Settings) -> Result<PolicyStore, Vec<String>> {
        let builtin = settings.policy_builtin_example;
        let paths = settings.policy_paths.clone();
        let stamps = stamps(&paths);
        let policy = compile(&paths, builtin)?;
        Ok(PolicyStore {
            paths,
            builtin,
            interval: settings.policy_reload_interval,
            current: RwLock::new(Arc::new(policy)),
            check: Mutex::new((Instant::now(), stamps)),
        })
    }

    /// The policy in force, after a cheap check (at most once per interval) whether its files changed.
    pub fn get(&self) -> Arc<Policy> {
        if !self.builtin {
            self.maybe_reload();
        }
        match self.current.read() {
            Ok(p) => p.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn maybe_reload(&self) {
        let Ok(mut check) = self.check.try_lock() else { return };
        if check.0.elapsed() < self.interval {
            return;
        }
        check.0 = Instant::now();
        let now = stamps(&self.paths);
        if now == check.1 {
            return;
        }
        check.1 = now;
        drop(check);
        let _ = self.reload();
    }

    /// Recompile now (SIGHUP, or a changed file). Returns the errors when the new version is invalid.
    pub fn reload(&self) -> Result<(), Vec<String>> {
        match compile(&self.paths, self.builtin) {
            Ok(p) => {
                metrics::counter!(crate::telemetry::POLICY_RELOADS, "result" => "ok").increment(1);
                tracing::info!(rules = p.rule_count(), "policy reloaded");
                if let Ok(mut cur) = self.current.write() {
                    *cur = Arc::new(p);
                }
                Ok(())
            }
            Err(errors) => {
                metrics::counter!(crate::telemetry::POLICY_RELOADS, "result" => "error").increment(1);
                tracing::error!(errors = ?errors, "policy invalid; keeping the previous version");
                Err(errors)
            }
        }
    }
}

fn compile(paths: &[PathBuf], builtin: bool) -> Result<Policy, Vec<String>> {
    let result = if builtin {
        Policy::compile(&[PolicySource {
            path: "builtin:default.yaml".into(),
            text: crate::policy::EXAMPLE_POLICY.into(),
        }])
    } else {
        Policy::load(paths)
    };
    result.map_err(|errors| errors.iter().map(|e| e.to_string()).collect())
}

fn stamps(paths: &[PathBuf]) -> Stamps {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            entries.retain(|e| matches!(e.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")));
            entries.sort();
            out.push((p.clone(), None));
            out.extend(entries.into_iter().map(|e| {
                let s = stamp(&e);
                (e, s)
            }));
        } else {
            out.push((p.clone(), stamp(p)));
        }
    }
    out
}

fn stamp(p: &Path) -> Option<(SystemTime, u64)> {
    std::fs::metadata(p).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
}

//! The running server's state, built once from validated settings: keys, secrets, stores, providers
//! (each behind its identity cache) and the policy. A reload builds a new one (`crate::server::live`).

use std::sync::Arc;

use crate::config::{ProviderSettings, Settings};
use crate::identity::accounts::StaticProvider;
use crate::identity::cache::{CachePolicy, CacheStats, CachedProvider};
use crate::identity::chain::Chain;
use crate::identity::ldap::LdapProvider;
use crate::identity::measured::Measured;
use crate::identity::oidc::OidcProvider;
use crate::identity::workload::WorkloadProvider;
use crate::identity::Provider;
use crate::policy_store::PolicyStore;
use crate::store::access_tokens::AccessTokenStore;
use crate::store::revocation::RevocationStore;
use crate::store::sessions::SessionStore;
use crate::support::fs::read_or_create_secret;
use crate::support::random::random_id;
use crate::token::access::SecretHasher;
use crate::token::keys::load_keys_with;
use crate::token::refresh::RefreshTokens;
use crate::token::TokenIssuer;

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
    pub health: Arc<crate::identity::health::Health>,
    /// Failed-login limits (kept across reloads while `rate_limit` is unchanged).
    pub limiter: Arc<crate::identity::limiter::LoginLimiter>,
    /// The keyed hash of access-token secrets; None when `access_tokens.enabled` is false.
    pub access_hasher: Option<SecretHasher>,
    /// Personal and group access tokens (hashes and metadata).
    pub access_tokens: Arc<dyn AccessTokenStore>,
    /// The Redis of `state.store: redis` (for `/readyz`: mode, master, failovers; and the invalidation
    /// stream); None with local files.
    pub redis: Option<Arc<crate::store::redis::Redis>>,
    /// Ends access at once when it ends at its source (`crate::invalidate`).
    pub invalidator: Arc<crate::invalidate::Invalidator>,
    /// The `/invalidate` endpoint's bearer secret (`invalidation.secret_file`); None: the endpoint is off.
    pub invalidation_secret: Option<secrecy::SecretString>,
}

impl AppState {
    /// Load keys (generating one on first start), secrets, providers and the policy. Every problem found is
    /// returned, each naming the file or key at fault.
    pub fn build(settings: Settings) -> Result<AppState, Vec<String>> {
        AppState::assemble(settings, true).map(|(state, _)| state)
    }

    /// What `check-config` builds: everything [`AppState::build`] loads and checks, but nothing written. A
    /// signing key or refresh secret that `serve` would create is made in memory, and a note says so.
    pub fn check(settings: Settings) -> Result<(AppState, Vec<String>), Vec<String>> {
        AppState::assemble(settings, false)
    }

    fn assemble(settings: Settings, create: bool) -> Result<(AppState, Vec<String>), Vec<String>> {
        let mut errors = Vec::new();
        let mut notes = Vec::new();
        let keys = load_keys_with(&settings, create).map_err(|e| vec![e]).map(|(keys, note)| {
            notes.extend(note);
            keys
        });
        let refresh = if settings.refresh.enabled {
            let file = &settings.refresh.secret_file;
            let secret = if create || file.exists() {
                read_or_create_secret(file, || random_id(32)).map_err(|e| e.to_string())
            } else {
                notes.push(format!("no refresh-token secret yet: `serve` creates {} on first start", file.display()));
                Ok(random_id(32).into_bytes())
            };
            match secret.and_then(|s| RefreshTokens::new(&s, &settings.token.issuer, settings.refresh.lifetime)) {
                Ok(r) => Some(r),
                Err(e) => {
                    errors.push(format!("refresh_tokens.secret_file: {e}"));
                    None
                }
            }
        } else {
            None
        };
        let access_hasher = if settings.access_tokens.enabled {
            let file = &settings.access_tokens.secret_file;
            let secret = if create || file.exists() {
                read_or_create_secret(file, || random_id(32)).map_err(|e| e.to_string())
            } else {
                notes.push(format!("no access-token secret yet: `serve` creates {} on first start", file.display()));
                Ok(random_id(32).into_bytes())
            };
            match secret.and_then(|s| SecretHasher::new(&s)) {
                Ok(h) => Some(h),
                Err(e) => {
                    errors.push(format!("access_tokens.secret_file: {e}"));
                    None
                }
            }
        } else {
            None
        };
        // Local files or Redis, per `state.store`; a store that cannot be opened leaves the local default in
        // place only so that every other problem is still reported.
        let stores = crate::store::open(&settings).unwrap_or_else(|e| {
            errors.push(e);
            crate::store::Stores::local(&settings)
        });
        let sessions = stores.sessions.clone();
        let mut providers: Vec<Arc<dyn Provider>> = Vec::new();
        let mut cache_stats = Vec::new();
        let cache_policy = CachePolicy {
            ttl: settings.cache.ttl,
            capacity: settings.cache.capacity,
            negative_ttl: settings.cache.negative_ttl,
            serve_stale_for: settings.cache.serve_stale_for,
        };
        for p in &settings.providers {
            let built: Result<Arc<dyn Provider>, Vec<String>> = match p {
                ProviderSettings::Static(s) => StaticProvider::new(s, settings.is_embedded_demo())
                    .map(|p| Arc::new(p.settling_for(settings.policy.settle)) as Arc<dyn Provider>),
                ProviderSettings::Ldap(l) => LdapProvider::new(l).map(|p| Arc::new(p) as Arc<dyn Provider>),
                ProviderSettings::Oidc(o) => OidcProvider::new(o.clone(), sessions.clone(), settings.cache.ttl)
                    .map(|p| Arc::new(p) as Arc<dyn Provider>)
                    .map_err(|e| vec![e]),
                ProviderSettings::Workload(w) => {
                    WorkloadProvider::new(w).map(|p| Arc::new(p) as Arc<dyn Provider>).map_err(|e| vec![e])
                }
            };
            match built {
                Ok(provider) => {
                    // Measured below the cache: only the calls that reach the provider are counted.
                    let measured: Arc<dyn Provider> = Arc::new(Measured::new(provider));
                    let cached = CachedProvider::with_policy(measured, cache_policy);
                    cache_stats.push(cached.stats.clone());
                    providers.push(Arc::new(cached));
                }
                Err(e) => errors.extend(e),
            }
        }
        let policy = PolicyStore::new(&settings).map_err(|e| errors.extend(e));
        let invalidation_secret = match &settings.invalidation.secret_file {
            Some(f) => match std::fs::read_to_string(f) {
                Ok(s) if s.trim().len() >= crate::config::invalidation::MIN_SECRET_LEN => {
                    Some(secrecy::SecretString::from(s.trim().to_string()))
                }
                Ok(_) => {
                    errors.push(format!(
                        "invalidation.secret_file: {}: shorter than {} characters",
                        f.display(),
                        crate::config::invalidation::MIN_SECRET_LEN
                    ));
                    None
                }
                Err(e) => {
                    errors.push(format!("invalidation.secret_file: {}: {e}", f.display()));
                    None
                }
            },
            None => None,
        };
        let transmitters =
            crate::invalidate::ssf::Receivers::load(&settings.invalidation.transmitters).unwrap_or_else(|e| {
                errors.extend(e);
                crate::invalidate::ssf::Receivers::default()
            });
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
        let revocations = stores.revocations;
        let access_tokens = stores.access_tokens;
        let chain = Chain::new(providers);
        let invalidator = Arc::new(
            crate::invalidate::Invalidator::new(
                chain.clone(),
                revocations.clone(),
                access_tokens.clone(),
                stores.redis.clone(),
                settings.invalidation.stream_length,
            )
            .with_transmitters(transmitters),
        );
        let state = AppState {
            issuer: TokenIssuer {
                keys,
                issuer: settings.token.issuer.clone(),
                lifetime: settings.token.lifetime,
                registry_leeway: settings.token.registry_leeway,
            },
            refresh,
            chain,
            cache_stats,
            revocations,
            sessions,
            policy,
            health: Arc::default(),
            limiter: Arc::new(
                crate::identity::limiter::LoginLimiter::new(&settings.ops.rate_limit).with_shared(stores.limits),
            ),
            access_hasher,
            access_tokens,
            invalidator,
            redis: stores.redis,
            invalidation_secret,
            settings,
        };
        Ok((state, notes))
    }
}

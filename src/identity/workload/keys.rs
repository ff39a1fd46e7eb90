//! An issuer's signing keys: fetched from discovery, a JWKS URL or a file, cached, and refetched at a
//! bounded rate.
//!
//! A token naming a `kid` the cache does not hold may mean the issuer rotated its keys, so the keys are
//! fetched again, but at most once per `refresh_interval` whatever the tokens say: a flood of tokens with
//! made-up key ids costs the issuer one request per interval. A token whose key is cached never waits for
//! the issuer, so an issuer that is down stops only tokens signed with keys tollgate has not seen yet.
//! Keys older than `max_age` are refetched in the background, so a key the issuer removed stops working.
//!
//! Only the JWKS decides which keys are trusted: a token's `jku`, `x5u`, `jwk` and `x5c` headers, which
//! name a key or where to get one, are never read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::config::workload::{KeySource, Workload};
use crate::identity::Failure;
use crate::support::error_chain;

/// Largest discovery or JWKS document read.
const MAX_DOCUMENT: usize = 1 << 20;
/// Most keys kept from one JWKS.
const MAX_KEYS: usize = 64;

/// One trusted key.
pub struct Key {
    pub kid: Option<String>,
    /// The algorithm the JWK pins, if it names one.
    alg: Option<Algorithm>,
    pub key: DecodingKey,
}

impl Key {
    fn fits(&self, kid: Option<&str>, alg: Algorithm) -> bool {
        if kid.is_some() && self.kid.as_deref() != kid {
            return false;
        }
        if self.alg.is_some_and(|a| a != alg) {
            return false;
        }
        self.key.family() == alg.family()
    }
}

struct KeySet {
    keys: Vec<Arc<Key>>,
    fetched: Option<Instant>,
}

/// The last fetch attempt, guarded by the async mutex that makes fetches single-flight.
#[derive(Default)]
struct Attempt {
    at: Option<Instant>,
    /// The error of the last attempt, if it failed.
    error: Option<FetchError>,
}

/// Why the keys could not be fetched.
#[derive(Debug, Clone)]
struct FetchError {
    message: String,
    /// The issuer answered, and its answer gives no keys for it: a discovery document naming another
    /// issuer, a JWKS without one usable key. Tokens are refused (401) rather than the issuer called down.
    definitive: bool,
}

impl FetchError {
    fn down(message: String) -> Self {
        FetchError { message, definitive: false }
    }

    fn refused(message: String) -> Self {
        FetchError { message, definitive: true }
    }

    /// The failure of a token whose key this fetch was to bring: refused when the issuer's answer was
    /// definitive, unavailable when it could not be asked.
    fn failure(self, issuer: &str) -> Failure {
        let message = format!("keys of {issuer} could not be fetched: {}", self.message);
        if self.definitive {
            Failure::Refused(message)
        } else {
            Failure::Unavailable(message)
        }
    }
}

pub struct KeyStore {
    name: String,
    issuer: String,
    source: KeySource,
    http: reqwest::Client,
    refresh_interval: Duration,
    max_age: Duration,
    current: RwLock<Arc<KeySet>>,
    attempt: tokio::sync::Mutex<Attempt>,
    /// Fetches made, for tests and the metrics.
    pub fetches: AtomicU64,
}

impl KeyStore {
    /// The store for `cfg`. A `jwks_file` is read now, so a missing or broken file stops the start.
    pub fn new(cfg: &Workload) -> Result<KeyStore, String> {
        let name = cfg.name.clone();
        // Redirects are not followed: the keys come from the URL configured or discovered, nowhere else.
        let http = crate::identity::http_client(&name, cfg.timeout, cfg.ca_file.as_deref())?;
        let store = KeyStore {
            name,
            issuer: cfg.issuer.clone(),
            source: cfg.keys.clone(),
            http,
            refresh_interval: cfg.refresh_interval,
            max_age: cfg.max_age,
            current: RwLock::new(Arc::new(KeySet { keys: Vec::new(), fetched: None })),
            attempt: tokio::sync::Mutex::new(Attempt::default()),
            fetches: AtomicU64::new(0),
        };
        if let KeySource::File(path) = &cfg.keys {
            let keys = read_file(path).map_err(|e| format!("providers {}: jwks_file {e}", store.name))?;
            store.replace(keys);
        }
        Ok(store)
    }

    fn snapshot(&self) -> Arc<KeySet> {
        match self.current.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn replace(&self, keys: Vec<Arc<Key>>) {
        let set = Arc::new(KeySet { keys, fetched: Some(Instant::now()) });
        match self.current.write() {
            Ok(mut g) => *g = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
    }

    fn candidates(set: &KeySet, kid: Option<&str>, alg: Algorithm) -> Vec<Arc<Key>> {
        set.keys.iter().filter(|k| k.fits(kid, alg)).cloned().collect()
    }

    /// Whether the cached keys are due for a background refetch.
    pub fn stale(&self) -> bool {
        self.snapshot().fetched.is_some_and(|t| t.elapsed() >= self.max_age)
    }

    /// The keys that may have signed a token with `kid` (all keys of the algorithm's family when the token
    /// names none) and `alg`. None fits: refused when the keys are known, unavailable when they could not be
    /// fetched and none cached fits.
    pub async fn find(&self, kid: Option<&str>, alg: Algorithm) -> Result<Vec<Arc<Key>>, Failure> {
        let found = Self::candidates(&self.snapshot(), kid, alg);
        if !found.is_empty() {
            return Ok(found);
        }
        let mut attempt = self.attempt.lock().await;
        // Another login may have fetched while this one waited.
        let found = Self::candidates(&self.snapshot(), kid, alg);
        if !found.is_empty() {
            return Ok(found);
        }
        let what = match kid {
            Some(kid) => format!("no key with kid {:?} for {alg:?}", crate::support::clip(kid, 64)),
            None => format!("the token names no kid and no key fits {alg:?}"),
        };
        if attempt.at.is_some_and(|t| t.elapsed() < self.refresh_interval) {
            return Err(match &attempt.error {
                Some(e) => e.clone().failure(&self.issuer),
                None => Failure::Refused(format!(
                    "{what} (keys refetched at most every {}s)",
                    self.refresh_interval.as_secs()
                )),
            });
        }
        self.fetch_into(&mut attempt).await.map_err(|e| e.failure(&self.issuer))?;
        let found = Self::candidates(&self.snapshot(), kid, alg);
        if found.is_empty() {
            return Err(Failure::Refused(what));
        }
        Ok(found)
    }

    /// Refetch the keys if no other fetch is running and the last one is older than the refetch interval.
    /// The answer is only logged: a failure keeps the keys cached.
    pub async fn refresh(&self) {
        let Ok(mut attempt) = self.attempt.try_lock() else { return };
        if attempt.at.is_some_and(|t| t.elapsed() < self.refresh_interval) {
            return;
        }
        if let Err(e) = self.fetch_into(&mut attempt).await {
            tracing::warn!(provider = %self.name, error = %e.message, "refetching the workload issuer's keys failed; the cached keys stay in use");
        }
    }

    /// Whether keys are known, fetching them once if none are and none were tried lately; for `/readyz`.
    pub async fn ready(&self) -> Result<(), Failure> {
        if !self.snapshot().keys.is_empty() {
            return Ok(());
        }
        match self.find(None, Algorithm::RS256).await {
            Ok(_) | Err(Failure::Refused(_)) if !self.snapshot().keys.is_empty() => Ok(()),
            Err(e @ Failure::Unavailable(_)) => Err(e),
            _ => Err(Failure::Unavailable(format!("the issuer {} publishes no usable key", self.issuer))),
        }
    }

    /// Fetch the keys now, as a token with an unknown `kid` would, for `check-config --probe`: where they
    /// come from, and how many of them tollgate can use; or why none could be had.
    pub async fn check(&self) -> crate::identity::Check {
        use crate::identity::Check;
        let what = match &self.source {
            KeySource::File(p) => format!("keys of {} from jwks_file {}", self.issuer, p.display()),
            KeySource::Url(u) => format!("keys of {} from jwks_url {u}", self.issuer),
            KeySource::Discovery => format!(
                "keys of {} through discovery ({}/.well-known/openid-configuration)",
                self.issuer,
                self.issuer.trim_end_matches('/')
            ),
        };
        let mut attempt = self.attempt.lock().await;
        match self.fetch_into(&mut attempt).await {
            Ok(()) => {
                let keys = self.snapshot().keys.clone();
                let kids: Vec<String> = keys
                    .iter()
                    .map(|k| {
                        let alg = k.alg.map(|a| format!("{a:?}")).unwrap_or_else(|| format!("{:?}", k.key.family()));
                        format!("kid {} ({alg})", k.kid.as_deref().unwrap_or("(none)"))
                    })
                    .collect();
                Check::pass(what, format!("{} usable signing key(s): {}", keys.len(), kids.join(", ")))
            }
            Err(e) if e.definitive => {
                Check::fail(what, format!("the issuer answered, but gives no usable key: {}", e.message))
            }
            Err(e) => Check::fail(what, format!("the keys could not be fetched: {}", e.message)),
        }
    }

    async fn fetch_into(&self, attempt: &mut Attempt) -> Result<(), FetchError> {
        attempt.at = Some(Instant::now());
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = self.fetch().await;
        crate::identity::measured::record_key_fetch(&self.name, started, result.is_ok());
        match result {
            Ok(keys) => {
                tracing::info!(provider = %self.name, keys = keys.len(), "workload issuer keys fetched");
                self.replace(keys);
                attempt.error = None;
                Ok(())
            }
            Err(e) => {
                attempt.error = Some(e.clone());
                Err(e)
            }
        }
    }

    async fn fetch(&self) -> Result<Vec<Arc<Key>>, FetchError> {
        let url = match &self.source {
            KeySource::File(path) => return read_file(path).map_err(|e| FetchError::refused(e.0)),
            KeySource::Url(u) => u.clone(),
            KeySource::Discovery => {
                let at = format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/'));
                let doc = self.get_json(&at).await?;
                // A discovery document naming another issuer is someone else's: its keys sign that issuer's
                // tokens, not these.
                match doc.get("issuer").and_then(|i| i.as_str()) {
                    Some(i) if i == self.issuer => {}
                    other => {
                        return Err(FetchError::refused(format!(
                            "{at} names the issuer {:?}, not {:?}",
                            crate::support::clip(other.unwrap_or("(none)"), 200),
                            self.issuer
                        )))
                    }
                }
                doc.get("jwks_uri")
                    .and_then(|u| u.as_str())
                    .ok_or_else(|| FetchError::refused(format!("{at} has no jwks_uri")))?
                    .to_string()
            }
        };
        let jwks = self.get_json(&url).await?;
        parse_jwks(&jwks).map_err(|e| FetchError::refused(format!("{url}: {e}")))
    }

    /// GET a JSON document of at most [`MAX_DOCUMENT`] bytes.
    async fn get_json(&self, url: &str) -> Result<serde_json::Value, FetchError> {
        let down = |e: reqwest::Error| FetchError::down(format!("{url}: {}", error_chain(&e)));
        let mut resp = self.http.get(url).send().await.map_err(down)?;
        if !resp.status().is_success() {
            return Err(FetchError::down(format!("{url}: HTTP {}", resp.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(down)? {
            if body.len() + chunk.len() > MAX_DOCUMENT {
                return Err(FetchError::down(format!("{url}: larger than {MAX_DOCUMENT} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| FetchError::down(format!("{url}: not JSON: {e}")))
    }
}

/// A key document that gives no usable key: unreadable, not JSON, not a JWKS, or without one signature key.
/// The issuer's answer is definitive: its tokens are refused until the document changes.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct NoKeys(String);

fn read_file(path: &std::path::Path) -> Result<Vec<Arc<Key>>, NoKeys> {
    let at = |e: String| NoKeys(format!("{}: {e}", path.display()));
    let text = std::fs::read(path).map_err(|e| at(e.to_string()))?;
    if text.len() > MAX_DOCUMENT {
        return Err(at(format!("larger than {MAX_DOCUMENT} bytes")));
    }
    let doc: serde_json::Value = serde_json::from_slice(&text).map_err(|e| at(format!("not JSON: {e}")))?;
    parse_jwks(&doc).map_err(|e| at(e.0))
}

/// The signature keys of a JWKS document. Keys that are not for signatures, are symmetric (`oct`) or
/// cannot be read are skipped; a document without one usable key is an error.
pub fn parse_jwks(doc: &serde_json::Value) -> Result<Vec<Arc<Key>>, NoKeys> {
    let list = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or_else(|| NoKeys("not a JWKS document (no \"keys\" list)".into()))?;
    let mut keys = Vec::new();
    for value in list.iter().take(MAX_KEYS) {
        if value.get("kty").and_then(|k| k.as_str()) == Some("oct") {
            continue;
        }
        let Ok(jwk) = serde_json::from_value::<Jwk>(value.clone()) else { continue };
        if jwk.common.public_key_use.as_ref().is_some_and(|u| *u != PublicKeyUse::Signature) {
            continue;
        }
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(a) => match key_alg(a) {
                Some(a) => Some(a),
                None => continue,
            },
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else { continue };
        keys.push(Arc::new(Key { kid: jwk.common.key_id.clone(), alg, key }));
    }
    if keys.is_empty() {
        return Err(NoKeys("no usable signature key".into()));
    }
    Ok(keys)
}

/// A JWK's `alg` as a signature algorithm; None for encryption algorithms (such a key is skipped).
fn key_alg(a: KeyAlgorithm) -> Option<Algorithm> {
    Some(match a {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

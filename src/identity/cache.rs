//! The identity cache: a decorator over any provider.
//!
//! A successful login is remembered for a while, keyed on the username and an HMAC of the secret under a key
//! that exists only in this process's memory. The secret itself is never stored, and a different password for
//! the same user is simply a miss. Entries from an older provider generation (the accounts file changed) are
//! ignored, so disabling an account is never hidden by the cache.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use secrecy::{ExposeSecret as _, SecretString};

use super::async_trait_free::BoxFuture;
use super::{Identity, Outcome, Provider, Recheck, Unavailable};

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    username: String,
    tag: [u8; 32],
}

#[derive(Clone)]
struct Entry {
    identity: Identity,
    generation: u64,
}

/// Hit and miss counters, for metrics and tests.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

/// A provider with a cache of successful logins in front of it.
pub struct CachedProvider {
    inner: Arc<dyn Provider>,
    cache: Cache<Key, Entry>,
    hmac: ring::hmac::Key,
    pub stats: Arc<CacheStats>,
}

impl CachedProvider {
    pub fn new(inner: Arc<dyn Provider>, ttl: Duration, capacity: u64) -> Self {
        let rng = ring::rand::SystemRandom::new();
        // Only fails without an OS entropy source, which the signing keys need as well.
        #[allow(clippy::expect_used)]
        let hmac = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng).expect("random key generation failed");
        CachedProvider {
            inner,
            cache: Cache::builder().max_capacity(capacity).time_to_live(ttl).build(),
            hmac,
            stats: Arc::new(CacheStats::default()),
        }
    }

    fn key(&self, username: &str, password: &SecretString) -> Key {
        let mut ctx = ring::hmac::Context::with_key(&self.hmac);
        ctx.update(&(username.len() as u64).to_be_bytes());
        ctx.update(username.as_bytes());
        ctx.update(password.expose_secret().as_bytes());
        let mut tag = [0u8; 32];
        tag.copy_from_slice(ctx.sign().as_ref());
        Key { username: username.to_string(), tag }
    }

    /// Forget everything (used on reload).
    pub fn clear(&self) {
        self.cache.invalidate_all();
    }
}

impl Provider for CachedProvider {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn authenticate<'a>(
        &'a self,
        username: &'a str,
        password: &'a SecretString,
    ) -> BoxFuture<'a, Result<Outcome, Unavailable>> {
        Box::pin(async move {
            let key = self.key(username, password);
            let generation = self.inner.generation();
            if let Some(e) = self.cache.get(&key).await {
                if e.generation == generation {
                    self.stats.hits.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(crate::telemetry::CACHE_HITS, "provider" => self.inner.name().to_string())
                        .increment(1);
                    return Ok(Outcome::Authenticated(e.identity));
                }
                self.cache.invalidate(&key).await;
            }
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(crate::telemetry::CACHE_MISSES, "provider" => self.inner.name().to_string()).increment(1);
            let outcome = self.inner.authenticate(username, password).await?;
            if let Outcome::Authenticated(identity) = &outcome {
                self.cache.insert(key, Entry { identity: identity.clone(), generation }).await;
            }
            Ok(outcome)
        })
    }

    fn recheck<'a>(&'a self, username: &'a str) -> BoxFuture<'a, Result<Recheck, Unavailable>> {
        self.inner.recheck(username)
    }

    fn probe(&self) -> BoxFuture<'_, Result<(), Unavailable>> {
        self.inner.probe()
    }

    fn generation(&self) -> u64 {
        self.inner.generation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts calls, to prove the cache saves them. Accepts password "right" for any user.
    struct Counting {
        calls: AtomicUsize,
        generation: AtomicU64,
    }

    impl Provider for Counting {
        fn name(&self) -> &str {
            "counting"
        }
        fn authenticate<'a>(&'a self, u: &'a str, p: &'a SecretString) -> BoxFuture<'a, Result<Outcome, Unavailable>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                Ok(if p.expose_secret() == "right" {
                    Outcome::Authenticated(Identity { username: u.into(), ..Default::default() })
                } else {
                    Outcome::Rejected("wrong".into())
                })
            })
        }
        fn recheck<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Recheck, Unavailable>> {
            Box::pin(async { Ok(Recheck::Gone("n/a".into())) })
        }
        fn generation(&self) -> u64 {
            self.generation.load(Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn second_login_is_served_from_cache_and_wrong_passwords_never_are() {
        let inner = Arc::new(Counting { calls: AtomicUsize::new(0), generation: AtomicU64::new(0) });
        let cached = CachedProvider::new(inner.clone(), Duration::from_secs(60), 100);
        let right = SecretString::from("right".to_string());
        let wrong = SecretString::from("wrong".to_string());
        assert!(matches!(cached.authenticate("alice", &right).await.unwrap(), Outcome::Authenticated(_)));
        assert!(matches!(cached.authenticate("alice", &right).await.unwrap(), Outcome::Authenticated(_)));
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
        assert!(matches!(cached.authenticate("alice", &wrong).await.unwrap(), Outcome::Rejected(_)));
        assert!(matches!(cached.authenticate("alice", &wrong).await.unwrap(), Outcome::Rejected(_)));
        assert_eq!(inner.calls.load(Ordering::SeqCst), 3, "failures are not cached as successes");
        assert_eq!(cached.stats.hits.load(Ordering::SeqCst), 1);

        inner.generation.store(1, Ordering::SeqCst);
        cached.authenticate("alice", &right).await.unwrap();
        assert_eq!(inner.calls.load(Ordering::SeqCst), 4, "a new provider generation invalidates the entry");
    }

    #[tokio::test]
    async fn entries_expire_after_the_ttl() {
        let inner = Arc::new(Counting { calls: AtomicUsize::new(0), generation: AtomicU64::new(0) });
        let cached = CachedProvider::new(inner.clone(), Duration::from_millis(200), 100);
        let right = SecretString::from("right".to_string());
        cached.authenticate("bob", &right).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        cached.authenticate("bob", &right).await.unwrap();
        assert_eq!(inner.calls.load(Ordering::SeqCst), 2);
    }
}

//! The identity cache: a decorator over any provider.
//!
//! A successful login is remembered for a while, keyed on the username and an HMAC of the secret under a key
//! that exists only in this process's memory. The secret itself is never stored, and a different password for
//! the same user is simply a miss. Entries from an older provider generation (the accounts file changed) are
//! ignored, so disabling an account is never hidden by the cache.
//!
//! Three extensions, all off or short by default where they could hide a change:
//! - a short negative cache: a refused password (or unknown user) is answered from memory for
//!   `negative_ttl`, so a client retrying a wrong password in a loop costs the directory nothing. It is keyed
//!   on the same HMAC as the positive cache, so it never locks out the right password;
//! - serve stale: when the provider is unavailable, an identity up to `serve_stale_for` past its TTL is
//!   served instead of a 503, so a directory outage does not stop every CI pipeline at once. A provider that
//!   answers (even "wrong password") always wins over the stale entry;
//! - `recheck` results (what a refresh token asks) are cached by username for the same TTL, and every
//!   successful login fills that cache too, so a refresh token re-reads the directory only once the entry
//!   has expired.
//!
//! Misses are single-flight: a burst of identical cold logins (the same user and the same password HMAC, e.g.
//! a CI fleet redeploying at once) makes one upstream check whose outcome every caller of the burst shares.
//! Different passwords never share a flight, because the key includes the HMAC.
//!
//! How it is stored (memory: one entry per user, not one per login plus one per re-check). The login cache
//! and the re-check cache are one moka cache keyed by username. Its entry holds the user's identity, when it
//! was last read from the provider (the re-check's TTL), and the HMAC tags of the passwords that proved it,
//! each with the moment it did (each login's own TTL): one normally, two during a robot secret rotation's
//! grace, at most [`MAX_PROOFS`] (the oldest goes). A tag vouches only for the identity it proved: when the
//! provider answers with another identity (groups changed), the other tags are dropped and those passwords
//! are checked again. A refused re-check forgets the whole entry, its passwords included. Identities with an
//! end of their own (a workload token's `exp`) are kept apart, keyed on username + tag as one entry per
//! token, since many tokens share one username; they never answer a re-check. A tag is the first 16 bytes
//! of the HMAC-SHA256: 128 bits.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use secrecy::{ExposeSecret as _, SecretString};

use moka::ops::compute::Op;

use super::{Failure, Forget, Identity, Outcome, Provider};
use crate::support::BoxFuture;

/// How many passwords one user's entry remembers at once; a further one evicts the oldest.
pub const MAX_PROOFS: usize = 4;

/// The first 16 bytes of the HMAC of username and secret.
type Tag = [u8; 16];

/// The key of the short-lived caches (refusals, checks in flight) and of the per-token entries.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    username: Box<str>,
    tag: Tag,
}

/// A password that proved an entry's identity, and when.
#[derive(Clone, Copy)]
struct Proof {
    tag: Tag,
    at: Instant,
}

/// One remembered identity. A cache read copies a pointer, not the groups and claims.
struct Entry {
    identity: Arc<Identity>,
    generation: u64,
    /// When the identity was last read from the provider (a login or a re-check): a re-check's freshness.
    stored: Instant,
    /// The passwords that proved this identity, oldest first; empty for an entry a re-check filled.
    proofs: Box<[Proof]>,
}

impl Entry {
    /// When the password with this tag proved the identity, if it did.
    fn proved(&self, tag: &Tag) -> Option<Instant> {
        self.proofs.iter().find(|p| p.tag == *tag).map(|p| p.at)
    }
}

/// A remembered refusal: `NotMine`, or a `Failure::Refused`.
#[derive(Clone)]
struct Refusal {
    answer: Answer,
    generation: u64,
}

/// What one upstream check answered.
type Answer = Result<Outcome, Failure>;

/// A login entry found for a password: the entry, and when that password proved it.
type Found = (Arc<Entry>, Instant);

/// Hit and miss counters, for metrics and tests.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Refusals answered from the negative cache.
    pub negative_hits: AtomicU64,
    /// Identities served past their TTL because the provider was unavailable.
    pub stale_served: AtomicU64,
    /// Refresh-token re-checks answered from the cache.
    pub recheck_hits: AtomicU64,
    /// Logins the provider was actually asked about (misses minus those that joined a check in flight).
    pub upstream_checks: AtomicU64,
}

/// How long what is remembered.
#[derive(Debug, Clone, Copy)]
pub struct CachePolicy {
    /// How long a successful login (and a re-check) vouches for the user. Zero: nothing is served fresh.
    pub ttl: Duration,
    pub capacity: u64,
    /// How long a refusal is remembered. Zero: off.
    pub negative_ttl: Duration,
    /// How long past `ttl` an identity may be served while the provider is unavailable. Zero: off.
    pub serve_stale_for: Duration,
}

/// A provider with a cache of successful logins in front of it.
pub struct CachedProvider {
    inner: Arc<dyn Provider>,
    policy: CachePolicy,
    /// Logins and re-checks, one entry per username (see the module doc).
    users: Cache<String, Arc<Entry>>,
    /// Logins whose identity has an end of its own (workload tokens), one entry per token.
    tokens: Cache<Key, Arc<Entry>>,
    /// Whether `tokens` was ever filled.
    has_tokens: AtomicBool,
    negative: Cache<Key, Refusal>,
    /// Upstream checks in progress, for single-flight. An entry lives only while its check runs: the leader
    /// removes it as soon as the answer is in the caches above.
    inflight: Cache<Key, Answer>,
    hmac: ring::hmac::Key,
    pub stats: Arc<CacheStats>,
    /// The Prometheus counters, looked up once: a lookup by name and label on every request cost more than
    /// the cache read it counts.
    hits_metric: metrics::Counter,
    misses_metric: metrics::Counter,
    /// Invalidations so far ([`Provider::forget`]): an upstream answer read before one is not stored.
    forgets: AtomicU64,
    /// Whether the provider's directory watcher sees changes; while it does not, entries are fresh for its
    /// short degraded TTL only ([`super::watch::Freshness`]).
    freshness: Arc<super::watch::Freshness>,
}

impl CachedProvider {
    /// A cache of successful logins only (no negative cache, no stale serving).
    pub fn new(inner: Arc<dyn Provider>, ttl: Duration, capacity: u64) -> Self {
        let policy = CachePolicy { ttl, capacity, negative_ttl: Duration::ZERO, serve_stale_for: Duration::ZERO };
        CachedProvider::with_policy(inner, policy)
    }

    pub fn with_policy(inner: Arc<dyn Provider>, policy: CachePolicy) -> Self {
        let mut key = [0u8; 32];
        crate::support::random::fill(&mut key);
        let hmac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
        // Entries live as long as they may be served at all (fresh or stale); freshness is checked on read.
        let keep = policy.ttl + policy.serve_stale_for;
        let capacity = policy.capacity;
        let label = inner.name().to_string();
        let freshness = super::watch::Freshness::of(&label);
        let hits_metric = metrics::counter!(crate::telemetry::CACHE_HITS, "provider" => label.clone());
        let misses_metric = metrics::counter!(crate::telemetry::CACHE_MISSES, "provider" => label);
        CachedProvider {
            inner,
            policy,
            users: Cache::builder().max_capacity(capacity).time_to_live(keep).build(),
            tokens: Cache::builder().max_capacity(capacity).time_to_live(keep).build(),
            has_tokens: AtomicBool::new(false),
            negative: Cache::builder().max_capacity(capacity).time_to_live(policy.negative_ttl).build(),
            // The TTL is only a backstop: the leader removes its entry when done.
            inflight: Cache::builder().max_capacity(capacity).time_to_live(Duration::from_secs(5)).build(),
            hmac,
            stats: Arc::new(CacheStats::default()),
            hits_metric,
            misses_metric,
            forgets: AtomicU64::new(0),
            freshness,
        }
    }

    fn tag(&self, username: &str, password: &SecretString) -> Tag {
        let mut ctx = ring::hmac::Context::with_key(&self.hmac);
        ctx.update(&(username.len() as u64).to_be_bytes());
        ctx.update(username.as_bytes());
        ctx.update(password.expose_secret().as_bytes());
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&ctx.sign().as_ref()[..16]);
        tag
    }

    /// Within the TTL since `since`, and not past the identity's own end (a workload token's `exp`).
    fn fresh(&self, identity: &Identity, since: Instant) -> bool {
        since.elapsed() < self.freshness.ttl(self.policy.ttl) && !identity.expired()
    }

    /// The identity, vouched for since `since`, if it may stand in for an unavailable provider.
    fn stale(&self, found: Option<(Arc<Identity>, Instant)>, error: &str) -> Option<Arc<Identity>> {
        let (identity, since) = found.filter(|(identity, _)| !identity.expired())?;
        let age = since.elapsed();
        if self.policy.serve_stale_for.is_zero() || age >= self.policy.ttl + self.policy.serve_stale_for {
            return None;
        }
        self.stats.stale_served.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(provider = %self.inner.name(), user = %identity.username, age_s = age.as_secs(), error,
            "provider unavailable; serving the cached identity");
        Some(identity)
    }

    /// The entry that remembers this password for this user in this generation, and when it proved it.
    async fn login_entry(&self, username: &str, tag: &Tag, generation: u64) -> Option<Found> {
        if let Some(e) = self.users.get(username).await {
            if e.generation != generation {
                self.users.invalidate(username).await;
            } else if let Some(at) = e.proved(tag) {
                return Some((e, at));
            }
        }
        if !self.has_tokens.load(Ordering::Relaxed) {
            // No workload login yet: skip the key's allocation.
            return None;
        }
        let key = Key { username: username.into(), tag: *tag };
        let e = self.tokens.get(&key).await?;
        if e.generation != generation {
            self.tokens.invalidate(&key).await;
            return None;
        }
        let at = e.proved(tag)?;
        Some((e, at))
    }

    /// Replaces `username`'s entry with `identity`, read now in `generation`, proved by `proof` if given.
    /// The passwords that proved the same identity in the same generation stay, up to [`MAX_PROOFS`].
    async fn update(&self, username: &str, identity: Arc<Identity>, generation: u64, proof: Option<Tag>) {
        let now = Instant::now();
        let keep = self.policy.ttl + self.policy.serve_stale_for;
        self.users
            .entry_by_ref(username)
            .and_compute_with(|old| {
                let mut proofs: Vec<Proof> = Vec::with_capacity(1);
                if let Some(old) = old.map(|e| e.into_value()) {
                    let same = Arc::ptr_eq(&old.identity, &identity) || *old.identity == *identity;
                    if same && old.generation == generation {
                        proofs.extend(
                            old.proofs.iter().filter(|p| Some(p.tag) != proof && p.at.elapsed() < keep).copied(),
                        );
                    }
                }
                if let Some(tag) = proof {
                    proofs.push(Proof { tag, at: now });
                }
                if proofs.len() > MAX_PROOFS {
                    proofs.drain(..proofs.len() - MAX_PROOFS);
                }
                let entry = Entry { identity, generation, stored: now, proofs: proofs.into_boxed_slice() };
                std::future::ready(Op::Put(Arc::new(entry)))
            })
            .await;
    }

    /// The password with this tag no longer proves anything for `username`.
    async fn forget_proof(&self, key: &Key) {
        self.users
            .entry_by_ref(&*key.username)
            .and_compute_with(|old| {
                let op = match old.map(|e| e.into_value()) {
                    Some(old) if old.proved(&key.tag).is_some() => {
                        let proofs = old.proofs.iter().filter(|p| p.tag != key.tag).copied().collect();
                        let entry = Entry { identity: Arc::clone(&old.identity), proofs, ..*old };
                        Op::Put(Arc::new(entry))
                    }
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
        self.tokens.invalidate(key).await;
    }
}

impl CachedProvider {
    /// Asks the provider and stores its answer: what one single-flight leader does on a miss.
    async fn check(&self, key: &Key, password: &SecretString) -> Answer {
        let username = &*key.username;
        let generation = self.inner.generation();
        // A caller that missed just before the previous flight filled the cache and ended would otherwise
        // start a second check: look again now that this caller leads.
        if let Some((e, _)) =
            self.login_entry(username, &key.tag, generation).await.filter(|(e, at)| self.fresh(&e.identity, *at))
        {
            return Ok(Outcome::Authenticated(Arc::clone(&e.identity)));
        }
        if let Some(r) = self.negative.get(key).await.filter(|r| r.generation == generation) {
            return r.answer;
        }
        self.stats.upstream_checks.fetch_add(1, Ordering::Relaxed);
        let forgets = self.forgets.load(Ordering::SeqCst);
        let answer = self.inner.authenticate(username, password).await;
        if self.forgets.load(Ordering::SeqCst) != forgets {
            // An invalidation came while the provider was asked: its answer may predate it. Use, don't keep.
            return answer;
        }
        match &answer {
            // An identity with an end of its own (a workload token) is remembered per token, and never has a
            // refresh token to re-check.
            Ok(Outcome::Authenticated(identity)) if identity.expires_at.is_some() => {
                let now = Instant::now();
                let proofs = Box::new([Proof { tag: key.tag, at: now }]);
                let entry = Entry { identity: Arc::clone(identity), generation, stored: now, proofs };
                self.tokens.insert(key.clone(), Arc::new(entry)).await;
                self.has_tokens.store(true, Ordering::Relaxed);
            }
            Ok(Outcome::Authenticated(identity)) => {
                self.update(username, Arc::clone(identity), generation, Some(key.tag)).await;
                // A provider that names the user otherwise (another case, a mail address for a login name):
                // re-checks ask by the identity's name.
                if identity.username != username {
                    self.update(&identity.username, Arc::clone(identity), generation, None).await;
                }
            }
            Ok(Outcome::NotMine) | Err(Failure::Refused(_)) => {
                self.forget_proof(key).await;
                if !self.policy.negative_ttl.is_zero() {
                    self.negative.insert(key.clone(), Refusal { answer: answer.clone(), generation }).await;
                }
            }
            // Nothing is remembered of an unavailable provider, nor of a check there was no room for.
            Err(Failure::Unavailable(_) | Failure::Busy(_)) => {}
        }
        answer
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
    ) -> BoxFuture<'a, Result<Outcome, Failure>> {
        Box::pin(async move {
            let tag = self.tag(username, password);
            let generation = self.inner.generation();
            let cached = self.login_entry(username, &tag, generation).await;
            if let Some((e, _)) = cached.as_ref().filter(|(e, at)| self.fresh(&e.identity, *at)) {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                self.hits_metric.increment(1);
                return Ok(Outcome::Authenticated(Arc::clone(&e.identity)));
            }
            let key = Key { username: username.into(), tag };
            if let Some(r) = self.negative.get(&key).await {
                if r.generation == generation {
                    self.stats.negative_hits.fetch_add(1, Ordering::Relaxed);
                    return r.answer;
                }
            }
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
            self.misses_metric.increment(1);
            // Concurrent callers with the same key wait for the one check in flight and share its outcome
            // (an unavailable one too, so a burst during an outage waits for one timeout, not one each).
            let flight = self.inflight.entry_by_ref(&key).or_insert_with(self.check(&key, password)).await;
            if flight.is_fresh() {
                // This caller ran the check: the answer is in the caches now, end the flight.
                self.inflight.invalidate(&key).await;
            }
            match flight.into_value() {
                Err(busy @ Failure::Busy(_)) => Err(busy),
                Err(Failure::Unavailable(e)) => self
                    .stale(cached.map(|(entry, at)| (Arc::clone(&entry.identity), at)), &e)
                    .map(Outcome::Authenticated)
                    .ok_or(Failure::Unavailable(e)),
                answer => answer,
            }
        })
    }
    fn recheck<'a>(&'a self, username: &'a str) -> BoxFuture<'a, Result<Identity, Failure>> {
        self.recheck_session(username, None)
    }

    /// Refresh tokens with or without a provider session (OIDC keeps the IdP refresh token in one) go
    /// through the same cache: the provider is asked only once the entry for the user has expired.
    fn recheck_session<'a>(
        &'a self,
        username: &'a str,
        sid: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Identity, Failure>> {
        Box::pin(async move {
            let generation = self.inner.generation();
            // Only an entry whose identity bears this name answers for it (a login under another name
            // fills the entry of the identity's name too).
            let cached = self
                .users
                .get(username)
                .await
                .filter(|e| e.generation == generation && e.identity.username == username);
            if let Some(e) = cached.as_ref().filter(|e| self.fresh(&e.identity, e.stored)) {
                self.stats.recheck_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(Identity::clone(&e.identity));
            }
            let forgets = self.forgets.load(Ordering::SeqCst);
            match self.inner.recheck_session(username, sid).await {
                Ok(identity) => {
                    if self.forgets.load(Ordering::SeqCst) == forgets {
                        self.update(username, Arc::new(identity.clone()), generation, None).await;
                    }
                    Ok(identity)
                }
                Err(refused @ Failure::Refused(_)) => {
                    self.users.invalidate(username).await;
                    Err(refused)
                }
                Err(busy @ Failure::Busy(_)) => Err(busy),
                Err(Failure::Unavailable(e)) => self
                    .stale(cached.map(|entry| (Arc::clone(&entry.identity), entry.stored)), &e)
                    .map(Arc::unwrap_or_clone)
                    .ok_or(Failure::Unavailable(e)),
            }
        })
    }

    fn keep_session<'a>(&'a self, sid: &'a str) -> BoxFuture<'a, Result<(), Failure>> {
        self.inner.keep_session(sid)
    }

    fn device_login(&self) -> Option<&dyn super::DeviceLogin> {
        self.inner.device_login()
    }

    fn probe(&self) -> BoxFuture<'_, Result<(), Failure>> {
        self.inner.probe()
    }

    fn generation(&self) -> u64 {
        self.inner.generation()
    }

    fn workload_issuer(&self) -> Option<&str> {
        self.inner.workload_issuer()
    }

    fn forget<'a>(&'a self, which: &'a Forget) -> BoxFuture<'a, usize> {
        Box::pin(async move {
            // First: a check in flight now must not store what it read before the change.
            self.forgets.fetch_add(1, Ordering::SeqCst);
            let dropped = match which {
                Forget::All => {
                    let n = self.users.entry_count() + self.tokens.entry_count();
                    self.users.invalidate_all();
                    self.tokens.invalidate_all();
                    self.negative.invalidate_all();
                    n as usize
                }
                Forget::User(name) => {
                    let mut n = usize::from(self.users.remove(name.as_str()).await.is_some());
                    // Entries filed under another login name (a mail address) for this identity.
                    n += self.drop_where(|e| e.identity.username == *name).await;
                    n
                }
                Forget::Group(group) => self.drop_where(|e| e.identity.groups.iter().any(|g| g == group)).await,
            };
            self.inner.forget(which).await;
            dropped
        })
    }

    fn backchannel_logout(&self) -> Option<&dyn super::BackchannelLogout> {
        self.inner.backchannel_logout()
    }
}

impl CachedProvider {
    /// Drop every login and re-check entry (and per-token entry) for which `matches` holds.
    async fn drop_where(&self, matches: impl Fn(&Entry) -> bool) -> usize {
        let users: Vec<Arc<String>> = self.users.iter().filter(|(_, e)| matches(e)).map(|(k, _)| k).collect();
        let tokens: Vec<Arc<Key>> = self.tokens.iter().filter(|(_, e)| matches(e)).map(|(k, _)| k).collect();
        let n = users.len() + tokens.len();
        for k in users {
            self.users.invalidate(k.as_str()).await;
        }
        for k in tokens {
            self.tokens.invalidate(&*k).await;
        }
        n
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
        fn authenticate<'a>(&'a self, u: &'a str, p: &'a SecretString) -> BoxFuture<'a, Result<Outcome, Failure>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                if p.expose_secret() == "right" {
                    Ok(Outcome::Authenticated(Arc::new(Identity { username: u.into(), ..Default::default() })))
                } else {
                    Err(Failure::refused("wrong"))
                }
            })
        }
        fn recheck<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Identity, Failure>> {
            Box::pin(async { Err(Failure::refused("n/a")) })
        }
        fn generation(&self) -> u64 {
            self.generation.load(Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn forget_drops_a_user_a_group_or_everything_and_the_next_login_asks_again() {
        let inner = Arc::new(Counting { calls: AtomicUsize::new(0), generation: AtomicU64::new(0) });
        let cached = CachedProvider::new(inner.clone(), Duration::from_secs(60), 100);
        let right = SecretString::from("right".to_string());
        for u in ["alice", "bob"] {
            cached.authenticate(u, &right).await.unwrap();
        }
        // Counting gives no groups: put bob in one, as a directory would.
        let bob = Identity { username: "bob".into(), groups: vec!["payments".into()], ..Default::default() };
        cached.update("bob", Arc::new(bob), 0, Some(cached.tag("bob", &right))).await;
        let calls = || inner.calls.load(Ordering::SeqCst);
        assert_eq!(calls(), 2);
        assert_eq!(cached.forget(&Forget::User("alice".into())).await, 1);
        cached.authenticate("bob", &right).await.unwrap();
        assert_eq!(calls(), 2, "bob is still cached");
        cached.authenticate("alice", &right).await.unwrap();
        assert_eq!(calls(), 3, "alice was forgotten: the provider is asked again");
        assert_eq!(cached.forget(&Forget::Group("payments".into())).await, 1, "only bob is in payments");
        cached.authenticate("bob", &right).await.unwrap();
        assert_eq!(calls(), 4);
        cached.users.run_pending_tasks().await;
        assert!(cached.forget(&Forget::All).await >= 1);
        cached.authenticate("alice", &right).await.unwrap();
        cached.authenticate("bob", &right).await.unwrap();
        assert_eq!(calls(), 6, "everything was forgotten");
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
        assert!(matches!(cached.authenticate("alice", &wrong).await, Err(Failure::Refused(_))));
        assert!(matches!(cached.authenticate("alice", &wrong).await, Err(Failure::Refused(_))));
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

    /// Accepts password "right" for alice, can be switched "down", and counts calls.
    #[derive(Default)]
    struct Flaky {
        calls: AtomicUsize,
        rechecks: AtomicUsize,
        down: std::sync::atomic::AtomicBool,
        /// A name of its own (default `flaky`): freshness marks are per provider name, process-wide.
        named: Option<&'static str>,
    }

    impl Provider for Flaky {
        fn name(&self) -> &str {
            self.named.unwrap_or("flaky")
        }
        fn authenticate<'a>(&'a self, u: &'a str, p: &'a SecretString) -> BoxFuture<'a, Result<Outcome, Failure>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                if self.down.load(Ordering::SeqCst) {
                    return Err(Failure::unavailable("down"));
                }
                match (u, p.expose_secret()) {
                    ("alice", "right") => {
                        Ok(Outcome::Authenticated(Arc::new(Identity { username: u.into(), ..Default::default() })))
                    }
                    ("alice", _) => Err(Failure::refused("wrong")),
                    _ => Ok(Outcome::NotMine),
                }
            })
        }
        fn recheck<'a>(&'a self, u: &'a str) -> BoxFuture<'a, Result<Identity, Failure>> {
            Box::pin(async move {
                self.rechecks.fetch_add(1, Ordering::SeqCst);
                if self.down.load(Ordering::SeqCst) {
                    return Err(Failure::unavailable("down"));
                }
                Ok(Identity { username: u.into(), ..Default::default() })
            })
        }
    }

    fn policy(ttl_ms: u64, negative_ms: u64, stale_ms: u64) -> CachePolicy {
        CachePolicy {
            ttl: Duration::from_millis(ttl_ms),
            capacity: 100,
            negative_ttl: Duration::from_millis(negative_ms),
            serve_stale_for: Duration::from_millis(stale_ms),
        }
    }

    #[tokio::test]
    async fn a_remembered_wrong_password_never_locks_out_the_right_one() {
        let inner = Arc::new(Flaky::default());
        let cached = CachedProvider::with_policy(inner.clone(), policy(60_000, 60_000, 0));
        let wrong = SecretString::from("wrong".to_string());
        let right = SecretString::from("right".to_string());
        for _ in 0..5 {
            assert!(matches!(cached.authenticate("alice", &wrong).await, Err(Failure::Refused(_))));
        }
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1, "repeated wrong passwords are answered from memory");
        assert_eq!(cached.stats.negative_hits.load(Ordering::SeqCst), 4);
        assert!(matches!(cached.authenticate("alice", &right).await.unwrap(), Outcome::Authenticated(_)));
        assert!(matches!(cached.authenticate("mallory", &right).await.unwrap(), Outcome::NotMine));
        assert!(matches!(cached.authenticate("mallory", &right).await.unwrap(), Outcome::NotMine));
        assert_eq!(inner.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_stale_identity_is_served_only_while_the_provider_is_down_and_only_up_to_the_limit() {
        let inner = Arc::new(Flaky::default());
        let cached = CachedProvider::with_policy(inner.clone(), policy(100, 0, 600));
        let right = SecretString::from("right".to_string());
        cached.authenticate("alice", &right).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        inner.down.store(true, Ordering::SeqCst);
        assert!(matches!(cached.authenticate("alice", &right).await.unwrap(), Outcome::Authenticated(_)));
        assert!(matches!(cached.recheck("alice").await, Ok(id) if id.username == "alice"));
        assert_eq!(cached.stats.stale_served.load(Ordering::SeqCst), 2);
        let wrong = SecretString::from("wrong".to_string());
        assert!(
            cached.authenticate("alice", &wrong).await.is_err(),
            "a stale entry never vouches for another password"
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(cached.authenticate("alice", &right).await.is_err(), "past ttl + serve_stale_for: unavailable");
        assert!(cached.recheck("alice").await.is_err());

        let strict = CachedProvider::with_policy(inner.clone(), policy(100, 0, 0));
        inner.down.store(false, Ordering::SeqCst);
        strict.authenticate("alice", &right).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        inner.down.store(true, Ordering::SeqCst);
        assert!(strict.authenticate("alice", &right).await.is_err(), "serving stale is off by default");
    }

    /// While the provider's directory watcher is degraded, an identity is fresh for the short degraded TTL
    /// only, so a change the watcher cannot see reaches the cache within it; recovery restores the TTL.
    #[tokio::test]
    async fn a_degraded_watcher_shortens_the_ttl_until_it_recovers() {
        let inner = Arc::new(Flaky { named: Some("flaky-degraded"), ..Flaky::default() });
        let cached = CachedProvider::with_policy(inner.clone(), policy(60_000, 0, 0));
        let right = SecretString::from("right".to_string());
        let freshness = crate::identity::watch::Freshness::of(inner.name());
        freshness.degrade(Duration::from_millis(100));
        cached.authenticate("alice", &right).await.unwrap();
        cached.authenticate("alice", &right).await.unwrap();
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1, "fresh within the degraded TTL");
        tokio::time::sleep(Duration::from_millis(150)).await;
        cached.authenticate("alice", &right).await.unwrap();
        assert_eq!(inner.calls.load(Ordering::SeqCst), 2, "past the degraded TTL: asked again");
        freshness.recover();
        tokio::time::sleep(Duration::from_millis(150)).await;
        cached.authenticate("alice", &right).await.unwrap();
        assert_eq!(inner.calls.load(Ordering::SeqCst), 2, "recovered: the full TTL again");
    }

    #[tokio::test]
    async fn rechecks_are_answered_from_the_login_until_the_ttl_expires() {
        let inner = Arc::new(Flaky::default());
        let cached = CachedProvider::with_policy(inner.clone(), policy(300, 0, 0));
        cached.authenticate("alice", &SecretString::from("right".to_string())).await.unwrap();
        for _ in 0..3 {
            assert!(matches!(cached.recheck("alice").await, Ok(id) if id.username == "alice"));
        }
        assert_eq!(inner.rechecks.load(Ordering::SeqCst), 0, "the login vouches for the refresh token");
        tokio::time::sleep(Duration::from_millis(350)).await;
        cached.recheck("alice").await.unwrap();
        cached.recheck("alice").await.unwrap();
        assert_eq!(inner.rechecks.load(Ordering::SeqCst), 1, "re-read once after expiry, then cached again");
    }

    /// Counting, but each check takes a while, so concurrent logins overlap.
    struct Slow(Counting);

    impl Provider for Slow {
        fn name(&self) -> &str {
            "slow"
        }
        fn authenticate<'a>(&'a self, u: &'a str, p: &'a SecretString) -> BoxFuture<'a, Result<Outcome, Failure>> {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                self.0.authenticate(u, p).await
            })
        }
        fn recheck<'a>(&'a self, u: &'a str) -> BoxFuture<'a, Result<Identity, Failure>> {
            self.0.recheck(u)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_identical_cold_logins_makes_one_check_and_other_passwords_never_join_it() {
        let inner = Arc::new(Slow(Counting { calls: AtomicUsize::new(0), generation: AtomicU64::new(0) }));
        let cached = Arc::new(CachedProvider::new(inner.clone(), Duration::from_secs(60), 100));
        let mut tasks = Vec::new();
        for i in 0..1000 {
            let cached = cached.clone();
            // One in a hundred brings the wrong password: it must get its own check and its own answer.
            let password = if i % 100 == 7 { "wrong" } else { "right" };
            tasks.push(tokio::spawn(async move {
                let outcome = cached.authenticate("alice", &SecretString::from(password.to_string())).await;
                (password, outcome)
            }));
        }
        for t in tasks {
            let (password, outcome) = t.await.unwrap();
            match (password, outcome) {
                ("right", Ok(Outcome::Authenticated(_))) | ("wrong", Err(Failure::Refused(_))) => {}
                (p, o) => panic!("password {p} got {o:?}"),
            }
        }
        assert_eq!(inner.0.calls.load(Ordering::SeqCst), 2, "one check per distinct password");
        assert_eq!(cached.stats.upstream_checks.load(Ordering::SeqCst), 2);
    }

    /// Accepts any password starting with "pw" for any user, or a "jwt-" token as a workload identity
    /// (username "ci" for every token, ending in an hour); counts calls. `rename` answers with a
    /// lower-cased username, as a directory might.
    #[derive(Default)]
    struct Many {
        calls: AtomicUsize,
        rechecks: AtomicUsize,
        rename: bool,
    }

    impl Provider for Many {
        fn name(&self) -> &str {
            "many"
        }
        fn authenticate<'a>(&'a self, u: &'a str, p: &'a SecretString) -> BoxFuture<'a, Result<Outcome, Failure>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                let p = p.expose_secret();
                if let Some(sub) = p.strip_prefix("jwt-") {
                    let end = crate::support::time::unix_now() + 3600;
                    let identity =
                        Identity { username: format!("ci-{sub}"), expires_at: Some(end), ..Default::default() };
                    return Ok(Outcome::Authenticated(Arc::new(identity)));
                }
                if !p.starts_with("pw") {
                    return Err(Failure::refused("wrong"));
                }
                let username = if self.rename { u.to_lowercase() } else { u.to_string() };
                Ok(Outcome::Authenticated(Arc::new(Identity { username, ..Default::default() })))
            })
        }
        fn recheck<'a>(&'a self, u: &'a str) -> BoxFuture<'a, Result<Identity, Failure>> {
            Box::pin(async move {
                self.rechecks.fetch_add(1, Ordering::SeqCst);
                Ok(Identity { username: u.into(), ..Default::default() })
            })
        }
    }

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    #[tokio::test]
    async fn two_passwords_of_one_user_are_remembered_at_once_and_a_wrong_one_never_is() {
        let inner = Arc::new(Many::default());
        let cached = CachedProvider::new(inner.clone(), Duration::from_secs(60), 100);
        for _ in 0..3 {
            // A robot secret rotation's grace: old and new secret in use by two fleets, interleaved.
            cached.authenticate("robot", &secret("pw-old")).await.unwrap();
            cached.authenticate("robot", &secret("pw-new")).await.unwrap();
        }
        assert_eq!(inner.calls.load(Ordering::SeqCst), 2, "one check per secret, then both served");
        assert!(matches!(cached.authenticate("robot", &secret("wrong")).await, Err(Failure::Refused(_))));
        assert!(matches!(cached.authenticate("robot", &secret("wrong")).await, Err(Failure::Refused(_))));
        assert_eq!(inner.calls.load(Ordering::SeqCst), 4, "a wrong password is never a hit");
        cached.authenticate("robot", &secret("pw-old")).await.unwrap();
        assert_eq!(inner.calls.load(Ordering::SeqCst), 4, "a refused password forgets no other");
        cached.recheck("robot").await.unwrap();
        assert_eq!(inner.rechecks.load(Ordering::SeqCst), 0, "the logins vouch for the refresh token");
        assert_eq!(cached.users.get("robot").await.map(|e| e.proofs.len()), Some(2));
    }

    #[tokio::test]
    async fn one_user_remembers_at_most_four_passwords_and_the_oldest_goes() {
        let inner = Arc::new(Many::default());
        let cached = CachedProvider::new(inner.clone(), Duration::from_secs(60), 100);
        for i in 0..=MAX_PROOFS {
            cached.authenticate("bob", &secret(&format!("pw-{i}"))).await.unwrap();
        }
        let checks = MAX_PROOFS + 1;
        assert_eq!(inner.calls.load(Ordering::SeqCst), checks);
        for i in 1..=MAX_PROOFS {
            cached.authenticate("bob", &secret(&format!("pw-{i}"))).await.unwrap();
        }
        assert_eq!(inner.calls.load(Ordering::SeqCst), checks, "the newest four are served");
        cached.authenticate("bob", &secret("pw-0")).await.unwrap();
        assert_eq!(inner.calls.load(Ordering::SeqCst), checks + 1, "the oldest was evicted");
        assert_eq!(cached.users.get("bob").await.map(|e| e.proofs.len()), Some(MAX_PROOFS));
    }

    #[tokio::test]
    async fn a_changed_identity_drops_the_passwords_that_proved_the_old_one() {
        let inner = Arc::new(Flaky::default());
        let cached = CachedProvider::new(inner.clone(), Duration::from_secs(60), 100);
        cached.authenticate("alice", &secret("right")).await.unwrap();
        // A re-check that reads other groups: the login no longer vouches for what the directory says.
        let changed = Identity { username: "alice".into(), groups: vec!["new".into()], ..Default::default() };
        cached.update("alice", Arc::new(changed), 0, None).await;
        cached.authenticate("alice", &secret("right")).await.unwrap();
        assert_eq!(inner.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn workload_tokens_are_remembered_one_each_and_never_answer_a_recheck() {
        let inner = Arc::new(Many::default());
        let cached = CachedProvider::new(inner.clone(), Duration::from_secs(60), 100);
        for _ in 0..2 {
            for job in 0..10 {
                let outcome = cached.authenticate("ci", &secret(&format!("jwt-{job}"))).await.unwrap();
                assert!(matches!(outcome, Outcome::Authenticated(id) if id.username == format!("ci-{job}")));
            }
        }
        assert_eq!(inner.calls.load(Ordering::SeqCst), 10, "ten jobs sharing one username: ten entries");
        assert!(cached.users.get("ci").await.is_none() && cached.users.get("ci-3").await.is_none());
        cached.recheck("ci-3").await.unwrap();
        assert_eq!(inner.rechecks.load(Ordering::SeqCst), 1, "a workload identity never answers a re-check");
    }

    #[tokio::test]
    async fn a_login_under_another_name_fills_the_recheck_of_the_identitys_name() {
        let inner = Arc::new(Many { rename: true, ..Default::default() });
        let cached = CachedProvider::new(inner.clone(), Duration::from_secs(60), 100);
        cached.authenticate("Alice", &secret("pw")).await.unwrap();
        cached.authenticate("Alice", &secret("pw")).await.unwrap();
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
        assert_eq!(cached.recheck("alice").await.unwrap().username, "alice");
        assert_eq!(inner.rechecks.load(Ordering::SeqCst), 0);
        cached.recheck("Alice").await.unwrap();
        assert_eq!(inner.rechecks.load(Ordering::SeqCst), 1, "an entry answers only for its identity's name");
    }
}

//! Rate limiting of FAILED logins, per client IP and per account (governor's GCRA).
//!
//! Only failures spend budget: a CI system logging in a thousand times an hour with the right secret is never
//! limited. A failure that finds its budget empty blocks that key until governor says a new attempt is
//! allowed; blocked requests are answered 429 with `Retry-After` BEFORE any password is checked (so a blocked
//! attacker learns nothing) and spend nothing (so the block never extends itself).
//!
//! Why the right password is never locked out for good:
//! - budgets refill continuously (one attempt per `window / failures`), so any block ends by itself;
//! - the per-IP budget is the attacker's own: a flood from one address does not touch other addresses;
//! - an account under attack from many addresses (its budget spent) still accepts logins from addresses
//!   that logged in to it successfully in the last day, so its owner keeps working during the flood.
//!
//! With `state.store: redis` the counts are shared by all replicas ([`SharedLimits`], a fixed window per
//! key); when Redis cannot be reached the limiter falls back to these per-replica budgets (the limits are
//! abuse protection, not access control), logs it and counts it in `tollgate_rate_limit_fallbacks_total`.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use moka::future::Cache;

use crate::config::ops::RateLimitSettings;
use crate::store::redis::{Budget as SharedBudget, RedisError, SharedLimits};
use crate::telemetry;

/// How long an address that logged in successfully stays "known" for that account.
const KNOWN_GOOD_TTL: Duration = Duration::from_secs(24 * 3600);
/// A known-good entry is renewed by a login at most this often: renewing it on every login was a cache
/// write per token request, the largest cost of a warm login after the signature (BENCHMARKS.md, section 5).
const KNOWN_GOOD_RENEW: Duration = Duration::from_secs(3600);
/// Bounds on the bookkeeping, so a flood of addresses cannot exhaust memory.
const MAX_TRACKED: u64 = 100_000;

/// One budget: the GCRA limiter plus the keys currently blocked and until when.
struct Budget<K: Hash + Eq + Clone + Send + Sync + 'static> {
    limiter: DefaultKeyedRateLimiter<K>,
    blocked: Cache<K, Instant>,
    /// When the last block of any key ends, in nanoseconds since `base`: while none is in force (nearly
    /// always), a login skips the two cache reads (BENCHMARKS.md, section 5).
    any_blocked_until: AtomicU64,
    base: Instant,
    label: &'static str,
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> Budget<K> {
    fn new(failures: u32, window: Duration, label: &'static str) -> Budget<K> {
        let burst = NonZeroU32::new(failures.max(1)).unwrap_or(NonZeroU32::MIN);
        let period = (window / failures.max(1)).max(Duration::from_millis(1));
        let quota = Quota::with_period(period).unwrap_or_else(|| Quota::per_second(burst)).allow_burst(burst);
        Budget {
            limiter: RateLimiter::keyed(quota),
            blocked: Cache::builder().max_capacity(MAX_TRACKED).time_to_live(window).build(),
            any_blocked_until: AtomicU64::new(0),
            base: Instant::now(),
            label,
        }
    }

    /// Seconds until `key` may try again, if it is blocked now.
    async fn blocked_for(&self, key: &K) -> Option<u64> {
        if self.none_blocked() {
            return None;
        }
        let until = self.blocked.get(key).await?;
        let left = until.checked_duration_since(Instant::now())?;
        Some(left.as_secs_f64().ceil().max(1.0) as u64)
    }

    /// Spend one failure; when none was left, block the key and return the wait in seconds.
    async fn spend(&self, key: &K) -> Option<u64> {
        match self.limiter.check_key(key) {
            Ok(()) => None,
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let until = Instant::now() + wait;
                // Raised before the entry is written, so no reader can see the entry but not the bound.
                self.any_blocked_until.fetch_max(self.since_base(until), Ordering::AcqRel);
                self.blocked.insert(key.clone(), until).await;
                Some(wait.as_secs_f64().ceil().max(1.0) as u64)
            }
        }
    }

    fn none_blocked(&self) -> bool {
        self.since_base(Instant::now()) >= self.any_blocked_until.load(Ordering::Acquire)
    }

    fn since_base(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_nanos() as u64
    }

    fn too_many(&self, secs: u64) -> Limited {
        metrics::counter!(telemetry::RATE_LIMITED, "limit" => self.label).increment(1);
        Limited { retry_after: secs }
    }
}

/// A budget is used up: the request is refused (429) and may be tried again after `retry_after` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many failed logins; try again in {retry_after} s")]
pub struct Limited {
    pub retry_after: u64,
}

/// Usernames differ in case between providers (LDAP compares case-insensitively): one account, one budget.
fn account_key(account: &str) -> String {
    account.to_lowercase()
}

/// The shared store's answer (the inner result), or why it could not give one (then the local budgets decide).
type SharedVerdict = Result<Result<(), Limited>, RedisError>;

/// Failed-login limits shared by `/token` and `/whoami`.
pub struct LoginLimiter {
    settings: RateLimitSettings,
    by_ip: Budget<IpAddr>,
    by_account: Budget<String>,
    /// Known-good (account, address) pairs and when each was last written.
    known_good: Cache<(String, IpAddr), Instant>,
    /// Counts shared with the other replicas (Redis), when configured.
    shared: Option<Arc<SharedLimits>>,
    /// Known-good pairs written to the shared store in the last hour.
    shared_good_fresh: Cache<(String, IpAddr), ()>,
    /// Unix second of the last fallback warning, so a Redis outage logs once a minute, not per request.
    last_warning: AtomicU64,
}

impl LoginLimiter {
    pub fn new(settings: &RateLimitSettings) -> LoginLimiter {
        LoginLimiter {
            settings: settings.clone(),
            by_ip: Budget::new(settings.ip_failures, settings.window, "ip"),
            by_account: Budget::new(settings.account_failures, settings.window, "account"),
            known_good: Cache::builder().max_capacity(MAX_TRACKED).time_to_live(KNOWN_GOOD_TTL).build(),
            shared: None,
            shared_good_fresh: Cache::builder()
                .max_capacity(MAX_TRACKED)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            last_warning: AtomicU64::new(0),
        }
    }

    /// Count failures in a store shared by all replicas (falling back to this replica's own when it fails).
    pub fn with_shared(mut self, shared: Option<Arc<SharedLimits>>) -> LoginLimiter {
        self.shared = shared;
        self
    }

    /// The shared store failed: count it, warn at most once a minute, and let the caller use local budgets.
    fn fell_back(&self, error: &RedisError) {
        metrics::counter!(telemetry::RATE_LIMIT_FALLBACKS).increment(1);
        let now = crate::support::time::unix_now();
        let last = self.last_warning.load(Ordering::Relaxed);
        if now >= last + 60
            && self.last_warning.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(error = %error, "shared rate-limit store unavailable; counting failed logins per replica");
        }
    }

    async fn check_shared(&self, shared: &SharedLimits, ip: IpAddr, account: &str) -> SharedVerdict {
        let s = &self.settings;
        let key = account_key(account);
        let (by_ip, by_account) = shared.blocked_for(ip, &key, s.ip_failures, s.account_failures).await?;
        if let Some(secs) = by_ip {
            return Ok(Err(self.by_ip.too_many(secs)));
        }
        if let Some(secs) = by_account {
            if !shared.is_known_good(&key, ip).await? {
                return Ok(Err(self.by_account.too_many(secs)));
            }
        }
        Ok(Ok(()))
    }

    async fn failed_shared(&self, shared: &SharedLimits, ip: IpAddr, account: &str) -> SharedVerdict {
        let s = &self.settings;
        let by_ip = shared.spend(SharedBudget::Ip, ip, account, s.ip_failures, s.window).await?;
        let by_account =
            shared.spend(SharedBudget::Account, ip, &account_key(account), s.account_failures, s.window).await?;
        Ok(self.verdict(by_ip, by_account))
    }

    /// After a failure was counted in both budgets: 429 from the first one that is used up.
    fn verdict(&self, by_ip: Option<u64>, by_account: Option<u64>) -> Result<(), Limited> {
        match (by_ip, by_account) {
            (Some(secs), _) => Err(self.by_ip.too_many(secs)),
            (None, Some(secs)) => Err(self.by_account.too_many(secs)),
            (None, None) => Ok(()),
        }
    }

    /// The settings it was built from (a reload keeps the limiter, and its counts, when they are unchanged).
    pub fn settings(&self) -> &RateLimitSettings {
        &self.settings
    }

    /// Before a password is checked: refuse if the address, or the account from an unknown address, is blocked.
    pub async fn check(&self, ip: IpAddr, account: &str) -> Result<(), Limited> {
        if !self.settings.enabled {
            return Ok(());
        }
        if let Some(shared) = &self.shared {
            match self.check_shared(shared, ip, account).await {
                Ok(verdict) => return verdict,
                Err(e) => self.fell_back(&e),
            }
        }
        if let Some(secs) = self.by_ip.blocked_for(&ip).await {
            return Err(self.by_ip.too_many(secs));
        }
        if self.by_account.none_blocked() {
            return Ok(());
        }
        let key = account_key(account);
        if let Some(secs) = self.by_account.blocked_for(&key).await {
            if !self.known_good.contains_key(&(key, ip)) {
                return Err(self.by_account.too_many(secs));
            }
        }
        Ok(())
    }

    /// After a refused login. Err when this failure used up a budget: the caller answers 429 instead of 401.
    pub async fn failed(&self, ip: IpAddr, account: &str) -> Result<(), Limited> {
        if !self.settings.enabled {
            return Ok(());
        }
        if let Some(shared) = &self.shared {
            match self.failed_shared(shared, ip, account).await {
                Ok(verdict) => return verdict,
                Err(e) => self.fell_back(&e),
            }
        }
        let by_ip = self.by_ip.spend(&ip).await;
        let by_account = self.by_account.spend(&account_key(account)).await;
        self.verdict(by_ip, by_account)
    }

    /// After a successful password login: remember the address as known-good for the account.
    pub async fn succeeded(&self, ip: IpAddr, account: &str) {
        if self.settings.enabled {
            // Remembered locally as well, so the owner's address is still known during a Redis outage.
            let key = (account_key(account), ip);
            let renewed = self.known_good.get(&key).await;
            if renewed.is_none_or(|at| at.elapsed() >= KNOWN_GOOD_RENEW) {
                self.known_good.insert(key.clone(), Instant::now()).await;
            }
            // The shared entry lives a day: refresh it hourly, not on every login (a CI job logging in all
            // day would otherwise pay a Redis write per login). A failed write is retried on the next login.
            if let Some(shared) = &self.shared {
                if !self.shared_good_fresh.contains_key(&key) {
                    match shared.remember_good(&key.0, ip, KNOWN_GOOD_TTL).await {
                        Ok(()) => self.shared_good_fresh.insert(key, ()).await,
                        Err(e) => self.fell_back(&e),
                    }
                }
            }
        }
    }

    /// Drop governor's state for keys that have refilled (called periodically, bounds memory).
    pub fn housekeeping(&self) {
        self.by_ip.limiter.retain_recent();
        self.by_account.limiter.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(ip: u32, account: u32, window: Duration) -> LoginLimiter {
        LoginLimiter::new(&RateLimitSettings { enabled: true, ip_failures: ip, account_failures: account, window })
    }

    #[tokio::test]
    async fn a_flood_blocks_its_own_address_but_not_the_owner_and_the_block_ends() {
        let l = limiter(3, 5, Duration::from_secs(2));
        let attacker: IpAddr = "198.51.100.66".parse().unwrap();
        let owner: IpAddr = "192.0.2.10".parse().unwrap();
        let other: IpAddr = "192.0.2.77".parse().unwrap();
        l.succeeded(owner, "alice").await;
        for _ in 0..3 {
            l.check(attacker, "alice").await.unwrap();
            l.failed(attacker, "alice").await.unwrap();
        }
        let err = l.failed(attacker, "alice").await.unwrap_err();
        assert!(matches!(err, Limited { retry_after } if (1..=2).contains(&retry_after)));
        assert!(l.check(attacker, "alice").await.is_err(), "the address is blocked");
        assert!(l.check(other, "alice").await.is_ok(), "another address may still try alice");
        // Spend the account's budget from another address: unknown addresses are refused for alice, the
        // owner's known address is not.
        l.failed(other, "alice").await.unwrap_or(());
        l.failed(other, "alice").await.unwrap_or(());
        assert!(l.check(other, "alice").await.is_err());
        l.check(owner, "alice").await.expect("the owner's address that logged in before is never locked out");
        tokio::time::sleep(Duration::from_millis(2100)).await;
        l.check(attacker, "alice").await.expect("blocks end by themselves");
    }

    #[tokio::test]
    async fn disabled_limits_never_refuse() {
        let l = LoginLimiter::new(&RateLimitSettings {
            enabled: false,
            ip_failures: 1,
            account_failures: 1,
            window: Duration::from_secs(60),
        });
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..5 {
            l.failed(ip, "x").await.unwrap();
            l.check(ip, "x").await.unwrap();
        }
    }
}

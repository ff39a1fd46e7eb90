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

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use moka::future::Cache;

use super::error::ApiError;
use crate::config::ops::RateLimitSettings;
use crate::telemetry;

/// How long an address that logged in successfully stays "known" for that account.
const KNOWN_GOOD_TTL: Duration = Duration::from_secs(24 * 3600);
/// Bounds on the bookkeeping, so a flood of addresses cannot exhaust memory.
const MAX_TRACKED: u64 = 100_000;

/// One budget: the GCRA limiter plus the keys currently blocked and until when.
struct Budget<K: Hash + Eq + Clone + Send + Sync + 'static> {
    limiter: DefaultKeyedRateLimiter<K>,
    blocked: Cache<K, Instant>,
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
            label,
        }
    }

    /// Seconds until `key` may try again, if it is blocked now.
    async fn blocked_for(&self, key: &K) -> Option<u64> {
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
                self.blocked.insert(key.clone(), Instant::now() + wait).await;
                Some(wait.as_secs_f64().ceil().max(1.0) as u64)
            }
        }
    }

    fn too_many(&self, secs: u64) -> ApiError {
        metrics::counter!(telemetry::RATE_LIMITED, "limit" => self.label).increment(1);
        ApiError::TooManyRequests { retry_after: secs }
    }
}

/// Usernames differ in case between providers (LDAP compares case-insensitively): one account, one budget.
fn account_key(account: &str) -> String {
    account.to_lowercase()
}

/// Failed-login limits shared by `/token` and `/whoami`.
pub struct LoginLimiter {
    settings: RateLimitSettings,
    by_ip: Budget<IpAddr>,
    by_account: Budget<String>,
    known_good: Cache<(String, IpAddr), ()>,
}

impl LoginLimiter {
    pub fn new(settings: &RateLimitSettings) -> LoginLimiter {
        LoginLimiter {
            settings: settings.clone(),
            by_ip: Budget::new(settings.ip_failures, settings.window, "ip"),
            by_account: Budget::new(settings.account_failures, settings.window, "account"),
            known_good: Cache::builder().max_capacity(MAX_TRACKED).time_to_live(KNOWN_GOOD_TTL).build(),
        }
    }

    /// The settings it was built from (a reload keeps the limiter, and its counts, when they are unchanged).
    pub fn settings(&self) -> &RateLimitSettings {
        &self.settings
    }

    /// Before a password is checked: refuse if the address, or the account from an unknown address, is blocked.
    pub async fn check(&self, ip: IpAddr, account: &str) -> Result<(), ApiError> {
        if !self.settings.enabled {
            return Ok(());
        }
        if let Some(secs) = self.by_ip.blocked_for(&ip).await {
            return Err(self.by_ip.too_many(secs));
        }
        if let Some(secs) = self.by_account.blocked_for(&account_key(account)).await {
            if !self.known_good.contains_key(&(account_key(account), ip)) {
                return Err(self.by_account.too_many(secs));
            }
        }
        Ok(())
    }

    /// After a refused login. Err when this failure used up a budget: the caller answers 429 instead of 401.
    pub async fn failed(&self, ip: IpAddr, account: &str) -> Result<(), ApiError> {
        if !self.settings.enabled {
            return Ok(());
        }
        let by_ip = self.by_ip.spend(&ip).await;
        let by_account = self.by_account.spend(&account_key(account)).await;
        match (by_ip, by_account) {
            (Some(secs), _) => Err(self.by_ip.too_many(secs)),
            (None, Some(secs)) => Err(self.by_account.too_many(secs)),
            (None, None) => Ok(()),
        }
    }

    /// After a successful password login: remember the address as known-good for the account.
    pub async fn succeeded(&self, ip: IpAddr, account: &str) {
        if self.settings.enabled {
            self.known_good.insert((account_key(account), ip), ()).await;
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
        assert!(matches!(err, ApiError::TooManyRequests { retry_after } if (1..=2).contains(&retry_after)));
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

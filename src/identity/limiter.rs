//! Rate limiting of FAILED logins (governor's GCRA), in three budgets:
//! - per client address AND account (`client_account_failures`): a client guessing, or a CI job retrying a
//!   stale secret, blocks only itself: that account from that address;
//! - per address, counting each account once per window (`ip_failures`): spraying many usernames from one
//!   address blocks the address, while a thousand retries of one account count as one;
//! - per account from all addresses (`account_failures`): a distributed attack on one account.
//!
//! Only failures spend budget: a CI system logging in a thousand times an hour with the right secret is never
//! limited. A failure that finds its budget empty blocks that key until governor says a new attempt is
//! allowed; blocked requests are answered 429 with `Retry-After` BEFORE any password is checked (so a blocked
//! attacker learns nothing) and spend nothing (so the block never extends itself). Account names are
//! compared case-insensitively (`CI-PAYMENTS` and `ci-payments` share every budget).
//!
//! Budgets are keyed only on what is proven. The sender's address is (it completed a TCP handshake; an
//! IPv6 sender is its /64, `support::net::sender`); a typed username is what it is. The subject a signed
//! credential claims is not, until its signature or MAC verifies: anyone can mint a JWT saying
//! `sub: repo:acme/app` with their own key. So a credential whose subject is unproven
//! ([`LoginLimiter::check_unproven`], [`LoginLimiter::failed_unproven`]) spends only budgets that contain the
//! sender's address (the pair and the address), never the account's budget across addresses: forged tokens
//! from a thousand addresses lock out those addresses, not the job whose subject they name.
//!
//! Why bystanders and the right password are never locked out for good:
//! - budgets refill continuously (one attempt per `window / failures`), so any block ends by itself;
//! - one client's failures on one account never block other accounts behind the same address (a NAT of
//!   500 users with one stale CI secret among them locks out nobody else);
//! - an address blocked for spraying, and an account under attack from many addresses, still accept logins
//!   from (address, account) pairs that logged in successfully in the last day.
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
use crate::support::net::sender;
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

/// Usernames differ in case between providers (LDAP compares case-insensitively): one account, one budget,
/// whatever the case or the surrounding blanks a client sends.
fn account_key(account: &str) -> String {
    account.trim().to_lowercase()
}

/// A login being checked; see [`LoginLimiter::attempt`].
pub struct Attempt {
    limiter: Option<Arc<LoginLimiter>>,
    ip: IpAddr,
    account: String,
}

impl Attempt {
    /// The login got its answer: the caller counts it.
    pub fn settled(mut self) {
        self.limiter = None;
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let Some(limiter) = self.limiter.take() else { return };
        metrics::counter!(telemetry::LOGINS_ABANDONED).increment(1);
        let (ip, account) = (self.ip, std::mem::take(&mut self.account));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = limiter.failed_unproven(ip, &account).await;
            });
        }
    }
}

/// The shared store's answer (the inner result), or why it could not give one (then the local budgets decide).
type SharedVerdict = Result<Result<(), Limited>, RedisError>;

/// Failed-login limits shared by `/token` and `/whoami`.
pub struct LoginLimiter {
    settings: RateLimitSettings,
    by_client_account: Budget<(IpAddr, String)>,
    by_ip: Budget<IpAddr>,
    by_account: Budget<String>,
    /// (address, account) pairs that failed in the current window: the per-address budget counts each once.
    tried: Cache<(IpAddr, String), ()>,
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
            by_client_account: Budget::new(settings.client_account_failures, settings.window, "client_account"),
            by_ip: Budget::new(settings.ip_failures, settings.window, "ip"),
            by_account: Budget::new(settings.account_failures, settings.window, "account"),
            tried: Cache::builder().max_capacity(MAX_TRACKED).time_to_live(settings.window).build(),
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

    async fn check_shared(&self, shared: &SharedLimits, ip: IpAddr, account: &str, proven: bool) -> SharedVerdict {
        let s = &self.settings;
        let key = account_key(account);
        let limits = (s.client_account_failures, s.ip_failures, s.account_failures);
        let (by_client_account, by_ip, by_account) = shared.blocked_for(ip, &key, limits).await?;
        let by_account = by_account.filter(|_| proven);
        if let Some(secs) = by_client_account {
            return Ok(Err(self.by_client_account.too_many(secs)));
        }
        if by_ip.is_some() || by_account.is_some() {
            if shared.is_known_good(&key, ip).await? {
                return Ok(Ok(()));
            }
            if let Some(secs) = by_ip {
                return Ok(Err(self.by_ip.too_many(secs)));
            }
            if let Some(secs) = by_account {
                return Ok(Err(self.by_account.too_many(secs)));
            }
        }
        Ok(Ok(()))
    }

    async fn failed_shared(&self, shared: &SharedLimits, ip: IpAddr, account: &str, proven: bool) -> SharedVerdict {
        let s = &self.settings;
        let key = account_key(account);
        let by_client_account =
            shared.spend(SharedBudget::ClientAccount, ip, &key, s.client_account_failures, s.window).await?;
        let by_ip = match shared.first_try(ip, &key, s.window).await? {
            true => shared.spend(SharedBudget::Ip, ip, &key, s.ip_failures, s.window).await?,
            false => None,
        };
        let by_account = match proven {
            true => shared.spend(SharedBudget::Account, ip, &key, s.account_failures, s.window).await?,
            false => None,
        };
        Ok(self.verdict(by_client_account, by_ip, by_account))
    }

    /// After a failure was counted in every budget: 429 from the first one that is used up.
    fn verdict(
        &self,
        by_client_account: Option<u64>,
        by_ip: Option<u64>,
        by_account: Option<u64>,
    ) -> Result<(), Limited> {
        match (by_client_account, by_ip, by_account) {
            (Some(secs), _, _) => Err(self.by_client_account.too_many(secs)),
            (None, Some(secs), _) => Err(self.by_ip.too_many(secs)),
            (None, None, Some(secs)) => Err(self.by_account.too_many(secs)),
            (None, None, None) => Ok(()),
        }
    }

    /// The settings it was built from (a reload keeps the limiter, and its counts, when they are unchanged).
    pub fn settings(&self) -> &RateLimitSettings {
        &self.settings
    }

    /// Before a password is checked: refuse if this client's attempts on the account are used up, or the
    /// address or the account is blocked and this (address, account) pair has not logged in before.
    pub async fn check(&self, ip: IpAddr, account: &str) -> Result<(), Limited> {
        self.check_as(sender(ip), account, true).await
    }

    /// Before a credential whose subject is unproven yet (a JWT, a refresh token) is verified: as
    /// [`LoginLimiter::check`], but the claimed subject's budget across addresses is not consulted (it is
    /// never spent by unproven credentials either).
    pub async fn check_unproven(&self, ip: IpAddr, claimed: &str) -> Result<(), Limited> {
        self.check_as(sender(ip), claimed, false).await
    }

    async fn check_as(&self, ip: IpAddr, account: &str, proven: bool) -> Result<(), Limited> {
        if !self.settings.enabled {
            return Ok(());
        }
        if let Some(shared) = &self.shared {
            match self.check_shared(shared, ip, account, proven).await {
                Ok(verdict) => return verdict,
                Err(e) => self.fell_back(&e),
            }
        }
        if self.by_client_account.none_blocked() && self.by_ip.none_blocked() && self.by_account.none_blocked() {
            return Ok(());
        }
        let key = account_key(account);
        let pair = (ip, key);
        if let Some(secs) = self.by_client_account.blocked_for(&pair).await {
            return Err(self.by_client_account.too_many(secs));
        }
        let (ip, key) = pair;
        let by_ip = self.by_ip.blocked_for(&ip).await;
        let by_account = match proven {
            true => self.by_account.blocked_for(&key).await,
            false => None,
        };
        if (by_ip.is_some() || by_account.is_some()) && self.known_good.contains_key(&(key, ip)) {
            return Ok(());
        }
        match (by_ip, by_account) {
            (Some(secs), _) => Err(self.by_ip.too_many(secs)),
            (None, Some(secs)) => Err(self.by_account.too_many(secs)),
            (None, None) => Ok(()),
        }
    }

    /// After a refused login. Err when this failure used up a budget: the caller answers 429 instead of 401.
    pub async fn failed(&self, ip: IpAddr, account: &str) -> Result<(), Limited> {
        self.failed_as(sender(ip), account, true).await
    }

    /// After a refused credential whose subject was not proven (its signature or MAC did not verify, or it
    /// was never checked): charged to the sender's address only, the (address, claimed subject) pair and the
    /// address's budget, never to the claimed subject across addresses.
    pub async fn failed_unproven(&self, ip: IpAddr, claimed: &str) -> Result<(), Limited> {
        self.failed_as(sender(ip), claimed, false).await
    }

    async fn failed_as(&self, ip: IpAddr, account: &str, proven: bool) -> Result<(), Limited> {
        if !self.settings.enabled {
            return Ok(());
        }
        if let Some(shared) = &self.shared {
            match self.failed_shared(shared, ip, account, proven).await {
                Ok(verdict) => return verdict,
                Err(e) => self.fell_back(&e),
            }
        }
        let key = account_key(account);
        let pair = (ip, key);
        let by_client_account = self.by_client_account.spend(&pair).await;
        // The address's budget counts accounts, not attempts: only the first failure of an account here.
        let by_ip = match self.tried.contains_key(&pair) {
            true => None,
            false => {
                self.tried.insert(pair.clone(), ()).await;
                self.by_ip.spend(&ip).await
            }
        };
        let by_account = match proven {
            true => self.by_account.spend(&pair.1).await,
            false => None,
        };
        self.verdict(by_client_account, by_ip, by_account)
    }

    /// After a successful password login: remember the address as known-good for the account.
    pub async fn succeeded(&self, ip: IpAddr, account: &str) {
        let ip = sender(ip);
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

    /// The password-check ticket of a login of `account` from `ip`: its sender (an IPv6 /64), and whether
    /// this pair logged in successfully before (it is then served first, `hashing::verify`).
    pub fn ticket(&self, ip: IpAddr, account: &str) -> crate::identity::hashing::Ticket {
        let (sender, account) = (sender(ip), account_key(account));
        let known = self.known_good.contains_key(&(account.clone(), sender));
        crate::identity::hashing::Ticket { sender, account, known }
    }

    /// A password login of `account` from `ip` about to be checked: when it is dropped before
    /// [`Attempt::settled`] (its client went away mid-check and the request was cancelled), it is counted in
    /// `tollgate_logins_abandoned_total` and charged to the sender as a failure whose password was not
    /// checked ([`LoginLimiter::failed_unproven`]): hanging up must not make guessing free.
    pub fn attempt(self: &Arc<Self>, ip: IpAddr, account: &str) -> Attempt {
        Attempt { limiter: Some(Arc::clone(self)), ip, account: account.to_string() }
    }

    /// Drop governor's state for keys that have refilled (called periodically, bounds memory).
    pub fn housekeeping(&self) {
        self.by_client_account.limiter.retain_recent();
        self.by_ip.limiter.retain_recent();
        self.by_account.limiter.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(client_account: u32, ip: u32, account: u32, window: Duration) -> LoginLimiter {
        LoginLimiter::new(&RateLimitSettings {
            enabled: true,
            client_account_failures: client_account,
            ip_failures: ip,
            account_failures: account,
            window,
        })
    }

    fn addr(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn spraying_blocks_the_address_except_for_pairs_that_logged_in_and_the_block_ends() {
        let l = limits(1000, 3, 1000, Duration::from_secs(2));
        let (nat, other) = (addr("198.51.100.66"), addr("192.0.2.77"));
        l.succeeded(nat, "carol").await;
        for user in ["u1", "u2", "u3"] {
            l.check(nat, user).await.unwrap();
            l.failed(nat, user).await.unwrap();
        }
        // Retries of an account already tried spend nothing more of the address's budget.
        l.failed(nat, "u3").await.unwrap();
        l.failed(nat, "U3").await.unwrap();
        let err = l.failed(nat, "u4").await.unwrap_err();
        assert!(matches!(err, Limited { retry_after } if (1..=2).contains(&retry_after)), "{err:?}");
        assert!(l.check(nat, "dave").await.is_err(), "the spraying address is blocked");
        l.check(nat, "carol").await.expect("a pair that logged in before still gets through");
        l.check(other, "dave").await.expect("other addresses are not affected");
        tokio::time::sleep(Duration::from_millis(2100)).await;
        l.check(nat, "dave").await.expect("blocks end by themselves");
    }

    #[tokio::test]
    async fn one_stale_secret_behind_a_shared_address_blocks_only_itself_and_case_variants_share_its_budget() {
        let l = limits(3, 30, 1000, Duration::from_secs(60));
        let (nat, other) = (addr("203.0.113.5"), addr("192.0.2.10"));
        for name in ["ci-payments", "CI-PAYMENTS", " Ci-Payments"] {
            l.check(nat, name).await.unwrap();
            l.failed(nat, name).await.unwrap();
        }
        assert!(l.failed(nat, "ci-payments").await.is_err(), "the fourth failure of the pair is one too many");
        assert!(l.check(nat, "ci-payments").await.is_err());
        assert!(l.check(nat, "CI-Payments").await.is_err(), "a case variant is the same account");
        for bystander in ["alice", "bob", "ci-web"] {
            l.check(nat, bystander).await.expect("everyone else behind the address logs in");
        }
        l.check(other, "ci-payments").await.expect("the account from elsewhere is not blocked");
    }

    #[tokio::test]
    async fn an_account_attacked_from_many_addresses_still_admits_its_owner() {
        let l = limits(1000, 1000, 5, Duration::from_secs(2));
        let owner = addr("192.0.2.10");
        l.succeeded(owner, "alice").await;
        for i in 0..5 {
            l.failed(addr(&format!("198.51.100.{i}")), "alice").await.unwrap();
        }
        assert!(l.failed(addr("198.51.100.99"), "alice").await.is_err());
        assert!(l.check(addr("198.51.100.100"), "alice").await.is_err(), "unknown addresses are refused");
        l.check(owner, "alice").await.expect("the owner's known address is never locked out");
        tokio::time::sleep(Duration::from_millis(2100)).await;
        l.check(addr("198.51.100.100"), "alice").await.expect("blocks end by themselves");
    }

    #[tokio::test]
    async fn unproven_subjects_spend_only_their_senders_budgets_and_an_ipv6_sender_is_its_slash_64() {
        let l = limits(3, 4, 5, Duration::from_secs(60));
        for i in 0..50 {
            let _ = l.failed_unproven(addr(&format!("198.51.100.{i}")), "workload iss repo:acme/app").await;
        }
        l.check_unproven(addr("192.0.2.10"), "workload iss repo:acme/app")
            .await
            .expect("the claimed subject's budget across addresses was not spent");
        assert!(l.check_unproven(addr("198.51.100.1"), "workload iss repo:acme/app").await.is_ok());
        for _ in 0..3 {
            let _ = l.failed_unproven(addr("198.51.100.1"), "workload iss repo:acme/app").await;
        }
        assert!(l.check_unproven(addr("198.51.100.1"), "workload iss repo:acme/app").await.is_err(), "the pair");
        // Five accounts from five addresses of one /64 use up that /64's budget (four), not five budgets.
        for (i, user) in ["u1", "u2", "u3", "u4", "u5"].iter().enumerate() {
            let _ = l.failed(addr(&format!("2001:db8:0:7::{}", i + 1)), user).await;
        }
        assert!(l.check(addr("2001:db8:0:7:ffff::9"), "anyone").await.is_err(), "the /64 is blocked");
        l.check(addr("2001:db8:0:8::1"), "anyone").await.expect("the next /64 is not");
    }

    #[tokio::test]
    async fn disabled_limits_never_refuse() {
        let l = LoginLimiter::new(&RateLimitSettings {
            enabled: false,
            client_account_failures: 1,
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

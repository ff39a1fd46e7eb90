//! What a directory watcher reports, and how it says the identity cache may not be trusted for long.
//!
//! A watcher (the LDAP and Active Directory ones live in [`crate::identity::ldap::watch`]) turns the
//! directory's own change feed into [`Change`]s and hands each to a [`ChangeSink`]. The sink decides what a
//! change means for identities already vouched for (the invalidation path drops them on every replica);
//! the watcher only promises that the names in a change are spelt exactly as the provider spells them in an
//! [`crate::identity::Identity`]: `username` is the login name (`username_attribute`'s value), `group` the
//! group's name after the provider's mapping (`groups.prefix`, `groups.lowercase`).
//!
//! A watcher that cannot see changes (its connection down longer than its bound) marks its provider
//! *degraded* through [`Freshness`]: the identity cache in front of that provider then treats its entries as
//! fresh for the short degraded TTL only, so a change the watcher misses meanwhile is picked up within that
//! TTL instead of the full cache TTL. Recovery clears it.
//!
//! Freshness marks live in one process-wide table keyed by provider name, because the cache in front of a
//! provider is rebuilt on every configuration reload while the watcher keeps running: both find the same mark
//! by name, as both find the same metrics by name.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// One change seen in a directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Change {
    /// A user entry changed in a way that can change what it is granted or whether it may log in: its
    /// membership attribute, its account state (disabled, locked, expired), deleted, or renamed (then one
    /// change for the old name and one for the new).
    Account { provider: String, username: String },
    /// A group entry changed (members added or removed, renamed, deleted). `members` are the login names of
    /// its members now, as far as the watcher can name them (members that are not users it knows, such as
    /// nested groups, are left out). Identities that list `group` are affected whatever `members` says: a
    /// member just removed is, by definition, not in it.
    Group { provider: String, group: String, members: Vec<String> },
}

impl Change {
    /// `account` or `group`, for metrics and the log.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Account { .. } => "account",
            Change::Group { .. } => "group",
        }
    }

    pub fn provider(&self) -> &str {
        match self {
            Change::Account { provider, .. } | Change::Group { provider, .. } => provider,
        }
    }
}

/// Where a watcher sends what it sees. `at_ms` is when the watcher learnt of the change (unix
/// milliseconds): the moment an invalidation takes effect "as of". Called from the watcher's task; must not
/// block for long.
pub trait ChangeSink: Send + Sync {
    fn changed(&self, change: Change, at_ms: u64);
}

/// Changes counted, by provider and kind.
pub const CHANGES_METRIC: &str = "tollgate_directory_changes_total";

/// The record of every change (the server's sink calls it before invalidating): logged at info level
/// (names only, never an attribute value besides them) and counted in [`CHANGES_METRIC`].
#[derive(Debug, Default, Clone, Copy)]
pub struct LogSink;

impl ChangeSink for LogSink {
    fn changed(&self, change: Change, at_ms: u64) {
        metrics::counter!(CHANGES_METRIC, "provider" => change.provider().to_string(), "kind" => change.kind())
            .increment(1);
        match &change {
            Change::Account { provider, username } => {
                tracing::info!(provider = %provider, user = %username, at_ms, "directory change: account")
            }
            Change::Group { provider, group, members } => {
                // A big group's member list would make one log line of megabytes: the first 20 names.
                let shown = members.iter().take(20).cloned().collect::<Vec<_>>().join(",");
                tracing::info!(provider = %provider, group = %group, members = %shown, member_count = members.len(),
                    at_ms, "directory change: group")
            }
        }
    }
}

/// Whether a provider's watcher currently sees changes, as the identity cache reads it.
#[derive(Debug, Default)]
pub struct Freshness {
    /// The degraded TTL in milliseconds while degraded; 0 when the watcher is fine (or there is none).
    degraded_ttl_ms: AtomicU64,
}

impl Freshness {
    /// The mark of the provider named `provider`, created on first use.
    pub fn of(provider: &str) -> Arc<Freshness> {
        static TABLE: OnceLock<Mutex<HashMap<String, Arc<Freshness>>>> = OnceLock::new();
        let table = TABLE.get_or_init(Default::default);
        let mut table = match table.lock() {
            Ok(t) => t,
            Err(p) => p.into_inner(),
        };
        table.entry(provider.to_string()).or_default().clone()
    }

    /// How long an identity stays fresh now: `ttl`, or the degraded TTL if that is shorter.
    pub fn ttl(&self, ttl: Duration) -> Duration {
        match self.degraded_ttl_ms.load(Ordering::Relaxed) {
            0 => ttl,
            ms => ttl.min(Duration::from_millis(ms)),
        }
    }

    /// Degraded: identities are fresh for `ttl` at most (at least 1 ms).
    pub fn degrade(&self, ttl: Duration) {
        self.degraded_ttl_ms.store((ttl.as_millis() as u64).max(1), Ordering::Relaxed);
    }

    pub fn recover(&self) {
        self.degraded_ttl_ms.store(0, Ordering::Relaxed);
    }

    pub fn is_degraded(&self) -> bool {
        self.degraded_ttl_ms.load(Ordering::Relaxed) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_degraded_mark_shortens_the_ttl_until_recovery_and_is_shared_by_name() {
        let a = Freshness::of("watch-test-a");
        let ttl = Duration::from_secs(300);
        assert_eq!(a.ttl(ttl), ttl);
        Freshness::of("watch-test-a").degrade(Duration::from_secs(10));
        assert!(a.is_degraded());
        assert_eq!(a.ttl(ttl), Duration::from_secs(10));
        assert_eq!(a.ttl(Duration::from_secs(2)), Duration::from_secs(2), "never longer than the TTL");
        assert_eq!(Freshness::of("watch-test-b").ttl(ttl), ttl, "other providers are not affected");
        a.recover();
        assert_eq!(Freshness::of("watch-test-a").ttl(ttl), ttl);
    }
}

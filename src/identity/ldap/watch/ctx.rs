//! The state one provider's watcher shares between its supervisor and its feeds: the connection recipe,
//! the tracker, the sink, and the in-sync / degraded bookkeeping (see the parent module for what degraded
//! means).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ldap3::{Ldap, Scope, SearchEntry};
use secrecy::ExposeSecret as _;

use super::track::{Naming, Tracker};
use crate::config::ldap::WatchSettings;
use crate::identity::ldap::pool::{Connector, Op};
use crate::identity::ldap::ServiceAccount;
use crate::identity::watch::{Change, ChangeSink, Freshness};
use crate::support::time::unix_now_ms;

/// Gauge: 1 while the provider's watcher is degraded.
pub const DEGRADED_METRIC: &str = "tollgate_ldap_watch_degraded";
/// Counter: times a provider's watcher became degraded.
pub const DEGRADATIONS_METRIC: &str = "tollgate_ldap_watch_degradations_total";
/// Content synchronisation (RFC 4533).
pub const SYNC_OID: &str = "1.3.6.1.4.1.4203.1.9.1.1";
/// Active Directory's LDAP_SERVER_NOTIFICATION_OID.
pub const NOTIFY_OID: &str = "1.2.840.113556.1.4.528";

/// What a running watcher shows to tests and the log.
#[derive(Debug, Default)]
pub struct Status {
    /// In sync with the directory right now.
    pub up: AtomicBool,
    pub degraded: AtomicBool,
    /// Changes reported so far.
    pub changes: AtomicU64,
    /// Change notifications received (`ad_notify`).
    pub notifications: AtomicU64,
    /// Sessions (connections) opened so far.
    pub sessions: AtomicU64,
    /// `auto` found nothing to watch with: the watcher stopped for good (not degraded).
    pub unsupported: AtomicBool,
    /// The feed in use: `syncrepl`, `ad_notify`, `usn_poll`, or empty before the first session.
    pub mode: Mutex<&'static str>,
}

impl Status {
    pub fn mode(&self) -> &'static str {
        self.mode.lock().map(|m| *m).unwrap_or("")
    }
}

/// What a session needs; shared by the supervisor and the feeds.
pub struct Ctx {
    pub name: String,
    pub connector: Arc<Connector>,
    pub service: ServiceAccount,
    pub naming: Naming,
    pub settings: WatchSettings,
    /// The bases watched: the users base and the groups base, one of them when one holds the other.
    pub bases: Vec<String>,
    pub tracker: Mutex<Tracker>,
    pub state_file: PathBuf,
    /// The tracker changed since it was last written.
    pub dirty: AtomicBool,
    pub sink: Arc<dyn ChangeSink>,
    pub status: Arc<Status>,
    pub freshness: Arc<Freshness>,
    /// When the watcher last stopped seeing changes; None while in sync.
    pub down_since: Mutex<Option<Instant>>,
    /// Why the last session ended, for the degraded warning.
    pub last_error: Mutex<String>,
    /// When the tracker was last written.
    pub last_save: Mutex<Instant>,
}

pub fn track_attr(entry: &SearchEntry, name: &str) -> Vec<String> {
    entry.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()).unwrap_or_default()
}

impl Ctx {
    /// A new connection of the watcher's own, bound as the service account.
    pub async fn connect(&self) -> Result<Ldap, String> {
        let mut ldap = self.connector.connect().await.map_err(|e| format!("connect: {e}"))?;
        if let Some((dn, password)) = &self.service {
            self.connector.count(Op::ServiceBind);
            ldap.with_timeout(self.connector.op_timeout)
                .simple_bind(dn, password.expose_secret())
                .await
                .and_then(|r| r.success())
                .map_err(|e| format!("service bind: {e}"))?;
        }
        Ok(ldap)
    }

    /// The root DSE's `attrs`.
    pub async fn root_dse(&self, ldap: &mut Ldap, attrs: &[&str]) -> Result<SearchEntry, String> {
        self.connector.count(Op::Search);
        let (entries, res) = ldap
            .with_timeout(self.connector.op_timeout)
            .search("", Scope::Base, "(objectClass=*)", attrs.to_vec())
            .await
            .and_then(|r| r.success())
            .map_err(|e| format!("root DSE: {e}"))?;
        entries.into_iter().next().map(SearchEntry::construct).ok_or_else(|| format!("root DSE: no entry ({res:?})"))
    }

    /// Hand changes to the sink.
    pub fn report(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let at = unix_now_ms();
        self.status.changes.fetch_add(changes.len() as u64, Ordering::Relaxed);
        for c in changes {
            self.sink.changed(c, at);
        }
    }

    /// The tracker changed: write it at the next housekeeping.
    pub fn touched(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// In sync with the directory: clear a degraded mark.
    pub fn in_sync(&self) {
        self.status.up.store(true, Ordering::Relaxed);
        let was = self.down_since.lock().map(|mut d| d.take()).unwrap_or(None);
        if self.status.degraded.swap(false, Ordering::Relaxed) {
            self.freshness.recover();
            metrics::gauge!(DEGRADED_METRIC, "provider" => self.name.clone()).set(0.0);
            tracing::info!(provider = %self.name, down_s = was.map(|w| w.elapsed().as_secs_f64()).unwrap_or(0.0),
                mode = self.status.mode(), "directory watcher recovered; identities live for the full cache TTL again");
        } else if was.is_some() {
            tracing::info!(provider = %self.name, mode = self.status.mode(), "directory watcher in sync");
        }
        self.save();
    }

    /// `auto` found no feed: stop for good, never degraded.
    pub fn unsupported(&self) {
        self.status.unsupported.store(true, Ordering::Relaxed);
        if let Ok(mut d) = self.down_since.lock() {
            *d = None;
        }
    }

    pub fn went_down(&self) {
        if let Ok(mut d) = self.down_since.lock() {
            d.get_or_insert_with(Instant::now);
        }
    }

    /// Degrade after the bound; write the tracker if it changed.
    pub fn housekeeping(&self) {
        let down_for = self.down_since.lock().ok().and_then(|d| d.map(|d| d.elapsed()));
        if let Some(down_for) = down_for {
            if down_for >= self.settings.degraded_after && !self.status.degraded.swap(true, Ordering::Relaxed) {
                self.freshness.degrade(self.settings.degraded_ttl);
                metrics::gauge!(DEGRADED_METRIC, "provider" => self.name.clone()).set(1.0);
                metrics::counter!(DEGRADATIONS_METRIC, "provider" => self.name.clone()).increment(1);
                let error = self.last_error.lock().map(|e| e.clone()).unwrap_or_default();
                tracing::warn!(provider = %self.name, down_s = down_for.as_secs_f64(), error = %error,
                    degraded_ttl_s = self.settings.degraded_ttl.as_secs_f64(),
                    "freshness degraded: the directory watcher has seen no changes for longer than \
                     watch.degraded_after; identities from this provider live for degraded_ttl only");
            }
        }
        // At most every 2 s: a large directory's state is megabytes. A crash loses at most the last 2 s of
        // position, which the next start replays (what was already reported compares equal).
        let due = self.last_save.lock().map(|t| t.elapsed() >= Duration::from_secs(2)).unwrap_or(true);
        if due && self.dirty.load(Ordering::Relaxed) {
            self.save();
        }
    }

    pub fn save_if_dirty(&self) {
        if self.dirty.load(Ordering::Relaxed) {
            self.save();
        }
    }

    fn save(&self) {
        self.dirty.store(false, Ordering::Relaxed);
        if let Ok(mut t) = self.last_save.lock() {
            *t = Instant::now();
        }
        let written = match self.tracker.lock() {
            Ok(t) => t.save(&self.state_file),
            Err(_) => return,
        };
        if let Err(e) = written {
            tracing::warn!(provider = %self.name, error = %e, "cannot write the directory watcher's state");
        }
    }
}

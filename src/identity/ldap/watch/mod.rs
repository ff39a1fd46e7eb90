//! The directory watcher of one LDAP provider: sees changes at the source within seconds and reports each as
//! a [`Change`] to a [`ChangeSink`].
//!
//! Two feeds, chosen by `watch.mode` (or, with `auto`, by what the root DSE offers):
//! - [`syncrepl`]: RFC 4533 content synchronisation in refreshAndPersist mode, one long-lived search per
//!   watched base (the users base and the groups base) on a connection of the watcher's own. OpenLDAP
//!   serves it through the `syncprov` overlay. The cookie is kept (and persisted), so after a disconnect or a
//!   restart the directory sends what changed meanwhile.
//! - [`usn`]: Active Directory. Every `poll_interval` the root DSE's `highestCommittedUSN` is read; when it
//!   moved, the entries with a higher `uSNChanged` are read (and deleted ones, through the show-deleted
//!   control), and the watcher resumes from the last USN after an outage. `ad_notify` asks for the change
//!   notification control (LDAP_SERVER_NOTIFICATION_OID) on the naming context as a wake-up and reads the
//!   changes the same way; it falls back to polling where the DC does not offer the control.
//!
//! Both reduce entries through [`track`], so an entry seen again unchanged reports nothing and a group edit
//! names every member added or removed.
//!
//! When the watcher cannot see changes for longer than `watch.degraded_after` (the connection is down, the
//! directory refuses the search), the provider is *degraded*: a warning is logged, the gauge
//! `tollgate_ldap_watch_degraded{provider}` is 1, `tollgate_ldap_watch_degradations_total` counts it, and the
//! identity cache serves that provider's identities as fresh for `watch.degraded_ttl` only
//! ([`crate::identity::watch::Freshness`]). Reconnection uses exponential backoff (250 ms to 30 s, never
//! longer than a quarter of the bound); once in sync again, the mark is cleared.

pub mod ctx;
pub mod syncrepl;
pub mod track;
pub mod usn;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use self::ctx::{track_attr, Ctx};
pub use self::ctx::{Status, DEGRADATIONS_METRIC, DEGRADED_METRIC, NOTIFY_OID, SYNC_OID};
use self::track::{Naming, Tracker};
use super::pool::OpCounters;
use super::text::is_under;
use crate::config::ldap::{LdapSettings, WatchMode};
use crate::identity::watch::{ChangeSink, Freshness};

/// A running watcher; stops when dropped.
pub struct Watcher {
    task: tokio::task::JoinHandle<()>,
    ctx: Arc<Ctx>,
    pub status: Arc<Status>,
    /// LDAP operations the watcher sent (its own connections only).
    pub counters: Arc<OpCounters>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
        // Keep the position reached (a reload or a shutdown): the next watcher resumes from it.
        self.ctx.save_if_dirty();
    }
}

/// Start watching the directory of `cfg` (None with `watch.mode: off`). The watcher's state (syncrepl
/// cookies, the last USN, the entries it knows) is kept in `data_dir/watch/`. Must run inside a tokio runtime.
pub fn spawn(cfg: &LdapSettings, data_dir: &Path, sink: Arc<dyn ChangeSink>) -> Result<Option<Watcher>, Vec<String>> {
    if cfg.watch.mode == WatchMode::Off {
        return Ok(None);
    }
    let counters = Arc::new(OpCounters::default());
    let (connector, service) = super::connection(cfg, counters.clone())?;
    let mut bases: Vec<String> = Vec::new();
    // Direct bind has no users base: the template's parent (`uid={username},ou=people,…` → `ou=people,…`).
    let template_parent = cfg.user_dn_template.as_deref().and_then(|t| {
        let mut escaped = false;
        t.char_indices().find_map(|(i, c)| {
            let found = c == ',' && !escaped;
            escaped = c == '\\' && !escaped;
            found.then(|| t[i + 1..].trim().to_string())
        })
    });
    let users = cfg.user_base_dn.clone().or(template_parent);
    for b in [users, cfg.groups.base_dn.clone()].into_iter().flatten() {
        if b.trim().is_empty() || bases.iter().any(|have| is_under(&b, have)) {
            continue;
        }
        bases.retain(|have| !is_under(have, &b));
        bases.push(b);
    }
    if bases.is_empty() {
        return Err(vec![format!(
            "provider {:?}: watch: no user_base_dn or groups.base_dn to watch (set watch.mode: off)",
            cfg.name
        )]);
    }
    let state_file = track::state_file(data_dir, &cfg.name);
    let status = Arc::new(Status::default());
    let ctx = Arc::new(Ctx {
        name: cfg.name.clone(),
        connector,
        service,
        naming: Naming::new(cfg),
        settings: cfg.watch.clone(),
        bases,
        tracker: Mutex::new(Tracker::load(&state_file)),
        state_file,
        dirty: AtomicBool::new(false),
        sink,
        status: status.clone(),
        freshness: Freshness::of(&cfg.name),
        down_since: Mutex::new(Some(Instant::now())),
        last_save: Mutex::new(Instant::now()),
        last_error: Mutex::new(String::new()),
    });
    metrics::gauge!(DEGRADED_METRIC, "provider" => cfg.name.clone()).set(0.0);
    metrics::counter!(DEGRADATIONS_METRIC, "provider" => cfg.name.clone()).increment(0);
    let task = tokio::spawn(supervise(ctx.clone()));
    Ok(Some(Watcher { task, ctx, status, counters }))
}

/// The watchers of a running server, one per LDAP provider, kept across configuration reloads: a provider
/// whose settings did not change keeps its watcher (and its connection); a changed one gets a new watcher,
/// which resumes from the persisted state; a removed one stops.
#[derive(Default)]
pub struct Watchers {
    running: Mutex<Vec<(String, Watcher)>>,
}

impl Watchers {
    /// Make the running watchers those of `providers`. Problems (an unreadable password file) are logged:
    /// the provider itself reports them too, and a server keeps running without a watcher.
    pub fn reconcile(&self, providers: &[&LdapSettings], data_dir: &Path, sink: &Arc<dyn ChangeSink>) {
        let Ok(mut running) = self.running.lock() else { return };
        let wanted: Vec<(String, &LdapSettings)> = providers.iter().map(|p| (format!("{p:?}"), *p)).collect();
        running.retain(|(key, _)| wanted.iter().any(|(k, _)| k == key));
        for (key, cfg) in wanted {
            if running.iter().any(|(k, _)| *k == key) {
                continue;
            }
            match spawn(cfg, data_dir, sink.clone()) {
                Ok(Some(w)) => {
                    tracing::info!(provider = %cfg.name, mode = cfg.watch.mode.as_str(), "directory watcher started");
                    running.push((key, w));
                }
                Ok(None) => {}
                Err(errors) => {
                    tracing::warn!(provider = %cfg.name, errors = ?errors, "directory watcher not started")
                }
            }
        }
    }
}

/// Connect, run a session, and on failure back off and try again, forever.
async fn supervise(ctx: Arc<Ctx>) {
    let mut backoff = Duration::from_millis(250);
    let cap = (ctx.settings.degraded_after / 4).clamp(Duration::from_millis(250), Duration::from_secs(30));
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        ctx.status.sessions.fetch_add(1, Ordering::Relaxed);
        let session = session(&ctx);
        tokio::pin!(session);
        let error = loop {
            tokio::select! {
                e = &mut session => break e,
                _ = tick.tick() => ctx.housekeeping(),
            }
        };
        if ctx.status.unsupported.load(Ordering::Relaxed) {
            return;
        }
        let retry_in_ms = backoff.as_millis() as u64;
        if ctx.status.up.swap(false, Ordering::Relaxed) {
            // It was in sync: a fresh outage, said once at warn level and tried again at once.
            backoff = Duration::from_millis(250);
            tracing::warn!(provider = %ctx.name, error = %error, retry_in_ms = 250,
                "directory watcher lost its feed; reconnecting");
        } else {
            // Still down (the degraded warning says so once): each further attempt at debug level only.
            tracing::debug!(provider = %ctx.name, error = %error, retry_in_ms, "directory watcher still without a feed");
        }
        if let Ok(mut last) = ctx.last_error.lock() {
            *last = error;
        }
        ctx.went_down();
        let until = Instant::now() + backoff;
        while Instant::now() < until {
            ctx.housekeeping();
            tokio::time::sleep(Duration::from_millis(250).min(until - Instant::now())).await;
        }
        backoff = (backoff * 2).min(cap);
    }
}

/// One connection's life: connect, bind, pick the feed, run it until it fails.
async fn session(ctx: &Arc<Ctx>) -> String {
    let mut ldap = match ctx.connect().await {
        Ok(l) => l,
        Err(e) => return e,
    };
    let root = match ctx.root_dse(&mut ldap, &["supportedControl", "highestCommittedUSN", "defaultNamingContext"]).await
    {
        Ok(r) => r,
        Err(e) => return e,
    };
    let controls = track_attr(&root, "supportedControl");
    let offers = |oid: &str| controls.iter().any(|c| c == oid);
    let is_ad = !track_attr(&root, "highestCommittedUSN").is_empty();
    let mode = match ctx.settings.mode {
        WatchMode::Auto if offers(SYNC_OID) => WatchMode::Syncrepl,
        WatchMode::Auto if is_ad => WatchMode::UsnPoll,
        WatchMode::Auto => {
            // Nothing to watch with, and nobody asked for a particular feed: say so once and stop, without
            // degrading the provider (its identities keep the cache TTL, as without a watcher).
            tracing::warn!(provider = %ctx.name,
                "no directory watcher: the directory offers neither content synchronisation (load OpenLDAP's \
                 syncprov overlay, docs/directory-watch.md) nor Active Directory's uSNChanged; changes reach \
                 cached identities only when the identity cache expires. Set watch.mode: off to silence this");
            ctx.unsupported();
            return String::new();
        }
        WatchMode::AdNotify if !offers(NOTIFY_OID) => {
            tracing::info!(provider = %ctx.name, "the directory does not offer the change notification control; polling uSNChanged");
            WatchMode::UsnPoll
        }
        m => m,
    };
    if let Ok(mut m) = ctx.status.mode.lock() {
        *m = mode.as_str();
    }
    match mode {
        WatchMode::Syncrepl => syncrepl::run(ctx, ldap).await,
        WatchMode::AdNotify => usn::run(ctx, ldap, &root, true).await,
        _ => usn::run(ctx, ldap, &root, false).await,
    }
}

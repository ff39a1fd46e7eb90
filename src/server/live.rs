//! Live reload: the state in force, swapped at run time, and the tasks that keep it current.
//!
//! The state in force lives in [`Live`]. A reload (SIGHUP, or a change of the config file or the TLS
//! certificate) loads and validates everything again (config, keys, accounts, policy) exactly as a start
//! would, and swaps the new state in only if all of it is valid; otherwise the running state stays and the
//! reasons are logged and counted (`tollgate_config_reloads_total{result="error"}`). Requests already in
//! flight finish on the state they started with. A config or certificate file rewritten in place is read only
//! once it has stayed unchanged for `policy.settle` (one replaced by a rename at once), as rules and accounts
//! files are, so a version caught half-way through being written is never applied. Rules files and accounts files are also picked up on their
//! own when they change (see `PolicyStore` and the static provider).
//!
//! Each request is routed through the router of the current state ([`Live::routes`]), so a reload needs no
//! new listener. What a reload cannot change (the listen addresses, turning TLS on or off) is logged as
//! needing a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;

use super::conn::Routes;
use super::tls::Tls;
use crate::app::AppState;
use crate::config::Settings;
use crate::support::fs::FileStamp;
use crate::support::time::unix_now;
use crate::telemetry;

struct Current {
    state: Arc<AppState>,
    router: Router,
    metrics_router: Router,
}

/// The state in force, swappable at run time.
pub struct Live {
    config: Option<PathBuf>,
    current: RwLock<Arc<Current>>,
    tls: Option<Tls>,
    /// The LDAP providers' directory watchers, kept in step with the state in force.
    watchers: crate::identity::ldap::watch::Watchers,
    /// Where the watchers report changes: the invalidation path of the state in force.
    sink: Arc<dyn crate::identity::watch::ChangeSink>,
}

fn current(state: Arc<AppState>) -> Arc<Current> {
    Arc::new(Current {
        router: crate::http::router(state.clone()),
        metrics_router: crate::http::metrics_router(state.clone()),
        state,
    })
}

impl Live {
    pub fn new(config: Option<PathBuf>, state: Arc<AppState>, tls: Option<Tls>) -> Arc<Live> {
        let live = Arc::new_cyclic(|me| Live {
            config,
            current: RwLock::new(current(state.clone())),
            tls,
            watchers: Default::default(),
            sink: Arc::new(super::directory::InvalidatingSink {
                current: Box::new({
                    let me = me.clone();
                    move || me.upgrade().map(|live: Arc<Live>| live.state().invalidator.clone())
                }),
            }),
        });
        live.watch(&state.settings);
        live
    }

    /// Start, keep or stop the directory watchers for `settings` (must run inside the runtime).
    fn watch(&self, settings: &Settings) {
        let ldap: Vec<_> = settings
            .providers
            .iter()
            .filter_map(|p| match p {
                crate::config::ProviderSettings::Ldap(l) => Some(l),
                _ => None,
            })
            .collect();
        self.watchers.reconcile(&ldap, &settings.server.data_dir, &self.sink);
    }

    fn get(&self) -> Arc<Current> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The state in force.
    pub fn state(&self) -> Arc<AppState> {
        self.get().state.clone()
    }

    /// The routes in force, for the accept loop: the main router, or the metrics listener's.
    pub fn routes(self: &Arc<Live>, metrics: bool) -> Routes {
        let live = self.clone();
        Arc::new(move || -> Router {
            let current = live.get();
            if metrics {
                current.metrics_router.clone()
            } else {
                current.router.clone()
            }
        })
    }

    /// Load and validate everything again; swap it in only if all of it is valid.
    pub async fn reload(&self, trigger: &'static str) -> Result<(), Vec<String>> {
        let old = self.state();
        let config = self.config.clone();
        let built = tokio::task::spawn_blocking(move || {
            let settings = Settings::load(config.as_deref())?;
            AppState::build(settings)
        })
        .await
        .unwrap_or_else(|e| Err(vec![format!("reload task failed: {e}")]));
        let mut new = match built {
            Ok(s) => s,
            Err(errors) => {
                metrics::counter!(telemetry::CONFIG_RELOADS, "result" => "error").increment(1);
                tracing::error!(trigger, errors = ?errors, "reload refused: the new configuration is invalid; keeping the running one");
                return Err(errors);
            }
        };
        if let (Some(served), Some(tls)) = (&self.tls, &new.settings.ops.tls) {
            if let Err(e) = served.reload(tls) {
                metrics::counter!(telemetry::CONFIG_RELOADS, "result" => "error").increment(1);
                tracing::error!(trigger, error = %e, "reload refused: the new certificate is unusable; keeping the running one");
                return Err(vec![e]);
            }
        }
        warn_restart_needed(&old.settings, &new.settings);
        // Probe results and failed-login counts survive a reload; counts restart only if the limits changed.
        new.health = old.health.clone();
        // (A changed `state:` section brings a limiter on the new store.)
        if new.limiter.settings() == old.limiter.settings() && new.settings.state == old.settings.state {
            new.limiter = old.limiter.clone();
        }
        let new = Arc::new(new);
        crate::identity::health::probe_all(&new.chain, &new.health).await;
        match self.current.write() {
            Ok(mut c) => *c = current(new.clone()),
            Err(p) => *p.into_inner() = current(new.clone()),
        }
        self.watch(&new.settings);
        metrics::counter!(telemetry::CONFIG_RELOADS, "result" => "ok").increment(1);
        metrics::gauge!(telemetry::CONFIG_LAST_RELOAD).set(unix_now() as f64);
        tracing::info!(
            trigger,
            kid = %new.issuer.keys.active().kid,
            providers = new.chain.providers().len(),
            rules = new.policy.get().rule_count(),
            "configuration reloaded"
        );
        Ok(())
    }
}

fn warn_restart_needed(old: &Settings, new: &Settings) {
    let mut changed = Vec::new();
    if old.server.listen != new.server.listen {
        changed.push("server.listen");
    }
    if old.ops.metrics_listen != new.ops.metrics_listen {
        changed.push("server.metrics_listen");
    }
    if old.ops.connections != new.ops.connections {
        changed.push("server.connections");
    }
    if old.ops.trusted_proxies != new.ops.trusted_proxies {
        changed.push("server.trusted_proxies (for connection caps; X-Forwarded-For uses the new list)");
    }
    if old.ops.tls.is_some() != new.ops.tls.is_some() {
        changed.push("server.tls (on/off)");
    }
    if !changed.is_empty() {
        tracing::warn!(keys = ?changed, "these settings changed but only take effect after a restart");
    }
}

fn stamp(paths: &[PathBuf]) -> Vec<Option<FileStamp>> {
    paths.iter().map(|p| FileStamp::of(p)).collect()
}

/// Files whose change triggers a full reload: the config file and the TLS pair.
fn watched(config: Option<&Path>, settings: &Settings) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = config.map(Path::to_path_buf).into_iter().collect();
    if let Some(tls) = &settings.ops.tls {
        out.push(tls.cert_file.clone());
        out.push(tls.key_file.clone());
    }
    out
}

pub(super) fn spawn_sighup(live: Arc<Live>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload only on file change");
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            let _ = live.reload("SIGHUP").await;
        }
    });
}

/// Poll the config and certificate files, and nudge the lazily reloaded rules and accounts files so their
/// changes are seen (and counted) without waiting for traffic.
pub(super) fn spawn_watcher(live: Arc<Live>, config: Option<PathBuf>) {
    tokio::spawn(async move {
        let mut files = watched(config.as_deref(), &live.state().settings);
        let mut last = stamp(&files);
        let mut settle = crate::support::fs::Settle::default();
        loop {
            let state = live.state();
            let interval = state.settings.policy.reload_interval.max(Duration::from_millis(200));
            tokio::time::sleep(interval).await;
            let now = stamp(&files);
            // A file rewritten in place is read once it has stopped changing (`policy.settle`); one replaced
            // by a rename at once.
            if now != last && settle.ready(&last, &now, state.settings.policy.settle) {
                last = now;
                if live.reload("file change").await.is_ok() {
                    files = watched(config.as_deref(), &live.state().settings);
                    last = stamp(&files);
                }
                continue;
            }
            let _ = state.policy.get();
            for p in state.chain.providers() {
                let _ = p.generation();
            }
        }
    });
}

/// Probe providers for /readyz every `server.probe_interval`, and tidy the rate limiter.
pub(super) fn spawn_prober(live: Arc<Live>) {
    tokio::spawn(async move {
        loop {
            let state = live.state();
            // The shared store's own checks (eviction, replicas, master), for this state's Redis; a reload
            // makes a new one, started here on the next round.
            if let Some(redis) = &state.redis {
                crate::store::redis::Redis::watch(redis);
            }
            tokio::time::sleep(state.settings.ops.probe_interval).await;
            let state = live.state();
            crate::identity::health::probe_all(&state.chain, &state.health).await;
            // Forget failed-login state of addresses and accounts whose budget has refilled (bounds memory).
            state.limiter.housekeeping();
        }
    });
}

//! The running server: listeners, live reload, background tasks and graceful shutdown.
//!
//! The state in force lives in [`Live`]. A reload (SIGHUP, or a change of the config file or the TLS
//! certificate) loads and validates everything again (config, keys, accounts, policy) exactly as a start
//! would, and swaps the new state in only if all of it is valid; otherwise the running state stays and the
//! reasons are logged and counted (`tollgate_config_reloads_total{result="error"}`). Requests already in
//! flight finish on the state they started with. Rules files and accounts files are also picked up on their
//! own when they change (see `PolicyStore` and the static provider).
//!
//! Each request is routed through the router of the current state, so a reload needs no new listener.
//! What a reload cannot change (the listen addresses, turning TLS on or off) is logged as needing a restart.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use tower::ServiceExt as _;

use crate::app::AppState;
use crate::config::Settings;
use crate::telemetry;
use crate::token::unix_now;

/// How long in-flight requests get to finish after SIGTERM.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

struct Current {
    state: Arc<AppState>,
    router: Router,
    metrics_router: Router,
}

/// The state in force, swappable at run time.
pub struct Live {
    config: Option<PathBuf>,
    current: RwLock<Arc<Current>>,
    tls: Option<RustlsConfig>,
}

fn current(state: Arc<AppState>) -> Arc<Current> {
    Arc::new(Current {
        router: crate::http::router(state.clone()),
        metrics_router: crate::http::metrics_router(state.clone()),
        state,
    })
}

impl Live {
    pub fn new(config: Option<PathBuf>, state: Arc<AppState>, tls: Option<RustlsConfig>) -> Arc<Live> {
        Arc::new(Live { config, current: RwLock::new(current(state)), tls })
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
        if let (Some(rustls), Some(tls)) = (&self.tls, &new.settings.ops.tls) {
            if let Err(e) = crate::tls::reload(rustls, tls).await {
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
        crate::health::probe_all(&new).await;
        match self.current.write() {
            Ok(mut c) => *c = current(new.clone()),
            Err(p) => *p.into_inner() = current(new.clone()),
        }
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
    if old.listen != new.listen {
        changed.push("server.listen");
    }
    if old.ops.metrics_listen != new.ops.metrics_listen {
        changed.push("server.metrics_listen");
    }
    if old.ops.tls.is_some() != new.ops.tls.is_some() {
        changed.push("server.tls (on/off)");
    }
    if !changed.is_empty() {
        tracing::warn!(keys = ?changed, "these settings changed but only take effect after a restart");
    }
}

type Stamp = Vec<Option<(SystemTime, u64)>>;

fn stamp(paths: &[&Path]) -> Stamp {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len())))
        .collect()
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

/// A per-connection service that routes every request through the router in force, with the peer address
/// the handlers read (`ConnectInfo`). A macro because the closure types cannot be named in a signature.
macro_rules! make_service {
    ($live:expr, $metrics:expr) => {{
        let live: Arc<Live> = $live;
        let metrics: bool = $metrics;
        tower::service_fn(move |peer: SocketAddr| {
            let live = live.clone();
            async move {
                Ok::<_, Infallible>(tower::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let current = live.get();
                    let router = if metrics { current.metrics_router.clone() } else { current.router.clone() };
                    let mut req = req.map(Body::new);
                    req.extensions_mut().insert(ConnectInfo(peer));
                    router.oneshot(req)
                }))
            }
        })
    }};
}

/// Serve until SIGTERM or Ctrl-C, then let requests in flight finish.
pub async fn run(config: Option<PathBuf>, state: Arc<AppState>) -> Result<(), String> {
    let settings = state.settings.clone();
    let tls = match &settings.ops.tls {
        Some(t) => Some(crate::tls::load(t).await?),
        None => None,
    };
    let listener = std::net::TcpListener::bind(settings.listen)
        .map_err(|e| format!("server.listen: cannot listen on {}: {e}", settings.listen))?;
    let bound = listener.local_addr().map_err(|e| format!("cannot read the bound address: {e}"))?;
    let metrics_listener = match settings.ops.metrics_listen {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .map_err(|e| format!("server.metrics_listen: cannot listen on {addr}: {e}"))?,
        ),
        None => None,
    };
    let live = Live::new(config.clone(), state.clone(), tls.clone());
    metrics::gauge!(telemetry::CONFIG_LAST_RELOAD).set(unix_now() as f64);
    crate::health::probe_all(&state).await;

    let handle = axum_server::Handle::new();
    let metrics_handle = axum_server::Handle::new();
    {
        let (h, mh) = (handle.clone(), metrics_handle.clone());
        tokio::spawn(async move {
            crate::cli::shutdown_signal().await;
            let since = std::time::Instant::now();
            // axum-server's Handle wakes only the tasks waiting at the moment of the call (tokio's
            // `Notify::notify_waiters`, no stored permit): a call made while its accept loop is between two
            // awaits is lost. A server that stayed up after SIGTERM was seen once after a load run. So repeat
            // the request until the servers are gone (the runtime then ends this task), and force the end once
            // the drain time is over.
            loop {
                if since.elapsed() < DRAIN_TIMEOUT {
                    h.graceful_shutdown(Some(DRAIN_TIMEOUT));
                    mh.graceful_shutdown(Some(DRAIN_TIMEOUT));
                } else {
                    h.shutdown();
                    mh.shutdown();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }
    spawn_sighup(live.clone());
    spawn_watcher(live.clone(), config);
    spawn_prober(live.clone());

    let scheme = if tls.is_some() { "https" } else { "http" };
    if let Some(ml) = metrics_listener {
        let maddr = ml.local_addr().map_err(|e| format!("cannot read the metrics address: {e}"))?;
        tracing::info!(addr = %maddr, "metrics listening");
        let server = axum_server::from_tcp(ml).map_err(|e| format!("metrics listener: {e}"))?.handle(metrics_handle);
        let svc = make_service!(live.clone(), true);
        tokio::spawn(async move {
            if let Err(e) = server.serve(svc).await {
                tracing::error!(error = %e, "metrics listener failed");
            }
        });
    }
    tracing::info!(addr = %bound, scheme, kid = %state.issuer.keys.active().kid, "tollgate listening");
    let svc = make_service!(live, false);
    // axum-server installs hyper's timer but no header read timeout: without one a client dripping its
    // headers holds its connection for ever (see http/conn.rs and faults::very_slow_clients_*).
    let header_timeout = crate::http::conn::HEADER_READ_TIMEOUT;
    let result = match tls {
        Some(rustls) => {
            let mut server = axum_server::from_tcp_rustls(listener, rustls).map_err(|e| e.to_string())?.handle(handle);
            server.http_builder().http1().header_read_timeout(header_timeout);
            server.serve(svc).await
        }
        None => {
            let mut server = axum_server::from_tcp(listener).map_err(|e| e.to_string())?.handle(handle);
            server.http_builder().http1().header_read_timeout(header_timeout);
            server.serve(svc).await
        }
    };
    result.map_err(|e| format!("server error: {e}"))?;
    tracing::info!("stopped: every request in flight was answered");
    Ok(())
}

fn spawn_sighup(live: Arc<Live>) {
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
fn spawn_watcher(live: Arc<Live>, config: Option<PathBuf>) {
    tokio::spawn(async move {
        let mut files = watched(config.as_deref(), &live.state().settings);
        let mut last = stamp(&files.iter().map(PathBuf::as_path).collect::<Vec<_>>());
        loop {
            let state = live.state();
            let interval = state.settings.policy_reload_interval.max(Duration::from_millis(200));
            tokio::time::sleep(interval).await;
            let now = stamp(&files.iter().map(PathBuf::as_path).collect::<Vec<_>>());
            if now != last {
                last = now;
                if live.reload("file change").await.is_ok() {
                    files = watched(config.as_deref(), &live.state().settings);
                    last = stamp(&files.iter().map(PathBuf::as_path).collect::<Vec<_>>());
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
fn spawn_prober(live: Arc<Live>) {
    tokio::spawn(async move {
        loop {
            let state = live.state();
            tokio::time::sleep(state.settings.ops.probe_interval).await;
            let state = live.state();
            crate::health::probe_all(&state).await;
            // Forget failed-login state of addresses and accounts whose budget has refilled (bounds memory).
            state.limiter.housekeeping();
        }
    });
}

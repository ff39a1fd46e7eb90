//! The running server: listeners, the one accept loop (`conn.rs`), TLS (`tls.rs`), live reload
//! (`live.rs`), background tasks and graceful shutdown.
//!
//! The binary runs [`run`]; the integration tests and the benchmarks run [`serve`]. Both go through
//! [`conn::serve`], so the deadlines and the shutdown the tests prove are the ones that ship.

pub mod conn;
pub mod directory;
pub mod live;
pub mod tls;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::app::AppState;
use crate::support::time::unix_now;
use crate::telemetry;
use live::Live;
use tls::Tls;

/// How long in-flight requests get to finish after SIGTERM.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Serve `state`'s router on a bound listener (plain HTTP) until `shutdown` resolves, then finish requests
/// in flight. The same accept loop as the binary's, for tests and benchmarks that need a real socket.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let guard = guard(&state, "main");
    let router = crate::http::router(state);
    conn::serve(listener, Arc::new(move || router.clone()), None, guard, shutdown, DRAIN_TIMEOUT).await
}

/// The connection rules of a listener of `state`.
fn guard(state: &AppState, label: &'static str) -> conn::Guard {
    let ops = &state.settings.ops;
    conn::Guard { limits: ops.connections.clone(), exempt: ops.trusted_proxies.clone(), label }
}

/// Connections the kernel queues before they are accepted. A burst larger than this makes new clients'
/// SYNs be dropped and retried a second later, so it is well above the 128 that std would use.
const LISTEN_BACKLOG: u32 = 1024;

/// Bind a listener from the config, naming the key at fault when it cannot be bound.
fn bind(addr: std::net::SocketAddr, key: &str) -> Result<tokio::net::TcpListener, String> {
    let fail = |e: std::io::Error| format!("{key}: cannot listen on {addr}: {e}");
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(fail)?;
    socket.set_reuseaddr(true).map_err(fail)?;
    socket.bind(addr).map_err(fail)?;
    socket.listen(LISTEN_BACKLOG).map_err(fail)
}

/// Serve until SIGTERM or Ctrl-C, then let requests in flight finish.
pub async fn run(config: Option<PathBuf>, state: Arc<AppState>) -> Result<(), String> {
    let settings = state.settings.clone();
    let tls = settings.ops.tls.as_ref().map(Tls::load).transpose()?;
    let listener = bind(settings.server.listen, "server.listen")?;
    let bound = listener.local_addr().map_err(|e| format!("cannot read the bound address: {e}"))?;
    let metrics_listener = settings.ops.metrics_listen.map(|a| bind(a, "server.metrics_listen")).transpose()?;
    let live = Live::new(config.clone(), state.clone(), tls.clone());
    metrics::gauge!(telemetry::CONFIG_LAST_RELOAD).set(unix_now() as f64);
    crate::identity::health::probe_all(&state.chain, &state.health).await;

    // One signal stops both listeners.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    live::spawn_sighup(live.clone());
    live::spawn_watcher(live.clone(), config);
    live::spawn_prober(live.clone());
    crate::invalidate::register_metrics();
    // Invalidations from the other replicas, applied to the state in force.
    if let Some(redis) = state.redis.clone() {
        let live = live.clone();
        tokio::spawn(crate::invalidate::listen(redis, move || live.state().invalidator.clone()));
    }

    let metrics_server = match metrics_listener {
        Some(ml) => {
            let maddr = ml.local_addr().map_err(|e| format!("cannot read the metrics address: {e}"))?;
            tracing::info!(addr = %maddr, "metrics listening");
            // The same deadlines as the main listener; plain HTTP (it is scraped on an internal network).
            let served = conn::serve(ml, live.routes(true), None, guard(&state, "metrics"), stopped(), DRAIN_TIMEOUT);
            Some(tokio::spawn(served))
        }
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = %bound, scheme, kid = %state.issuer.keys.active().kid, "tollgate listening");
    let max = conn::max_connections(&settings.ops.connections);
    let per_client = conn::max_per_client(&settings.ops.connections, max);
    tracing::info!(max_connections = max, max_per_client = per_client, "connection limits");
    let result = conn::serve(listener, live.routes(false), tls, guard(&state, "main"), stopped(), DRAIN_TIMEOUT).await;
    if let Some(m) = metrics_server {
        let _ = m.await;
    }
    result.map_err(|e| format!("server error: {e}"))?;
    tracing::info!("stopped: every request in flight was answered");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: finishing requests in flight");
}

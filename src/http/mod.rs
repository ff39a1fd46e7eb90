//! The HTTP surface: routes and the handlers behind them.

pub mod audit;
pub mod client_ip;
pub mod conn;
pub mod device;
pub mod error;
pub mod ratelimit;
pub mod token;
pub mod whoami;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::app::AppState;
use error::ApiError;

/// The router. Tests call it directly with `tower::ServiceExt::oneshot`; `serve` wraps it in a listener.
pub fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new()
        .route("/token", get(token::get_token).post(token::post_token))
        .route("/device/code", axum::routing::post(device::device_code))
        .route("/whoami", get(whoami::whoami))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/healthz", get(crate::health::healthz))
        .route("/readyz", get(crate::health::readyz));
    if state.settings.ops.metrics_listen.is_none() {
        router = router.route("/metrics", get(crate::telemetry::metrics_handler));
    }
    router
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
}

/// Serve the router on a bound listener until `shutdown` resolves, then finish requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Not axum::serve: it gives hyper no timer, so slow clients were never timed out (see conn.rs).
    conn::serve(listener, router(state), shutdown).await
}

async fn jwks(State(state): State<Arc<AppState>>) -> Response {
    let mut resp = axum::Json(state.issuer.keys.jwks()).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
    resp
}

/// The router of the separate metrics listener (`server.metrics_listen`): `/metrics` and the health checks.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(crate::telemetry::metrics_handler))
        .route("/healthz", get(crate::health::healthz))
        .route("/readyz", get(crate::health::readyz))
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
}

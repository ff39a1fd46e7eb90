//! The HTTP surface: routes and the handlers behind them.

pub mod conn;
pub mod device;
pub mod error;
pub mod token;

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
    Router::new()
        .route("/token", get(token::get_token).post(token::post_token))
        .route("/device/code", axum::routing::post(device::device_code))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
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

async fn healthz() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let policy = state.policy.get();
    axum::Json(serde_json::json!({
        "status": "ready",
        "signing_key": state.issuer.keys.active().kid,
        "keys": state.issuer.keys.keys().len(),
        "policy_rules": policy.rule_count(),
        "providers": state.chain.providers().iter().map(|p| p.name()).collect::<Vec<_>>(),
    }))
    .into_response()
}

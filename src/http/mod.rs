//! The HTTP surface: routes and the handlers behind them.
//!
//! A request travels `token.rs` (or `whoami.rs`, `device.rs`) -> `params.rs` (parse) -> `crate::authn`
//! (authenticate) -> `crate::grant` (decide and sign) -> `audit.rs` (the audit line) -> `error.rs` (the one
//! place that picks status codes). `ops.rs` holds the health, metrics and JWKS endpoints. The accept loop
//! that serves these routes is `crate::server`.

pub mod access_tokens;
pub mod audit;
pub mod client_ip;
pub mod device;
pub mod error;
pub mod invalidate;
pub mod ops;
pub mod params;
pub mod token;
pub mod whoami;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use crate::app::AppState;
use error::ApiError;

/// The router. Tests call it directly with `tower::ServiceExt::oneshot`; `crate::server` serves it.
pub fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new()
        .route("/token", get(token::get_token).post(token::post_token))
        .route("/device/code", post(device::device_code))
        .route("/whoami", get(whoami::whoami))
        .route("/access-tokens", get(access_tokens::list).post(access_tokens::create))
        .route("/access-tokens/revoke", post(access_tokens::revoke_user))
        .route("/access-tokens/{id}", axum::routing::delete(access_tokens::revoke))
        .route("/access-tokens/{id}/rotate", post(access_tokens::rotate))
        .route("/.well-known/jwks.json", get(ops::jwks))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/invalidate", post(invalidate::invalidate))
        .route("/oidc/{provider}/backchannel-logout", post(invalidate::backchannel_logout))
        .route("/ssf/{transmitter}", post(invalidate::ssf_push));
    if state.settings.ops.metrics_listen.is_none() {
        router = router.route("/metrics", get(ops::metrics));
    }
    router
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
}

/// The router of the separate metrics listener (`server.metrics_listen`): `/metrics` and the health checks.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
}

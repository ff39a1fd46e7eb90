//! The operations endpoints: `/healthz`, `/readyz`, `/metrics` and the JWKS.
//!
//! `/healthz` says the process serves requests, nothing more: a directory outage must not make an
//! orchestrator restart every replica. `/readyz` says whether this replica can do its job: signing keys
//! loaded, a policy compiled, and every provider reachable at its last probe (`crate::health`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::identity::health::probe_one;
use crate::telemetry::{self, KEY_NOT_AFTER, POLICY_RULES};
use crate::token::access::TokenState;

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

/// `GET /readyz`: 200 when keys, policy and every provider are in order, else 503 saying which is not.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let policy = state.policy.get();
    let mut providers = BTreeMap::new();
    for p in state.chain.providers() {
        let result = match state.health.get(p.name()) {
            Some(r) => r,
            None => {
                let r = probe_one(p.as_ref()).await;
                state.health.set(p.name(), r.clone());
                r
            }
        };
        providers.insert(p.name().to_string(), result);
    }
    let degraded: Vec<&String> = providers.iter().filter(|(_, r)| !r.reachable).map(|(n, _)| n).collect();
    let keys = state.issuer.keys.keys();
    let ready = degraded.is_empty() && !keys.is_empty();
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "degraded" },
        "signing_keys": {
            "loaded": keys.len(),
            "active_kid": state.issuer.keys.active().kid,
        },
        "policy": { "compiled": true, "rules": policy.rule_count() },
        "providers": providers,
        "unreachable": degraded,
        // Reported, not counted against readiness: every replica shares the one Redis, and taking them all
        // out would turn a Redis outage (which fails only what needs shared state) into a full one.
        "state": state.redis.as_ref().map(|r| r.status()),
    });
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
}

/// `GET /.well-known/jwks.json`: every loaded key, the active one and those still published after a rotation.
pub async fn jwks(State(state): State<Arc<AppState>>) -> Response {
    let mut resp = axum::Json(state.issuer.keys.jwks()).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
    resp
}

/// Gauges that describe the state rather than events: refreshed at each scrape.
fn refresh_gauges(state: &AppState) {
    let active = state.issuer.keys.active().kid.clone();
    for k in state.issuer.keys.keys() {
        if let Some(t) = k.not_after {
            let is_active = if k.kid == active { "true" } else { "false" };
            metrics::gauge!(KEY_NOT_AFTER, "kid" => k.kid.clone(), "active" => is_active).set(t as f64);
        }
    }
    metrics::gauge!(POLICY_RULES).set(state.policy.get().rule_count() as f64);
}

/// `GET /metrics` in the Prometheus text format.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    if telemetry::installed() {
        access_token_gauges(&state).await;
    }
    render(&state)
}

/// Access tokens by state, and active ones expiring within 7 days, read from the token store at each scrape
/// (a store that cannot be read leaves the last values; the outage shows in the logins' 503s).
async fn access_token_gauges(state: &AppState) {
    if state.access_hasher.is_none() {
        return;
    }
    let tokens = match state.access_tokens.list().await {
        Ok(t) => t,
        Err(e) => {
            tracing::debug!(error = %e, "access token gauges not updated");
            return;
        }
    };
    let now = crate::support::time::unix_now();
    let soon = now + crate::access::EXPIRING_SOON.as_secs();
    let mut counts = [0u64; 3];
    let mut expiring = 0u64;
    for t in &tokens {
        let s = t.state(now);
        counts[s as usize] += 1;
        if s == TokenState::Active && t.expires <= soon {
            expiring += 1;
        }
    }
    for (s, n) in [TokenState::Active, TokenState::Expired, TokenState::Revoked].into_iter().zip(counts) {
        metrics::gauge!(telemetry::ACCESS_TOKENS, "state" => s.as_str()).set(n as f64);
    }
    metrics::gauge!(telemetry::ACCESS_TOKENS_EXPIRING).set(expiring as f64);
}

/// The scrape body for `state`.
pub fn render(state: &AppState) -> Response {
    let not_enabled = || (StatusCode::NOT_FOUND, "metrics are not enabled in this process\n").into_response();
    if !telemetry::installed() {
        return not_enabled();
    }
    refresh_gauges(state);
    let Some(text) = telemetry::render() else { return not_enabled() };
    let mut resp = text.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}

//! Liveness and readiness.
//!
//! `/healthz` says the process serves requests, nothing more: a directory outage must not make an
//! orchestrator restart every replica. `/readyz` says whether this replica can do its job: signing keys
//! loaded, a policy compiled, and every provider reachable at its last probe. Probes run in the background
//! (the `serve` loop calls [`probe_all`] every `server.probe_interval`), so `/readyz` answers from memory;
//! a provider that was never probed is probed on the spot.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::app::AppState;
use crate::identity::Provider;
use crate::telemetry;
use crate::token::{rfc3339, unix_now};

/// Longest a single probe may take before the provider counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The last probe of one provider.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    pub reachable: bool,
    /// Why it is unreachable (no secrets: provider errors never carry them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// RFC 3339 time of the probe.
    pub checked_at: String,
}

/// Provider reachability as last seen. Shared across config reloads.
#[derive(Debug, Default)]
pub struct Health {
    providers: RwLock<BTreeMap<String, ProbeResult>>,
}

impl Health {
    fn get(&self, name: &str) -> Option<ProbeResult> {
        self.providers.read().ok().and_then(|m| m.get(name).cloned())
    }

    fn set(&self, name: &str, result: ProbeResult) {
        if let Ok(mut m) = self.providers.write() {
            m.insert(name.to_string(), result);
        }
    }
}

async fn probe_one(provider: &dyn Provider) -> ProbeResult {
    let outcome = tokio::time::timeout(PROBE_TIMEOUT, provider.probe()).await;
    let error = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.message),
        Err(_) => Some(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
    };
    ProbeResult { reachable: error.is_none(), error, checked_at: rfc3339(unix_now()) }
}

/// Probe every provider of `state` now and record the results (log lines only on a change).
pub async fn probe_all(state: &AppState) {
    for p in state.chain.providers() {
        let result = probe_one(p.as_ref()).await;
        let before = state.health.get(p.name());
        let changed = before.as_ref().map(|b| b.reachable) != Some(result.reachable);
        if changed && result.reachable {
            tracing::info!(provider = %p.name(), "provider reachable");
        } else if changed {
            tracing::warn!(provider = %p.name(), error = result.error.as_deref().unwrap_or(""), "provider unreachable");
        }
        metrics::gauge!(telemetry::PROVIDER_UP, "provider" => p.name().to_string()).set(if result.reachable {
            1.0
        } else {
            0.0
        });
        state.health.set(p.name(), result);
    }
}

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
    });
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
}

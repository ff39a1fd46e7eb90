//! Provider reachability, for `/readyz`: the last probe of each provider, kept across reloads.
//!
//! Probes run in the background (the server calls [`probe_all`] every `server.probe_interval`), so
//! `/readyz` (`http/ops.rs`) answers from memory; a provider that was never probed is probed on the spot.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::Duration;

use serde::Serialize;

use crate::identity::chain::Chain;
use crate::identity::Provider;
use crate::support::time::{rfc3339, unix_now};
use crate::telemetry;

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
    pub fn get(&self, name: &str) -> Option<ProbeResult> {
        self.providers.read().ok().and_then(|m| m.get(name).cloned())
    }

    pub fn set(&self, name: &str, result: ProbeResult) {
        if let Ok(mut m) = self.providers.write() {
            m.insert(name.to_string(), result);
        }
    }
}

pub async fn probe_one(provider: &dyn Provider) -> ProbeResult {
    let outcome = tokio::time::timeout(PROBE_TIMEOUT, provider.probe()).await;
    let error = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.message().to_string()),
        Err(_) => Some(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
    };
    ProbeResult { reachable: error.is_none(), error, checked_at: rfc3339(unix_now()) }
}

/// Probe every provider of `chain` now and record the results in `health` (log lines only on a change).
pub async fn probe_all(chain: &Chain, health: &Health) {
    for p in chain.providers() {
        let result = probe_one(p.as_ref()).await;
        let before = health.get(p.name());
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
        health.set(p.name(), result);
    }
}

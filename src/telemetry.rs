//! Prometheus metrics: the recorder, the metric names and the helpers that record them. `/metrics` itself
//! is served by `http/ops.rs`.
//!
//! Everything is recorded through the `metrics` facade, so providers (LDAP, OIDC) instrument themselves
//! without knowing about Prometheus. The recorder is process-wide and installed once, at `serve`.
//! Labels never carry user input verbatim: `client_id` is mapped onto the known clients (anything else is
//! `other`), because an attacker choosing label values could otherwise grow the metrics without bound.
//! No label or value is ever a secret.

pub mod audit_line;
pub mod log_writer;

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Token requests by `outcome` and `client_id`.
pub const TOKEN_REQUESTS: &str = "tollgate_token_requests_total";
/// Latency of `/token` and `/whoami`, by `endpoint`.
pub const REQUEST_DURATION: &str = "tollgate_request_duration_seconds";
/// Identity cache lookups by `provider`; the hit ratio is hits / (hits + misses).
pub const CACHE_HITS: &str = "tollgate_identity_cache_hits_total";
pub const CACHE_MISSES: &str = "tollgate_identity_cache_misses_total";
/// Refused logins (wrong password, unknown user, disabled account) by `provider` ("none" if no provider
/// knew the user).
pub const FAILED_LOGINS: &str = "tollgate_failed_logins_total";
/// Requests answered 429 by `limit` (`client_account`, `ip` or `account`).
pub const RATE_LIMITED: &str = "tollgate_rate_limited_total";
/// Failed-login limit decisions taken per replica because the shared (Redis) store could not be reached.
pub const RATE_LIMIT_FALLBACKS: &str = "tollgate_rate_limit_fallbacks_total";
/// Policy reloads after a rules file changed, by `result` (`ok` or `error`).
pub const POLICY_RELOADS: &str = "tollgate_policy_reloads_total";
/// Reloads of the whole config (SIGHUP, config or certificate file change), by `result`.
pub const CONFIG_RELOADS: &str = "tollgate_config_reloads_total";
/// Unix time of the last successful config reload (or start).
pub const CONFIG_LAST_RELOAD: &str = "tollgate_config_last_reload_success_timestamp_seconds";
/// notAfter of each signing key's certificate, Unix seconds, by `kid` and `active`.
pub const KEY_NOT_AFTER: &str = "tollgate_signing_key_not_after_timestamp_seconds";
/// 1 when the provider's last probe succeeded, else 0, by `provider`.
pub const PROVIDER_UP: &str = "tollgate_provider_up";
/// Rules in the policy in force.
pub const POLICY_RULES: &str = "tollgate_policy_rules";
/// Provider calls by `provider`, `operation` and `outcome` (`authenticated`, `rejected`, `not_mine`,
/// `unavailable`), and their latency by `provider` and `operation`.
pub const PROVIDER_REQUESTS: &str = "tollgate_provider_requests_total";
pub const PROVIDER_DURATION: &str = "tollgate_provider_duration_seconds";
/// Client connections open now, by `listener` (`main`, `metrics`).
pub const CONNECTIONS_OPEN: &str = "tollgate_connections_open";
/// Connections closed at accept because a cap was reached, by `listener` and `reason` (`total`, `per_client`).
pub const CONNECTIONS_REFUSED: &str = "tollgate_connections_refused_total";
/// Connections closed because a deadline passed, by `listener` and `phase` (`tls_handshake`, `first_byte`,
/// `first_request`, `idle`).
pub const CONNECTIONS_TIMED_OUT: &str = "tollgate_connections_timed_out_total";
/// Idle connections closed to make room when every slot was taken, by `listener`.
pub const CONNECTIONS_SHED: &str = "tollgate_connections_shed_total";
/// Password checks refused at once (503) because too many were running and waiting already.
pub const PASSWORD_CHECKS_SHED: &str = "tollgate_password_checks_shed_total";
/// Password checks run (each one argon2 or bcrypt computation).
pub const PASSWORD_CHECKS: &str = "tollgate_password_checks_total";
/// `X-Forwarded-For` entries from a trusted proxy that are no address, by `kind` (`unknown`, `malformed`).
pub const FORWARDED_UNPARSED: &str = "tollgate_forwarded_for_unparsed_total";
/// Password logins whose client went away before the answer (charged to the failed-login limits).
pub const LOGINS_ABANDONED: &str = "tollgate_logins_abandoned_total";
/// Password checks that were waiting for a core when their client went away: never started.
pub const PASSWORD_CHECKS_ABANDONED: &str = "tollgate_password_checks_abandoned_total";
/// Workload logins (a CI job's or pod's JWT) by `issuer` (the configured issuer URL, or `untrusted` for a
/// token whose issuer no provider trusts) and `outcome` (`authenticated`, `rejected`, `unavailable`).
pub const WORKLOAD_LOGINS: &str = "tollgate_workload_logins_total";
/// Access-token logins by `outcome` ([`ACCESS_TOKEN_OUTCOMES`]). `malformed` ones (wrong prefix, length or
/// checksum) were refused before any store read.
pub const ACCESS_TOKEN_LOGINS: &str = "tollgate_access_token_logins_total";
/// Access-token lookups in the token store (by HMAC): a malformed token never causes one.
pub const ACCESS_TOKEN_LOOKUPS: &str = "tollgate_access_token_lookups_total";
/// `last used` writes of access tokens (at most one a minute per token).
pub const ACCESS_TOKEN_LAST_USED_WRITES: &str = "tollgate_access_token_last_used_writes_total";
/// Access tokens kept, by `state` (`active`, `expired`, `revoked`), and active ones expiring within 7 days;
/// read from the token store at each scrape.
pub const ACCESS_TOKENS: &str = "tollgate_access_tokens";
pub const ACCESS_TOKENS_EXPIRING: &str = "tollgate_access_tokens_expiring_7d";
/// Always 1, with the `version` and `commit` labels.
pub const BUILD_INFO: &str = "tollgate_build_info";
/// Counter: log lines dropped because the queue to stderr was full (`telemetry::log_writer`).
pub const LOG_LINES_DROPPED: &str = "tollgate_log_lines_dropped_total";
/// 1 while the Redis of `state.store: redis` may evict keys (revocations among them): refresh grants get 503.
pub const REDIS_EVICTING: &str = "tollgate_redis_evicting";
/// How many replicas the Redis master lacks: `max(1, state.min_replicas_acked)` minus those connected.
pub const REDIS_REPLICAS_SHORT: &str = "tollgate_redis_replicas_short";
/// Times the Redis master in use changed (failovers seen by this process).
pub const REDIS_FAILOVERS: &str = "tollgate_redis_failovers_total";
/// 1 for the Redis master in use (label `master`, host:port), 0 for the ones used before.
pub const REDIS_MASTER: &str = "tollgate_redis_master";

/// Latency buckets (seconds): cached logins take microseconds, bcrypt cost 12 about 200 ms, a slow
/// directory seconds.
const BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Install the Prometheus recorder for the whole process (idempotent). Returns false when another recorder
/// was installed first, in which case `/metrics` says so.
pub fn install() -> bool {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), BUCKETS)
                .map(|b| b.upkeep_timeout(Duration::from_secs(5)));
            match builder.and_then(|b| b.install_recorder()) {
                Ok(h) => {
                    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "commit" => env!("TG_GIT_COMMIT"))
                        .set(1.0);
                    register_known_series();
                    Some(h)
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot install the Prometheus recorder; /metrics is disabled");
                    None
                }
            }
        })
        .is_some()
}

/// The `client_id` label values: the clients whose names are known, `other` and `none`.
const CLIENT_LABELS: [&str; 7] =
    ["none", "docker", "containerd-client", "containers/image", "tollgate", "registry-client", "other"];

/// Where the `client_id` label of a request is in `CLIENT_LABELS`: a known client's name, else `other`
/// (the last), or `none` (the first) when absent.
fn client_index(client_id: Option<&str>) -> usize {
    let other = CLIENT_LABELS.len() - 1;
    match client_id {
        None | Some("") => 0,
        Some(id) => CLIENT_LABELS[1..other].iter().position(|known| *known == id).map_or(other, |i| i + 1),
    }
}

/// The `client_id` label: the clients whose names are known, else `other`, or `none` when absent.
pub fn client_label(client_id: Option<&str>) -> &'static str {
    CLIENT_LABELS[client_index(client_id)]
}

/// The `outcome` label values of `tollgate_token_requests_total` (see `http::audit`).
pub const OUTCOMES: [&str; 10] = [
    "authenticated",
    "granted",
    "denied",
    "partial",
    "unauthorized",
    "rate_limited",
    "unavailable",
    "error",
    "bad_request",
    "abandoned",
];

/// Metric handles of the per-request series, registered on first use and kept: looking a series up by name
/// and labels on every request (a key built, hashed and compared) cost more than incrementing it.
struct RequestSeries {
    tokens: [[OnceLock<metrics::Counter>; CLIENT_LABELS.len()]; OUTCOMES.len()],
    durations: [OnceLock<metrics::Histogram>; 2],
}

static SERIES: RequestSeries = RequestSeries {
    tokens: [const { [const { OnceLock::new() }; CLIENT_LABELS.len()] }; OUTCOMES.len()],
    durations: [const { OnceLock::new() }; 2],
};

/// Record one decision: counted when it is a token request, timed for every endpoint.
pub fn token_request(outcome: &'static str, client_id: Option<&str>, endpoint: &'static str, took: Duration) {
    let c = client_index(client_id);
    let client = CLIENT_LABELS[c];
    // Handles are only kept once the recorder is in place: one taken before would count nothing, forever.
    let installed = HANDLE.get().is_some_and(Option::is_some);
    if endpoint == "token" {
        match OUTCOMES.iter().position(|x| *x == outcome) {
            Some(o) if installed => SERIES.tokens[o][c]
                .get_or_init(|| metrics::counter!(TOKEN_REQUESTS, "outcome" => outcome, "client_id" => client))
                .increment(1),
            _ => metrics::counter!(TOKEN_REQUESTS, "outcome" => outcome, "client_id" => client).increment(1),
        }
    }
    let e = ["token", "whoami"].iter().position(|x| *x == endpoint);
    match e {
        Some(e) if installed => SERIES.durations[e]
            .get_or_init(|| metrics::histogram!(REQUEST_DURATION, "endpoint" => endpoint))
            .record(took.as_secs_f64()),
        _ => metrics::histogram!(REQUEST_DURATION, "endpoint" => endpoint).record(took.as_secs_f64()),
    }
}

/// Record one provider call: the one writer of the provider request counter and latency histogram. Only
/// `identity::measured` calls it, so the labels cannot drift between providers.
pub fn record_provider_call(
    provider: &str,
    operation: &'static str,
    started: std::time::Instant,
    outcome: &'static str,
) {
    let labels = [("provider", provider.to_string()), ("operation", operation.to_string())];
    metrics::histogram!(PROVIDER_DURATION, &labels).record(started.elapsed().as_secs_f64());
    metrics::counter!(PROVIDER_REQUESTS, "provider" => provider.to_string(), "operation" => operation, "outcome" => outcome)
        .increment(1);
}

/// The outcomes of [`ACCESS_TOKEN_LOGINS`]: `ok`; `malformed` (refused before any store read); `unknown`
/// (no such token), `expired`, `revoked`, `owner_refused` (the owner is gone, disabled, or their session
/// ended); `unavailable` (a store or provider could not answer); `disabled` (access tokens are off).
pub const ACCESS_TOKEN_OUTCOMES: [&str; 8] =
    ["ok", "malformed", "unknown", "expired", "revoked", "owner_refused", "unavailable", "disabled"];

static ACCESS_TOKEN_SERIES: [OnceLock<metrics::Counter>; 8] = [const { OnceLock::new() }; 8];

/// Count one access-token login with `outcome`, one of [`ACCESS_TOKEN_OUTCOMES`].
pub fn access_token_login(outcome: &'static str) {
    let installed = HANDLE.get().is_some_and(Option::is_some);
    match ACCESS_TOKEN_OUTCOMES.iter().position(|x| *x == outcome) {
        Some(i) if installed => ACCESS_TOKEN_SERIES[i]
            .get_or_init(|| metrics::counter!(ACCESS_TOKEN_LOGINS, "outcome" => outcome))
            .increment(1),
        _ => metrics::counter!(ACCESS_TOKEN_LOGINS, "outcome" => outcome).increment(1),
    }
}

static ACCESS_TOKEN_LOOKUP_SERIES: OnceLock<metrics::Counter> = OnceLock::new();

/// Count one access-token store lookup ([`ACCESS_TOKEN_LOOKUPS`]), through a handle kept once the recorder
/// is installed (a lookup by name per login cost more than the HMAC it counts).
pub fn access_token_lookup() {
    if HANDLE.get().is_some_and(Option::is_some) {
        ACCESS_TOKEN_LOOKUP_SERIES.get_or_init(|| metrics::counter!(ACCESS_TOKEN_LOOKUPS)).increment(1);
    } else {
        metrics::counter!(ACCESS_TOKEN_LOOKUPS).increment(1);
    }
}

/// The outcomes of [`WORKLOAD_LOGINS`].
pub const WORKLOAD_OUTCOMES: [&str; 3] = ["ok", "refused", "unavailable"];

/// The [`WORKLOAD_LOGINS`] counters of one issuer, looked up once (a lookup by name and labels per login
/// cost more than the cached login it counts), in [`WORKLOAD_OUTCOMES`] order.
#[derive(Clone)]
pub struct WorkloadLogins([metrics::Counter; 3]);

impl WorkloadLogins {
    /// The counters of `issuer` (a configured issuer URL, or `untrusted`), exported at zero.
    pub fn new(issuer: &str) -> WorkloadLogins {
        let counter = |outcome: &'static str| {
            let c = metrics::counter!(WORKLOAD_LOGINS, "issuer" => issuer.to_string(), "outcome" => outcome);
            c.increment(0);
            c
        };
        WorkloadLogins(WORKLOAD_OUTCOMES.map(counter))
    }

    /// Count one login with `outcome`, one of [`WORKLOAD_OUTCOMES`].
    pub fn count(&self, outcome: &str) {
        if let Some(i) = WORKLOAD_OUTCOMES.iter().position(|o| *o == outcome) {
            self.0[i].increment(1);
        }
    }
}

/// Export every series whose labels are known at start at zero, so `rate()` and absent-series alerts work
/// before the first event. Provider series come with each provider ([`register_provider`]).
fn register_known_series() {
    for (o, outcome) in OUTCOMES.iter().enumerate() {
        for (c, client) in CLIENT_LABELS.iter().enumerate() {
            SERIES.tokens[o][c]
                .get_or_init(|| metrics::counter!(TOKEN_REQUESTS, "outcome" => *outcome, "client_id" => *client));
        }
    }
    for (e, endpoint) in ["token", "whoami"].iter().enumerate() {
        SERIES.durations[e].get_or_init(|| metrics::histogram!(REQUEST_DURATION, "endpoint" => *endpoint));
    }
    for limit in ["client_account", "ip", "account"] {
        metrics::counter!(RATE_LIMITED, "limit" => limit).increment(0);
    }
    metrics::counter!(RATE_LIMIT_FALLBACKS).increment(0);
    metrics::counter!(PASSWORD_CHECKS_SHED).increment(0);
    metrics::counter!(PASSWORD_CHECKS).increment(0);
    metrics::counter!(PASSWORD_CHECKS_ABANDONED).increment(0);
    metrics::counter!(LOGINS_ABANDONED).increment(0);
    for kind in ["unknown", "malformed"] {
        metrics::counter!(FORWARDED_UNPARSED, "kind" => kind).increment(0);
    }
    metrics::counter!(LOG_LINES_DROPPED).increment(0);
    metrics::counter!(REDIS_FAILOVERS).increment(0);
    metrics::gauge!(REDIS_EVICTING).set(0.0);
    metrics::gauge!(REDIS_REPLICAS_SHORT).set(0.0);
    metrics::counter!(FAILED_LOGINS, "provider" => "none").increment(0);
    WorkloadLogins::new("untrusted");
    for (i, outcome) in ACCESS_TOKEN_OUTCOMES.iter().enumerate() {
        ACCESS_TOKEN_SERIES[i].get_or_init(|| metrics::counter!(ACCESS_TOKEN_LOGINS, "outcome" => *outcome));
    }
    ACCESS_TOKEN_LOOKUP_SERIES.get_or_init(|| metrics::counter!(ACCESS_TOKEN_LOOKUPS)).increment(0);
    metrics::counter!(ACCESS_TOKEN_LAST_USED_WRITES).increment(0);
    for result in ["ok", "error"] {
        metrics::counter!(POLICY_RELOADS, "result" => result).increment(0);
        metrics::counter!(CONFIG_RELOADS, "result" => result).increment(0);
    }
    for listener in ["main", "metrics"] {
        metrics::gauge!(CONNECTIONS_OPEN, "listener" => listener).increment(0.0);
        for reason in ["total", "per_client"] {
            metrics::counter!(CONNECTIONS_REFUSED, "listener" => listener, "reason" => reason).increment(0);
        }
        for phase in ["tls_handshake", "first_byte", "first_request", "idle", "max_age"] {
            metrics::counter!(CONNECTIONS_TIMED_OUT, "listener" => listener, "phase" => phase).increment(0);
        }
        metrics::counter!(CONNECTIONS_SHED, "listener" => listener).increment(0);
    }
}

/// Export a provider's series at zero: its failed logins, and for each operation the latency histogram
/// and the request counter of every outcome (`identity::measured` names both lists).
pub fn register_provider(provider: &str, operations: &[&'static str], outcomes: &[&'static str]) {
    metrics::counter!(FAILED_LOGINS, "provider" => provider.to_string()).increment(0);
    for operation in operations {
        let labels = [("provider", provider.to_string()), ("operation", operation.to_string())];
        let _ = metrics::histogram!(PROVIDER_DURATION, &labels);
        for outcome in outcomes {
            metrics::counter!(PROVIDER_REQUESTS, "provider" => provider.to_string(), "operation" => *operation, "outcome" => *outcome)
                .increment(0);
        }
    }
}

/// Whether the recorder is installed in this process (metrics are recorded and `/metrics` answers).
pub fn installed() -> bool {
    HANDLE.get().is_some_and(Option::is_some)
}

/// The scrape body in the Prometheus text format; `None` when no recorder is installed in this process.
pub fn render() -> Option<String> {
    match HANDLE.get() {
        Some(Some(handle)) => {
            // The log writer counts its dropped lines; the counter is read at each scrape.
            metrics::counter!(LOG_LINES_DROPPED).absolute(log_writer::dropped());
            Some(handle.render())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_chosen_by_callers_never_become_label_values() {
        assert_eq!(client_label(Some("docker")), "docker");
        assert_eq!(client_label(Some("containers/image")), "containers/image");
        assert_eq!(client_label(None), "none");
        assert_eq!(client_label(Some("alice-password-hunter2")), "other");
        assert_eq!(client_label(Some("registry-client")), "registry-client", "the last known client");
        assert_eq!(client_label(Some("other")), "other");
    }
}

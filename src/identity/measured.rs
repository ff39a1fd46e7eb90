//! The one place that times and counts provider calls: a decorator the server puts around every provider,
//! below its identity cache, so only the calls that reach the provider count.
//!
//! Every provider and every operation records the same labels: `operation` is the trait method
//! (`authenticate`, `recheck`, `keep_session`, `device_start`, `device_poll`, `probe`) and `outcome` one of
//! [`OUTCOMES`]. A provider cannot spell them its own way, because it never records them itself.

use std::sync::Arc;
use std::time::Instant;

use secrecy::SecretString;

use super::{DeviceLogin, DevicePoll, DeviceStart, Failure, Identity, Outcome, Provider};
use crate::support::BoxFuture;
use crate::telemetry;

/// The `outcome` label values of `tollgate_provider_requests_total`, for every operation: an answer
/// (`ok`: an identity, a re-checked account, a device flow step, a probe that passed), `not_mine` (the
/// provider does not know the user), and the two kinds of [`Failure`].
pub const OUTCOMES: [&str; 4] = ["ok", "not_mine", "refused", "unavailable"];

/// A provider whose calls are timed and counted.
pub struct Measured {
    inner: Arc<dyn Provider>,
    /// The device flow of `inner`, measured too (None when `inner` has none).
    device: Option<MeasuredDevice>,
}

struct MeasuredDevice {
    inner: Arc<dyn Provider>,
}

impl Measured {
    /// Wrap `inner`, and export its series at zero: the operations it offers, with every outcome.
    pub fn new(inner: Arc<dyn Provider>) -> Measured {
        let device = inner.device_login().is_some().then(|| MeasuredDevice { inner: Arc::clone(&inner) });
        let mut operations = vec!["authenticate", "recheck", "probe"];
        if device.is_some() {
            operations.extend(["keep_session", "device_start", "device_poll"]);
        }
        if inner.workload_issuer().is_some() {
            operations.push("jwks_fetch");
        }
        telemetry::register_provider(inner.name(), &operations, &OUTCOMES);
        Measured { inner, device }
    }
}

/// Run one call of `provider` and record its duration and outcome.
async fn record<T>(
    provider: &str,
    operation: &'static str,
    call: BoxFuture<'_, Result<T, Failure>>,
    label: impl Fn(&T) -> &'static str,
) -> Result<T, Failure> {
    let started = Instant::now();
    let result = call.await;
    let outcome = match &result {
        Ok(v) => label(v),
        Err(f) => f.label(),
    };
    telemetry::record_provider_call(provider, operation, started, outcome);
    result
}

fn ok<T>(_: &T) -> &'static str {
    "ok"
}

impl Provider for Measured {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn authenticate<'a>(
        &'a self,
        username: &'a str,
        password: &'a SecretString,
    ) -> BoxFuture<'a, Result<Outcome, Failure>> {
        Box::pin(record(self.name(), "authenticate", self.inner.authenticate(username, password), |o| match o {
            Outcome::Authenticated(_) => "ok",
            Outcome::NotMine => "not_mine",
        }))
    }

    fn recheck<'a>(&'a self, username: &'a str) -> BoxFuture<'a, Result<Identity, Failure>> {
        Box::pin(record(self.name(), "recheck", self.inner.recheck(username), ok))
    }

    fn recheck_session<'a>(
        &'a self,
        username: &'a str,
        sid: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Identity, Failure>> {
        Box::pin(record(self.name(), "recheck", self.inner.recheck_session(username, sid), ok))
    }

    fn keep_session<'a>(&'a self, sid: &'a str) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(record(self.name(), "keep_session", self.inner.keep_session(sid), ok))
    }

    fn device_login(&self) -> Option<&dyn DeviceLogin> {
        self.device.as_ref().map(|d| d as &dyn DeviceLogin)
    }

    fn probe(&self) -> BoxFuture<'_, Result<(), Failure>> {
        Box::pin(record(self.name(), "probe", self.inner.probe(), ok))
    }

    fn generation(&self) -> u64 {
        self.inner.generation()
    }

    fn workload_issuer(&self) -> Option<&str> {
        self.inner.workload_issuer()
    }

    fn forget<'a>(&'a self, which: &'a super::Forget) -> BoxFuture<'a, usize> {
        self.inner.forget(which)
    }

    fn backchannel_logout(&self) -> Option<&dyn super::BackchannelLogout> {
        self.inner.backchannel_logout()
    }
}

impl DeviceLogin for MeasuredDevice {
    fn start_device(&self) -> BoxFuture<'_, Result<DeviceStart, Failure>> {
        Box::pin(async move {
            let Some(login) = self.inner.device_login() else {
                return Err(Failure::unavailable("the provider no longer offers device login"));
            };
            record(self.inner.name(), "device_start", login.start_device(), ok).await
        })
    }

    fn poll_device<'a>(&'a self, device_code: &'a SecretString) -> BoxFuture<'a, Result<DevicePoll, Failure>> {
        Box::pin(async move {
            let Some(login) = self.inner.device_login() else {
                return Err(Failure::unavailable("the provider no longer offers device login"));
            };
            record(self.inner.name(), "device_poll", login.poll_device(device_code), ok).await
        })
    }
}

/// Record a fetch of a workload issuer's keys (`operation="jwks_fetch"`, `ok` or `unavailable`): a call
/// the provider makes on its own, in the background or on an unknown key id, not through the trait.
pub fn record_key_fetch(provider: &str, started: Instant, fetched: bool) {
    telemetry::record_provider_call(provider, "jwks_fetch", started, if fetched { "ok" } else { "unavailable" });
}

//! The ordered provider chain.
//!
//! Password providers are asked in order. The first that knows the user decides: an identity, or a
//! refusal (the chain stops: a wrong directory password must not be retried against the next provider). A
//! provider that cannot be reached stops the chain too, as unavailable, because silently skipping it could
//! let a same-named account in a later provider answer for the user.
//!
//! Workload tokens (JWTs) never go down that list: each goes to the one workload provider whose issuer it
//! names, found by issuer, and a JWT from an issuer nobody trusts is refused without asking anyone.

use std::collections::HashMap;
use std::sync::Arc;

use secrecy::SecretString;

use super::workload::Peek;
use super::{Failure, Identity, Outcome, Provider};
use crate::telemetry::WorkloadLogins;

/// Why the chain gave no identity: the decisive provider's [`Failure`], and which provider that was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainError {
    /// The provider that refused or could not answer; None when no provider knows the user, or no workload
    /// provider trusts the token's issuer.
    pub provider: Option<String>,
    pub failure: Failure,
}

impl ChainError {
    fn of(provider: &dyn Provider, failure: Failure) -> ChainError {
        ChainError { provider: Some(provider.name().to_string()), failure }
    }

    fn nobody(reason: String) -> ChainError {
        ChainError { provider: None, failure: Failure::Refused(reason) }
    }

    /// The provider's name for the log and the metrics: `none` when no provider decided.
    pub fn provider_label(&self) -> &str {
        self.provider.as_deref().unwrap_or("none")
    }
}

impl std::fmt::Display for ChainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "provider {}: {}", self.provider_label(), self.failure)
    }
}

/// A workload provider and its login counters.
#[derive(Clone)]
struct Workload {
    provider: Arc<dyn Provider>,
    logins: WorkloadLogins,
}

#[derive(Clone, Default)]
pub struct Chain {
    providers: Vec<Arc<dyn Provider>>,
    /// The workload providers by the issuer they trust.
    workloads: HashMap<String, Workload>,
    /// Login counters of tokens from issuers nobody trusts.
    untrusted: Option<WorkloadLogins>,
}

impl Chain {
    pub fn new(providers: Vec<Arc<dyn Provider>>) -> Self {
        let workloads = providers
            .iter()
            .filter_map(|p| {
                let issuer = p.workload_issuer()?;
                Some((issuer.to_string(), Workload { provider: Arc::clone(p), logins: WorkloadLogins::new(issuer) }))
            })
            .collect();
        Chain { providers, workloads, untrusted: Some(WorkloadLogins::new("untrusted")) }
    }

    pub fn providers(&self) -> &[Arc<dyn Provider>] {
        &self.providers
    }

    /// The provider named `name`.
    pub fn provider(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.providers.iter().find(|p| p.name() == name)
    }

    /// Ask the password providers, in order, about a username and password.
    pub async fn authenticate(&self, username: &str, password: &SecretString) -> Result<Arc<Identity>, ChainError> {
        for p in self.providers.iter().filter(|p| p.workload_issuer().is_none()) {
            match p.authenticate(username, password).await {
                Ok(Outcome::Authenticated(id)) => return Ok(id),
                Ok(Outcome::NotMine) => continue,
                Err(failure) => return Err(ChainError::of(p.as_ref(), failure)),
            }
        }
        Err(ChainError::nobody("unknown user".into()))
    }

    /// Verify a workload token with the provider that trusts the issuer it names (`peek`, read once by the
    /// caller); refused when none does.
    pub async fn authenticate_workload(
        &self,
        peek: &Peek,
        username: &str,
        token: &SecretString,
    ) -> Result<Arc<Identity>, ChainError> {
        let Some(w) = self.workloads.get(&peek.iss) else {
            if let Some(c) = &self.untrusted {
                c.count("refused");
            }
            return Err(ChainError::nobody(format!(
                "a JWT from the issuer {:?}, which no workload provider trusts",
                peek.iss
            )));
        };
        let result = match w.provider.authenticate(username, token).await {
            Ok(Outcome::Authenticated(id)) => Ok(id),
            Ok(Outcome::NotMine) => Err(Failure::refused("not accepted")),
            Err(failure) => Err(failure),
        };
        w.logins.count(match &result {
            Ok(_) => "ok",
            Err(f) => f.label(),
        });
        result.map_err(|failure| ChainError::of(w.provider.as_ref(), failure))
    }

    /// A refresh token is being issued for `provider`'s login session `sid` (see [`Provider::keep_session`]).
    pub async fn keep_session(&self, provider: &str, sid: &str) -> Result<(), ChainError> {
        match self.provider(provider) {
            Some(p) => p.keep_session(sid).await.map_err(|f| ChainError::of(p.as_ref(), f)),
            None => Ok(()),
        }
    }

    /// Re-check the account behind a refresh token with the provider that issued it, passing the login
    /// session (`sid`) the token is linked to, if any. A provider that is no longer configured means the
    /// account is gone.
    pub async fn recheck_session(
        &self,
        provider: &str,
        username: &str,
        sid: Option<&str>,
    ) -> Result<Identity, ChainError> {
        match self.provider(provider) {
            Some(p) => p.recheck_session(username, sid).await.map_err(|f| ChainError::of(p.as_ref(), f)),
            None => Err(ChainError::nobody(format!("provider {provider:?} is no longer configured"))),
        }
    }
}

//! The ordered provider chain.
//!
//! Providers are asked in order. The first that knows the user decides: authenticated, or rejected (the chain
//! stops: a wrong directory password must not be retried against the next provider). A provider that cannot be
//! reached stops the chain too, with "unavailable", because silently skipping it could let a same-named
//! account in a later provider answer for the user.

use std::sync::Arc;

use secrecy::SecretString;

use super::{Identity, Outcome, Provider, Recheck, Unavailable};
use crate::telemetry::WorkloadLogins;

/// The chain's verdict.
#[derive(Debug, Clone)]
pub enum ChainOutcome {
    Authenticated(Arc<Identity>),
    /// 401. `provider` is the one that refused, or None when no provider knows the user. For the log only.
    Rejected {
        provider: Option<String>,
        reason: String,
    },
    /// 503.
    Unavailable(Unavailable),
}

#[derive(Clone, Default)]
pub struct Chain {
    providers: Vec<Arc<dyn Provider>>,
    /// Login counters of each workload provider (same index as `providers`), and of untrusted issuers.
    workload_logins: Vec<Option<WorkloadLogins>>,
    untrusted: Option<WorkloadLogins>,
}

impl Chain {
    pub fn new(providers: Vec<Arc<dyn Provider>>) -> Self {
        let workload_logins = providers.iter().map(|p| p.workload_issuer().map(WorkloadLogins::new)).collect();
        Chain { providers, workload_logins, untrusted: Some(WorkloadLogins::new("untrusted")) }
    }

    pub fn providers(&self) -> &[Arc<dyn Provider>] {
        &self.providers
    }

    /// Whether `provider` verifies workload tokens.
    pub fn is_workload(&self, provider: &str) -> bool {
        self.providers.iter().any(|p| p.name() == provider && p.workload_issuer().is_some())
    }

    /// Ask the providers about a username and password. A password that is a JWT goes only to the workload
    /// provider that trusts its issuer (and is refused when none does); any other password goes only to the
    /// password providers. Neither ever reaches the other kind.
    /// `peek` is what [`super::workload::jwt_issuer`] said about the password (the caller has looked
    /// already, to key its limits).
    pub async fn authenticate(
        &self,
        username: &str,
        password: &SecretString,
        peek: Option<&super::workload::Peek>,
    ) -> ChainOutcome {
        if let Some(peek) = peek {
            return self.authenticate_workload(&peek.iss, username, password).await;
        }
        for p in self.providers.iter().filter(|p| p.workload_issuer().is_none()) {
            match p.authenticate(username, password).await {
                Ok(Outcome::Authenticated(id)) => return ChainOutcome::Authenticated(id),
                Ok(Outcome::Rejected(reason)) => {
                    return ChainOutcome::Rejected { provider: Some(p.name().to_string()), reason }
                }
                Ok(Outcome::NotMine) => continue,
                Err(e) => return ChainOutcome::Unavailable(e),
            }
        }
        ChainOutcome::Rejected { provider: None, reason: "unknown user".into() }
    }

    async fn authenticate_workload(&self, iss: &str, username: &str, token: &SecretString) -> ChainOutcome {
        let Some(i) = self.providers.iter().position(|p| p.workload_issuer() == Some(iss)) else {
            if let Some(c) = &self.untrusted {
                c.count("rejected");
            }
            let iss: String = iss.chars().take(200).collect();
            return ChainOutcome::Rejected {
                provider: None,
                reason: format!("a JWT from the issuer {iss:?}, which no workload provider trusts"),
            };
        };
        let p = &self.providers[i];
        let (outcome, label) = match p.authenticate(username, token).await {
            Ok(Outcome::Authenticated(id)) => (ChainOutcome::Authenticated(id), "authenticated"),
            Ok(Outcome::Rejected(reason)) => {
                (ChainOutcome::Rejected { provider: Some(p.name().to_string()), reason }, "rejected")
            }
            Ok(Outcome::NotMine) => (
                ChainOutcome::Rejected { provider: Some(p.name().to_string()), reason: "not accepted".into() },
                "rejected",
            ),
            Err(e) => (ChainOutcome::Unavailable(e), "unavailable"),
        };
        if let Some(Some(c)) = self.workload_logins.get(i) {
            c.count(label);
        }
        outcome
    }

    /// A refresh token is being issued for `provider`'s login session `sid` (see [`Provider::keep_session`]).
    pub async fn keep_session(&self, provider: &str, sid: &str) -> Result<(), Unavailable> {
        match self.providers.iter().find(|p| p.name() == provider) {
            Some(p) => p.keep_session(sid).await,
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
    ) -> Result<Recheck, Unavailable> {
        match self.providers.iter().find(|p| p.name() == provider) {
            Some(p) => p.recheck_session(username, sid).await,
            None => Ok(Recheck::Gone(format!("provider {provider:?} is no longer configured"))),
        }
    }
}

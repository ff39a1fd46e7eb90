//! The OIDC provider behind the provider contract: the password grant, session re-checks, the device
//! flow and the readiness probe, each counted and timed.

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};

use super::idp::{error_chain, Idp, IdpError};
use super::session::Sessions;
use crate::config::oidc::OidcSettings;
use crate::identity::{measured, DeviceLogin, DevicePoll, DeviceStart, Outcome, Provider, Recheck, Unavailable};
use crate::store::sessions::SessionStore;
use crate::support::BoxFuture;

/// An OpenID Connect provider (`type: oidc`).
pub struct OidcProvider {
    cfg: OidcSettings,
    idp: Idp,
    sessions: Sessions,
    username_re: Option<regex::Regex>,
}

impl OidcProvider {
    /// Build from a validated config. No network here: discovery happens on first use, so tollgate starts
    /// while an IdP is down (and reports it on /readyz and as 503).
    pub fn new(cfg: OidcSettings, sessions: Arc<dyn SessionStore>, recheck_after: Duration) -> Result<Self, String> {
        let name = cfg.name.clone();
        let sessions = Sessions::new(&cfg, sessions, recheck_after);
        let idp = Idp::new(&cfg, cfg.times.timeout)?;
        let username_re = match &cfg.username_regex {
            Some(r) => Some(
                regex::Regex::new(&format!("^(?:{r})$"))
                    .map_err(|e| format!("providers {name}: username_regex: {e}"))?,
            ),
            None => None,
        };
        crate::telemetry::register_provider(&cfg.name, crate::telemetry::OIDC_SERIES);
        Ok(OidcProvider { cfg, idp, sessions, username_re })
    }

    fn scope(&self) -> String {
        match &self.cfg.scopes {
            Some(s) => s.join(" "),
            None => "openid profile email".into(),
        }
    }

    async fn password_login(&self, username: &str, password: &SecretString) -> Result<Outcome, Unavailable> {
        let d = self.idp.discovered().await?;
        let scope = self.scope();
        let form = [
            ("grant_type", "password"),
            ("username", username),
            ("password", password.expose_secret()),
            ("scope", scope.as_str()),
        ];
        let tokens = match self.idp.token_request(&d, &form).await {
            Ok(t) => t,
            Err(IdpError::Refused(code)) => {
                return Ok(Outcome::Rejected(format!("the IdP refused the password grant ({code})")))
            }
            Err(IdpError::Unavailable(m)) => return Err(self.idp.unavailable(m)),
        };
        Ok(match self.sessions.login(&self.idp, &self.cfg, &d, &tokens).await? {
            Ok(identity) => Outcome::Authenticated(Arc::new(identity)),
            Err(reason) => Outcome::Rejected(reason),
        })
    }

    /// Whether this provider offers device login (configured, and the IdP has a device endpoint).
    pub fn device_enabled(&self) -> bool {
        self.cfg.device_grant.unwrap_or(true)
    }
}

impl Provider for OidcProvider {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn authenticate<'a>(
        &'a self,
        username: &'a str,
        password: &'a SecretString,
    ) -> BoxFuture<'a, Result<Outcome, Unavailable>> {
        Box::pin(async move {
            if !self.cfg.password_grant.unwrap_or(true)
                || self.username_re.as_ref().is_some_and(|r| !r.is_match(username))
            {
                return Ok(Outcome::NotMine);
            }
            measured(&self.cfg.name, "password", self.password_login(username, password), |o| match o {
                Outcome::Authenticated(_) => "ok",
                Outcome::Rejected(_) => "rejected",
                Outcome::NotMine => "not_mine",
            })
            .await
        })
    }

    fn recheck<'a>(&'a self, _username: &'a str) -> BoxFuture<'a, Result<Recheck, Unavailable>> {
        // An OIDC account cannot be re-read without a session (there is no directory to search).
        Box::pin(async { Ok(Recheck::Gone("no login session is linked to this token; log in again".into())) })
    }

    fn recheck_session<'a>(
        &'a self,
        username: &'a str,
        sid: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Recheck, Unavailable>> {
        Box::pin(async move {
            let Some(sid) = sid else { return self.recheck(username).await };
            measured(&self.cfg.name, "refresh", self.sessions.recheck(&self.idp, &self.cfg, username, sid), |r| match r
            {
                Recheck::Current(_) => "ok",
                Recheck::Gone(_) => "rejected",
            })
            .await
        })
    }

    fn keep_session<'a>(&'a self, sid: &'a str) -> BoxFuture<'a, Result<(), Unavailable>> {
        Box::pin(self.sessions.keep(sid))
    }

    fn probe(&self) -> BoxFuture<'_, Result<(), Unavailable>> {
        Box::pin(async move {
            let url = format!("{}/.well-known/openid-configuration", self.cfg.issuer.trim_end_matches('/'));
            let f = async {
                let resp = self.idp.http.get(&url).send().await.map_err(|e| self.idp.unavailable(error_chain(&e)))?;
                if resp.status().is_success() {
                    Ok(())
                } else {
                    Err(self.idp.unavailable(format!("discovery answered {}", resp.status())))
                }
            };
            measured(&self.cfg.name, "probe", f, |_| "ok").await
        })
    }

    fn device_login(&self) -> Option<&dyn DeviceLogin> {
        if self.device_enabled() {
            Some(self)
        } else {
            None
        }
    }
}

impl DeviceLogin for OidcProvider {
    fn start_device(&self) -> BoxFuture<'_, Result<DeviceStart, Unavailable>> {
        Box::pin(async move {
            let scope = self.scope();
            measured(&self.cfg.name, "device_start", super::device::start(&self.idp, &scope), |_| "ok").await
        })
    }

    fn poll_device<'a>(&'a self, device_code: &'a SecretString) -> BoxFuture<'a, Result<DevicePoll, Unavailable>> {
        Box::pin(async move {
            let f = super::device::poll(&self.idp, &self.sessions, &self.cfg, device_code);
            measured(&self.cfg.name, "device_poll", f, |p| match p {
                DevicePoll::Done(_) => "ok",
                DevicePoll::Pending | DevicePoll::SlowDown => "pending",
                _ => "rejected",
            })
            .await
        })
    }
}

//! The OIDC provider behind the provider contract: the password grant, session re-checks, the device
//! flow and the readiness probe.

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};

use super::idp::{error_chain, Idp};
use super::session::Sessions;
use crate::config::oidc::OidcSettings;
use crate::identity::{
    BackchannelLogout, DeviceLogin, DevicePoll, DeviceStart, Failure, Identity, LogoutRequest, Outcome, Provider,
    SessionsEnded,
};
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
        Ok(OidcProvider { cfg, idp, sessions, username_re })
    }

    fn scope(&self) -> String {
        match &self.cfg.scopes {
            Some(s) => s.join(" "),
            None => "openid profile email".into(),
        }
    }

    async fn password_login(&self, username: &str, password: &SecretString) -> Result<Outcome, Failure> {
        let d = self.idp.discovered().await?;
        let scope = self.scope();
        let form = [
            ("grant_type", "password"),
            ("username", username),
            ("password", password.expose_secret()),
            ("scope", scope.as_str()),
        ];
        let tokens = self.idp.token_request(&d, &form).await.map_err(|e| match e {
            Failure::Refused(code) => Failure::Refused(format!("the IdP refused the password grant ({code})")),
            other => other,
        })?;
        Ok(Outcome::Authenticated(Arc::new(self.sessions.login(&self.idp, &self.cfg, &d, &tokens).await?)))
    }

    /// `check-config --probe`: discovery, the JWKS and the device endpoint, in words.
    pub async fn check(&self) -> Vec<crate::identity::Check> {
        super::check::run(&self.cfg, &self.idp, self.device_enabled(), &self.scope()).await
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
    ) -> BoxFuture<'a, Result<Outcome, Failure>> {
        Box::pin(async move {
            if !self.cfg.password_grant.unwrap_or(true)
                || self.username_re.as_ref().is_some_and(|r| !r.is_match(username))
            {
                return Ok(Outcome::NotMine);
            }
            self.password_login(username, password).await
        })
    }

    fn recheck<'a>(&'a self, _username: &'a str) -> BoxFuture<'a, Result<Identity, Failure>> {
        // An OIDC account cannot be re-read without a session (there is no directory to search).
        Box::pin(async { Err(Failure::refused("no login session is linked to this token; log in again")) })
    }

    fn recheck_session<'a>(
        &'a self,
        username: &'a str,
        sid: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Identity, Failure>> {
        Box::pin(async move {
            match sid {
                Some(sid) => self.sessions.recheck(&self.idp, &self.cfg, username, sid).await,
                None => self.recheck(username).await,
            }
        })
    }

    fn keep_session<'a>(&'a self, sid: &'a str) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(self.sessions.keep(sid))
    }

    fn probe(&self) -> BoxFuture<'_, Result<(), Failure>> {
        Box::pin(async move {
            let url = format!("{}/.well-known/openid-configuration", self.cfg.issuer.trim_end_matches('/'));
            let resp = self.idp.http.get(&url).send().await.map_err(|e| Failure::unavailable(error_chain(&e)))?;
            if resp.status().is_success() {
                Ok(())
            } else {
                Err(Failure::Unavailable(format!("discovery answered {}", resp.status())))
            }
        })
    }

    fn backchannel_logout(&self) -> Option<&dyn BackchannelLogout> {
        Some(self)
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
    fn start_device(&self) -> BoxFuture<'_, Result<DeviceStart, Failure>> {
        Box::pin(async move { super::device::start(&self.idp, &self.scope()).await })
    }

    fn poll_device<'a>(&'a self, device_code: &'a SecretString) -> BoxFuture<'a, Result<DevicePoll, Failure>> {
        Box::pin(super::device::poll(&self.idp, &self.sessions, &self.cfg, device_code))
    }
}

impl BackchannelLogout for OidcProvider {
    fn verify_logout<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<LogoutRequest, Failure>> {
        Box::pin(super::logout::verify(&self.idp, token))
    }

    fn end_sessions<'a>(
        &'a self,
        sid: Option<&'a str>,
        sub: Option<&'a str>,
    ) -> BoxFuture<'a, Result<SessionsEnded, Failure>> {
        Box::pin(self.sessions.end_idp_session(sid, sub))
    }
}

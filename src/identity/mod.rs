//! Who is asking: the identity a provider vouches for, and the provider contract.
//!
//! A provider answers one question for a username and secret: who it is ([`Outcome::Authenticated`]), not
//! one of mine ([`Outcome::NotMine`], ask the next provider), or no identity, for one of the two reasons of
//! [`Failure`]: refused (401) or unavailable (503, or a cached identity). Every provider, for every operation,
//! speaks these terms and nothing else.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::support::BoxFuture;

/// How the caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// No credentials at all.
    Anonymous,
    /// A username and password (or robot secret) checked by a provider.
    Password,
    /// A tollgate refresh token, through `grant_type=refresh_token` or as a Basic password.
    RefreshToken,
    /// An SSO device login (RFC 8628) approved at the identity provider.
    Device,
    /// A workload's signed identity token (a CI job's or a pod's JWT), as a Basic password or exchanged
    /// (RFC 8693).
    Workload,
    /// A personal or group access token (`tgp_…`) as a Basic password.
    AccessToken,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Anonymous => "anonymous",
            AuthMethod::Password => "password",
            AuthMethod::RefreshToken => "refresh_token",
            AuthMethod::Device => "device",
            AuthMethod::Workload => "workload",
            AuthMethod::AccessToken => "access_token",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "anonymous" => Some(AuthMethod::Anonymous),
            "password" => Some(AuthMethod::Password),
            "refresh_token" => Some(AuthMethod::RefreshToken),
            "device" => Some(AuthMethod::Device),
            "workload" => Some(AuthMethod::Workload),
            "access_token" => Some(AuthMethod::AccessToken),
            _ => None,
        }
    }
}

/// An authenticated (or anonymous) principal.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Identity {
    /// The username; empty for the anonymous identity.
    pub username: String,
    /// The name of the provider that vouched for it; empty for anonymous.
    pub provider: String,
    /// Group names, already mapped to the short form the rules file uses.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Extra attributes from the provider (OIDC claims, LDAP attributes, account labels).
    #[serde(default)]
    pub claims: BTreeMap<String, serde_json::Value>,
    /// Which account this is, beyond its name: a refresh token remembers it, and an account deleted and
    /// created again under the same name (another instance) does not accept the old account's tokens.
    /// Static accounts: a digest of the name and the password hash (a new secret is a new instance); OIDC:
    /// the IdP's `sub`. None where a provider has no such id (LDAP): those tokens are not bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The moment (unix seconds) after which nobody vouches for this identity any more: a workload token's
    /// `exp`. Such an identity gets no refresh token, and no cache entry serves it past this moment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

impl Identity {
    pub fn anonymous() -> Self {
        Identity::default()
    }

    pub fn is_anonymous(&self) -> bool {
        self.username.is_empty()
    }

    /// Whether the identity is past its `expires_at`.
    pub fn expired(&self) -> bool {
        self.expires_at.is_some_and(|at| crate::support::time::unix_now() >= at)
    }
}

/// The HTTP client a provider talks to its IdP or issuer with: `timeout` on every request, redirects never
/// followed, and the CAs of `ca_file` (PEM) trusted besides the system roots.
pub fn http_client(
    provider: &str,
    timeout: Duration,
    ca_file: Option<&std::path::Path>,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder().timeout(timeout).redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("providers {provider}: {}: {e}", ca.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("providers {provider}: {}: not a PEM bundle: {e}", ca.display()))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| format!("providers {provider}: HTTP client: {e}"))
}

/// Everything the policy may look at besides the requested scope.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub identity: Arc<Identity>,
    pub auth_method: AuthMethod,
    pub client_ip: IpAddr,
    /// The registry service (token audience) the token is for.
    pub service: String,
}

/// What one provider says about a username and secret, when it has an answer that is not a refusal.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The credentials are good: here is who it is. Shared: a cache hit hands out the cached copy.
    Authenticated(Arc<Identity>),
    /// This provider does not know the user; the chain asks the next provider.
    NotMine,
}

/// Why a provider gave no identity: the one failure type every provider speaks, for every operation
/// (a login, a refresh token's re-check, a device login, a readiness probe). The two variants are the
/// core promise of the token endpoint, 401 versus 503 (`Busy` is a 503 of this process's own), so a provider never has to spell them itself.
/// Neither message ever contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The provider knows the user (or the token's issuer) and refuses: a wrong password, an account
    /// disabled, expired or gone, a token that does not verify. The chain stops with 401, and the caches
    /// remember it briefly. The reason goes to the log and the audit line, never to the client.
    #[error("refused: {0}")]
    Refused(String),
    /// The provider could not answer: network, timeout, a server error, keys that cannot be fetched. The
    /// chain stops with 503 unless the cache may serve a stale identity; nothing is remembered.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Nothing is down, but this process has no capacity for the password check now: too many are running
    /// and waiting (`hashing::Saturated`), or the sender's share of them is used up. Answered 503 Busy
    /// with a short `Retry-After`, charged to the sender's failed-login budget, never cached.
    #[error("{0}")]
    Busy(crate::identity::hashing::Saturated),
}

impl Failure {
    pub fn refused(reason: impl Into<String>) -> Failure {
        Failure::Refused(reason.into())
    }

    pub fn unavailable(message: impl std::fmt::Display) -> Failure {
        Failure::Unavailable(message.to_string())
    }

    /// The `outcome` label of the provider metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Failure::Refused(_) => "refused",
            Failure::Unavailable(_) | Failure::Busy(_) => "unavailable",
        }
    }

    /// The message alone, without the kind.
    pub fn message(&self) -> &str {
        match self {
            Failure::Refused(m) | Failure::Unavailable(m) => m,
            Failure::Busy(_) => crate::identity::hashing::SATURATED,
        }
    }
}

/// The signature algorithms accepted on the signed events other systems send (back-channel logout tokens,
/// Shared Signals SETs): asymmetric only, so a key published in a JWKS can never serve as an HMAC secret.
pub const SIGNED_EVENT_ALGS: [jsonwebtoken::Algorithm; 9] = {
    use jsonwebtoken::Algorithm::*;
    [RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA]
};

/// How one check of `tollgate check-config --probe` went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    /// It works, but should not be left so.
    Warn,
    Fail,
}

/// One line of `check-config --probe`: what was checked, and what came of it, in words. A provider's
/// checks run in order and stop at the first failure a later one depends on (no bind after a failed
/// connect).
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked: "connect to ldap://dc:389", "bind as cn=svc,…".
    pub what: String,
    pub verdict: Verdict,
    /// The result or the reason, in words.
    pub detail: String,
}

impl Check {
    pub fn pass(what: impl Into<String>, detail: impl Into<String>) -> Check {
        Check { what: what.into(), verdict: Verdict::Pass, detail: detail.into() }
    }

    pub fn warn(what: impl Into<String>, detail: impl Into<String>) -> Check {
        Check { what: what.into(), verdict: Verdict::Warn, detail: detail.into() }
    }

    pub fn fail(what: impl Into<String>, detail: impl Into<String>) -> Check {
        Check { what: what.into(), verdict: Verdict::Fail, detail: detail.into() }
    }
}

/// The identity claim that carries a login session's id from the login to the refresh token issued for
/// it (OIDC sessions). The grant step removes it before the policy sees the identity.
pub const SESSION_CLAIM: &str = "tollgate_sid";

/// Longest username accepted (bytes), by the token endpoint before any provider, cache or limiter sees it
/// (nothing a client sends may grow a cache by more than this per entry), and by accounts files.
pub const MAX_USERNAME_LEN: usize = 256;

/// One poll of a device flow at the IdP. A refusal other than these (an unknown device code at the IdP)
/// is a [`Failure::Refused`] with the IdP's error code.
pub enum DevicePoll {
    Pending,
    SlowDown,
    Denied,
    Expired,
    Done(Identity),
}

/// What the IdP's device endpoint answered.
pub struct DeviceStart {
    /// The IdP's device code: a secret, only stored, never shown.
    pub device_code: SecretString,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub expires_in: Duration,
    pub interval: Duration,
}

/// A provider that can run the device flow at its IdP.
pub trait DeviceLogin: Send + Sync {
    fn start_device(&self) -> BoxFuture<'_, Result<DeviceStart, Failure>>;
    fn poll_device<'a>(&'a self, device_code: &'a SecretString) -> BoxFuture<'a, Result<DevicePoll, Failure>>;
}

/// An identity provider. Implementations must be cheap to call concurrently. Every call is timed and
/// counted in one place, [`measured::Measured`], which the server puts around each provider.
pub trait Provider: Send + Sync {
    /// The configured name, unique in the chain. It is recorded in identities and refresh tokens.
    fn name(&self) -> &str;

    /// Check a username and secret.
    fn authenticate<'a>(
        &'a self,
        username: &'a str,
        password: &'a SecretString,
    ) -> BoxFuture<'a, Result<Outcome, Failure>>;

    /// Re-read the account behind a refresh token: does it still exist, is it enabled, what are its groups
    /// now. An account that is gone, disabled or expired is [`Failure::Refused`].
    fn recheck<'a>(&'a self, username: &'a str) -> BoxFuture<'a, Result<Identity, Failure>>;

    /// Re-read the account behind a refresh token that is linked to a login session (`sid`, see
    /// `RefreshClaims::sid`). Providers without sessions ignore it. Default: [`Provider::recheck`].
    fn recheck_session<'a>(
        &'a self,
        username: &'a str,
        sid: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Identity, Failure>> {
        let _ = sid;
        self.recheck(username)
    }

    /// A refresh token is being issued for the login session `sid`: keep the session as long as such a
    /// token may need it. Default: nothing to keep.
    fn keep_session<'a>(&'a self, sid: &'a str) -> BoxFuture<'a, Result<(), Failure>> {
        let _ = sid;
        Box::pin(async { Ok(()) })
    }

    /// The device flow (RFC 8628) at this provider's IdP, when it offers one. Default: none.
    fn device_login(&self) -> Option<&dyn DeviceLogin> {
        None
    }

    /// Check that whatever the provider talks to can be reached, for `/readyz`. Must be cheap and bounded
    /// in time. Default: nothing remote, always reachable.
    fn probe(&self) -> BoxFuture<'_, Result<(), Failure>> {
        Box::pin(async { Ok(()) })
    }

    /// A number that changes whenever the provider's own data changes (an accounts file reloaded). Cached
    /// identities from an older generation are discarded, so a disabled robot stops working at once.
    fn generation(&self) -> u64 {
        0
    }

    /// The issuer whose workload tokens (JWTs) this provider verifies. The chain sends such a provider only
    /// JWTs with this `iss`, and sends JWTs nowhere else. Default: none (a password provider).
    fn workload_issuer(&self) -> Option<&str> {
        None
    }

    /// Forget what is cached about the identities `which` names (an invalidation: the account changed at
    /// its source). Returns how many cached entries were dropped. Default: nothing is cached.
    fn forget<'a>(&'a self, which: &'a Forget) -> BoxFuture<'a, usize> {
        let _ = which;
        Box::pin(async { 0 })
    }

    /// OpenID Connect Back-Channel Logout at this provider's IdP, when it offers one. Default: none.
    fn backchannel_logout(&self) -> Option<&dyn BackchannelLogout> {
        None
    }
}

/// Which cached identities an invalidation drops ([`Provider::forget`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forget {
    /// Every entry whose identity (or login name) is this username.
    User(String),
    /// Every entry whose identity is in this group.
    Group(String),
    /// Everything: a replica that may have missed an invalidation.
    All,
}

/// A verified logout token (OpenID Connect Back-Channel Logout 1.0): the IdP ended a session (`sid`) or
/// every session of a user (`sub`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequest {
    pub sub: Option<String>,
    pub sid: Option<String>,
    pub jti: String,
    /// When the token expires (Unix seconds): its `jti` is remembered until then.
    pub exp: u64,
}

/// What ending IdP sessions found: the usernames whose sessions ended, and whether the user was named
/// by subject (then every refresh token of theirs issued before is refused).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionsEnded {
    pub usernames: Vec<String>,
    /// Sessions removed from the shared session store.
    pub sessions: usize,
}

/// A provider whose IdP can end sessions by a back-channel logout token.
pub trait BackchannelLogout: Send + Sync {
    /// Verify a logout token: signature with the IdP's keys, `iss`, `aud` (the client id), `iat`, `exp`,
    /// the back-channel logout event, `sub` or `sid`, no `nonce`. The error names the problem.
    fn verify_logout<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<LogoutRequest, Failure>>;

    /// End the tollgate login sessions that came from the IdP session `sid`, or (without `sid`) find the
    /// user whose IdP subject is `sub`.
    fn end_sessions<'a>(
        &'a self,
        sid: Option<&'a str>,
        sub: Option<&'a str>,
    ) -> BoxFuture<'a, Result<SessionsEnded, Failure>>;
}

pub mod accounts;
pub mod cache;
pub mod chain;
pub mod claims;
pub mod hashing;
pub mod health;
pub mod ldap;
pub mod limiter;
pub mod measured;
pub mod oidc;
pub mod watch;
pub mod workload;

pub use claims::{claim_at, claim_strings, claim_text, Claims};

//! Who is asking: the identity a provider vouches for, and the provider contract.
//!
//! A provider answers one question for a username and secret, and its answer is one of the outcomes of
//! [`Outcome`]. "The directory is down" is not an outcome but an error ([`Unavailable`]), because the caller
//! treats it differently: it stops the chain with a 503 (or serves a cached identity) instead of a 401.

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
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Anonymous => "anonymous",
            AuthMethod::Password => "password",
            AuthMethod::RefreshToken => "refresh_token",
            AuthMethod::Device => "device",
            AuthMethod::Workload => "workload",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "anonymous" => Some(AuthMethod::Anonymous),
            "password" => Some(AuthMethod::Password),
            "refresh_token" => Some(AuthMethod::RefreshToken),
            "device" => Some(AuthMethod::Device),
            "workload" => Some(AuthMethod::Workload),
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

/// A JSON object to look claims up in: identities keep theirs in a `BTreeMap`, tokens decode to a `Map`.
pub trait Claims {
    fn claim(&self, key: &str) -> Option<&serde_json::Value>;
}

impl Claims for BTreeMap<String, serde_json::Value> {
    fn claim(&self, key: &str) -> Option<&serde_json::Value> {
        self.get(key)
    }
}

impl Claims for serde_json::Map<String, serde_json::Value> {
    fn claim(&self, key: &str) -> Option<&serde_json::Value> {
        self.get(key)
    }
}

/// The claim at `path`: the whole path as one key first (claim names are often URLs with dots), then
/// every way of reading it as a dotted path into nested objects, where each step may itself contain dots
/// (`kubernetes.io.namespace` finds `{"kubernetes.io": {"namespace": ..}}`).
pub fn claim_at<'c, C: Claims + ?Sized>(claims: &'c C, path: &str) -> Option<&'c serde_json::Value> {
    if let Some(v) = claims.claim(path) {
        return Some(v);
    }
    path.match_indices('.').find_map(|(i, _)| {
        let inner = claims.claim(&path[..i])?.as_object()?;
        claim_at(inner, &path[i + 1..])
    })
}

/// The strings at a claim path: a string is one value, a list gives its strings, anything else none.
pub fn claim_strings<C: Claims + ?Sized>(claims: &C, path: &str) -> Vec<String> {
    match claim_at(claims, path) {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    }
}

/// A scalar claim as text, so `42`, `true` and `"payments"` compare as written in YAML.
pub fn claim_text(v: &serde_json::Value) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    match v {
        serde_json::Value::String(s) => Some(Cow::Borrowed(s)),
        serde_json::Value::Number(n) => Some(Cow::Owned(n.to_string())),
        serde_json::Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
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

/// What one provider says about a username and secret.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The credentials are good: here is who it is. Shared: a cache hit hands out the cached copy.
    Authenticated(Arc<Identity>),
    /// This provider does not know the user; the chain asks the next provider.
    NotMine,
    /// This provider knows the user and refuses: wrong password, disabled, expired. The chain stops with 401.
    /// The reason is for the log only; the client never sees it.
    Rejected(String),
}

impl Outcome {
    /// The `outcome` label of the provider metrics for this answer (`unavailable` is an error's).
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Authenticated(_) => "authenticated",
            Outcome::Rejected(_) => "rejected",
            Outcome::NotMine => "not_mine",
        }
    }
}

/// Run one provider operation and record its duration and outcome (`outcome` labels an answer; an error is
/// `unavailable`) in the provider metrics.
pub(crate) async fn measured<T>(
    provider: &str,
    operation: &'static str,
    f: impl std::future::Future<Output = Result<T, Unavailable>>,
    outcome: impl Fn(&T) -> &'static str,
) -> Result<T, Unavailable> {
    let start = std::time::Instant::now();
    let result = f.await;
    let label = match &result {
        Ok(v) => outcome(v),
        Err(_) => "unavailable",
    };
    crate::telemetry::record_provider_call(provider, operation, start, label);
    result
}

/// The provider could not answer (network, timeout, server error). The chain stops with a 503 unless a
/// cached identity may be served. The message is for the log and must not contain a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("provider {provider} unavailable: {message}")]
pub struct Unavailable {
    pub provider: String,
    pub message: String,
}

/// What a provider says when a refresh token comes back for a user it vouched for earlier.
#[derive(Debug, Clone)]
pub enum Recheck {
    /// The account still exists and is enabled; here is its current identity (groups may have changed).
    Current(Identity),
    /// The account is gone, disabled or expired: the refresh token must be refused.
    Gone(String),
}

/// The identity claim that carries a login session's id from the login to the refresh token issued for
/// it (OIDC sessions). The grant step removes it before the policy sees the identity.
pub const SESSION_CLAIM: &str = "tollgate_sid";

/// One poll of a device flow at the IdP.
pub enum DevicePoll {
    Pending,
    SlowDown,
    Denied,
    Expired,
    /// Any other refusal (e.g. an unknown device code at the IdP), with the IdP's error code.
    Failed(String),
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
    fn start_device(&self) -> BoxFuture<'_, Result<DeviceStart, Unavailable>>;
    fn poll_device<'a>(&'a self, device_code: &'a SecretString) -> BoxFuture<'a, Result<DevicePoll, Unavailable>>;
}

/// An identity provider. Implementations must be cheap to call concurrently.
pub trait Provider: Send + Sync {
    /// The configured name, unique in the chain. It is recorded in identities and refresh tokens.
    fn name(&self) -> &str;

    /// Check a username and secret.
    fn authenticate<'a>(
        &'a self,
        username: &'a str,
        password: &'a SecretString,
    ) -> BoxFuture<'a, Result<Outcome, Unavailable>>;

    /// Re-read the account behind a refresh token: does it still exist, is it enabled, what are its groups now.
    fn recheck<'a>(&'a self, username: &'a str) -> BoxFuture<'a, Result<Recheck, Unavailable>>;

    /// Re-read the account behind a refresh token that is linked to a login session (`sid`, see
    /// `RefreshClaims::sid`). Providers without sessions ignore it. Default: [`Provider::recheck`].
    fn recheck_session<'a>(
        &'a self,
        username: &'a str,
        sid: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Recheck, Unavailable>> {
        let _ = sid;
        self.recheck(username)
    }

    /// A refresh token is being issued for the login session `sid`: keep the session as long as such a
    /// token may need it. Default: nothing to keep.
    fn keep_session<'a>(&'a self, sid: &'a str) -> BoxFuture<'a, Result<(), Unavailable>> {
        let _ = sid;
        Box::pin(async { Ok(()) })
    }

    /// The device flow (RFC 8628) at this provider's IdP, when it offers one. Default: none.
    fn device_login(&self) -> Option<&dyn DeviceLogin> {
        None
    }

    /// Check that whatever the provider talks to can be reached, for `/readyz`. Must be cheap and bounded
    /// in time. Default: nothing remote, always reachable.
    fn probe(&self) -> BoxFuture<'_, Result<(), Unavailable>> {
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
}

pub mod accounts;
pub mod cache;
pub mod chain;
pub mod hashing;
pub mod ldap;
pub mod limiter;
pub mod oidc;
pub mod workload;

//! The OpenID Connect provider: Keycloak, GitLab, Glewlwyd, or any certified provider.
//!
//! Three things happen here:
//! - `docker login -u alice` with her IdP password runs the resource-owner password grant at the IdP through
//!   tollgate's (confidential) client; the ID token is verified (signature with the discovered JWKS, refetched
//!   once when an unknown `kid` shows up; `iss`; `aud`; `exp`; the allowed algorithms) and the username and
//!   groups are read from it, or from userinfo.
//! - Device login: [`DeviceLogin`] starts the RFC 8628 flow at the IdP and polls it once per client poll;
//!   `src/http/device.rs` relays it to tollgate's own clients.
//! - Sessions: every login stores a session (group snapshot, and the IdP refresh token when the IdP issued
//!   one) in the shared [`SessionStore`]; the tollgate refresh token carries its id (`sid`). When the refresh
//!   token comes back after the group snapshot is older than the identity cache TTL, the groups are re-read
//!   with the IdP refresh token, and an IdP refusal refuses the tollgate token. Without an IdP refresh token
//!   the snapshot is served until `max_group_age`, then a new login is needed.
//!
//! Token-endpoint calls are made here with reqwest rather than through `Client::exchange_*`, for two
//! reasons found against real providers: Glewlwyd answers refusals with an EMPTY body, which the crate
//! reports as a parse error indistinguishable from an IdP in trouble (we need 401 vs 503), and the crate's
//! device-token request polls in a loop, while the relay needs exactly one poll per client poll. The
//! crate still does discovery, the JWKS, the token-response and device-response types, and all of the
//! ID-token verification.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClientAuthMethod, CoreGenderClaim, CoreGrantType,
    CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm,
    CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType, CoreTokenType,
};
use openidconnect::url;
use openidconnect::{
    AdditionalClaims, AdditionalProviderMetadata, ClaimsVerificationError, ClientId, ClientSecret,
    DeviceAuthorizationUrl, EmptyExtraDeviceAuthorizationFields, EmptyExtraTokenFields, IdTokenFields, IdTokenVerifier,
    IssuerUrl, JsonWebKeySet, JsonWebKeySetUrl, Nonce, OAuth2TokenResponse as _, ProviderMetadata,
    SignatureVerificationError, StandardTokenResponse,
};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use super::async_trait_free::BoxFuture;
use super::{Identity, Outcome, Provider, Recheck, Unavailable};
use crate::sessions::SessionStore;
use crate::token::{random_id, unix_now};

/// The identity claim that carries the session id from a login to the refresh token issued for it. The
/// token endpoint removes it before the policy sees the identity.
pub const SESSION_CLAIM: &str = "tollgate_sid";

/// Where the username and groups are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimsSource {
    /// The verified ID token (userinfo only when a response has no ID token, as Glewlwyd's refresh).
    #[default]
    IdToken,
    /// The userinfo endpoint, called with the access token (claims merged over the ID token's).
    Userinfo,
}

/// An OpenID Connect provider (`type: oidc`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// REQUIRED. Unique name; recorded in tokens and usable in rules (`provider:`).
    pub name: String,
    /// REQUIRED. The issuer URL. Discovery reads ISSUER/.well-known/openid-configuration, and ID tokens must
    /// carry exactly this `iss`.
    pub issuer: String,
    /// REQUIRED. tollgate's client id at the IdP; ID tokens must name it in `aud`.
    pub client_id: String,
    /// File holding the client secret (a confidential client; Keycloak and Glewlwyd require one for the
    /// password grant). Default: none (a public client).
    pub client_secret_file: Option<PathBuf>,
    /// Scopes asked for. Default: [openid, profile, email]. Add `offline_access` (or what the IdP wants) to
    /// receive IdP refresh tokens, which keep groups current (see README, "OIDC sessions").
    pub scopes: Option<Vec<String>>,
    /// The claim holding the username: preferred_username (default), email, sub, or any other.
    pub username_claim: Option<String>,
    /// Dotted path to the groups claim, a string or a list of strings: `groups` (default),
    /// `realm_access.roles`, `resource_access.CLIENT.roles`, GitLab's `groups_direct`.
    pub groups_claim: Option<String>,
    /// Where the username and groups are read: id_token (default) or userinfo.
    pub claims_source: Option<ClaimsSource>,
    /// Removed from the front of each group name when present, e.g. "/" for Keycloak group paths
    /// (`/team/devs` becomes `team/devs`). Default: none.
    pub strip_group_prefix: Option<String>,
    /// Put in front of each group name, to keep providers apart in rules (e.g. "gitlab-"). Default: none.
    pub group_prefix: Option<String>,
    /// Only usernames matching this regex (anchored) are tried at this IdP; the others go to the next
    /// provider. Needed to put several password-grant providers side by side. Default: every username.
    pub username_regex: Option<String>,
    /// Accept `docker login` with the IdP password (resource-owner password grant). Default: true.
    pub password_grant: Option<bool>,
    /// Offer device login (RFC 8628) through this provider. Default: true; needs a device endpoint,
    /// discovered or set below.
    pub device_grant: Option<bool>,
    /// The IdP's device authorization endpoint. Default: `device_authorization_endpoint` from discovery.
    pub device_authorization_endpoint: Option<String>,
    /// ID-token signature algorithms accepted. Default: [RS256, ES256, PS256, EdDSA].
    pub id_token_algs: Option<Vec<String>>,
    /// For sessions without an IdP refresh token: how old the group snapshot of a login may get before the
    /// refresh token needs a new login. Default: 12h.
    pub max_group_age: Option<String>,
    /// How long a session with an IdP refresh token is kept (the IdP may end it sooner). Default: 90d.
    pub session_lifetime: Option<String>,
    /// Timeout of each request to the IdP. Default: 10s.
    pub timeout: Option<String>,
    /// PEM file with the CA(s) for the IdP's TLS certificate. Default: the system roots.
    pub ca_file: Option<PathBuf>,
}

fn parse_duration(value: Option<&str>, default: &str, key: &str, errors: &mut Vec<String>) -> Duration {
    let s = value.unwrap_or(default);
    humantime::parse_duration(s).unwrap_or_else(|_| {
        errors.push(format!("{key}: {s:?} is not a duration; write e.g. 90s, 5m, 12h or 90d"));
        Duration::from_secs(60)
    })
}

fn parse_alg(s: &str) -> Option<CoreJwsSigningAlgorithm> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
}

/// Check an `oidc` provider entry (`providers[i]`), resolving relative paths against `base`. Every problem
/// is pushed, each naming its key.
pub fn validate(cfg: &mut OidcConfig, i: usize, base: &Path, errors: &mut Vec<String>) {
    let key = |k: &str| format!("providers[{i}].{k}");
    if cfg.name.trim().is_empty() {
        errors.push(format!("{}: required", key("name")));
    }
    match url::Url::parse(&cfg.issuer) {
        Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {}
        _ => errors.push(format!(
            "{}: {:?} is not an http(s) URL; write the IdP's issuer URL",
            key("issuer"),
            cfg.issuer
        )),
    }
    if cfg.client_id.trim().is_empty() {
        errors.push(format!("{}: required; tollgate's client id at the IdP", key("client_id")));
    }
    if let Some(f) = &cfg.client_secret_file {
        cfg.client_secret_file = Some(if f.is_absolute() { f.clone() } else { base.join(f) });
    }
    if let Some(f) = &cfg.ca_file {
        cfg.ca_file = Some(if f.is_absolute() { f.clone() } else { base.join(f) });
    }
    if let Some(r) = &cfg.username_regex {
        if let Err(e) = regex::Regex::new(&format!("^(?:{r})$")) {
            errors.push(format!("{}: {r:?} is not a valid regex: {e}", key("username_regex")));
        }
    }
    if let Some(u) = &cfg.device_authorization_endpoint {
        if url::Url::parse(u).is_err() {
            errors.push(format!("{}: {u:?} is not a URL", key("device_authorization_endpoint")));
        }
    }
    for a in cfg.id_token_algs.iter().flatten() {
        if parse_alg(a).is_none() || a == "none" {
            errors.push(format!("{}: {a:?} is not a JWS algorithm (e.g. RS256, ES256)", key("id_token_algs")));
        }
    }
    if cfg.groups_claim.as_deref().is_some_and(|g| g.split('.').any(str::is_empty)) {
        errors.push(format!("{}: empty segment in the dotted path", key("groups_claim")));
    }
    parse_duration(cfg.max_group_age.as_deref(), "12h", &key("max_group_age"), errors);
    parse_duration(cfg.session_lifetime.as_deref(), "90d", &key("session_lifetime"), errors);
    parse_duration(cfg.timeout.as_deref(), "10s", &key("timeout"), errors);
}

/// Claims besides the standard ones (groups, realm_access, groups_direct, …), kept as raw JSON so any claim
/// path can be read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ExtraClaims {
    #[serde(flatten, default)]
    rest: serde_json::Map<String, serde_json::Value>,
}
impl AdditionalClaims for ExtraClaims {}

/// Discovery documents list the device endpoint outside the OIDC core fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DeviceMetadata {
    #[serde(default)]
    device_authorization_endpoint: Option<DeviceAuthorizationUrl>,
}
impl AdditionalProviderMetadata for DeviceMetadata {}

type Metadata = ProviderMetadata<
    DeviceMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;
type TokenFields = IdTokenFields<
    ExtraClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type TokenResponse = StandardTokenResponse<TokenFields, CoreTokenType>;
type DeviceResponse = openidconnect::DeviceAuthorizationResponse<EmptyExtraDeviceAuthorizationFields>;

/// What discovery found, plus the current JWKS.
struct Discovered {
    token_url: url::Url,
    userinfo_url: Option<url::Url>,
    device_url: Option<url::Url>,
    jwks_url: JsonWebKeySetUrl,
    jwks: JsonWebKeySet<CoreJsonWebKey>,
}

/// Why an IdP call did not produce tokens.
enum IdpError {
    /// The IdP answered 4xx: its OAuth2 `error` code (empty when the body had none, as Glewlwyd's).
    Refused(String),
    /// Network, timeout, 5xx, or an answer that makes no sense: 503.
    Unavailable(String),
}

/// A stored login: the group snapshot and, when the IdP issued one, its refresh token (a secret: this
/// struct has no Debug and is only ever written to the session store).
#[derive(Clone, Serialize, Deserialize)]
struct Session {
    provider: String,
    username: String,
    groups: Vec<String>,
    claims: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idp_refresh_token: Option<String>,
    /// When the user logged in (Unix seconds).
    created_at: u64,
    /// When the groups were last read from the IdP.
    checked_at: u64,
}

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

pub struct OidcProvider {
    cfg: OidcConfig,
    secret: Option<SecretString>,
    http: reqwest::Client,
    discovered: RwLock<Option<Arc<Discovered>>>,
    last_jwks_fetch: Mutex<Option<Instant>>,
    sessions: Arc<dyn SessionStore>,
    username_re: Option<regex::Regex>,
    algs: Vec<CoreJwsSigningAlgorithm>,
    /// Groups are re-read from the IdP when the snapshot is older than this (the identity cache TTL).
    recheck_after: Duration,
    max_group_age: Duration,
    session_lifetime: Duration,
}

impl OidcProvider {
    /// Build from a validated config. No network here: discovery happens on first use, so tollgate starts
    /// while an IdP is down (and reports it on /readyz and as 503).
    pub fn new(cfg: OidcConfig, sessions: Arc<dyn SessionStore>, recheck_after: Duration) -> Result<Self, String> {
        let name = cfg.name.clone();
        let secret = match &cfg.client_secret_file {
            Some(f) => {
                let s = std::fs::read_to_string(f).map_err(|e| format!("providers {name}: {}: {e}", f.display()))?;
                Some(SecretString::from(s.trim().to_string()))
            }
            None => None,
        };
        let mut errors = Vec::new();
        let timeout = parse_duration(cfg.timeout.as_deref(), "10s", "timeout", &mut errors);
        let max_group_age = parse_duration(cfg.max_group_age.as_deref(), "12h", "max_group_age", &mut errors);
        let session_lifetime = parse_duration(cfg.session_lifetime.as_deref(), "90d", "session_lifetime", &mut errors);
        if let Some(e) = errors.pop() {
            return Err(format!("providers {name}: {e}"));
        }
        // IdP redirects are never followed: a token endpoint that redirects would leak the password form.
        let mut builder = reqwest::Client::builder().timeout(timeout).redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca).map_err(|e| format!("providers {name}: {}: {e}", ca.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("providers {name}: {}: not a PEM bundle: {e}", ca.display()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| format!("providers {name}: HTTP client: {e}"))?;
        let username_re = match &cfg.username_regex {
            Some(r) => Some(
                regex::Regex::new(&format!("^(?:{r})$"))
                    .map_err(|e| format!("providers {name}: username_regex: {e}"))?,
            ),
            None => None,
        };
        let algs = match &cfg.id_token_algs {
            Some(list) => list.iter().filter_map(|a| parse_alg(a)).collect(),
            None => vec![
                CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
                CoreJwsSigningAlgorithm::EcdsaP256Sha256,
                CoreJwsSigningAlgorithm::RsaSsaPssSha256,
                CoreJwsSigningAlgorithm::EdDsa,
            ],
        };
        Ok(OidcProvider {
            cfg,
            secret,
            http,
            discovered: RwLock::new(None),
            last_jwks_fetch: Mutex::new(None),
            sessions,
            username_re,
            algs,
            recheck_after,
            max_group_age,
            session_lifetime,
        })
    }

    fn unavailable(&self, message: impl Into<String>) -> Unavailable {
        Unavailable { provider: self.cfg.name.clone(), message: message.into() }
    }

    fn issuer_url(&self) -> Result<IssuerUrl, Unavailable> {
        IssuerUrl::new(self.cfg.issuer.clone()).map_err(|e| self.unavailable(format!("issuer URL: {e}")))
    }

    /// Discovery and the JWKS, fetched once and kept.
    async fn discovered(&self) -> Result<Arc<Discovered>, Unavailable> {
        if let Some(d) = self.discovered.read().ok().and_then(|d| d.clone()) {
            return Ok(d);
        }
        let meta = Metadata::discover_async(self.issuer_url()?, &self.http)
            .await
            .map_err(|e| self.unavailable(format!("discovery at {}: {}", self.cfg.issuer, error_chain(&e))))?;
        let token_url = meta
            .token_endpoint()
            .map(|u| u.url().clone())
            .ok_or_else(|| self.unavailable("the discovery document lists no token_endpoint"))?;
        let device_url = match &self.cfg.device_authorization_endpoint {
            Some(u) => url::Url::parse(u).ok(),
            None => meta.additional_metadata().device_authorization_endpoint.as_ref().map(|u| u.url().clone()),
        };
        let d = Arc::new(Discovered {
            token_url,
            userinfo_url: meta.userinfo_endpoint().map(|u| u.url().clone()),
            device_url,
            jwks_url: meta.jwks_uri().clone(),
            jwks: meta.jwks().clone(),
        });
        if let Ok(mut slot) = self.discovered.write() {
            *slot = Some(d.clone());
        }
        Ok(d)
    }

    /// Fetch the JWKS again (the IdP rotated its keys), at most once every 10 s so that tokens with made-up
    /// key ids cannot make us hammer the IdP.
    async fn refetch_jwks(&self, d: &Discovered) -> Result<Option<Arc<Discovered>>, Unavailable> {
        {
            let Ok(mut last) = self.last_jwks_fetch.lock() else { return Ok(None) };
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
                return Ok(None);
            }
            *last = Some(Instant::now());
        }
        let jwks = JsonWebKeySet::fetch_async(&d.jwks_url, &self.http)
            .await
            .map_err(|e| self.unavailable(format!("JWKS at {}: {}", d.jwks_url.url(), error_chain(&e))))?;
        tracing::info!(provider = %self.cfg.name, keys = jwks.keys().len(), "IdP signing keys refetched (unknown kid)");
        let fresh = Arc::new(Discovered {
            token_url: d.token_url.clone(),
            userinfo_url: d.userinfo_url.clone(),
            device_url: d.device_url.clone(),
            jwks_url: d.jwks_url.clone(),
            jwks,
        });
        if let Ok(mut slot) = self.discovered.write() {
            *slot = Some(fresh.clone());
        }
        Ok(Some(fresh))
    }

    fn verifier<'a>(
        &self,
        jwks: &JsonWebKeySet<CoreJsonWebKey>,
    ) -> Result<IdTokenVerifier<'a, CoreJsonWebKey>, Unavailable> {
        let client_id = ClientId::new(self.cfg.client_id.clone());
        let issuer = self.issuer_url()?;
        let v = match &self.secret {
            Some(s) => IdTokenVerifier::new_confidential_client(
                client_id,
                ClientSecret::new(s.expose_secret().to_string()),
                issuer,
                jwks.clone(),
            ),
            None => IdTokenVerifier::new_public_client(client_id, issuer, jwks.clone()),
        };
        Ok(v.set_allowed_algs(self.algs.clone()))
    }

    /// Verify the ID token of a token response and return its claims as JSON. `Ok(Err(reason))` is a token
    /// that must be refused (wrong audience, issuer, expired, bad signature, disallowed algorithm).
    async fn verify_id_token(
        &self,
        d: &Arc<Discovered>,
        tokens: &TokenResponse,
    ) -> Result<Result<serde_json::Map<String, serde_json::Value>, String>, Unavailable> {
        let Some(id_token) = tokens.extra_fields().id_token() else {
            return Ok(Err("the IdP sent no ID token".into()));
        };
        // The password and device grants carry no nonce (there is no authorization request to bind one to).
        let no_nonce = |_: Option<&Nonce>| Ok(());
        let result = id_token.claims(&self.verifier(&d.jwks)?, no_nonce).cloned();
        let claims = match result {
            Err(ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey)) => {
                match self.refetch_jwks(d).await? {
                    Some(fresh) => id_token.claims(&self.verifier(&fresh.jwks)?, no_nonce).cloned(),
                    None => return Ok(Err("ID token signed with an unknown key".into())),
                }
            }
            other => other,
        };
        match claims {
            Ok(c) => match serde_json::to_value(&c) {
                Ok(serde_json::Value::Object(map)) => Ok(Ok(map)),
                _ => Err(self.unavailable("ID token claims are not a JSON object")),
            },
            Err(e) => Ok(Err(format!("ID token refused: {}", error_chain(&e)))),
        }
    }

    /// POST a grant to the token endpoint with tollgate's client credentials.
    async fn token_request(&self, d: &Discovered, form: &[(&str, &str)]) -> Result<TokenResponse, IdpError> {
        let mut req = self.http.post(d.token_url.clone()).header(reqwest::header::ACCEPT, "application/json");
        let mut body: Vec<(&str, &str)> = form.to_vec();
        match &self.secret {
            // RFC 6749 2.3.1: id and secret are form-encoded before Basic encoding.
            Some(s) => {
                let enc = |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
                req = req.basic_auth(enc(&self.cfg.client_id), Some(enc(s.expose_secret())));
            }
            None => body.push(("client_id", &self.cfg.client_id)),
        }
        let resp = req.form(&body).send().await.map_err(|e| IdpError::Unavailable(error_chain(&e)))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| IdpError::Unavailable(error_chain(&e)))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                IdpError::Unavailable(format!("token endpoint answered {status} with an unreadable body: {e}"))
            });
        }
        if status.is_client_error() {
            let code = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_default();
            return Err(IdpError::Refused(code));
        }
        Err(IdpError::Unavailable(format!("token endpoint answered {status}")))
    }

    async fn userinfo(
        &self,
        d: &Discovered,
        access_token: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, IdpError> {
        let url =
            d.userinfo_url.clone().ok_or_else(|| IdpError::Unavailable("the IdP has no userinfo endpoint".into()))?;
        let resp = self
            .http
            .get(url)
            .bearer_auth(access_token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| IdpError::Unavailable(error_chain(&e)))?;
        let status = resp.status();
        if status.is_client_error() {
            return Err(IdpError::Refused(format!("userinfo answered {status}")));
        }
        if !status.is_success() {
            return Err(IdpError::Unavailable(format!("userinfo answered {status}")));
        }
        resp.json().await.map_err(|e| IdpError::Unavailable(format!("userinfo is not a JSON object: {e}")))
    }

    /// Username, groups and claims from a token response: the verified ID token, plus userinfo when
    /// configured or when there is no ID token (refresh responses of some IdPs).
    async fn read_claims(
        &self,
        d: &Arc<Discovered>,
        tokens: &TokenResponse,
    ) -> Result<Result<serde_json::Map<String, serde_json::Value>, String>, Unavailable> {
        let mut claims = serde_json::Map::new();
        if tokens.extra_fields().id_token().is_some() {
            match self.verify_id_token(d, tokens).await? {
                Ok(c) => claims = c,
                Err(reason) => return Ok(Err(reason)),
            }
        }
        let use_userinfo = self.cfg.claims_source.unwrap_or_default() == ClaimsSource::Userinfo || claims.is_empty();
        if use_userinfo {
            match self.userinfo(d, tokens.access_token().secret()).await {
                Ok(info) => {
                    if claims.get("sub").is_some_and(|s| Some(s) != info.get("sub")) {
                        return Ok(Err("userinfo is about a different subject than the ID token".into()));
                    }
                    claims.extend(info);
                }
                Err(IdpError::Refused(r)) => return Ok(Err(r)),
                Err(IdpError::Unavailable(m)) => return Err(self.unavailable(m)),
            }
        }
        Ok(Ok(claims))
    }

    /// The identity these claims describe.
    fn identity(&self, claims: &serde_json::Map<String, serde_json::Value>) -> Result<Identity, String> {
        let username_claim = self.cfg.username_claim.as_deref().unwrap_or("preferred_username");
        let username = match claims.get(username_claim) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(format!("the IdP's claims have no {username_claim:?} (username_claim)")),
        };
        let path = self.cfg.groups_claim.as_deref().unwrap_or("groups");
        let groups = map_groups(
            &claim_strings(claims, path),
            self.cfg.strip_group_prefix.as_deref(),
            self.cfg.group_prefix.as_deref(),
        );
        // Claims for rules, without the token mechanics.
        let kept = claims
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "iss"
                        | "aud"
                        | "exp"
                        | "iat"
                        | "nbf"
                        | "nonce"
                        | "at_hash"
                        | "c_hash"
                        | "azp"
                        | "auth_time"
                        | "jti"
                        | "sid"
                )
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Identity { username, provider: self.cfg.name.clone(), groups, claims: kept })
    }

    /// Store a new session for a login and return the identity carrying its id.
    async fn open_session(&self, mut identity: Identity, tokens: &TokenResponse) -> Result<Identity, Unavailable> {
        let now = unix_now();
        let idp_refresh_token = tokens.refresh_token().map(|t| t.secret().clone());
        let session = Session {
            provider: self.cfg.name.clone(),
            username: identity.username.clone(),
            groups: identity.groups.clone(),
            claims: identity.claims.clone(),
            idp_refresh_token,
            created_at: now,
            checked_at: now,
        };
        let sid = random_id(18);
        // Most logins never get a refresh token (a ctr pull, a CI job): their session only needs to outlive
        // the identity cache entry that carries its id. `keep_session` extends it when a token links it.
        self.save_session(&sid, &session, now + self.recheck_after.as_secs() + ORPHAN_GRACE_SECS).await?;
        identity.claims.insert(SESSION_CLAIM.into(), serde_json::Value::String(sid));
        Ok(identity)
    }

    async fn save_session(&self, sid: &str, s: &Session, expires_at: u64) -> Result<(), Unavailable> {
        let value = serde_json::to_value(s).map_err(|e| self.unavailable(format!("session: {e}")))?;
        self.sessions.put(&session_key(sid), value, expires_at).await.map_err(|e| self.unavailable(e.to_string()))
    }

    /// Tokens from a grant → an identity with a session, or the reason to refuse.
    async fn login_with(
        &self,
        d: &Arc<Discovered>,
        tokens: &TokenResponse,
    ) -> Result<Result<Identity, String>, Unavailable> {
        let claims = match self.read_claims(d, tokens).await? {
            Ok(c) => c,
            Err(reason) => return Ok(Err(reason)),
        };
        match self.identity(&claims) {
            Ok(identity) => Ok(Ok(self.open_session(identity, tokens).await?)),
            Err(reason) => Ok(Err(reason)),
        }
    }

    fn scope(&self) -> String {
        match &self.cfg.scopes {
            Some(s) => s.join(" "),
            None => "openid profile email".into(),
        }
    }

    async fn password_login(&self, username: &str, password: &SecretString) -> Result<Outcome, Unavailable> {
        let d = self.discovered().await?;
        let scope = self.scope();
        let form = [
            ("grant_type", "password"),
            ("username", username),
            ("password", password.expose_secret()),
            ("scope", scope.as_str()),
        ];
        let tokens = match self.token_request(&d, &form).await {
            Ok(t) => t,
            Err(IdpError::Refused(code)) => {
                return Ok(Outcome::Rejected(format!("the IdP refused the password grant ({code})")))
            }
            Err(IdpError::Unavailable(m)) => return Err(self.unavailable(m)),
        };
        Ok(match self.login_with(&d, &tokens).await? {
            Ok(identity) => Outcome::Authenticated(Arc::new(identity)),
            Err(reason) => Outcome::Rejected(reason),
        })
    }

    async fn recheck_sid(&self, username: &str, sid: &str) -> Result<Recheck, Unavailable> {
        let key = session_key(sid);
        let stored = self.sessions.get(&key).await.map_err(|e| self.unavailable(e.to_string()))?;
        let Some(mut session) = stored.and_then(|v| serde_json::from_value::<Session>(v).ok()) else {
            return Ok(Recheck::Gone("the login session has ended; log in again".into()));
        };
        if session.username != username || session.provider != self.cfg.name {
            return Ok(Recheck::Gone("the session belongs to another user".into()));
        }
        let now = unix_now();
        if now < session.checked_at + self.recheck_after.as_secs() {
            return Ok(Recheck::Current(self.session_identity(&session, sid)));
        }
        let Some(rt) = session.idp_refresh_token.clone() else {
            // No IdP refresh token: the snapshot from the login is all there is, up to max_group_age.
            if now >= session.created_at + self.max_group_age.as_secs() {
                return Ok(Recheck::Gone("the group snapshot is older than max_group_age; log in again".into()));
            }
            return Ok(Recheck::Current(self.session_identity(&session, sid)));
        };
        let d = self.discovered().await?;
        let tokens =
            match self.token_request(&d, &[("grant_type", "refresh_token"), ("refresh_token", rt.as_str())]).await {
                Ok(t) => t,
                Err(IdpError::Refused(code)) => {
                    let _ = self.sessions.remove(&key).await;
                    return Ok(Recheck::Gone(format!("the IdP refused the session's refresh token ({code})")));
                }
                Err(IdpError::Unavailable(m)) => return Err(self.unavailable(m)),
            };
        let claims = match self.read_claims(&d, &tokens).await? {
            Ok(c) => c,
            Err(reason) => return Ok(Recheck::Gone(reason)),
        };
        let fresh = match self.identity(&claims) {
            Ok(i) if i.username == username => i,
            Ok(_) => return Ok(Recheck::Gone("the IdP now names this session's user differently".into())),
            Err(reason) => return Ok(Recheck::Gone(reason)),
        };
        session.groups = fresh.groups;
        session.claims = fresh.claims;
        session.checked_at = now;
        if let Some(new_rt) = tokens.refresh_token() {
            // Rotating IdPs (Keycloak can) invalidate the old one.
            session.idp_refresh_token = Some(new_rt.secret().clone());
        }
        self.save_session(sid, &session, self.linked_expiry(&session)).await?;
        Ok(Recheck::Current(self.session_identity(&session, sid)))
    }

    /// How long a session is kept once a refresh token refers to it.
    fn linked_expiry(&self, s: &Session) -> u64 {
        match s.idp_refresh_token {
            Some(_) => unix_now() + self.session_lifetime.as_secs(),
            None => s.created_at + self.max_group_age.as_secs(),
        }
    }

    async fn keep_sid(&self, sid: &str) -> Result<(), Unavailable> {
        let stored = self.sessions.get(&session_key(sid)).await.map_err(|e| self.unavailable(e.to_string()))?;
        match stored.and_then(|v| serde_json::from_value::<Session>(v).ok()) {
            Some(s) => self.save_session(sid, &s, self.linked_expiry(&s)).await,
            // Its refresh token will be refused on first use, with a message to log in again.
            None => {
                tracing::warn!(provider = %self.cfg.name, "a refresh token was issued for an ended login session");
                Ok(())
            }
        }
    }

    fn session_identity(&self, s: &Session, sid: &str) -> Identity {
        let mut claims = s.claims.clone();
        claims.insert(SESSION_CLAIM.into(), serde_json::Value::String(sid.to_string()));
        Identity { username: s.username.clone(), provider: self.cfg.name.clone(), groups: s.groups.clone(), claims }
    }

    /// Whether this provider offers device login (configured, and the IdP has a device endpoint).
    pub fn device_enabled(&self) -> bool {
        self.cfg.device_grant.unwrap_or(true)
    }
}

/// How long an unlinked session outlives the identity cache entry that carries its id.
const ORPHAN_GRACE_SECS: u64 = 60;

fn session_key(sid: &str) -> String {
    format!("oidc-session:{sid}")
}

/// The whole cause chain of an error, for the log (reqwest hides the useful part in sources).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The strings at a dotted claim path: a string is one value, a list gives its strings, anything else none.
pub fn claim_strings(claims: &serde_json::Map<String, serde_json::Value>, path: &str) -> Vec<String> {
    let mut parts = path.split('.');
    let Some(first) = parts.next() else { return Vec::new() };
    let mut node = claims.get(first);
    for p in parts {
        node = node.and_then(|n| n.get(p));
    }
    match node {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    }
}

/// Strip a prefix (when present), add the provider prefix, drop empties and duplicates.
pub fn map_groups(raw: &[String], strip: Option<&str>, prefix: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for g in raw {
        let g = strip.and_then(|p| g.strip_prefix(p)).unwrap_or(g);
        if g.is_empty() {
            continue;
        }
        let g = format!("{}{g}", prefix.unwrap_or(""));
        if !out.contains(&g) {
            out.push(g);
        }
    }
    out
}

/// Count and time one IdP operation.
async fn measured<T>(
    provider: &str,
    operation: &'static str,
    f: impl std::future::Future<Output = Result<T, Unavailable>>,
    outcome: impl Fn(&T) -> &'static str,
) -> Result<T, Unavailable> {
    let start = Instant::now();
    let result = f.await;
    let label = match &result {
        Ok(v) => outcome(v),
        Err(_) => "unavailable",
    };
    crate::telemetry::record_provider_call(provider, operation, start, label);
    result
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
            measured(&self.cfg.name, "refresh", self.recheck_sid(username, sid), |r| match r {
                Recheck::Current(_) => "ok",
                Recheck::Gone(_) => "rejected",
            })
            .await
        })
    }

    fn keep_session<'a>(&'a self, sid: &'a str) -> BoxFuture<'a, Result<(), Unavailable>> {
        Box::pin(self.keep_sid(sid))
    }

    fn probe(&self) -> BoxFuture<'_, Result<(), Unavailable>> {
        Box::pin(async move {
            let url = format!("{}/.well-known/openid-configuration", self.cfg.issuer.trim_end_matches('/'));
            let f = async {
                let resp = self.http.get(&url).send().await.map_err(|e| self.unavailable(error_chain(&e)))?;
                if resp.status().is_success() {
                    Ok(())
                } else {
                    Err(self.unavailable(format!("discovery answered {}", resp.status())))
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
            let f = async {
                let d = self.discovered().await?;
                let url = d
                    .device_url
                    .clone()
                    .ok_or_else(|| self.unavailable("the IdP has no device authorization endpoint"))?;
                let scope = self.scope();
                let mut req = self.http.post(url).header(reqwest::header::ACCEPT, "application/json");
                let mut body = vec![("scope", scope.as_str())];
                match &self.secret {
                    Some(s) => {
                        let enc = |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
                        req = req.basic_auth(enc(&self.cfg.client_id), Some(enc(s.expose_secret())));
                    }
                    None => body.push(("client_id", &self.cfg.client_id)),
                }
                let resp = req.form(&body).send().await.map_err(|e| self.unavailable(error_chain(&e)))?;
                let status = resp.status();
                if !status.is_success() {
                    return Err(self.unavailable(format!("device authorization endpoint answered {status}")));
                }
                let r: DeviceResponse =
                    resp.json().await.map_err(|e| self.unavailable(format!("device authorization response: {e}")))?;
                Ok(DeviceStart {
                    device_code: SecretString::from(r.device_code().secret().clone()),
                    user_code: r.user_code().secret().clone(),
                    verification_uri: r.verification_uri().to_string(),
                    verification_uri_complete: r.verification_uri_complete().map(|u| u.secret().clone()),
                    expires_in: r.expires_in(),
                    interval: r.interval(),
                })
            };
            measured(&self.cfg.name, "device_start", f, |_| "ok").await
        })
    }

    fn poll_device<'a>(&'a self, device_code: &'a SecretString) -> BoxFuture<'a, Result<DevicePoll, Unavailable>> {
        Box::pin(async move {
            let f = async {
                let d = self.discovered().await?;
                let form = [
                    ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                    ("device_code", device_code.expose_secret()),
                ];
                let tokens = match self.token_request(&d, &form).await {
                    Ok(t) => t,
                    Err(IdpError::Refused(code)) => {
                        return Ok(match code.as_str() {
                            "authorization_pending" => DevicePoll::Pending,
                            "slow_down" => DevicePoll::SlowDown,
                            "access_denied" => DevicePoll::Denied,
                            "expired_token" => DevicePoll::Expired,
                            _ => DevicePoll::Failed(code),
                        })
                    }
                    Err(IdpError::Unavailable(m)) => return Err(self.unavailable(m)),
                };
                Ok(match self.login_with(&d, &tokens).await? {
                    Ok(identity) => DevicePoll::Done(identity),
                    Err(reason) => DevicePoll::Failed(reason),
                })
            };
            measured(&self.cfg.name, "device_poll", f, |p| match p {
                DevicePoll::Done(_) => "ok",
                DevicePoll::Pending | DevicePoll::SlowDown => "pending",
                _ => "rejected",
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn group_claim_paths_of_keycloak_gitlab_and_plain_idps() {
        let c = map(json!({
            "groups": ["/team/devs", "/ops"],
            "realm_access": {"roles": ["registry-admin", "offline_access"]},
            "resource_access": {"tollgate": {"roles": ["pusher"]}},
            "groups_direct": ["acme/payments", "acme"],
            "single": "one",
            "mixed": ["a", 1, null, "b"],
        }));
        let table: &[(&str, &[&str])] = &[
            ("groups", &["/team/devs", "/ops"]),
            ("realm_access.roles", &["registry-admin", "offline_access"]),
            ("resource_access.tollgate.roles", &["pusher"]),
            ("groups_direct", &["acme/payments", "acme"]),
            ("single", &["one"]),
            ("mixed", &["a", "b"]),
            ("missing", &[]),
            ("realm_access.missing", &[]),
            ("realm_access", &[]),
        ];
        for (path, want) in table {
            assert_eq!(claim_strings(&c, path), want.to_vec(), "{path}");
        }
    }

    #[test]
    fn keycloak_group_paths_are_stripped_and_prefixed() {
        let raw: Vec<String> = ["/team/devs", "/ops", "plain", "/", "/ops"].iter().map(|s| s.to_string()).collect();
        assert_eq!(map_groups(&raw, Some("/"), None), vec!["team/devs", "ops", "plain"]);
        assert_eq!(map_groups(&raw, Some("/team/"), Some("kc-")), vec!["kc-devs", "kc-/ops", "kc-plain", "kc-/"]);
    }

    // The bad-ID-token cases use a hand-signed token and an in-memory JWKS (a FAKE IdP): a certified
    // provider cannot be made to sign a token for another audience or issuer, an expired one, or one with a
    // broken signature on demand. Everything else runs against real providers in tests/it/oidc.rs.
    const ISSUER: &str = "http://127.0.0.1:9/realms/test";

    fn signing_key(kid: &str) -> (rcgen::KeyPair, serde_json::Value) {
        use base64::Engine as _;
        let kp = rcgen::KeyPair::generate().unwrap();
        let raw = kp.public_key_raw().to_vec();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
                         "kid": kid, "use": "sig", "alg": "ES256"});
        (kp, jwk)
    }

    fn sign(kp: &rcgen::KeyPair, kid: &str, claims: &serde_json::Value) -> String {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some(kid.into());
        let key = jsonwebtoken::EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap();
        jsonwebtoken::encode(&h, claims, &key).unwrap()
    }

    fn provider(jwk: serde_json::Value) -> (OidcProvider, Arc<Discovered>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let cfg: OidcConfig =
            serde_norway::from_str(&format!("name: kc\nissuer: {ISSUER}\nclient_id: tollgate\n")).unwrap();
        let store = Arc::new(crate::sessions::FileSessionStore::new(dir.path().join("s.json")));
        let p = OidcProvider::new(cfg, store, Duration::from_secs(60)).unwrap();
        let d = Arc::new(Discovered {
            token_url: url::Url::parse("http://127.0.0.1:9/token").unwrap(),
            userinfo_url: None,
            device_url: None,
            jwks_url: JsonWebKeySetUrl::new("http://127.0.0.1:9/jwks".into()).unwrap(),
            jwks: serde_json::from_value(json!({"keys": [jwk]})).unwrap(),
        });
        (p, d, dir)
    }

    fn response(id_token: &str) -> TokenResponse {
        serde_json::from_value(json!({"access_token": "at", "token_type": "Bearer", "id_token": id_token})).unwrap()
    }

    #[tokio::test]
    async fn id_tokens_with_a_wrong_audience_issuer_expiry_or_signature_are_refused() {
        let (kp, jwk) = signing_key("k1");
        let (other, _) = signing_key("k1");
        let (p, d, _dir) = provider(jwk);
        let now = unix_now();
        let good = json!({"iss": ISSUER, "aud": "tollgate", "sub": "u1", "exp": now + 300, "iat": now,
                          "preferred_username": "carol", "realm_access": {"roles": ["team-payments"]}});
        let claims = p.verify_id_token(&d, &response(&sign(&kp, "k1", &good))).await.unwrap().unwrap();
        assert_eq!(claims["realm_access"]["roles"][0], "team-payments", "custom claims survive verification");

        let mut cases = Vec::new();
        let mut c = good.clone();
        c["aud"] = json!("another-client");
        cases.push(("wrong audience", sign(&kp, "k1", &c), "audience"));
        let mut c = good.clone();
        c["iss"] = json!("http://127.0.0.1:9/realms/evil");
        cases.push(("wrong issuer", sign(&kp, "k1", &c), "issuer"));
        let mut c = good.clone();
        c["exp"] = json!(now - 600);
        c["iat"] = json!(now - 900);
        cases.push(("expired", sign(&kp, "k1", &c), "expired"));
        cases.push(("bad signature", sign(&other, "k1", &good), "signature"));
        let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        hs.kid = Some("k1".into());
        let hs256 =
            jsonwebtoken::encode(&hs, &good, &jsonwebtoken::EncodingKey::from_secret(b"guessable").unwrap()).unwrap();
        cases.push(("an algorithm not allowed", hs256, "algorithm"));
        for (what, token, want) in cases {
            let reason = p.verify_id_token(&d, &response(&token)).await.unwrap().unwrap_err();
            assert!(reason.to_lowercase().contains(want), "{what}: {reason}");
        }
    }

    #[tokio::test]
    async fn an_unknown_kid_makes_the_jwks_be_fetched_again() {
        let (kp, jwk) = signing_key("k1");
        let (p, d, _dir) = provider(jwk);
        let now = unix_now();
        let c = json!({"iss": ISSUER, "aud": "tollgate", "sub": "u1", "exp": now + 300, "iat": now});
        // The JWKS URL is unreachable here, so the refetch shows up as "unavailable" (503), not a refusal:
        // a rotated key at a flaky IdP must not log users out.
        let err = p.verify_id_token(&d, &response(&sign(&kp, "rotated", &c))).await.expect_err("refetch attempted");
        assert!(err.message.contains("JWKS"), "{}", err.message);
        // A second unknown kid within 10 s does not hammer the IdP: refused without a fetch.
        let reason = p.verify_id_token(&d, &response(&sign(&kp, "other", &c))).await.unwrap().unwrap_err();
        assert!(reason.contains("unknown key"), "{reason}");
    }

    #[tokio::test]
    async fn a_login_session_lives_long_only_once_a_refresh_token_links_it() {
        let (_, jwk) = signing_key("k1");
        let (p, _d, dir) = provider(jwk);
        let expiry = |sid: &str| {
            let file: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.path().join("s.json")).unwrap()).unwrap();
            file["entries"][session_key(sid)]["expires_at"].as_u64().unwrap()
        };
        let with_rt: TokenResponse =
            serde_json::from_value(json!({"access_token": "at", "token_type": "Bearer", "refresh_token": "idp-rt"}))
                .unwrap();
        let identity = Identity { username: "carol".into(), provider: "kc".into(), ..Default::default() };
        let opened = p.open_session(identity, &with_rt).await.unwrap();
        let sid = opened.claims[SESSION_CLAIM].as_str().unwrap().to_string();
        let now = unix_now();
        assert!(expiry(&sid) <= now + 60 + ORPHAN_GRACE_SECS, "an unlinked session outlives only the cache entry");
        p.keep_session(&sid).await.unwrap();
        assert!(expiry(&sid) >= now + 89 * 86400, "linked to a refresh token, it is kept for session_lifetime");
        let text = std::fs::read_to_string(dir.path().join("s.json")).unwrap();
        assert!(text.contains("idp-rt"), "the IdP refresh token is stored (owner-only file)");
        match p.recheck_session("carol", Some(&sid)).await.unwrap() {
            Recheck::Current(i) => assert_eq!(i.username, "carol"),
            Recheck::Gone(r) => panic!("{r}"),
        }
        assert!(matches!(p.recheck_session("mallory", Some(&sid)).await.unwrap(), Recheck::Gone(_)));
        assert!(matches!(p.recheck_session("carol", None).await.unwrap(), Recheck::Gone(_)));
    }

    #[test]
    fn the_example_provider_files_are_valid() {
        for (file, text) in [
            ("keycloak.yaml", include_str!("../../providers/keycloak.yaml")),
            ("gitlab.yaml", include_str!("../../providers/gitlab.yaml")),
        ] {
            let entries: Vec<crate::config::ProviderConfig> =
                serde_norway::from_str(text).unwrap_or_else(|e| panic!("providers/{file}: {e}"));
            for (i, entry) in entries.into_iter().enumerate() {
                let crate::config::ProviderConfig::Oidc(mut cfg) = entry else { panic!("providers/{file}: not oidc") };
                let mut errors = Vec::new();
                validate(&mut cfg, i, Path::new("/etc/tollgate"), &mut errors);
                assert!(errors.is_empty(), "providers/{file}: {errors:?}");
            }
        }
    }

    #[test]
    fn config_problems_name_their_key() {
        let mut cfg: OidcConfig = serde_norway::from_str(
            "name: kc\nissuer: not a url\nclient_id: ''\nusername_regex: '('\nid_token_algs: [RS256, XX1]\ngroups_claim: a..b\nmax_group_age: forever\n",
        )
        .unwrap();
        let mut errors = Vec::new();
        validate(&mut cfg, 2, Path::new("/etc/tollgate"), &mut errors);
        let all = errors.join("\n");
        for want in [
            "providers[2].issuer: \"not a url\"",
            "providers[2].client_id: required",
            "providers[2].username_regex",
            "providers[2].id_token_algs: \"XX1\"",
            "providers[2].groups_claim: empty segment",
            "providers[2].max_group_age: \"forever\"",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
        let err =
            serde_norway::from_str::<OidcConfig>("name: a\nissuer: x\nclient_id: y\nclient_secret: z\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `client_secret`"), "{err}");
    }
}

//! `GET /token` and `POST /token`: the distribution token protocol as real clients speak it.
//!
//! Both methods are parsed from the raw query or body (docker repeats `scope=`, which typed extractors
//! reject), authenticated, authorized scope by scope, and answered with a signed token. The differences
//! between clients that matter are documented where they are handled.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Request};
use axum::response::Response;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use secrecy::{ExposeSecret as _, SecretString};

use super::audit::Audit;
use super::error::ApiError;
use crate::app::AppState;
use crate::identity::chain::ChainOutcome;
use crate::identity::{AuthMethod, Identity, Recheck};
use crate::scope::{split_scopes, Scope};
use crate::token::refresh::{RefreshError, PREFIX as REFRESH_PREFIX};
use crate::token::AccessEntry;

/// Longest Authorization header accepted. A Basic header with a refresh token is well under 2 KiB.
const MAX_AUTH_HEADER: usize = 8192;
/// Longest single parameter value (passwords, refresh tokens).
const MAX_PARAM_LEN: usize = 8192;

/// Basic credentials in the wild come with and without padding.
const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The request parameters of either method.
#[derive(Default)]
struct Params {
    service: Option<String>,
    scopes: Vec<String>,
    account: Option<String>,
    client_id: Option<String>,
    offline_token: Option<String>,
    grant_type: Option<String>,
    access_type: Option<String>,
    username: Option<String>,
    password: Option<SecretString>,
    refresh_token: Option<SecretString>,
    device_code: Option<SecretString>,
}

fn set_once(slot: &mut Option<String>, name: &str, value: String) -> Result<(), ApiError> {
    match slot {
        Some(existing) if *existing != value => {
            Err(ApiError::BadRequest(format!("parameter {name} is given twice with different values")))
        }
        _ => {
            *slot = Some(value);
            Ok(())
        }
    }
}

fn set_secret_once(slot: &mut Option<SecretString>, name: &str, value: String) -> Result<(), ApiError> {
    match slot {
        Some(existing) if existing.expose_secret() != value => {
            Err(ApiError::BadRequest(format!("parameter {name} is given twice with different values")))
        }
        _ => {
            *slot = Some(SecretString::from(value));
            Ok(())
        }
    }
}

impl Params {
    fn parse(raw: &[u8], max_scopes: usize) -> Result<Params, ApiError> {
        let mut p = Params::default();
        let mut count = 0usize;
        for (k, v) in form_urlencoded::parse(raw) {
            count += 1;
            if count > max_scopes + 32 {
                return Err(ApiError::BadRequest(format!(
                    "too many parameters (at most {max_scopes} scopes are accepted)"
                )));
            }
            if v.len() > MAX_PARAM_LEN {
                return Err(ApiError::BadRequest(format!("parameter {k} is longer than {MAX_PARAM_LEN} bytes")));
            }
            let v = v.into_owned();
            match k.as_ref() {
                "service" => set_once(&mut p.service, "service", v)?,
                "scope" => p.scopes.push(v),
                "account" => set_once(&mut p.account, "account", v)?,
                "client_id" => set_once(&mut p.client_id, "client_id", v)?,
                "offline_token" => set_once(&mut p.offline_token, "offline_token", v)?,
                "grant_type" => set_once(&mut p.grant_type, "grant_type", v)?,
                "access_type" => set_once(&mut p.access_type, "access_type", v)?,
                "username" => set_once(&mut p.username, "username", v)?,
                "password" => set_secret_once(&mut p.password, "password", v)?,
                "refresh_token" => set_secret_once(&mut p.refresh_token, "refresh_token", v)?,
                "device_code" => set_secret_once(&mut p.device_code, "device_code", v)?,
                // Unknown parameters are ignored, as OAuth2 requires.
                _ => {}
            }
        }
        Ok(p)
    }
}

/// Credentials from a Basic header.
pub(crate) struct Basic {
    pub username: String,
    pub password: SecretString,
}

pub(crate) fn parse_basic(headers: &HeaderMap) -> Result<Option<Basic>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
    if value.len() > MAX_AUTH_HEADER {
        return Err(ApiError::BadRequest(format!("Authorization header is longer than {MAX_AUTH_HEADER} bytes")));
    }
    let text =
        value.to_str().map_err(|_| ApiError::BadRequest("Authorization header contains non-ASCII bytes".into()))?;
    let (scheme, rest) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(ApiError::BadRequest(format!(
            "Authorization scheme {:?} is not supported by the token endpoint; use Basic",
            scheme.chars().take(20).collect::<String>()
        )));
    }
    let decoded = BASE64_LENIENT
        .decode(rest.trim())
        .map_err(|_| ApiError::BadRequest("malformed Basic credentials: not valid base64".into()))?;
    let decoded = String::from_utf8(decoded)
        .map_err(|_| ApiError::BadRequest("malformed Basic credentials: not UTF-8".into()))?;
    let (username, password) = decoded.split_once(':').ok_or_else(|| {
        ApiError::BadRequest("malformed Basic credentials: no ':' between username and password".into())
    })?;
    Ok(Some(Basic { username: username.to_string(), password: SecretString::from(password.to_string()) }))
}

fn check_username(u: &str) -> Result<(), ApiError> {
    if u.chars().any(char::is_control) {
        return Err(ApiError::BadRequest("username contains control characters".into()));
    }
    Ok(())
}

/// Who the request is from and how they proved it.
pub(crate) struct Authenticated {
    pub identity: Arc<Identity>,
    pub method: AuthMethod,
}

const BAD_CREDENTIALS: &str = "invalid username or password";

/// Check a username and password (or a refresh token given as the password). Failed logins are rate limited
/// per client IP and per account (see `ratelimit`).
pub(crate) async fn password_login(
    state: &AppState,
    username: &str,
    password: &SecretString,
    service: &str,
    ip: IpAddr,
) -> Result<Authenticated, ApiError> {
    check_username(username)?;
    if password.expose_secret().starts_with(REFRESH_PREFIX) {
        // A refresh token as a Basic password (CI systems, containerd's GET fallback with an empty username).
        let identity = refresh_login(state, password.expose_secret(), Some(username), service).await?;
        return Ok(Authenticated { identity: Arc::new(identity), method: AuthMethod::RefreshToken });
    }
    if username.is_empty() || password.expose_secret().is_empty() {
        return Err(ApiError::Unauthorized(BAD_CREDENTIALS.into()));
    }
    state.limiter.check(ip, username).await?;
    match state.chain.authenticate(username, password).await {
        ChainOutcome::Authenticated(identity) => {
            state.limiter.succeeded(ip, username).await;
            Ok(Authenticated { identity, method: AuthMethod::Password })
        }
        ChainOutcome::Rejected { provider, reason } => {
            let provider = provider.as_deref().unwrap_or("none");
            tracing::info!(user = %username, provider, reason = %reason, client_ip = %ip, "login refused");
            metrics::counter!(crate::telemetry::FAILED_LOGINS, "provider" => provider.to_string()).increment(1);
            state.limiter.failed(ip, username).await?;
            Err(ApiError::Unauthorized(BAD_CREDENTIALS.into()))
        }
        ChainOutcome::Unavailable(e) => Err(ApiError::Unavailable(e.to_string())),
    }
}

/// Verify a refresh token and re-check its account with the provider that issued it.
pub(crate) async fn refresh_login(
    state: &AppState,
    token: &str,
    username: Option<&str>,
    service: &str,
) -> Result<Identity, ApiError> {
    let Some(refresh) = &state.refresh else {
        return Err(ApiError::InvalidGrant(
            "refresh tokens are disabled on this server; log in with a password".into(),
        ));
    };
    let refused = |e: RefreshError| ApiError::InvalidGrant(e.to_string());
    let claims = refresh.verify(token, service).map_err(refused)?;
    if let Some(u) = username {
        if !u.is_empty() && u != claims.sub {
            return Err(refused(RefreshError::WrongUser));
        }
    }
    match state.revocations.is_revoked(&claims).await {
        Ok(false) => {}
        Ok(true) => return Err(refused(RefreshError::Revoked)),
        Err(e) => return Err(ApiError::Unavailable(e.to_string())),
    }
    match state.chain.recheck_session(&claims.prv, &claims.sub, claims.sid.as_deref()).await {
        Ok(Recheck::Current(identity)) => Ok(identity),
        Ok(Recheck::Gone(reason)) => {
            tracing::info!(user = %claims.sub, provider = %claims.prv, reason = %reason, "refresh token refused");
            Err(refused(RefreshError::AccountGone))
        }
        Err(e) => Err(ApiError::Unavailable(e.to_string())),
    }
}

/// The client address: the peer, or X-Forwarded-For from a trusted proxy.
pub(crate) fn client_ip(state: &AppState, head: &axum::http::request::Parts) -> IpAddr {
    super::client_ip::resolve(&head.extensions, &head.headers, &state.settings.ops.trusted_proxies)
}

fn truthy(v: Option<&str>) -> bool {
    matches!(v, Some("true" | "1" | "yes"))
}

/// `GET /token`.
pub async fn get_token(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    // Only the head is needed; the body type is not Sync and must not be held across awaits.
    let (req, _body) = req.into_parts();
    let mut audit = Audit::new("token", "GET", client_ip(&state, &req));
    let result = async {
        let params = Params::parse(req.uri.query().unwrap_or("").as_bytes(), state.settings.max_scopes)?;
        audit.client_id = params.client_id.clone();
        let service = check_service(&state, params.service.as_deref())?;
        audit.service = service.clone();
        let scopes = parse_scopes(&state, &params.scopes)?;
        audit.requested = scopes.iter().map(Scope::text).collect();
        let auth = match parse_basic(&req.headers)? {
            Some(b) => {
                audit.subject = Some(b.username.clone());
                password_login(&state, &b.username, &b.password, &service, audit.client_ip).await?
            }
            None => {
                if params.account.as_deref().is_some_and(|a| !a.is_empty()) {
                    return Err(ApiError::Unauthorized(format!(
                        "credentials are required for account {:?}",
                        params.account.as_deref().unwrap_or_default()
                    )));
                }
                Authenticated { identity: Arc::new(Identity::anonymous()), method: AuthMethod::Anonymous }
            }
        };
        check_account(params.account.as_deref(), &auth.identity)?;
        let offline = truthy(params.offline_token.as_deref());
        respond(&state, auth, &mut audit, &service, &scopes, offline, false).await
    }
    .await;
    audit.finish(result)
}

/// `POST /token` (OAuth2 form body; skopeo and podman send it chunked, without Content-Length).
pub async fn post_token(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let (head, body) = req.into_parts();
    let mut audit = Audit::new("token", "POST", client_ip(&state, &head));
    let result = async {
        if let Some(ct) = head.headers.get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("");
            if !ct.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded") {
                return Err(ApiError::BadRequest(
                    "POST /token expects an application/x-www-form-urlencoded body".into(),
                ));
            }
        }
        let max = state.settings.max_body_bytes;
        let body = axum::body::to_bytes(body, max).await.map_err(|e| {
            let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                ApiError::PayloadTooLarge(max)
            } else {
                ApiError::BadRequest("could not read the request body".into())
            }
        })?;
        let params = Params::parse(&body, state.settings.max_scopes)?;
        audit.client_id = params.client_id.clone();
        audit.subject = params.username.clone();
        if params.client_id.as_deref().unwrap_or("").is_empty() {
            return Err(ApiError::BadRequest("client_id is required on POST /token".into()));
        }
        let service = check_service(&state, params.service.as_deref())?;
        audit.service = service.clone();
        let scopes = parse_scopes(&state, &params.scopes)?;
        audit.requested = scopes.iter().map(Scope::text).collect();
        let auth = match params.grant_type.as_deref() {
            Some("password") => {
                let username = params
                    .username
                    .as_deref()
                    .ok_or_else(|| ApiError::BadRequest("username is required for grant_type=password".into()))?;
                let password = params
                    .password
                    .as_ref()
                    .ok_or_else(|| ApiError::BadRequest("password is required for grant_type=password".into()))?;
                password_login(&state, username, password, &service, audit.client_ip).await?
            }
            Some("refresh_token") => {
                let token = params.refresh_token.as_ref().ok_or_else(|| {
                    ApiError::BadRequest("refresh_token is required for grant_type=refresh_token".into())
                })?;
                let identity =
                    refresh_login(&state, token.expose_secret(), params.username.as_deref(), &service).await?;
                Authenticated { identity: Arc::new(identity), method: AuthMethod::RefreshToken }
            }
            Some(super::device::GRANT_TYPE) => {
                let code = params
                    .device_code
                    .as_ref()
                    .ok_or_else(|| ApiError::BadRequest("device_code is required for the device_code grant".into()))?;
                let identity = super::device::redeem(&state, code, &service).await?;
                Authenticated { identity: Arc::new(identity), method: AuthMethod::Device }
            }
            Some(other) => return Err(ApiError::UnsupportedGrant(other.chars().take(64).collect())),
            None => return Err(ApiError::BadRequest("grant_type is required on POST /token".into())),
        };
        check_account(params.account.as_deref(), &auth.identity)?;
        // A device login exists to produce a refresh token (`tollgate login` stores it as the identity token).
        let offline = (params.access_type.as_deref() == Some("offline") && auth.method == AuthMethod::Password)
            || auth.method == AuthMethod::Device;
        respond(&state, auth, &mut audit, &service, &scopes, offline, true).await
    }
    .await;
    audit.finish(result)
}

pub(crate) fn check_service(state: &AppState, service: Option<&str>) -> Result<String, ApiError> {
    let service = service.ok_or_else(|| ApiError::BadRequest("service parameter is required".into()))?;
    if state.settings.services.iter().any(|s| s == service) {
        Ok(service.to_string())
    } else {
        Err(ApiError::BadRequest(format!(
            "unknown service {:?}; this server issues tokens for: {}",
            service.chars().take(100).collect::<String>(),
            state.settings.services.join(", ")
        )))
    }
}

pub(crate) fn parse_scopes(state: &AppState, raw: &[String]) -> Result<Vec<Scope>, ApiError> {
    let list = split_scopes(raw.iter().map(String::as_str));
    if list.len() > state.settings.max_scopes {
        return Err(ApiError::BadRequest(format!(
            "too many scopes: {} (at most {} per request)",
            list.len(),
            state.settings.max_scopes
        )));
    }
    list.into_iter().map(|s| Scope::parse(s).map_err(|e| ApiError::BadRequest(e.to_string()))).collect()
}

fn check_account(account: Option<&str>, identity: &Identity) -> Result<(), ApiError> {
    match account {
        Some(a) if !a.is_empty() && a != identity.username => Err(ApiError::BadRequest(format!(
            "account {:?} does not match the authenticated user",
            a.chars().take(100).collect::<String>()
        ))),
        _ => Ok(()),
    }
}

async fn respond(
    state: &AppState,
    auth: Authenticated,
    audit: &mut Audit,
    service: &str,
    scopes: &[Scope],
    offline: bool,
    is_post: bool,
) -> Result<Response, ApiError> {
    let mut auth = auth;
    // The login session travels in the identity only to reach the refresh token; the policy never sees it.
    // Only identities that carry one are copied (the cache's copy keeps it for the next request).
    let session = crate::identity::oidc::SESSION_CLAIM;
    let sid = if auth.identity.claims.contains_key(session) {
        Arc::make_mut(&mut auth.identity).claims.remove(session).and_then(|v| v.as_str().map(String::from))
    } else {
        None
    };
    let ctx = audit.context(auth, service);
    audit.fully_granted = true;
    let policy = state.policy.get();
    let mut access = Vec::with_capacity(scopes.len());
    let mut rules: Vec<String> = Vec::new();
    for scope in scopes {
        let decision = policy.authorize(&ctx, scope);
        audit.fully_granted &= decision.granted.len() >= scope.actions.len();
        for r in decision.allowed_by.iter().chain(decision.denied_by.iter()) {
            if !rules.contains(r) {
                rules.push(r.clone());
            }
        }
        if !decision.granted.is_empty() {
            access.push(AccessEntry {
                rtype: scope.rtype.as_str().to_string(),
                name: scope.name.clone(),
                actions: decision.granted.iter().map(|a| a.as_str().to_string()).collect(),
            });
        }
    }
    let issued = state.issuer.issue(&ctx.identity.username, service, &access).map_err(ApiError::Internal)?;
    let refresh_token = match (&state.refresh, offline && !ctx.identity.is_anonymous()) {
        (Some(r), true) => {
            if let Some(sid) = &sid {
                let provider = &ctx.identity.provider;
                state.chain.keep_session(provider, sid).await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
            }
            Some(
                r.issue_for_session(&ctx.identity.username, &ctx.identity.provider, service, sid)
                    .map_err(ApiError::Internal)?
                    .0,
            )
        }
        _ => None,
    };
    let granted: Vec<String> = access.iter().map(AccessEntry::text).collect();
    let scope = is_post.then(|| granted.join(" "));
    let body =
        token_body(&issued.token, issued.expires_in, &issued.issued_at, refresh_token.as_deref(), scope.as_deref())
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    audit.granted = granted;
    audit.rules = rules;
    audit.refresh_token_issued = refresh_token.is_some();
    audit.jti = Some(issued.jti);
    let mut resp = Response::new(Body::from(body));
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// The token response body: `token` for docker's protocol and `access_token` for OAuth2 clients (the same
/// value), `expires_in`, `issued_at`, and the refresh token and (POST) granted `scope` when there are any.
/// The access token is base64url segments joined by dots, which JSON never escapes, so it is copied as it is
/// rather than scanned byte by byte twice (that scan was 5% of a warm request, BENCHMARKS.md section 5).
fn token_body(
    token: &str,
    expires_in: u64,
    issued_at: &str,
    refresh_token: Option<&str>,
    scope: Option<&str>,
) -> serde_json::Result<Vec<u8>> {
    debug_assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)), "not a compact JWS");
    let mut buf =
        Vec::with_capacity(2 * token.len() + 128 + refresh_token.map_or(0, str::len) + scope.map_or(0, str::len));
    for name in ["{\"token\":\"", "\",\"access_token\":\""] {
        buf.extend_from_slice(name.as_bytes());
        buf.extend_from_slice(token.as_bytes());
    }
    {
        use std::io::Write as _;
        // Writing into a Vec cannot fail.
        let _ = write!(buf, "\",\"expires_in\":{expires_in},\"issued_at\":");
    }
    serde_json::to_writer(&mut buf, issued_at)?;
    if let Some(rt) = refresh_token {
        buf.extend_from_slice(b",\"refresh_token\":");
        serde_json::to_writer(&mut buf, rt)?;
    }
    if let Some(scope) = scope {
        buf.extend_from_slice(b",\"scope\":");
        serde_json::to_writer(&mut buf, scope)?;
    }
    buf.push(b'}');
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_body_is_json_with_every_field_and_escapes_what_callers_chose() {
        let body = token_body(
            "aGVhZA.Y2xhaW1z.c2ln-_",
            300,
            "2026-11-29T12:00:00Z",
            Some("tgr_x"),
            Some("repository:\"a\\b:pull"),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"token": "aGVhZA.Y2xhaW1z.c2ln-_", "access_token": "aGVhZA.Y2xhaW1z.c2ln-_",
                "expires_in": 300, "issued_at": "2026-11-29T12:00:00Z", "refresh_token": "tgr_x",
                "scope": "repository:\"a\\b:pull"})
        );
        let bare: serde_json::Value =
            serde_json::from_slice(&token_body("a.b.c", 60, "t", None, None).unwrap()).unwrap();
        assert_eq!(bare.as_object().unwrap().len(), 4, "no refresh_token or scope keys when there are none: {bare}");
    }

    #[test]
    fn params_accept_repeated_scopes_and_refuse_conflicting_singletons() {
        let p =
            Params::parse(b"scope=repository%3Aa%3Apull&scope=repository%3Ab%3Apush&service=r&service=r", 64).unwrap();
        assert_eq!(p.scopes.len(), 2);
        assert_eq!(p.service.as_deref(), Some("r"));
        let err = Params::parse(b"service=a&service=b", 64).err().unwrap();
        assert!(matches!(err, ApiError::BadRequest(m) if m.contains("service is given twice")));
        let many = "scope=x&".repeat(200);
        assert!(Params::parse(many.as_bytes(), 64).is_err());
    }

    #[test]
    fn basic_header_parsing_reports_each_malformation() {
        let mut h = HeaderMap::new();
        let cases: &[(&[u8], &str)] = &[
            (b"Bearer abc", "use Basic"),
            (b"Basic !!!", "not valid base64"),
            (b"Basic /w==", "not UTF-8"),
            (b"Basic YWxpY2U=", "no ':'"),
            (b"Basic \xff\xfe", "non-ASCII"),
        ];
        for (raw, want) in cases {
            h.insert(header::AUTHORIZATION, HeaderValue::from_bytes(raw).unwrap());
            let err = parse_basic(&h).err().unwrap();
            assert!(
                matches!(&err, ApiError::BadRequest(m) if m.contains(want)),
                "{:?}: {err:?}",
                String::from_utf8_lossy(raw)
            );
        }
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("basic YWxpY2U6cHc6Og"));
        let b = parse_basic(&h).unwrap().unwrap();
        assert_eq!(b.username, "alice");
        assert_eq!(b.password.expose_secret(), "pw::", "passwords may contain ':' and padding is optional");
    }
}

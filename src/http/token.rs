//! `GET /token` and `POST /token`: the distribution token protocol as real clients speak it.
//!
//! Thin handlers: parse the parameters (`params`), authenticate (`authn`), hand the scopes to the grant
//! step (`crate::grant`), and answer, writing the audit line on the way out. The differences between
//! clients that matter are documented where they are handled.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, Request};
use axum::response::Response;
use secrecy::ExposeSecret as _;

use super::audit::Audit;
use super::authn::{password_login, refresh_login, Authenticated};
use super::client_ip;
use super::error::ApiError;
use super::params::{check_account, check_service, parse_basic, parse_scopes, read_body, truthy, Params};
use crate::app::AppState;
use crate::grant::{grant, take_session, Ask};
use crate::identity::{AuthMethod, Identity};
use crate::scope::Scope;

/// `GET /token`.
pub async fn get_token(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    // Only the head is needed; the body type is not Sync and must not be held across awaits.
    let (req, _body) = req.into_parts();
    let mut audit = Audit::new("token", "GET", client_ip::of_request(&req, &state.settings.ops.trusted_proxies));
    let result = async {
        let params = Params::parse(req.uri.query().unwrap_or("").as_bytes(), state.settings.server.max_scopes)?;
        audit.client_id = params.client_id.clone();
        // Recorded as asked, so a refusal of an unknown service says which one.
        audit.service = params.service.as_deref().unwrap_or("").chars().take(100).collect();
        let service = check_service(&state, params.service.as_deref())?;
        let scopes = parse_scopes(&state, &params.scopes)?;
        audit.requested = scopes.iter().map(Scope::text).collect();
        let basic = parse_basic(&req.headers)?;
        let typed = basic.as_ref().map(|b| b.username.clone());
        let auth = match basic {
            Some(b) => {
                audit.subject = Some(b.username.clone());
                password_login(&state, &b.username, &b.password, &service, &mut audit).await?
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
        check_account(params.account.as_deref(), typed.as_deref(), &auth.identity, auth.method)?;
        let offline = truthy(params.offline_token.as_deref());
        answer(&state, auth, &mut audit, &service, &scopes, Ask { offline, scope_in_body: false, exchange: false })
            .await
    }
    .await;
    audit.finish(result)
}

/// `POST /token` (OAuth2 form body; skopeo and podman send it chunked, without Content-Length).
pub async fn post_token(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let (head, body) = req.into_parts();
    let mut audit = Audit::new("token", "POST", client_ip::of_request(&head, &state.settings.ops.trusted_proxies));
    let result =
        async {
            if let Some(ct) = head.headers.get(header::CONTENT_TYPE) {
                let ct = ct.to_str().unwrap_or("");
                if !ct.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded") {
                    return Err(ApiError::BadRequest(
                        "POST /token expects an application/x-www-form-urlencoded body".into(),
                    ));
                }
            }
            let body = read_body(&head.headers, body, state.settings.server.max_body_bytes).await?;
            let mut params = Params::parse(&body, state.settings.server.max_scopes)?;
            audit.client_id = params.client_id.clone();
            audit.subject = params.username.clone();
            let exchange = params.grant_type.as_deref() == Some(TOKEN_EXCHANGE);
            // A token exchange names its client by the subject token; the other grants name it themselves.
            if params.client_id.as_deref().unwrap_or("").is_empty() && !exchange {
                return Err(ApiError::BadRequest("client_id is required on POST /token".into()));
            }
            if exchange && params.service.is_none() {
                // RFC 8693 names the target service `audience`.
                params.service = params.audience.clone();
            }
            audit.service = params.service.as_deref().unwrap_or("").chars().take(100).collect();
            let service = check_service(&state, params.service.as_deref())?;
            let scopes = parse_scopes(&state, &params.scopes)?;
            audit.requested = scopes.iter().map(Scope::text).collect();
            let auth =
                match params.grant_type.as_deref() {
                    Some("password") => {
                        let username = params.username.as_deref().ok_or_else(|| {
                            ApiError::BadRequest("username is required for grant_type=password".into())
                        })?;
                        let password = params.password.as_ref().ok_or_else(|| {
                            ApiError::BadRequest("password is required for grant_type=password".into())
                        })?;
                        password_login(&state, username, password, &service, &mut audit).await?
                    }
                    Some("refresh_token") => {
                        let token = params.refresh_token.as_ref().ok_or_else(|| {
                            ApiError::BadRequest("refresh_token is required for grant_type=refresh_token".into())
                        })?;
                        let (token, user) = (token.expose_secret(), params.username.as_deref());
                        let identity = refresh_login(&state, token, user, &service, &mut audit).await?;
                        Authenticated { identity: Arc::new(identity), method: AuthMethod::RefreshToken }
                    }
                    Some(super::device::GRANT_TYPE) => {
                        let code = params.device_code.as_ref().ok_or_else(|| {
                            ApiError::BadRequest("device_code is required for the device_code grant".into())
                        })?;
                        let identity = super::device::redeem(&state, code, &service).await?;
                        Authenticated { identity: Arc::new(identity), method: AuthMethod::Device }
                    }
                    Some(TOKEN_EXCHANGE) => exchange_login(&state, &params, &service, &mut audit).await?,
                    Some(other) => return Err(ApiError::UnsupportedGrant(other.chars().take(64).collect())),
                    None => return Err(ApiError::BadRequest("grant_type is required on POST /token".into())),
                };
            let typed = params.username.as_deref();
            check_account(params.account.as_deref(), typed, &auth.identity, auth.method)?;
            // A device login exists to produce a refresh token (`tollgate login` stores it as the identity token).
            let offline = (params.access_type.as_deref() == Some("offline") && auth.method == AuthMethod::Password)
                || auth.method == AuthMethod::Device;
            let ask = Ask { offline, scope_in_body: true, exchange };
            answer(&state, auth, &mut audit, &service, &scopes, ask).await
        }
        .await;
    audit.finish(result)
}

/// The grant type of RFC 8693 token exchange.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// Subject token types a workload JWT may be announced as.
const JWT_TOKEN_TYPES: [&str; 3] = [
    "urn:ietf:params:oauth:token-type:jwt",
    "urn:ietf:params:oauth:token-type:id_token",
    "urn:ietf:params:oauth:token-type:access_token",
];

/// Token exchange (RFC 8693): a workload's JWT (`subject_token`) for a registry access token.
async fn exchange_login(
    state: &AppState,
    params: &Params,
    service: &str,
    audit: &mut Audit,
) -> Result<Authenticated, ApiError> {
    let token = params
        .subject_token
        .as_ref()
        .ok_or_else(|| ApiError::BadRequest("subject_token is required for token exchange".into()))?;
    match params.subject_token_type.as_deref() {
        Some(t) if JWT_TOKEN_TYPES.contains(&t) => {}
        Some(t) => {
            return Err(ApiError::BadRequest(format!(
                "subject_token_type {:?} is not supported: use urn:ietf:params:oauth:token-type:jwt",
                t.chars().take(100).collect::<String>()
            )))
        }
        None => return Err(ApiError::BadRequest("subject_token_type is required for token exchange".into())),
    }
    match params.requested_token_type.as_deref() {
        None | Some("urn:ietf:params:oauth:token-type:access_token") => {}
        Some(t) => {
            return Err(ApiError::BadRequest(format!(
            "requested_token_type {:?} is not supported: tollgate issues urn:ietf:params:oauth:token-type:access_token",
            t.chars().take(100).collect::<String>()
        )))
        }
    }
    if crate::identity::workload::jwt_issuer(token.expose_secret()).is_none() {
        return Err(ApiError::BadRequest("subject_token is not a JWT with an iss claim".into()));
    }
    let auth = password_login(state, "", token, service, audit).await.map_err(|e| match e {
        ApiError::Unauthorized(m) => ApiError::InvalidGrant(m),
        other => other,
    })?;
    if auth.method != AuthMethod::Workload {
        return Err(ApiError::InvalidGrant("subject_token is not a workload identity token".into()));
    }
    Ok(auth)
}

/// Grant what the policy allows of `scopes` and write the token response.
async fn answer(
    state: &AppState,
    mut auth: Authenticated,
    audit: &mut Audit,
    service: &str,
    scopes: &[Scope],
    ask: Ask,
) -> Result<Response, ApiError> {
    let sid = take_session(&mut auth.identity);
    let ctx = audit.context(auth.identity, auth.method, service);
    let g = grant(state, &ctx, sid, scopes, ask).await?;
    audit.fully_granted = g.fully_granted;
    audit.granted = g.granted;
    audit.rules = g.rules;
    audit.refresh_token_issued = g.refresh_token_issued;
    audit.jti = Some(g.jti);
    let mut resp = Response::new(Body::from(g.body));
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

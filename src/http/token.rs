//! `GET /token` and `POST /token`: the distribution token protocol as real clients speak it.
//!
//! Each handler reads parse -> authenticate (`crate::authn`) -> grant (`crate::grant`) -> answer, writing
//! the audit line on the way out. The differences between clients that matter are documented where they
//! are handled: the parameters in `params.rs`, the credentials in `crate::authn`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, Request};
use axum::response::Response;

use super::audit::Audit;
use super::client_ip;
use super::error::ApiError;
use super::params::{basic_credentials, read_body, truthy, Params, Target};
use crate::app::AppState;
use crate::authn::{authenticate, Login, TOKEN_EXCHANGE_GRANT};
use crate::grant::{grant, Ask};
use crate::identity::AuthMethod;

/// `GET /token`.
pub async fn get_token(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    // Only the head is needed; the body type is not Sync and must not be held across awaits.
    let (head, _body) = req.into_parts();
    let mut audit = Audit::new("token", "GET", client_ip::of_request(&head, &state.settings.ops.trusted_proxies));
    let result = async {
        let params = Params::parse(head.uri.query().unwrap_or("").as_bytes(), state.settings.server.max_scopes)?;
        audit.client_id = params.client_id.clone();
        let target = Target::parse(&state, params.service.as_deref(), &params.scopes, &mut audit)?;
        let credentials = basic_credentials(&head.headers)?;
        audit.claimed(&credentials);
        let login = audit.login(authenticate(&state, credentials, audit.client_ip, &target.service).await)?;
        login.check_account(params.account.as_deref())?;
        let ask = Ask { offline: truthy(params.offline_token.as_deref()), scope_in_body: false, exchange: false };
        answer(&state, login, &mut audit, &target, ask).await
    }
    .await;
    audit.finish(result)
}

/// `POST /token` (OAuth2 form body; skopeo and podman send it chunked, without Content-Length).
pub async fn post_token(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let (head, body) = req.into_parts();
    let mut audit = Audit::new("token", "POST", client_ip::of_request(&head, &state.settings.ops.trusted_proxies));
    let result = async {
        let params = form(&state, &head, body).await?;
        audit.client_id = params.client_id.clone();
        let exchange = params.grant_type.as_deref() == Some(TOKEN_EXCHANGE_GRANT);
        // A token exchange names its client by the subject token, and its target service `audience`.
        if params.client_id.as_deref().unwrap_or("").is_empty() && !exchange {
            return Err(ApiError::BadRequest("client_id is required on POST /token".into()));
        }
        let service = params.service.as_ref().or(params.audience.as_ref().filter(|_| exchange));
        let target = Target::parse(&state, service.map(String::as_str), &params.scopes, &mut audit)?;
        let credentials = params.credentials()?;
        audit.claimed(&credentials);
        let login = audit.login(authenticate(&state, credentials, audit.client_ip, &target.service).await)?;
        login.check_account(params.account.as_deref())?;
        // A device login exists to produce a refresh token (`tollgate login` stores it as the identity token).
        let offline = (params.access_type.as_deref() == Some("offline") && login.method == AuthMethod::Password)
            || login.method == AuthMethod::Device;
        answer(&state, login, &mut audit, &target, Ask { offline, scope_in_body: true, exchange }).await
    }
    .await;
    audit.finish(result)
}

/// The parameters of a form body, which must be `application/x-www-form-urlencoded` when its type is given.
async fn form(state: &AppState, head: &axum::http::request::Parts, body: Body) -> Result<Params, ApiError> {
    if let Some(ct) = head.headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        if !ct.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded") {
            return Err(ApiError::BadRequest("POST /token expects an application/x-www-form-urlencoded body".into()));
        }
    }
    let body = read_body(&head.headers, body, state.settings.server.max_body_bytes).await?;
    Params::parse(&body, state.settings.server.max_scopes)
}

/// Grant what the policy allows of the target's scopes and write the token response.
async fn answer(
    state: &AppState,
    login: Login,
    audit: &mut Audit,
    target: &Target,
    ask: Ask,
) -> Result<Response, ApiError> {
    let g = grant(state, login, audit.client_ip, &target.service, &target.scopes, ask).await?;
    let body = audit.granted(g);
    let mut resp = Response::new(Body::from(body));
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

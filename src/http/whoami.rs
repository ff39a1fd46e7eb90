//! `GET /whoami`: "why can't I push?" answered without paging an admin.
//!
//! Authenticated exactly like `/token` (Basic with a password, robot secret or refresh token; the same
//! failed-login limits), it returns the caller's identity and groups as tollgate sees them, and for each
//! `scope` parameter the policy's explanation: which rules grant or deny each action and why the others do
//! not apply. The explanation is the one `tollgate policy explain --json` prints for the same identity,
//! except that at most `grant::EXPLAINED_MISSES_MAX` rules that did not apply are listed per scope (those
//! the identity could reach first; `not_applied_omitted` counts the rest), so that neither its cost nor its
//! size grows with the rules file.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, Request};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::audit::Audit;
use super::client_ip;
use super::error::ApiError;
use super::params::{basic_credentials, Params, Target};
use crate::app::AppState;
use crate::authn::{authenticate, Credentials};
use crate::grant::{context, cut_to_token, explain};

/// `GET /whoami?scope=…&service=…` with Basic credentials.
pub async fn whoami(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let (head, _body) = req.into_parts();
    let mut audit = Audit::new("whoami", "GET", client_ip::of_request(&head, &state.settings.ops.trusted_proxies));
    let result = async {
        let params = Params::parse(head.uri.query().unwrap_or("").as_bytes(), state.settings.server.max_scopes)?;
        // The service is optional here: the first one configured.
        let service = params.service.as_ref().or(state.settings.token.services.first());
        let target = Target::parse(&state, service.map(String::as_str), &params.scopes, &mut audit)?;
        let credentials = basic_credentials(&head.headers)?;
        if matches!(credentials, Credentials::Anonymous) {
            return Err(ApiError::Unauthorized(
                "credentials are required: /whoami answers for a logged-in user".into(),
            ));
        }
        audit.claimed(&credentials);
        let login = audit.login(authenticate(&state, credentials, audit.client_ip, &target.service).await)?;
        let token = login.token.clone();
        let (ctx, _session) = context(login, audit.client_ip, &target.service);
        let mut explained = explain(&state, &ctx, &target.scopes);
        if let Some(t) = &token {
            cut_to_token(&mut explained, &t.scope, &target.scopes);
        }
        audit.explained(&explained);
        let mut body = json!({
            "username": ctx.identity.username,
            "provider": ctx.identity.provider,
            "groups": ctx.identity.groups,
            "claims": ctx.identity.claims,
            "auth_method": ctx.auth_method.as_str(),
            "client_ip": ctx.client_ip.to_string(),
            "service": target.service,
            "explanations": explained.explanations,
        });
        if let Some(t) = &token {
            // What an access token login is cut to (the explanations' `granted` already are).
            body["access_token"] = json!({"id": t.id, "scope": t.scope});
        }
        let mut resp = axum::Json(body).into_response();
        resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(resp)
    }
    .await;
    audit.finish(result)
}

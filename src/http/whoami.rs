//! `GET /whoami`: "why can't I push?" answered without paging an admin.
//!
//! Authenticated exactly like `/token` (Basic with a password, robot secret or refresh token; the same
//! failed-login limits), it returns the caller's identity and groups as tollgate sees them, and for each
//! `scope` parameter the policy's explanation: which rules grant or deny each action and why the others do
//! not apply. The explanation is the one `tollgate policy explain --json` prints for the same identity.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, Request};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::audit::Audit;
use super::authn::password_login;
use super::client_ip;
use super::error::ApiError;
use super::params::{check_service, parse_basic, parse_scopes};
use crate::app::AppState;
use crate::scope::Scope;

/// `GET /whoami?scope=…&service=…` with Basic credentials.
pub async fn whoami(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let (head, _body) = req.into_parts();
    let mut audit = Audit::new("whoami", "GET", client_ip::of_request(&head, &state.settings.ops.trusted_proxies));
    let result = async {
        let mut scopes_raw = Vec::new();
        let mut service = None;
        for (k, v) in form_urlencoded::parse(head.uri.query().unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "scope" => scopes_raw.push(v.into_owned()),
                "service" => service = Some(v.into_owned()),
                _ => {}
            }
        }
        let scopes = parse_scopes(&state, &scopes_raw)?;
        audit.requested = scopes.iter().map(Scope::text).collect();
        audit.service = service.as_deref().unwrap_or("").chars().take(100).collect();
        let service = match service {
            Some(s) => check_service(&state, Some(&s))?,
            None => state.settings.token.services.first().cloned().unwrap_or_default(),
        };
        audit.service = service.clone();
        let Some(basic) = parse_basic(&head.headers)? else {
            return Err(ApiError::Unauthorized(
                "credentials are required: /whoami answers for a logged-in user".into(),
            ));
        };
        audit.subject = Some(basic.username.clone());
        let auth = password_login(&state, &basic.username, &basic.password, &service, &mut audit).await?;
        let ctx = audit.context(auth.identity, auth.method, &service);
        let policy = state.policy.get();
        let explanations: Vec<_> = scopes.iter().map(|s| policy.explain(&ctx, s)).collect();
        audit.fully_granted = explanations.iter().zip(&scopes).all(|(e, s)| e.granted.len() >= s.actions.len());
        audit.granted = explanations
            .iter()
            .zip(&scopes)
            .filter(|(e, _)| !e.granted.is_empty())
            .map(|(e, s)| {
                let actions: Vec<&str> = e.granted.iter().map(|a| a.as_str()).collect();
                format!("{}:{}:{}", s.rtype.as_str(), s.name, actions.join(","))
            })
            .collect();
        for a in explanations.iter().flat_map(|e| &e.actions) {
            for r in a.allowed_by.iter().chain(&a.denied_by) {
                if !audit.rules.contains(r) {
                    audit.rules.push(r.clone());
                }
            }
        }
        let body = json!({
            "username": ctx.identity.username,
            "provider": ctx.identity.provider,
            "groups": ctx.identity.groups,
            "claims": ctx.identity.claims,
            "auth_method": ctx.auth_method.as_str(),
            "client_ip": ctx.client_ip.to_string(),
            "service": service,
            "explanations": explanations,
        });
        let mut resp = axum::Json(body).into_response();
        resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(resp)
    }
    .await;
    audit.finish(result)
}

//! The access-token API (JSON), behind `tollgate token create|list|rotate|revoke`:
//!
//! - `POST /access-tokens` `{"name","scope":[…],"expires":"30d","owner":"group:NAME"?}` → 201 with the
//!   secret, shown this once;
//! - `GET /access-tokens[?all=true|user=NAME][&expiring=true]` → `{"tokens":[…]}` (never a secret or hash);
//! - `POST /access-tokens/{id}/rotate` `{"grace":"1h","expires":"30d"?}` → 201 with the new secret;
//! - `DELETE /access-tokens/{id}` → the revoked token;
//! - `POST /access-tokens/revoke` `{"user":"NAME"}` → the ids revoked (offboarding, admins).
//!
//! Every call authenticates with `Authorization: Basic`: a password, or a refresh token as the password.
//! Each handler parses, authenticates, calls `crate::access`, and answers; each writes an audit line.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::audit::Audit;
use super::client_ip;
use super::error::ApiError;
use super::params::{basic_credentials, read_body};
use crate::access::{self, CreateRequest, Created, ListRequest};
use crate::app::AppState;
use crate::authn::{authenticate, Login};
use crate::support::time::{parse_duration, rfc3339, unix_now};
use crate::token::access::TokenRecord;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    scope: Vec<String>,
    expires: String,
    #[serde(default)]
    owner: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    #[serde(default)]
    grace: Option<String>,
    #[serde(default)]
    expires: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeUserBody {
    user: String,
}

fn duration(field: &str, text: &str) -> Result<Duration, ApiError> {
    parse_duration(text).map_err(|e| ApiError::BadRequest(format!("{field}: {e}")))
}

/// Authenticate the request's Basic credentials (the service is the first configured one: a refresh
/// token is bound to a service, and the CLI's is).
async fn login(state: &AppState, head: &axum::http::request::Parts, audit: &mut Audit) -> Result<Login, ApiError> {
    let credentials = basic_credentials(&head.headers)?;
    if matches!(credentials, crate::authn::Credentials::Anonymous) {
        return Err(ApiError::Unauthorized("credentials are required".into()));
    }
    audit.claimed(&credentials);
    let service =
        query_param(head, "service").or_else(|| state.settings.token.services.first().cloned()).unwrap_or_default();
    audit.service = service.clone();
    audit.login(authenticate(state, credentials, audit.client_ip, &service).await)
}

fn query_param(head: &axum::http::request::Parts, name: &str) -> Option<String> {
    form_urlencoded::parse(head.uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn json_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    head: &axum::http::request::Parts,
    body: Body,
) -> Result<T, ApiError> {
    let bytes = read_body(&head.headers, body, state.settings.server.max_body_bytes).await?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest(format!("the JSON body: {e}")))
}

/// A token's metadata as the API shows it: never its secret nor its hash.
fn shown(r: &TokenRecord) -> serde_json::Value {
    let now = unix_now();
    json!({
        "id": r.id,
        "name": r.name,
        "owner": r.owner.label(),
        "scope": r.scope,
        "created": rfc3339(r.created),
        "created_by": r.created_by,
        "expires": rfc3339(r.expires),
        "state": r.state(now).as_str(),
        "last_used": r.last_used.as_ref().map(|l| json!({"at": rfc3339(l.at), "address": l.address})),
        "revoked": r.revoked.map(rfc3339),
        "rotated_to": r.rotated_to,
    })
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn created(c: Created) -> Response {
    let mut body = shown(&c.record);
    body["token"] = json!(c.secret);
    answer(StatusCode::CREATED, body)
}

fn audit_of(state: &AppState, head: &axum::http::request::Parts, method: &'static str) -> Audit {
    Audit::new("access_tokens", method, client_ip::of_request(head, &state.settings.ops.trusted_proxies))
}

/// `POST /access-tokens`.
pub async fn create(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let (head, body) = req.into_parts();
    let mut audit = audit_of(&state, &head, "POST");
    let result = async {
        let login = login(&state, &head, &mut audit).await?;
        let b: CreateBody = json_body(&state, &head, body).await?;
        let req = CreateRequest {
            name: b.name,
            scope: b.scope,
            expires_in: duration("expires", &b.expires)?,
            owner: b.owner,
        };
        let c = access::create(&state, &login, audit.client_ip, req).await?;
        audit.access_token = Some(c.record.id.clone());
        Ok(created(c))
    }
    .await;
    audit.finish(result)
}

/// `GET /access-tokens`.
pub async fn list(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let (head, _body) = req.into_parts();
    let mut audit = audit_of(&state, &head, "GET");
    let result = async {
        let login = login(&state, &head, &mut audit).await?;
        let flag = |n: &str| query_param(&head, n).is_some_and(|v| v == "true" || v == "1");
        let req = ListRequest { user: query_param(&head, "user"), all: flag("all"), expiring: flag("expiring") };
        let tokens = access::list(&state, &login, req).await?;
        Ok(answer(StatusCode::OK, json!({"tokens": tokens.iter().map(shown).collect::<Vec<_>>()})))
    }
    .await;
    audit.finish(result)
}

/// `DELETE /access-tokens/{id}`.
pub async fn revoke(State(state): State<Arc<AppState>>, Path(id): Path<String>, req: Request<Body>) -> Response {
    let (head, _body) = req.into_parts();
    let mut audit = audit_of(&state, &head, "DELETE");
    let result = async {
        let login = login(&state, &head, &mut audit).await?;
        let r = access::revoke(&state, &login, &id).await?;
        audit.access_token = Some(r.id.clone());
        let mut shown = shown(&r);
        shown["state"] = json!("revoked");
        Ok(answer(StatusCode::OK, shown))
    }
    .await;
    audit.finish(result)
}

/// `POST /access-tokens/{id}/rotate`.
pub async fn rotate(State(state): State<Arc<AppState>>, Path(id): Path<String>, req: Request<Body>) -> Response {
    let (head, body) = req.into_parts();
    let mut audit = audit_of(&state, &head, "POST");
    let result = async {
        let login = login(&state, &head, &mut audit).await?;
        let b: RotateBody = json_body(&state, &head, body).await?;
        let grace = b.grace.as_deref().map(|g| duration("grace", g)).transpose()?.unwrap_or(Duration::ZERO);
        let expires = b.expires.as_deref().map(|e| duration("expires", e)).transpose()?;
        let c = access::rotate(&state, &login, audit.client_ip, &id, grace, expires).await?;
        audit.access_token = Some(c.record.id.clone());
        Ok(created(c))
    }
    .await;
    audit.finish(result)
}

/// `POST /access-tokens/revoke` (every token of a user).
pub async fn revoke_user(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let (head, body) = req.into_parts();
    let mut audit = audit_of(&state, &head, "POST");
    let result = async {
        let login = login(&state, &head, &mut audit).await?;
        let b: RevokeUserBody = json_body(&state, &head, body).await?;
        let ids = access::revoke_user(&state, &login, &b.user).await?;
        Ok(answer(StatusCode::OK, json!({"user": b.user, "revoked": ids})))
    }
    .await;
    audit.finish(result)
}

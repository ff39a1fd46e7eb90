//! Device login (RFC 8628), relayed: tollgate's own device endpoint and the device-code grant of `/token`.
//!
//! `POST /device/code` starts the flow at the chosen OIDC provider's IdP and answers with the IdP's user
//! code and verification URL, but with a device code of tollgate's own: the IdP's device code (a secret)
//! stays in the session store, keyed by a hash of ours, together with the service it is for. Each poll of
//! `POST /token` with `grant_type=urn:ietf:params:oauth:grant-type:device_code` polls the IdP once; the
//! result of an approved login is a tollgate refresh token (plus an access token with the requested scopes).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, Request};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::ApiError;
use crate::app::AppState;
use crate::identity::{DevicePoll, Identity};
use crate::store::sessions::hashed_key;
use crate::support::random::random_id;
use crate::support::time::unix_now;

/// The grant type of the device-code grant on `/token`.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// How long a finished or expired device session is remembered, so that a late poll hears "expired"
/// rather than "unknown".
const GRACE_SECS: u64 = 600;
/// RFC 8628 3.5: each slow_down adds 5 seconds to the interval.
const SLOW_DOWN_STEP: u64 = 5;

/// A device flow in progress. Holds the IdP's device code (a secret): stored, never logged or sent.
#[derive(Serialize, Deserialize)]
struct DeviceSession {
    provider: String,
    service: String,
    idp_device_code: String,
    expires_at: u64,
    interval: u64,
    last_poll: u64,
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(e.to_string())
}

fn flow(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::DeviceFlow { code, message: message.into() }
}

/// `POST /device/code`: form fields `service` (required), `client_id`, and optionally `provider` (default:
/// the first provider that offers device login).
pub async fn device_code(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    start(&state, req).await.unwrap_or_else(IntoResponse::into_response)
}

async fn start(state: &AppState, req: Request<Body>) -> Result<Response, ApiError> {
    let (head, body) = req.into_parts();
    let body = super::params::read_body(&head.headers, body, state.settings.server.max_body_bytes).await?;
    let (mut service, mut provider) = (None, None);
    for (k, v) in form_urlencoded::parse(&body) {
        match k.as_ref() {
            "service" => service = Some(v.into_owned()),
            "provider" => provider = Some(v.into_owned()),
            _ => {}
        }
    }
    let service = super::params::check_service(state, service.as_deref())?;
    let providers = state.chain.providers();
    let chosen = match &provider {
        Some(name) => providers.iter().find(|p| p.name() == name).ok_or_else(|| {
            ApiError::BadRequest(format!("unknown provider {:?}", name.chars().take(64).collect::<String>()))
        })?,
        None => providers
            .iter()
            .find(|p| p.device_login().is_some())
            .ok_or_else(|| ApiError::BadRequest("no configured provider offers device login".into()))?,
    };
    let name = chosen.name().to_string();
    let login = chosen
        .device_login()
        .ok_or_else(|| ApiError::BadRequest(format!("provider {name:?} does not offer device login")))?;
    let started = login.start_device().await.map_err(unavailable)?;
    let now = unix_now();
    let code = format!("tgd_{}", random_id(32));
    let session = DeviceSession {
        provider: name.clone(),
        service,
        idp_device_code: started.device_code.expose_secret().to_string(),
        expires_at: now + started.expires_in.as_secs(),
        interval: started.interval.as_secs().max(1),
        last_poll: 0,
    };
    save(state, &code, &session).await?;
    tracing::info!(provider = %name, "device login started");
    let mut body = json!({
        "device_code": code,
        "user_code": started.user_code,
        "verification_uri": started.verification_uri,
        "expires_in": started.expires_in.as_secs(),
        "interval": session.interval,
    });
    if let Some(complete) = started.verification_uri_complete {
        body["verification_uri_complete"] = json!(complete);
    }
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

async fn save(state: &AppState, code: &str, s: &DeviceSession) -> Result<(), ApiError> {
    let value = serde_json::to_value(s).map_err(|e| ApiError::Internal(e.to_string()))?;
    state.sessions.put(&hashed_key("device", code), value, s.expires_at + GRACE_SECS).await.map_err(unavailable)
}

/// The device-code grant: one poll. Returns the approved identity, or the RFC 8628 answer as an error.
pub async fn redeem(state: &AppState, code: &SecretString, service: &str) -> Result<Identity, ApiError> {
    let key = hashed_key("device", code.expose_secret());
    let unknown = || flow("invalid_grant", "unknown device code; start a new login (tollgate login REGISTRY)");
    let stored = state.sessions.get(&key).await.map_err(unavailable)?.ok_or_else(unknown)?;
    let mut s: DeviceSession = serde_json::from_value(stored).map_err(|_| unknown())?;
    if s.service != service {
        return Err(flow("invalid_grant", format!("this device code was issued for service {:?}", s.service)));
    }
    let now = unix_now();
    let expired = || flow("expired_token", "the device code has expired; start a new login (tollgate login REGISTRY)");
    if now >= s.expires_at {
        return Err(expired());
    }
    if s.last_poll != 0 && now < s.last_poll + s.interval {
        s.interval += SLOW_DOWN_STEP;
        save(state, code.expose_secret(), &s).await?;
        return Err(flow("slow_down", format!("polling too fast; wait {} seconds between polls", s.interval)));
    }
    s.last_poll = now;
    save(state, code.expose_secret(), &s).await?;
    let provider = state.chain.providers().iter().find(|p| p.name() == s.provider).cloned();
    let Some(login) = provider.as_ref().and_then(|p| p.device_login()) else {
        return Err(flow("invalid_grant", format!("provider {:?} no longer offers device login", s.provider)));
    };
    let poll = login.poll_device(&SecretString::from(s.idp_device_code.clone())).await.map_err(unavailable)?;
    // A finished flow is kept (marked expired) for the grace period, so a repeated poll is "expired", not "unknown".
    let finish = |mut s: DeviceSession| async move {
        s.expires_at = now;
        save(state, code.expose_secret(), &s).await
    };
    match poll {
        DevicePoll::Pending => Err(flow("authorization_pending", "waiting for the user to approve the login")),
        DevicePoll::SlowDown => {
            s.interval += SLOW_DOWN_STEP;
            save(state, code.expose_secret(), &s).await?;
            Err(flow("slow_down", format!("polling too fast; wait {} seconds between polls", s.interval)))
        }
        DevicePoll::Denied => {
            finish(s).await?;
            Err(flow("access_denied", "the login was denied at the identity provider"))
        }
        DevicePoll::Expired => {
            finish(s).await?;
            Err(expired())
        }
        DevicePoll::Failed(reason) => {
            tracing::info!(provider = %s.provider, reason = %reason, "device login refused");
            finish(s).await?;
            Err(flow("invalid_grant", "the identity provider refused the device login"))
        }
        DevicePoll::Done(identity) => {
            finish(s).await?;
            Ok(identity)
        }
    }
}

//! `POST /device/code`: start a device login (RFC 8628) relayed to an OIDC provider's IdP
//! (`crate::authn`'s device flow). The device-code grant that redeems it is a grant of `/token`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, Request};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use super::params::{check_service, read_body};
use crate::app::AppState;
use crate::authn::start_device;

/// `POST /device/code`: form fields `service` (required), `client_id`, and optionally `provider` (default:
/// the first provider that offers device login).
pub async fn device_code(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    start(&state, req).await.unwrap_or_else(IntoResponse::into_response)
}

async fn start(state: &AppState, req: Request<Body>) -> Result<Response, ApiError> {
    let (head, body) = req.into_parts();
    let body = read_body(&head.headers, body, state.settings.server.max_body_bytes).await?;
    let (mut service, mut provider) = (None, None);
    for (k, v) in form_urlencoded::parse(&body) {
        match k.as_ref() {
            "service" => service = Some(v.into_owned()),
            "provider" => provider = Some(v.into_owned()),
            _ => {}
        }
    }
    let service = check_service(state, service.as_deref())?;
    let started = start_device(state, service, provider.as_deref()).await?;
    let mut body = json!({
        "device_code": started.device_code,
        "user_code": started.user_code,
        "verification_uri": started.verification_uri,
        "expires_in": started.expires_in,
        "interval": started.interval,
    });
    if let Some(complete) = started.verification_uri_complete {
        body["verification_uri_complete"] = json!(complete);
    }
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

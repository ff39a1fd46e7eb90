//! The one place that turns errors into HTTP responses.
//!
//! Every error body is JSON in two shapes at once: the OAuth2 form (`error`, `error_description`) and the
//! registry's `errors` list, because docker, containerd and containers/image each print a different one.
//! 4xx messages name the problem; 5xx messages stay generic and the detail goes to the log.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::authn::{LoginError, Outage};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 400: the request is malformed. The message names the parameter or header.
    BadRequest(String),
    /// 400: an unknown `grant_type`.
    UnsupportedGrant(String),
    /// 401 with `WWW-Authenticate: Basic`: wrong or missing credentials. The message never says which part.
    Unauthorized(String),
    /// 401: a refresh token that is invalid, expired, revoked or whose account is gone.
    InvalidGrant(String),
    /// 400: a device-flow answer (RFC 8628 3.5): `authorization_pending` and `slow_down` tell the client to
    /// keep polling; `access_denied`, `expired_token` and `invalid_grant` (an unknown device code) end it.
    DeviceFlow { code: &'static str, message: String },
    /// 403: authenticated, but not allowed to do this (an access token managing tokens, a scope beyond the
    /// rules). The message says why.
    Forbidden(String),
    /// 404: no such thing (an access token id); the message names it.
    Missing(String),
    /// 404: unknown path.
    NotFound,
    /// 405: wrong method.
    MethodNotAllowed,
    /// 413: body too large.
    PayloadTooLarge(usize),
    /// 429 with `Retry-After`: too many failed logins from this address or for this account. The client
    /// waits `retry_after` seconds; no password was checked.
    TooManyRequests { retry_after: u64 },
    /// 503 with `Retry-After`: what the answer needs cannot be had now; the outage says what (the client is
    /// told), the detail is logged, not sent.
    Unavailable(Outage, String),
    /// 500: a bug or a failed signature. Detail is logged, not sent.
    Internal(String),
}

/// The realm, written once: [`REALM`] and the challenge header are both made from it.
macro_rules! realm {
    () => {
        "tollgate"
    };
}

/// The realm sent with `WWW-Authenticate: Basic`.
pub const REALM: &str = realm!();
/// The challenge of a 401.
const CHALLENGE: &str = concat!("Basic realm=\"", realm!(), "\", charset=\"UTF-8\"");

impl From<LoginError> for ApiError {
    fn from(e: LoginError) -> ApiError {
        match e {
            LoginError::Malformed(m) => ApiError::BadRequest(m),
            LoginError::Refused(r) => ApiError::Unauthorized(r.message),
            LoginError::InvalidGrant(r) => ApiError::InvalidGrant(r.message),
            LoginError::Device { code, message } => ApiError::DeviceFlow { code, message },
            LoginError::Limited { retry_after } => ApiError::TooManyRequests { retry_after },
            LoginError::Unavailable(what, m) => ApiError::Unavailable(what, m),
        }
    }
}

impl From<crate::grant::GrantError> for ApiError {
    fn from(e: crate::grant::GrantError) -> ApiError {
        match e {
            crate::grant::GrantError::Unavailable(what, m) => ApiError::Unavailable(what, m),
            crate::grant::GrantError::Internal(m) => ApiError::Internal(m),
            crate::grant::GrantError::Sign(e) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<crate::access::AccessError> for ApiError {
    fn from(e: crate::access::AccessError) -> ApiError {
        use crate::access::AccessError as A;
        match e {
            A::BadRequest(m) => ApiError::BadRequest(m),
            A::Forbidden(m) => ApiError::Forbidden(m),
            A::NotFound(m) => ApiError::Missing(m),
            A::Unavailable(what, m) => ApiError::Unavailable(what, m),
        }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::UnsupportedGrant(_) | ApiError::DeviceFlow { .. } => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Unauthorized(_) | ApiError::InvalidGrant(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound | ApiError::Missing(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(..) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// (OAuth2 error code, registry error code, client-visible message)
    fn parts(&self) -> (&'static str, &'static str, String) {
        match self {
            ApiError::BadRequest(m) => ("invalid_request", "UNSUPPORTED", m.clone()),
            ApiError::UnsupportedGrant(g) => (
                "unsupported_grant_type",
                "UNSUPPORTED",
                format!(
                    "unsupported grant_type {g:?}: use password, refresh_token, urn:ietf:params:oauth:grant-type:device_code or urn:ietf:params:oauth:grant-type:token-exchange"
                ),
            ),
            ApiError::DeviceFlow { code, message } => (code, "DENIED", message.clone()),
            ApiError::Unauthorized(m) => ("invalid_client", "UNAUTHORIZED", m.clone()),
            ApiError::InvalidGrant(m) => ("invalid_grant", "UNAUTHORIZED", m.clone()),
            ApiError::Forbidden(m) => ("access_denied", "DENIED", m.clone()),
            ApiError::Missing(m) => ("not_found", "NOT_FOUND", m.clone()),
            ApiError::NotFound => ("not_found", "NOT_FOUND", "no such endpoint; tokens are served at /token".into()),
            ApiError::MethodNotAllowed => ("invalid_request", "UNSUPPORTED", "method not allowed".into()),
            ApiError::PayloadTooLarge(max) => {
                ("invalid_request", "SIZE_INVALID", format!("request body is larger than {max} bytes"))
            }
            ApiError::TooManyRequests { retry_after } => {
                ("slow_down", "TOOMANYREQUESTS", format!("too many failed logins; try again in {retry_after} seconds"))
            }
            ApiError::Unavailable(what, _) => ("temporarily_unavailable", "UNAVAILABLE", what.message()),
            ApiError::Internal(_) => ("server_error", "UNKNOWN", "internal error; the server log has details".into()),
        }
    }
}

/// The whole HTTP/1.1 answer to a request hyper refused while parsing it, before any handler ran: 414 (a
/// URI too long) and 431 (headers too large) with the JSON error body every other error has. None for other
/// statuses. `server::conn` puts it in place of hyper's empty answer.
pub fn parse_refusal(status: u16) -> Option<Vec<u8>> {
    let (reason, message) = match status {
        414 => (
            "URI Too Long",
            "the request URI is too long; send fewer or shorter parameters (POST /token takes a form body)",
        ),
        431 => ("Request Header Fields Too Large", "the request headers are too large or too many"),
        _ => return None,
    };
    let body = json!({
        "error": "invalid_request",
        "error_description": message,
        "errors": [{"code": "SIZE_INVALID", "message": message}],
    })
    .to_string();
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    Some([head.into_bytes(), body.into_bytes()].concat())
}

impl ApiError {
    /// The message the client sees (never a 5xx detail), for the audit line.
    pub fn client_message(&self) -> String {
        self.parts().2
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Unavailable(_, d) => tracing::warn!(detail = %d, "responding 503"),
            ApiError::Internal(d) => tracing::error!(detail = %d, "responding 500"),
            _ => {}
        }
        let (code, registry_code, message) = self.parts();
        let body = json!({
            "error": code,
            "error_description": message,
            "errors": [{"code": registry_code, "message": message}],
        });
        let mut resp = (self.status(), axum::Json(body)).into_response();
        if matches!(self, ApiError::Unauthorized(_) | ApiError::InvalidGrant(_)) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
        }
        if let ApiError::Unavailable(what, _) = &self {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(what.retry_after()));
        }
        if let ApiError::TooManyRequests { retry_after } = self {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_maps_to_its_status_and_json_shape() {
        let table = [
            (ApiError::BadRequest("x".into()), 400, false),
            (ApiError::UnsupportedGrant("magic".into()), 400, false),
            (ApiError::Unauthorized("x".into()), 401, true),
            (ApiError::InvalidGrant("x".into()), 401, true),
            (ApiError::DeviceFlow { code: "expired_token", message: "x".into() }, 400, false),
            (ApiError::DeviceFlow { code: "authorization_pending", message: "x".into() }, 400, false),
            (ApiError::NotFound, 404, false),
            (ApiError::Forbidden("x".into()), 403, false),
            (ApiError::Missing("x".into()), 404, false),
            (ApiError::MethodNotAllowed, 405, false),
            (ApiError::PayloadTooLarge(10), 413, false),
            (ApiError::TooManyRequests { retry_after: 7 }, 429, false),
            (ApiError::Unavailable(Outage::Provider("corp".into()), "ldap down".into()), 503, false),
            (ApiError::Unavailable(Outage::State, "redis down".into()), 503, false),
            (ApiError::Unavailable(Outage::Busy, "gate full".into()), 503, false),
            (ApiError::Internal("secret detail".into()), 500, false),
        ];
        for (err, status, basic) in table {
            let (_, _, msg) = err.parts();
            let resp = err.clone().into_response();
            assert_eq!(resp.status().as_u16(), status, "{err:?}");
            assert_eq!(resp.headers().contains_key(header::WWW_AUTHENTICATE), basic, "{err:?}");
            assert!(!msg.contains("secret detail") && !msg.contains("ldap down"), "5xx detail leaked: {msg}");
        }
        assert_eq!(REALM, "tollgate");
        let resp = ApiError::Unauthorized("x".into()).into_response();
        assert_eq!(resp.headers()[header::WWW_AUTHENTICATE], "Basic realm=\"tollgate\", charset=\"UTF-8\"");
        // A 503 says which thing is missing, never "the identity provider" for all of them.
        for (what, says, retry) in [
            (Outage::of_provider(Some("corp")), "identity provider \"corp\" cannot be reached", "5"),
            (Outage::State, "shared state (revocations and sessions) cannot be reached", "5"),
            (Outage::Busy, "too many logins are being checked at once", "2"),
        ] {
            let err = ApiError::Unavailable(what, "detail".into());
            assert!(err.client_message().contains(says), "{err:?}: {}", err.client_message());
            assert_eq!(err.into_response().headers()[header::RETRY_AFTER], retry);
        }
        let resp = ApiError::TooManyRequests { retry_after: 7 }.into_response();
        assert_eq!(resp.headers().get(header::RETRY_AFTER).unwrap(), "7", "429 says when to come back");
    }
}

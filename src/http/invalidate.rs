//! The endpoints that end access at once (`crate::invalidate`):
//!
//! - `POST /invalidate`, for anything that knows an account, a group or an IdP session has ended (a SCIM
//!   bridge, an HR script, an incident responder, `tollgate invalidate`): a JSON body naming one subject,
//!   authenticated by `Authorization: Bearer <the secret of invalidation.secret_file>` (compared in
//!   constant time). Off (404) without a secret file.
//! - `POST /oidc/<provider>/backchannel-logout`, the `backchannel_logout_uri` of each OIDC provider
//!   (OpenID Connect Back-Channel Logout 1.0): a form with one `logout_token`, verified with the IdP's keys.
//!   A token whose `jti` was seen before (remembered in the shared store until its `exp`) is refused.
//!
//! Every refusal is a 400/401/404 with a JSON body naming the problem, and changes nothing. Bodies are
//! bounded (`server.max_body_bytes`, and [`MAX_LOGOUT_BODY`] for logout tokens).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq as _;

use super::client_ip;
use super::error::ApiError;
use super::params::read_body;
use crate::app::AppState;
use crate::identity::Failure;
use crate::invalidate::{Error, Report, Source, Subject};
use crate::store::sessions::hashed_key;
use crate::support::time::unix_now;

/// The largest back-channel logout request body read (bytes).
pub const MAX_LOGOUT_BODY: usize = 16 * 1024;

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    let mut resp = (status, axum::Json(body)).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn refusal(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let message = message.into();
    answer(status, json!({"error": code, "error_description": message}))
}

fn bad_request(message: impl Into<String>) -> Response {
    refusal(StatusCode::BAD_REQUEST, "invalid_request", message)
}

fn from_api(e: ApiError) -> Response {
    match e {
        ApiError::PayloadTooLarge(max) => refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            format!("request body is larger than {max} bytes"),
        ),
        ApiError::BadRequest(m) => bad_request(m),
        other => other.into_response(),
    }
}

fn reported(result: Result<Report, Error>) -> Response {
    match result {
        Ok(report) => answer(StatusCode::OK, json!(report)),
        Err(Error::Invalid(m)) => bad_request(m),
        Err(e @ Error::Unavailable(_)) => {
            tracing::error!(error = %e, "invalidation failed");
            refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the shared store is unavailable; nothing was changed; try again",
            )
        }
        Err(e @ Error::Fanout(_)) => {
            tracing::error!(error = %e, "invalidation recorded but not sent to the other replicas");
            refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "recorded, but the other replicas could not be told; try again",
            )
        }
    }
}

/// Whether the request carries the bearer secret. Both sides are hashed first, so the comparison takes
/// the same time whatever the length or content of what was sent.
fn authorized(headers: &HeaderMap, secret: &secrecy::SecretString) -> bool {
    use secrecy::ExposeSecret as _;
    let sent = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    let digest = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    let (a, b) = (digest(sent), digest(secret.expose_secret()));
    bool::from(a.as_ref().ct_eq(b.as_ref())) && !sent.is_empty()
}

/// The body of `POST /invalidate`: one subject.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InvalidateRequest {
    user: Option<String>,
    group: Option<String>,
    provider: Option<String>,
    sid: Option<String>,
    sub: Option<String>,
    as_of_ms: Option<u64>,
    /// `api` (default) or `cli`.
    source: Option<String>,
}

impl InvalidateRequest {
    fn subject(self) -> Result<(Subject, Option<u64>, Source), String> {
        let source = match self.source.as_deref() {
            None | Some("api") => Source::Api,
            Some("cli") => Source::Cli,
            Some(other) => return Err(format!("source: {other:?} is not one of api, cli")),
        };
        let subject = match (self.user, self.group, self.sid.is_some() || self.sub.is_some()) {
            (Some(username), None, false) => Subject::Account { provider: self.provider, username },
            (None, Some(name), false) if self.provider.is_none() => Subject::Group { name },
            (None, None, true) => match self.provider {
                Some(provider) => Subject::Session { provider, sid: self.sid, sub: self.sub },
                None => return Err("sid and sub need the provider (an OIDC provider's name)".into()),
            },
            (None, None, false) => return Err("name one subject: user, group, or provider with sid or sub".into()),
            _ => return Err("name exactly one subject: user, group, or provider with sid or sub".into()),
        };
        Ok((subject, self.as_of_ms, source))
    }
}

/// `POST /invalidate`.
pub async fn invalidate(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let (head, body) = req.into_parts();
    let Some(secret) = &state.invalidation_secret else {
        return refusal(
            StatusCode::NOT_FOUND,
            "not_found",
            "the invalidation endpoint is off: set invalidation.secret_file to turn it on",
        );
    };
    if !authorized(&head.headers, secret) {
        let ip = client_ip::of_request(&head, &state.settings.ops.trusted_proxies);
        tracing::warn!(target: "tollgate::audit", client_ip = %ip, outcome = "unauthorized", "invalidation refused: no or wrong bearer secret");
        metrics::counter!(crate::invalidate::INVALIDATIONS, "source" => "api", "outcome" => "unauthorized")
            .increment(1);
        let mut resp = refusal(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "Authorization: Bearer <the secret of invalidation.secret_file> is missing or wrong",
        );
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    }
    let body = match read_body(&head.headers, body, state.settings.server.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return from_api(e),
    };
    let parsed: InvalidateRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("the body is not a valid invalidation request: {e}")),
    };
    let (subject, as_of, source) = match parsed.subject() {
        Ok(s) => s,
        Err(m) => return bad_request(m),
    };
    reported(state.invalidator.invalidate(subject, as_of, source).await)
}

/// `POST /oidc/<provider>/backchannel-logout`.
pub async fn backchannel_logout(
    State(state): State<Arc<AppState>>,
    Path(provider): Path<String>,
    req: Request<Body>,
) -> Response {
    let (head, body) = req.into_parts();
    let logout = state.chain.provider(&provider).and_then(|p| p.backchannel_logout());
    let Some(logout) = logout.filter(|_| state.settings.invalidation.backchannel_logout) else {
        return refusal(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no OIDC provider named {:?} takes back-channel logouts here",
                crate::support::clip(&provider, 100)
            ),
        );
    };
    let form_type = head
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if !form_type {
        return bad_request("expects an application/x-www-form-urlencoded body with logout_token");
    }
    let max = MAX_LOGOUT_BODY.min(state.settings.server.max_body_bytes.max(1024));
    let body = match read_body(&head.headers, body, max).await {
        Ok(b) => b,
        Err(e) => return from_api(e),
    };
    let tokens: Vec<String> =
        form_urlencoded::parse(&body).filter(|(k, _)| k == "logout_token").map(|(_, v)| v.into_owned()).collect();
    let token = match tokens.as_slice() {
        [one] => one,
        [] => return bad_request("no logout_token in the form"),
        _ => return bad_request("logout_token is given more than once"),
    };
    let request = match logout.verify_logout(token).await {
        Ok(r) => r,
        Err(Failure::Refused(m)) => {
            tracing::warn!(target: "tollgate::audit", provider = %provider, outcome = "refused", reason = %m, "back-channel logout refused");
            metrics::counter!(crate::invalidate::INVALIDATIONS, "source" => "backchannel_logout", "outcome" => "invalid")
                .increment(1);
            return bad_request(m);
        }
        Err(f @ (Failure::Unavailable(_) | Failure::Busy(_))) => {
            let m = f.message();
            tracing::error!(provider = %provider, error = %m, "back-channel logout: the IdP's keys cannot be read");
            return refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the IdP's keys cannot be read now",
            );
        }
    };
    let jti_key = hashed_key(&format!("bcl-jti:{provider}"), &request.jti);
    match state.sessions.get(&jti_key).await {
        Ok(None) => {}
        Ok(Some(_)) => {
            tracing::warn!(target: "tollgate::audit", provider = %provider, outcome = "replayed", "back-channel logout refused: jti replayed");
            metrics::counter!(crate::invalidate::INVALIDATIONS, "source" => "backchannel_logout", "outcome" => "invalid")
                .increment(1);
            return bad_request("logout_token: its jti was seen before (a replayed token)");
        }
        Err(e) => {
            tracing::error!(error = %e, "back-channel logout: the shared store is unavailable");
            return refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the shared store is unavailable",
            );
        }
    }
    let subject = Subject::Session { provider: provider.clone(), sid: request.sid.clone(), sub: request.sub.clone() };
    let result = state.invalidator.invalidate(subject, None, Source::BackchannelLogout).await;
    if result.is_ok() {
        // Remembered until the token expires (and the clock skew allowed): a replay before then is refused.
        let until = request.exp.max(unix_now()) + crate::identity::oidc::LOGOUT_LEEWAY_SECS;
        if let Err(e) = state.sessions.put(&jti_key, json!({}), until).await {
            tracing::error!(error = %e, "back-channel logout done, but its jti could not be remembered");
        }
    }
    reported(result)
}

/// An RFC 8935 error answer: 400 with `err` and `description`.
fn set_error(code: &str, description: impl Into<String>) -> Response {
    answer(StatusCode::BAD_REQUEST, json!({"err": code, "description": description.into()}))
}

/// `POST /ssf/<transmitter>`: Shared Signals push delivery (RFC 8935) of one security event token.
pub async fn ssf_push(State(state): State<Arc<AppState>>, Path(name): Path<String>, req: Request<Body>) -> Response {
    use crate::invalidate::ssf::{Action, MAX_AGE_SECS, MAX_SET_LEN};
    let (head, body) = req.into_parts();
    let Some(receiver) = state.invalidator.transmitters.get(&name) else {
        return refusal(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no Shared Signals transmitter is named {:?}", crate::support::clip(&name, 100)),
        );
    };
    let typed = head
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("application/secevent+jwt"));
    if !typed {
        return set_error("invalid_request", "expects Content-Type: application/secevent+jwt");
    }
    let body = match read_body(&head.headers, body, MAX_SET_LEN).await {
        Ok(b) => b,
        Err(ApiError::PayloadTooLarge(max)) => return set_error("invalid_request", format!("larger than {max} bytes")),
        Err(_) => return set_error("invalid_request", "could not read the body"),
    };
    let Ok(token) = std::str::from_utf8(&body) else {
        return set_error("invalid_request", "the body is not text");
    };
    let delivery = match receiver.verify(token.trim(), unix_now()) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(target: "tollgate::audit", transmitter = %name, outcome = "refused", err = e.code, reason = %e.description, "security event token refused");
            metrics::counter!(crate::invalidate::INVALIDATIONS, "source" => "ssf", "outcome" => "invalid").increment(1);
            return set_error(e.code, e.description);
        }
    };
    let jti_key = hashed_key(&format!("ssf-jti:{name}"), &delivery.jti);
    match state.sessions.get(&jti_key).await {
        Ok(None) => {}
        Ok(Some(_)) => {
            // A duplicate (the transmitter retried): already acted on.
            tracing::info!(target: "tollgate::audit", transmitter = %name, outcome = "duplicate", "security event token already received");
            return StatusCode::ACCEPTED.into_response();
        }
        Err(e) => {
            tracing::error!(error = %e, "Shared Signals: the shared store is unavailable");
            return refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the shared store is unavailable",
            );
        }
    }
    for action in delivery.actions {
        match action {
            Action::Invalidate { event, subject } => {
                tracing::info!(transmitter = %name, event, "security event");
                if let Err(e) = state.invalidator.invalidate(subject, None, Source::Ssf).await {
                    // Not remembered: the transmitter retries, and the retry is acted on.
                    return reported(Err(e));
                }
            }
            Action::Verification { state: s } => {
                tracing::info!(target: "tollgate::audit", transmitter = %name, outcome = "verification", state = s.as_deref().unwrap_or(""), "Shared Signals verification event");
            }
            Action::Ignored { event, why } => {
                tracing::info!(target: "tollgate::audit", transmitter = %name, outcome = "ignored", event = %event, reason = %why, "security event accepted, nothing done");
                metrics::counter!(crate::invalidate::INVALIDATIONS, "source" => "ssf", "outcome" => "ignored")
                    .increment(1);
            }
        }
    }
    if let Err(e) = state.sessions.put(&jti_key, json!({}), unix_now() + MAX_AGE_SECS + 120).await {
        tracing::error!(error = %e, "Shared Signals: done, but the token's jti could not be remembered");
    }
    StatusCode::ACCEPTED.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_secret_must_match_exactly() {
        let secret = secrecy::SecretString::from("s3cret-s3cret-s3cret-s3cret-s3cret".to_string());
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            h
        };
        assert!(authorized(&with("Bearer s3cret-s3cret-s3cret-s3cret-s3cret"), &secret));
        assert!(!authorized(&with("Bearer s3cret-s3cret-s3cret-s3cret-s3cre"), &secret));
        assert!(!authorized(&with("Basic s3cret-s3cret-s3cret-s3cret-s3cret"), &secret));
        assert!(!authorized(&HeaderMap::new(), &secret));
    }

    #[test]
    fn a_request_names_exactly_one_subject() {
        let parse = |v: serde_json::Value| serde_json::from_value::<InvalidateRequest>(v).unwrap().subject();
        assert!(matches!(parse(json!({"user": "alice"})), Ok((Subject::Account { .. }, None, Source::Api))));
        assert!(matches!(
            parse(json!({"group": "devs", "source": "cli"})),
            Ok((Subject::Group { .. }, _, Source::Cli))
        ));
        assert!(matches!(parse(json!({"provider": "kc", "sid": "x"})), Ok((Subject::Session { .. }, _, _))));
        for bad in [
            json!({}),
            json!({"user": "a", "group": "g"}),
            json!({"sid": "x"}),
            json!({"user": "a", "source": "ldap_watch"}),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
        assert!(serde_json::from_value::<InvalidateRequest>(json!({"usr": "a"})).is_err(), "unknown fields");
    }
}

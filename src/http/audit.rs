//! The audit line: one structured log record per decision, and the request metrics that go with it.
//!
//! Handlers fill an [`Audit`] as they learn things (who asked, from where, for what; who they turned out
//! to be; what was granted and by which rules) and hand their result to [`Audit::finish`], which writes
//! exactly one line with target `tollgate::audit` whether the request succeeded or not. It never holds a
//! secret: no password, token or refresh token is ever stored in it (only the access token's `jti`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::identity::{AuthMethod, Identity, RequestContext};
use crate::telemetry;

/// A list as JSON text: the JSON log lines write it as a real array (`cli::logs`), the text ones as it is.
fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

/// The client id as the audit line spells it: `none` when absent, as the metric does; at most 100 characters
/// of what a client chose.
fn client_id(id: Option<&str>) -> std::borrow::Cow<'_, str> {
    match id {
        None | Some("") => "none".into(),
        Some(id) if id.chars().count() > 100 => id.chars().take(100).collect::<String>().into(),
        Some(id) => id.into(),
    }
}

/// What is known about one request, for its audit line.
pub struct Audit {
    started: Instant,
    endpoint: &'static str,
    method: &'static str,
    pub client_ip: IpAddr,
    pub client_id: Option<String>,
    /// The authenticated username, or the one a failed login claimed.
    pub subject: Option<String>,
    pub provider: String,
    pub auth_method: &'static str,
    pub service: String,
    pub requested: Vec<String>,
    pub granted: Vec<String>,
    /// Rules that granted or denied any requested action.
    pub rules: Vec<String>,
    /// True when every requested action was granted.
    pub fully_granted: bool,
    pub jti: Option<String>,
    pub refresh_token_issued: bool,
    /// A workload login's token: its `iss`, `sub` and `jti` (the token itself is never logged).
    pub workload: Option<[String; 3]>,
    /// Why the provider refused a login or a refresh token (`account locked out (AD data 775)`), for the
    /// operator: the client's answer says only `reason`.
    pub provider_reason: String,
}

impl Audit {
    pub fn new(endpoint: &'static str, method: &'static str, client_ip: IpAddr) -> Audit {
        Audit {
            started: Instant::now(),
            endpoint,
            method,
            client_ip,
            client_id: None,
            subject: None,
            provider: String::new(),
            auth_method: "none",
            service: String::new(),
            requested: Vec::new(),
            granted: Vec::new(),
            rules: Vec::new(),
            fully_granted: false,
            jti: None,
            refresh_token_issued: false,
            workload: None,
            provider_reason: String::new(),
        }
    }

    /// The policy's view of an authenticated request (who, and how they proved it), recording who it is on
    /// the way. Takes the parts rather than `authn::Authenticated`: authentication writes to the audit, so the
    /// audit does not import it back.
    pub(crate) fn context(&mut self, identity: Arc<Identity>, method: AuthMethod, service: &str) -> RequestContext {
        self.subject = Some(identity.username.clone());
        self.provider = identity.provider.clone();
        self.auth_method = method.as_str();
        if method == AuthMethod::Workload {
            let claim =
                |k: &str| identity.claims.get(k).and_then(|v| v.as_str()).unwrap_or("").chars().take(200).collect();
            self.workload = Some([claim("iss"), claim("sub"), claim("jti")]);
        }
        RequestContext { identity, auth_method: method, client_ip: self.client_ip, service: service.to_string() }
    }

    fn outcome(&self, result: &Result<Response, ApiError>) -> &'static str {
        match result {
            Ok(_) if self.requested.is_empty() => "authenticated",
            Ok(_) if self.fully_granted => "granted",
            Ok(_) if self.granted.is_empty() => "denied",
            Ok(_) => "partial",
            Err(ApiError::Unauthorized(_) | ApiError::InvalidGrant(_)) => "unauthorized",
            Err(ApiError::TooManyRequests { .. }) => "rate_limited",
            Err(ApiError::Unavailable(_)) => "unavailable",
            Err(ApiError::Internal(_)) => "error",
            Err(_) => "bad_request",
        }
    }

    /// Write the audit line, count the request, and turn the result into the response.
    pub fn finish(self, result: Result<Response, ApiError>) -> Response {
        let outcome = self.outcome(&result);
        let status = match &result {
            Ok(r) => r.status().as_u16(),
            Err(e) => e.status().as_u16(),
        };
        let reason = match &result {
            Err(e) if !matches!(e, ApiError::Unavailable(_) | ApiError::Internal(_)) => e.client_message(),
            _ => String::new(),
        };
        tracing::info!(
            target: "tollgate::audit",
            endpoint = self.endpoint,
            method = self.method,
            outcome,
            status,
            subject = self.subject.as_deref().unwrap_or(""),
            provider = %self.provider,
            auth_method = self.auth_method,
            client_ip = %self.client_ip,
            client_id = %client_id(self.client_id.as_deref()),
            service = %self.service,
            requested = %json_list(&self.requested),
            granted = %json_list(&self.granted),
            rules = %json_list(&self.rules),
            refresh_token_issued = self.refresh_token_issued,
            jti = self.jti.as_deref().unwrap_or(""),
            workload_issuer = self.workload.as_ref().map_or("", |w| w[0].as_str()),
            workload_subject = self.workload.as_ref().map_or("", |w| w[1].as_str()),
            workload_jti = self.workload.as_ref().map_or("", |w| w[2].as_str()),
            reason = %reason,
            provider_reason = %self.provider_reason,
            "decision"
        );
        telemetry::token_request(outcome, self.client_id.as_deref(), self.endpoint, self.started.elapsed());
        result.unwrap_or_else(IntoResponse::into_response)
    }
}

//! The audit line: one structured log record per decision, and the request metrics that go with it.
//!
//! Handlers fill an [`Audit`] as they learn things (who asked, from where, for what; who they turned out
//! to be; what was granted and by which rules) and hand their result to [`Audit::finish`], which writes
//! exactly one line with target `tollgate::audit` whether the request succeeded or not. It never holds a
//! secret: no password, token or refresh token is ever stored in it (only the access token's `jti`).
//! The line is not formatted on the request's thread: `finish` copies what the request gathered into the
//! log writer's queue as a `telemetry::audit_line::AuditRecord`, and the writer's thread formats and
//! writes it (`telemetry::log_writer`).

use std::net::IpAddr;
use std::time::Instant;

use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::authn::{Credentials, Login, LoginError};
use crate::grant::{Explained, Grant};
use crate::identity::AuthMethod;
use crate::telemetry;
use crate::telemetry::audit_line::{self, AuditRecord, List};
use crate::telemetry::log_writer::{self, AuditRoute};

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
    /// The id of the access token a login used (never its secret).
    pub access_token: Option<String>,
    /// Whether the line was written ([`Audit::finish`]); if not when dropped, the request was abandoned.
    written: bool,
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
            access_token: None,
            written: false,
        }
    }

    /// The username the credentials claim, recorded before they are checked: a refusal's line says whom
    /// the attempt was for.
    pub(crate) fn claimed(&mut self, credentials: &Credentials) {
        if let Some(user) = credentials.claimed_user() {
            self.subject = Some(user.to_string());
        }
    }

    /// Record the outcome of authentication: who it is and how they proved it, or why they were refused
    /// (the provider's reason, and whose credentials they were when only authentication could tell).
    pub(crate) fn login(&mut self, result: Result<Login, LoginError>) -> Result<Login, ApiError> {
        match &result {
            Ok(login) => {
                let identity = &login.identity;
                self.subject = Some(identity.username.clone());
                self.provider = identity.provider.clone();
                self.auth_method = login.method.as_str();
                self.access_token = login.token.as_ref().map(|t| t.id.clone());
                if login.method == AuthMethod::Workload {
                    let claim = |k: &str| {
                        crate::support::clip(identity.claims.get(k).and_then(|v| v.as_str()).unwrap_or(""), 200)
                            .into_owned()
                    };
                    self.workload = Some([claim("iss"), claim("sub"), claim("jti")]);
                }
            }
            Err(e) => {
                if let Some(r) = e.refusal() {
                    if self.subject.as_deref().is_none_or(str::is_empty) {
                        self.subject = r.subject.clone();
                    }
                    self.provider_reason = r.reason.clone();
                }
            }
        }
        result.map_err(ApiError::from)
    }

    /// Record what was granted; returns the response body.
    pub(crate) fn granted(&mut self, g: Grant) -> Vec<u8> {
        self.fully_granted = g.fully_granted;
        self.granted = g.granted;
        self.rules = g.rules;
        self.refresh_token_issued = g.refresh_token_issued;
        self.jti = Some(g.jti);
        g.body
    }

    /// Record what an explanation grants (`/whoami`).
    pub(crate) fn explained(&mut self, e: &Explained) {
        self.fully_granted = e.fully_granted;
        self.granted = e.granted.clone();
        self.rules = e.rules.clone();
    }

    fn outcome(&self, result: &Result<Response, ApiError>) -> &'static str {
        match result {
            Ok(_) if self.requested.is_empty() => "authenticated",
            Ok(_) if self.fully_granted => "granted",
            Ok(_) if self.granted.is_empty() => "denied",
            Ok(_) => "partial",
            Err(ApiError::Unauthorized(_) | ApiError::InvalidGrant(_)) => "unauthorized",
            Err(ApiError::TooManyRequests { .. }) => "rate_limited",
            Err(ApiError::Unavailable(..)) => "unavailable",
            Err(ApiError::Internal(_)) => "error",
            Err(_) => "bad_request",
        }
    }

    /// Write the audit line, count the request, and turn the result into the response.
    pub fn finish(mut self, result: Result<Response, ApiError>) -> Response {
        let outcome = self.outcome(&result);
        let status = match &result {
            Ok(r) => r.status().as_u16(),
            Err(e) => e.status().as_u16(),
        };
        let reason = match &result {
            Err(e) if !matches!(e, ApiError::Unavailable(..) | ApiError::Internal(_)) => e.client_message(),
            _ => String::new(),
        };
        self.write(outcome, status, &reason);
        result.unwrap_or_else(IntoResponse::into_response)
    }

    /// Hand the line over (see `telemetry::log_writer`: copied into the log writer's queue as it is, and
    /// formatted and written by its thread) and count the request.
    fn write(&mut self, outcome: &'static str, status: u16, reason: &str) {
        self.written = true;
        telemetry::token_request(outcome, self.client_id.as_deref(), self.endpoint, self.started.elapsed());
        match log_writer::audit_route() {
            (AuditRoute::Off, _) => {}
            (AuditRoute::Queue, Some(writer)) => writer.audit(&self.record(outcome, status, reason)),
            _ => audit_line::trace(&self.record(outcome, status, reason)),
        }
    }

    fn record<'a>(&'a self, outcome: &'static str, status: u16, reason: &'a str) -> AuditRecord<'a> {
        let workload = self.workload.as_ref();
        AuditRecord {
            at: std::time::SystemTime::now(),
            endpoint: self.endpoint,
            method: self.method,
            outcome,
            status,
            subject: self.subject.as_deref().unwrap_or(""),
            provider: &self.provider,
            auth_method: self.auth_method,
            client_ip: self.client_ip,
            client_id: self.client_id.as_deref().unwrap_or(""),
            service: &self.service,
            requested: List::Strings(&self.requested),
            granted: List::Strings(&self.granted),
            rules: List::Strings(&self.rules),
            refresh_token_issued: self.refresh_token_issued,
            jti: self.jti.as_deref().unwrap_or(""),
            workload: [0, 1, 2].map(|i| workload.map_or("", |w| w[i].as_str())),
            access_token: self.access_token.as_deref().unwrap_or(""),
            reason,
            provider_reason: &self.provider_reason,
        }
    }
}

/// A request dropped before its answer (the client hung up and the server cancelled it) still gets its
/// line: outcome `abandoned`, status 499 (what proxies log for a client that closed the request).
impl Drop for Audit {
    fn drop(&mut self) {
        if !self.written {
            self.write("abandoned", 499, "the client went away before the answer");
        }
    }
}

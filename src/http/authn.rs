//! Authenticating a request for any handler: a password (or a robot secret, or a refresh token given as
//! the password) through the provider chain behind the failed-login limits, or a refresh token re-checked
//! with the provider that issued it.

use std::net::IpAddr;
use std::sync::Arc;

use secrecy::{ExposeSecret as _, SecretString};

use super::audit::Audit;
use super::error::ApiError;
use super::params::check_username;
use crate::app::AppState;
use crate::identity::chain::ChainOutcome;
use crate::identity::{AuthMethod, Identity, Recheck};
use crate::token::refresh::{RefreshError, PREFIX as REFRESH_PREFIX};

/// Who the request is from and how they proved it.
pub(crate) struct Authenticated {
    pub identity: Arc<Identity>,
    pub method: AuthMethod,
}

const BAD_CREDENTIALS: &str = "invalid username or password";
/// What a refused workload token is told; why is in the log only.
const BAD_TOKEN: &str = "the identity token is not accepted (see the server log for why)";

/// Check a username and password (or a refresh token given as the password). Failed logins are rate limited
/// per client IP and per account (see `ratelimit`). A provider's reason for a refusal goes to the log and to
/// `audit.provider_reason`, never to the client.
pub(crate) async fn password_login(
    state: &AppState,
    username: &str,
    password: &SecretString,
    service: &str,
    audit: &mut Audit,
) -> Result<Authenticated, ApiError> {
    let ip: IpAddr = audit.client_ip;
    check_username(username)?;
    if password.expose_secret().starts_with(REFRESH_PREFIX) {
        // A refresh token as a Basic password (CI systems, containerd's GET fallback with an empty username).
        let identity = refresh_login(state, password.expose_secret(), Some(username), service, audit).await?;
        return Ok(Authenticated { identity: Arc::new(identity), method: AuthMethod::RefreshToken });
    }
    // A workload's JWT: the username is whatever the client needed to send (docker insists on one), so the
    // failed-login limits count the subject the token claims instead: a shared username like `ci` must not
    // let one job's bad tokens lock every other job out.
    let jwt = crate::identity::workload::jwt_issuer(password.expose_secret());
    if (username.is_empty() && jwt.is_none()) || password.expose_secret().is_empty() {
        return Err(ApiError::Unauthorized(BAD_CREDENTIALS.into()));
    }
    let limit_key = match &jwt {
        Some(peek) => format!("workload {} {}", peek.iss, peek.sub),
        None => username.to_string(),
    };
    state.limiter.check(ip, &limit_key).await?;
    match state.chain.authenticate(username, password, jwt.as_ref()).await {
        ChainOutcome::Authenticated(identity) => {
            state.limiter.succeeded(ip, &limit_key).await;
            let method =
                if state.chain.is_workload(&identity.provider) { AuthMethod::Workload } else { AuthMethod::Password };
            Ok(Authenticated { identity, method })
        }
        ChainOutcome::Rejected { provider, reason } => {
            let provider = provider.as_deref().unwrap_or("none");
            tracing::info!(user = %username, provider, reason = %reason, client_ip = %ip, "login refused");
            audit.provider_reason = reason;
            metrics::counter!(crate::telemetry::FAILED_LOGINS, "provider" => provider.to_string()).increment(1);
            state.limiter.failed(ip, &limit_key).await?;
            Err(ApiError::Unauthorized(if jwt.is_some() { BAD_TOKEN } else { BAD_CREDENTIALS }.into()))
        }
        ChainOutcome::Unavailable(e) => Err(ApiError::Unavailable(e.to_string())),
    }
}

/// Verify a refresh token and re-check its account with the provider that issued it.
pub(crate) async fn refresh_login(
    state: &AppState,
    token: &str,
    username: Option<&str>,
    service: &str,
    audit: &mut Audit,
) -> Result<Identity, ApiError> {
    let Some(refresh) = &state.refresh else {
        return Err(ApiError::InvalidGrant(
            "refresh tokens are disabled on this server; log in with a password".into(),
        ));
    };
    let refused = |e: RefreshError| ApiError::InvalidGrant(e.to_string());
    let claims = refresh.verify(token, service).map_err(refused)?;
    // A verified token names its user: the audit line of a refusal says whose token it was.
    if audit.subject.as_deref().is_none_or(str::is_empty) {
        audit.subject = Some(claims.sub.clone());
    }
    if let Some(u) = username {
        if !u.is_empty() && u != claims.sub {
            return Err(refused(RefreshError::WrongUser));
        }
    }
    match state.revocations.is_revoked(&claims).await {
        Ok(false) => {}
        Ok(true) => return Err(refused(RefreshError::Revoked)),
        Err(e) => return Err(ApiError::Unavailable(e.to_string())),
    }
    match state.chain.recheck_session(&claims.prv, &claims.sub, claims.sid.as_deref()).await {
        // The same name may be another account now (deleted and created again): its tokens are not ours.
        Ok(Recheck::Current(identity))
            if claims.aid.as_deref().is_some_and(|aid| identity.account.as_deref() != Some(aid)) =>
        {
            tracing::info!(user = %claims.sub, provider = %claims.prv, "refresh token refused: the account was replaced");
            Err(refused(RefreshError::AccountGone))
        }
        Ok(Recheck::Current(identity)) => Ok(identity),
        Ok(Recheck::Gone(reason)) => {
            tracing::info!(user = %claims.sub, provider = %claims.prv, reason = %reason, "refresh token refused");
            audit.provider_reason = reason;
            Err(refused(RefreshError::AccountGone))
        }
        Err(e) => Err(ApiError::Unavailable(e.to_string())),
    }
}

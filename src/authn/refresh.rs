//! A refresh token: verified (MAC, expiry, service), checked against revocations and the account it was
//! issued for, and its account re-checked with the provider that issued it.

use std::net::IpAddr;

use secrecy::{ExposeSecret as _, SecretString};

use std::sync::Arc;

use super::login::{Login, LoginError, Outage, Refusal};
use crate::app::AppState;
use crate::identity::{AuthMethod, Failure, Identity};
use crate::token::refresh::RefreshError;

/// What the failed-login limits count refresh tokens that do not verify as, together with the address.
const UNPROVEN: &str = "refresh token";

/// The login a refresh token stands for now. `username`, when the client sent one, must be the token's.
pub(super) async fn login(
    state: &AppState,
    token: &SecretString,
    username: Option<&str>,
    service: &str,
    ip: IpAddr,
) -> Result<Login, LoginError> {
    let (identity, auth_time) = identity(state, token, username, service, ip).await?;
    let mut login = Login::new(Arc::new(identity), AuthMethod::RefreshToken);
    login.auth_time = auth_time;
    Ok(login)
}

/// The identity a refresh token stands for now, and when its interactive login happened.
async fn identity(
    state: &AppState,
    token: &SecretString,
    username: Option<&str>,
    service: &str,
    ip: IpAddr,
) -> Result<(Identity, Option<u64>), LoginError> {
    let Some(refresh) = &state.refresh else {
        return Err(LoginError::InvalidGrant(Refusal::new(
            "refresh tokens are disabled on this server; log in with a password",
        )));
    };
    let refused = |e: RefreshError| Refusal::new(e.to_string());
    // Until its MAC verifies, a refresh token proves nothing about whose it is: a bad one is charged to the
    // sender's address only (`identity::limiter`), and an address out of budget gets no check at all.
    state.limiter.check_unproven(ip, UNPROVEN).await?;
    let claims = match refresh.verify(token.expose_secret(), service) {
        Ok(claims) => claims,
        Err(e) => {
            tracing::info!(reason = %e, client_ip = %ip, "refresh token refused");
            state.limiter.failed_unproven(ip, UNPROVEN).await?;
            return Err(LoginError::InvalidGrant(refused(e)));
        }
    };
    // From here on the token names its user: the audit line of a refusal says whose token it was.
    let refused = |e: RefreshError| {
        let mut r = refused(e);
        r.subject = Some(claims.sub.clone());
        r
    };
    if username.is_some_and(|u| !u.is_empty() && u != claims.sub) {
        return Err(LoginError::InvalidGrant(refused(RefreshError::WrongUser)));
    }
    match state.revocations.is_revoked(&claims).await {
        Ok(false) => {}
        Ok(true) => return Err(LoginError::InvalidGrant(refused(RefreshError::Revoked))),
        Err(e @ crate::store::error::StoreError::Unsafe(_)) => {
            return Err(LoginError::Unavailable(Outage::StateUnsafe, e.to_string()))
        }
        Err(e) => return Err(LoginError::Unavailable(Outage::State, e.to_string())),
    }
    match state.chain.recheck_session(&claims.prv, &claims.sub, claims.sid.as_deref()).await {
        // The same name may be another account now (deleted and created again): its tokens are not ours.
        Ok(identity) if claims.aid.as_deref().is_some_and(|aid| identity.account.as_deref() != Some(aid)) => {
            tracing::info!(user = %claims.sub, provider = %claims.prv, "refresh token refused: the account was replaced");
            Err(LoginError::InvalidGrant(refused(RefreshError::AccountGone)))
        }
        Ok(identity) => Ok((identity, claims.ats)),
        Err(e) => match e.failure {
            Failure::Refused(reason) => {
                tracing::info!(user = %claims.sub, provider = %claims.prv, reason = %reason, "refresh token refused");
                Err(LoginError::InvalidGrant(refused(RefreshError::AccountGone).because(reason)))
            }
            Failure::Unavailable(_) => {
                Err(LoginError::Unavailable(Outage::of_provider(e.provider.as_deref()), e.to_string()))
            }
            Failure::Busy(_) => Err(LoginError::Unavailable(Outage::Busy, e.to_string())),
        },
    }
}

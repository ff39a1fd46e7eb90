//! A username and secret (Basic, or the password grant), and a workload token exchanged (RFC 8693).
//!
//! The secret is looked at once and sent where it belongs: a refresh token to `refresh.rs`, a workload's JWT
//! only to the workload provider that trusts its issuer, anything else down the password providers. Both
//! logins against the chain go behind the failed-login limits (`identity::limiter`).

use std::net::IpAddr;

use secrecy::{ExposeSecret as _, SecretString};

use super::login::{check_username, Login, LoginError, Outage, Refusal};
use super::{access, refresh};
use crate::app::AppState;
use crate::identity::chain::ChainError;
use crate::identity::hashing;
use crate::identity::workload::{jwt_issuer, Peek};
use crate::identity::{AuthMethod, Failure};
use crate::token::access::PREFIX as ACCESS_PREFIX;
use crate::token::refresh::PREFIX as REFRESH_PREFIX;

const BAD_CREDENTIALS: &str = "invalid username or password";
/// What a refused workload token is told; why is in the log only.
const BAD_TOKEN: &str = "the identity token is not accepted (see the server log for why)";

/// Check a username and secret.
pub(super) async fn login(
    state: &AppState,
    username: &str,
    secret: &SecretString,
    ip: IpAddr,
    service: &str,
) -> Result<Login, LoginError> {
    check_username(username)?;
    let text = secret.expose_secret();
    if text.starts_with(REFRESH_PREFIX) {
        // A refresh token as a Basic password (CI systems, containerd's GET fallback with an empty username).
        return refresh::login(state, secret, Some(username), service, ip).await;
    }
    if text.starts_with(ACCESS_PREFIX) {
        // A personal or group access token: any username (docker insists on one).
        return access::login(state, text, ip).await;
    }
    // A workload's JWT: the username is whatever the client needed to send (docker insists on one).
    if let Some(peek) = jwt_issuer(text) {
        return workload(state, &peek, username, secret, ip, LoginError::Refused).await;
    }
    if username.is_empty() || text.is_empty() {
        return Err(LoginError::Refused(Refusal::new(BAD_CREDENTIALS).because("empty username or password")));
    }
    state.limiter.check(ip, username).await?;
    let (ticket, attempt) = (state.limiter.ticket(ip, username), state.limiter.attempt(ip, username));
    let checked = hashing::on_behalf(ticket, state.chain.authenticate(username, secret)).await;
    attempt.settled();
    match checked {
        Ok(identity) => {
            state.limiter.succeeded(ip, username).await;
            let mut login = Login::new(identity, AuthMethod::Password);
            login.typed = Some(username.to_string());
            Ok(login)
        }
        Err(e) => {
            let charge = Charge::Account(username);
            Err(refused(state, e, username, ip, charge, Refusal::new(BAD_CREDENTIALS), LoginError::Refused).await)
        }
    }
}

/// Token exchange: a workload's JWT for a registry token. A refusal is `invalid_grant`, as RFC 8693 says.
pub(super) async fn exchange(state: &AppState, token: &SecretString, ip: IpAddr) -> Result<Login, LoginError> {
    let Some(peek) = jwt_issuer(token.expose_secret()).filter(|p| !p.iss.is_empty()) else {
        return Err(LoginError::Malformed("subject_token is not a JWT with an iss claim".into()));
    };
    workload(state, &peek, "", token, ip, LoginError::InvalidGrant).await
}

/// Verify a workload token with the provider trusting `peek.iss`; `refuse` answers a refusal as the
/// caller's grant requires.
async fn workload(
    state: &AppState,
    peek: &Peek,
    username: &str,
    token: &SecretString,
    ip: IpAddr,
    refuse: fn(Refusal) -> LoginError,
) -> Result<Login, LoginError> {
    // The failed-login limits count the subject the token claims (a shared username like `ci` must not let
    // one job's bad tokens lock every other job out), but only together with the sender's address: the
    // claim is unproven until the signature verifies, and a forger must not lock the real job out.
    let limit_key = format!("workload {} {}", peek.iss, peek.sub);
    state.limiter.check_unproven(ip, &limit_key).await?;
    match state.chain.authenticate_workload(peek, username, token).await {
        Ok(identity) => {
            state.limiter.succeeded(ip, &limit_key).await;
            Ok(Login::new(identity, AuthMethod::Workload))
        }
        Err(e) => {
            let unproven = Charge::Unproven(&limit_key);
            Err(refused(state, e, username, ip, unproven, Refusal::new(BAD_TOKEN), refuse).await)
        }
    }
}

/// Which failed-login budgets a refusal is charged to.
enum Charge<'a> {
    /// A typed username: the pair, the address and the account.
    Account(&'a str),
    /// A subject a signed credential claims: only the budgets of the sender's address.
    Unproven(&'a str),
}

/// A login the chain did not vouch for: an unavailable provider is a 503; a refusal is logged with the
/// provider's reason, counted, and charged to the failed-login limits (which may answer 429 instead).
async fn refused(
    state: &AppState,
    e: ChainError,
    username: &str,
    ip: IpAddr,
    charge: Charge<'_>,
    refusal: Refusal,
    refuse: fn(Refusal) -> LoginError,
) -> LoginError {
    let reason = match e.failure {
        Failure::Unavailable(_) => {
            return LoginError::Unavailable(Outage::of_provider(e.provider.as_deref()), e.to_string())
        }
        // No room for the check: charged to the sender (never to the account, whose password was not
        // checked), so an attacker keeping the checks full pays for it like for a wrong password.
        Failure::Busy(_) => {
            let charge = match charge {
                Charge::Account(claimed) | Charge::Unproven(claimed) => claimed,
            };
            if let Err(limited) = state.limiter.failed_unproven(ip, charge).await {
                return limited.into();
            }
            return LoginError::Unavailable(Outage::Busy, e.to_string());
        }
        Failure::Refused(ref reason) => reason.clone(),
    };
    let provider = e.provider_label();
    tracing::info!(user = %username, provider, reason = %reason, client_ip = %ip, "login refused");
    metrics::counter!(crate::telemetry::FAILED_LOGINS, "provider" => provider.to_string()).increment(1);
    let counted = match charge {
        Charge::Account(account) => state.limiter.failed(ip, account).await,
        Charge::Unproven(claimed) => state.limiter.failed_unproven(ip, claimed).await,
    };
    if let Err(limited) = counted {
        return limited.into();
    }
    refuse(refusal.because(reason))
}

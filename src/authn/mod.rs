//! Authentication: who a request is from, below HTTP and beside the grant step.
//!
//! A handler parses what the client sent into [`Credentials`] (once, in `http/params.rs`), calls
//! [`authenticate`], and gets back a [`Login`] (the identity and how it was proven) or a [`LoginError`],
//! which `http/error.rs` maps to a status. Nothing here knows HTTP, and nothing here writes the audit line:
//! the error carries what the audit records (whose credentials, the provider's reason).
//!
//! - `login.rs`: what goes in and what comes out: the credentials, the login, the refusal.
//! - `password.rs`: a username and secret through the provider chain, behind the failed-login limits. The
//!   secret is classified once: a refresh token, a workload's JWT (sent only to the provider trusting its
//!   issuer), or a password.
//! - `access.rs`: a personal or group access token (`tgp_…`) as a Basic password: checksum, lookup by
//!   HMAC, expiry and revocation, and its owner re-checked the way a refresh token's is.
//! - `refresh.rs`: a refresh token, verified, checked against revocations, and its account re-checked.
//! - `device.rs`: the device flow relayed to the IdP (RFC 8628), started and redeemed.

mod access;
mod device;
mod login;
mod password;
mod refresh;

use std::net::IpAddr;
use std::sync::Arc;

use crate::app::AppState;
use crate::identity::{AuthMethod, Identity};
pub use access::group_identity;
pub use device::{start_device, DeviceStarted};
pub use login::{Credentials, Login, LoginError, Outage, Refusal, TokenUse};

/// The grant type of the device-code grant on `/token` (RFC 8628).
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// The grant type of token exchange (RFC 8693).
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// Find out who `credentials` belong to. `client_ip` keys the failed-login limits; `service` is the
/// registry the request is for (refresh tokens and device logins are bound to one).
pub async fn authenticate(
    state: &AppState,
    credentials: Credentials,
    client_ip: IpAddr,
    service: &str,
) -> Result<Login, LoginError> {
    match credentials {
        Credentials::Anonymous => Ok(Login::new(Arc::new(Identity::anonymous()), AuthMethod::Anonymous)),
        Credentials::Basic { username, secret } | Credentials::PasswordGrant { username, secret } => {
            password::login(state, &username, &secret, client_ip, service).await
        }
        Credentials::RefreshToken { token, username } => {
            refresh::login(state, &token, username.as_deref(), service, client_ip).await
        }
        Credentials::DeviceCode { code } => {
            let identity = device::redeem(state, &code, service).await?;
            Ok(Login::new(Arc::new(identity), AuthMethod::Device))
        }
        Credentials::TokenExchange { subject_token } => password::exchange(state, &subject_token, client_ip).await,
    }
}

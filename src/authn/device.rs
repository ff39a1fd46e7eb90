//! Device login (RFC 8628), relayed: started at the chosen OIDC provider's IdP, and redeemed one poll at a
//! time through the device-code grant of `/token`.
//!
//! The client gets the IdP's user code and verification URL, but a device code of tollgate's own: the IdP's
//! device code (a secret) stays in the session store, keyed by a hash of ours, together with the service
//! it is for. Each poll polls the IdP once; an approved login ends with a tollgate refresh token.

use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use super::login::{LoginError, Outage};
use crate::app::AppState;
use crate::identity::{DevicePoll, Failure, Identity};
use crate::store::sessions::hashed_key;
use crate::support::clip;
use crate::support::random::random_id;
use crate::support::time::unix_now;

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

/// A device login started: what the client shows its user, and tollgate's device code to poll with.
pub struct DeviceStarted {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub expires_in: u64,
    pub interval: u64,
}

/// The session store cannot be reached.
fn unavailable(e: impl std::fmt::Display) -> LoginError {
    LoginError::Unavailable(Outage::State, e.to_string())
}

/// The provider's IdP cannot be reached.
fn idp_unavailable(provider: &str, e: impl std::fmt::Display) -> LoginError {
    LoginError::Unavailable(Outage::Provider(provider.to_string()), e.to_string())
}

fn flow(code: &'static str, message: impl Into<String>) -> LoginError {
    LoginError::Device { code, message: message.into() }
}

/// Start a device login for `service` at `provider` (default: the first provider that offers one).
pub async fn start_device(
    state: &AppState,
    service: String,
    provider: Option<&str>,
) -> Result<DeviceStarted, LoginError> {
    let chosen = match provider {
        Some(name) => state
            .chain
            .provider(name)
            .ok_or_else(|| LoginError::Malformed(format!("unknown provider {:?}", clip(name, 64))))?,
        None => state
            .chain
            .providers()
            .iter()
            .find(|p| p.device_login().is_some())
            .ok_or_else(|| LoginError::Malformed("no configured provider offers device login".into()))?,
    };
    let name = chosen.name().to_string();
    let login = chosen
        .device_login()
        .ok_or_else(|| LoginError::Malformed(format!("provider {name:?} does not offer device login")))?;
    let started = login.start_device().await.map_err(|e| idp_unavailable(&name, e))?;
    let code = format!("tgd_{}", random_id(32));
    let session = DeviceSession {
        provider: name.clone(),
        service,
        idp_device_code: started.device_code.expose_secret().to_string(),
        expires_at: unix_now() + started.expires_in.as_secs(),
        interval: started.interval.as_secs().max(1),
        last_poll: 0,
    };
    save(state, &code, &session).await?;
    tracing::info!(provider = %name, "device login started");
    Ok(DeviceStarted {
        device_code: code,
        user_code: started.user_code,
        verification_uri: started.verification_uri,
        verification_uri_complete: started.verification_uri_complete,
        expires_in: started.expires_in.as_secs(),
        interval: session.interval,
    })
}

async fn save(state: &AppState, code: &str, s: &DeviceSession) -> Result<(), LoginError> {
    let value = serde_json::to_value(s).map_err(unavailable)?;
    state.sessions.put(&hashed_key("device", code), value, s.expires_at + GRACE_SECS).await.map_err(unavailable)
}

/// The device-code grant: one poll. Returns the approved identity, or the RFC 8628 answer as an error.
pub(super) async fn redeem(state: &AppState, code: &SecretString, service: &str) -> Result<Identity, LoginError> {
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
    let Some(login) = state.chain.provider(&s.provider).and_then(|p| p.device_login()) else {
        return Err(flow("invalid_grant", format!("provider {:?} no longer offers device login", s.provider)));
    };
    let poll = login.poll_device(&SecretString::from(s.idp_device_code.clone())).await;
    // A finished flow is kept (marked expired) for the grace period, so a repeated poll is "expired", not "unknown".
    let finish = |mut s: DeviceSession| async move {
        s.expires_at = now;
        save(state, code.expose_secret(), &s).await
    };
    match poll {
        Err(Failure::Unavailable(m)) => Err(idp_unavailable(&s.provider, m)),
        Err(busy @ Failure::Busy(_)) => Err(LoginError::Unavailable(Outage::Busy, busy.to_string())),
        Ok(DevicePoll::Pending) => Err(flow("authorization_pending", "waiting for the user to approve the login")),
        Ok(DevicePoll::SlowDown) => {
            s.interval += SLOW_DOWN_STEP;
            save(state, code.expose_secret(), &s).await?;
            Err(flow("slow_down", format!("polling too fast; wait {} seconds between polls", s.interval)))
        }
        Ok(DevicePoll::Denied) => {
            finish(s).await?;
            Err(flow("access_denied", "the login was denied at the identity provider"))
        }
        Ok(DevicePoll::Expired) => {
            finish(s).await?;
            Err(expired())
        }
        Err(Failure::Refused(reason)) => {
            tracing::info!(provider = %s.provider, reason = %reason, "device login refused");
            finish(s).await?;
            Err(flow("invalid_grant", "the identity provider refused the device login"))
        }
        Ok(DevicePoll::Done(identity)) => {
            finish(s).await?;
            Ok(identity)
        }
    }
}

//! The device flow (RFC 8628) at the IdP: start it, and poll it exactly once per client poll (the relay in
//! `http/device.rs` answers tollgate's own clients). An approved login opens a session like a password login.

use secrecy::{ExposeSecret as _, SecretString};

use super::idp::{error_chain, DeviceResponse, Idp};
use super::session::Sessions;
use crate::config::oidc::OidcSettings;
use crate::identity::{DevicePoll, DeviceStart, Failure};

/// Start a device login at the IdP's device authorization endpoint.
pub(super) async fn start(idp: &Idp, scope: &str) -> Result<DeviceStart, Failure> {
    let d = idp.discovered().await?;
    let url =
        d.device_url.clone().ok_or_else(|| Failure::unavailable("the IdP has no device authorization endpoint"))?;
    let req = idp.http.post(url).header(reqwest::header::ACCEPT, "application/json");
    let mut body = vec![("scope", scope)];
    let req = idp.authenticated(req, &mut body);
    let resp = req.form(&body).send().await.map_err(|e| Failure::unavailable(error_chain(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(Failure::unavailable(format!("device authorization endpoint answered {status}")));
    }
    let r: DeviceResponse =
        resp.json().await.map_err(|e| Failure::unavailable(format!("device authorization response: {e}")))?;
    Ok(DeviceStart {
        device_code: SecretString::from(r.device_code().secret().clone()),
        user_code: r.user_code().secret().clone(),
        verification_uri: r.verification_uri().to_string(),
        verification_uri_complete: r.verification_uri_complete().map(|u| u.secret().clone()),
        expires_in: r.expires_in(),
        interval: r.interval(),
    })
}

/// Poll the IdP once for `device_code`.
pub(super) async fn poll(
    idp: &Idp,
    sessions: &Sessions,
    cfg: &OidcSettings,
    device_code: &SecretString,
) -> Result<DevicePoll, Failure> {
    let d = idp.discovered().await?;
    let form =
        [("grant_type", "urn:ietf:params:oauth:grant-type:device_code"), ("device_code", device_code.expose_secret())];
    let tokens = match idp.token_request(&d, &form).await {
        Ok(t) => t,
        Err(Failure::Refused(code)) => {
            return match code.as_str() {
                "authorization_pending" => Ok(DevicePoll::Pending),
                "slow_down" => Ok(DevicePoll::SlowDown),
                "access_denied" => Ok(DevicePoll::Denied),
                "expired_token" => Ok(DevicePoll::Expired),
                _ => Err(Failure::Refused(format!("the IdP refused the device code ({code})"))),
            }
        }
        Err(e) => return Err(e),
    };
    Ok(DevicePoll::Done(sessions.login(idp, cfg, &d, &tokens).await?))
}

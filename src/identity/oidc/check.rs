//! `tollgate check-config --probe` for an IdP: discovery (whose issuer must be the configured one), the
//! JWKS, and the device endpoint when device login is on, each step in words.

use super::idp::{error_chain, Idp};
use crate::config::oidc::OidcSettings;
use crate::identity::Check;

/// GET a JSON document with the provider's client (its timeout, CA file, no redirects).
async fn get_json(idp: &Idp, url: &str) -> Result<serde_json::Value, String> {
    let resp = idp.http.get(url).send().await.map_err(|e| error_chain(&e))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    resp.json::<serde_json::Value>().await.map_err(|e| format!("not a JSON document: {}", error_chain(&e)))
}

pub(super) async fn run(cfg: &OidcSettings, idp: &Idp, device_on: bool, scope: &str) -> Vec<Check> {
    let mut out = Vec::new();
    let url = format!("{}/.well-known/openid-configuration", cfg.issuer.trim_end_matches('/'));
    let what = format!("discovery {url}");
    let doc = match get_json(idp, &url).await {
        Ok(d) => d,
        Err(e) => {
            out.push(Check::fail(what, e));
            return out;
        }
    };
    match doc.get("issuer").and_then(|i| i.as_str()) {
        Some(i) if i == cfg.issuer => out.push(Check::pass(what, "the document names this issuer")),
        other => {
            out.push(Check::fail(
                what,
                format!(
                    "the document names the issuer {:?}, not {:?} as configured: ID tokens would be refused \
                     (a trailing / counts)",
                    crate::support::clip(other.unwrap_or("(none)"), 200),
                    cfg.issuer
                ),
            ));
            return out;
        }
    }
    if doc.get("token_endpoint").and_then(|t| t.as_str()).is_none() {
        out.push(Check::fail("token endpoint", "the discovery document lists no token_endpoint"));
    }
    match doc.get("jwks_uri").and_then(|u| u.as_str()) {
        None => out.push(Check::fail("JWKS", "the discovery document lists no jwks_uri")),
        Some(jwks_url) => {
            let what = format!("JWKS {jwks_url}");
            match get_json(idp, jwks_url).await {
                Ok(jwks) => {
                    let keys = jwks.get("keys").and_then(|k| k.as_array()).cloned().unwrap_or_default();
                    let signing = keys
                        .iter()
                        .filter(|k| k.get("use").and_then(|u| u.as_str()).is_none_or(|u| u == "sig"))
                        .filter(|k| k.get("kty").and_then(|t| t.as_str()).is_some_and(|t| t != "oct"))
                        .count();
                    if signing == 0 {
                        out.push(Check::fail(what, format!("{} key(s), none for signatures", keys.len())));
                    } else {
                        out.push(Check::pass(what, format!("{signing} signing key(s)")));
                    }
                }
                Err(e) => out.push(Check::fail(what, e)),
            }
        }
    }
    if device_on {
        let endpoint = cfg
            .device_authorization_endpoint
            .clone()
            .or_else(|| doc.get("device_authorization_endpoint").and_then(|u| u.as_str()).map(str::to_string));
        match endpoint {
            None => out.push(Check::fail(
                "device login",
                "device login is on (device_grant), but the IdP lists no device_authorization_endpoint: set \
                 device_authorization_endpoint, or device_grant: false",
            )),
            Some(endpoint) => {
                let what = format!("device login at {endpoint}");
                match super::device::start(idp, scope).await {
                    Ok(s) => out.push(Check::pass(
                        what,
                        format!(
                            "the IdP started a device login for this client (user code {}, left to expire unused)",
                            s.user_code
                        ),
                    )),
                    Err(e) => out.push(Check::fail(what, e.message().to_string())),
                }
            }
        }
    }
    out
}

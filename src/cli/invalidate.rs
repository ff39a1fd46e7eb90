//! `tollgate invalidate`: end a user's (or a group's) access at once, on every replica.
//!
//! It calls the server's `POST /invalidate` (it does not write the store itself: only a server can drop
//! what the replicas have cached), at `--url`, by default the `server.listen` address of the config
//! (`0.0.0.0` and `::` become the loopback address), with the bearer secret of
//! `invalidation.secret_file` (or `--secret-file`). It prints the server's report.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::load;

/// What `tollgate invalidate` was asked.
pub struct InvalidateInput {
    pub config: Option<PathBuf>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub provider: Option<String>,
    pub url: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
}

/// The URL of `/invalidate` on the server the config describes.
fn default_url(settings: &crate::config::Settings) -> String {
    let mut addr = settings.server.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    let scheme = if settings.ops.tls.is_some() { "https" } else { "http" };
    format!("{scheme}://{addr}/invalidate")
}

/// Run `tollgate invalidate`.
pub fn run(input: InvalidateInput) -> Result<(), String> {
    let settings = load(input.config.as_deref())?;
    let url = input.url.clone().unwrap_or_else(|| default_url(&settings));
    let secret_file = input.secret_file.clone().or(settings.invalidation.secret_file.clone()).ok_or(
        "no secret: set invalidation.secret_file in the config (the server's /invalidate is off without it) \
         or pass --secret-file",
    )?;
    let secret = std::fs::read_to_string(&secret_file).map_err(|e| format!("{}: {e}", secret_file.display()))?;
    let mut requests = Vec::new();
    if let Some(u) = &input.user {
        requests.push(json!({"user": u, "provider": input.provider, "source": "cli"}));
    }
    if let Some(g) = &input.group {
        requests.push(json!({"group": g, "source": "cli"}));
    }
    if requests.is_empty() {
        return Err("say what to invalidate: --user NAME and/or --group GROUP".into());
    }
    let mut builder =
        reqwest::Client::builder().timeout(Duration::from_secs(10)).redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = &input.ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| format!("{}: not a PEM certificate: {e}", ca.display()))?;
        builder = builder.add_root_certificate(cert);
    }
    let client = builder.build().map_err(|e| format!("HTTP client: {e}"))?;
    super::block_on(async {
        for body in requests {
            let resp = client
                .post(&url)
                .bearer_auth(secret.trim())
                .json(&body)
                .send()
                .await
                .map_err(|e| format!("{url}: {}", crate::support::error_chain(&e)))?;
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            if !status.is_success() {
                let said: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                let why = said["error_description"].as_str().unwrap_or(text.as_str()).to_string();
                return Err(format!("{url} answered {status}: {why}"));
            }
            println!("{text}");
        }
        Ok(())
    })?
}

//! `docker-credential-tollgate`: a docker credential helper (the `get`/`store`/`erase`/`list` protocol
//! docker and containers/image speak) for registries whose token server is tollgate.
//!
//! Installed as a link named `docker-credential-tollgate` to the `tollgate` binary (or run as `tollgate
//! credential-helper ACTION`), and named in docker's config (`"credHelpers": {"registry.example.com":
//! "tollgate"}`), it keeps the user's tollgate identity token (a refresh token) and hands it out as
//! `Username: "<token>"`, which docker, podman, skopeo and containerd-based tools use for the OAuth2 refresh
//! flow. On `get`, a token that is missing, or that tollgate no longer accepts (revoked, expired, the
//! account disabled), starts the device login on the user's terminal (`/dev/tty`: the client reads the
//! helper's standard output, and throws its standard error away), so `docker pull` just works, and a
//! revoked token leads to one new login rather than a loop of failures.
//!
//! Tokens are kept in `$XDG_CONFIG_HOME/tollgate/credentials.json` (else `~/.config/...`), owner-only.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::docker_config::TOKEN_USER;
use super::login::{self, Registry};
use super::{read_json, write_json_private};
use crate::cli::stdin::{self, Part};

/// What docker prints as "not logged in": clients recognise this exact text.
const NOT_FOUND: &str = "credentials not found in native keychain";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    username: String,
    secret: String,
}

#[derive(Deserialize)]
struct StoreRequest {
    #[serde(rename = "ServerURL")]
    server_url: String,
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

fn store_path() -> Result<PathBuf, String> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => {
            PathBuf::from(std::env::var_os("HOME").ok_or("neither XDG_CONFIG_HOME nor HOME is set")?).join(".config")
        }
    };
    Ok(base.join("tollgate").join("credentials.json"))
}

fn load() -> Result<BTreeMap<String, Stored>, String> {
    Ok(read_json(&store_path()?)?.unwrap_or_default())
}

fn save(all: &BTreeMap<String, Stored>) -> Result<(), String> {
    write_json_private(&store_path()?, all)
}

/// The `host[:port]` a server URL names: docker passes `host:port`, `https://host/v1/` and the like.
pub fn host_of(server_url: &str) -> String {
    let s = server_url.trim();
    let s = s.split_once("://").map_or(s, |(_, rest)| rest);
    s.split('/').next().unwrap_or(s).to_string()
}

/// The name of the link to the `tollgate` binary that makes it the credential helper.
pub const LINK_NAME: &str = "docker-credential-tollgate";

/// The protocol action when the binary runs through a link named [`LINK_NAME`] (its first argument, or
/// empty), else None.
pub fn link_action() -> Option<String> {
    let argv0 = PathBuf::from(std::env::args_os().next()?);
    (argv0.file_name()? == LINK_NAME).then(|| std::env::args().nth(1).unwrap_or_default())
}

/// Run one action of the protocol.
pub fn run(action: &str) -> Result<(), String> {
    match action {
        "store" => {
            let req: StoreRequest = serde_json::from_str(&stdin::read("standard input", Part::All)?)
                .map_err(|e| format!("store: not a credentials document: {e}"))?;
            let mut all = load()?;
            all.insert(host_of(&req.server_url), Stored { username: req.username, secret: req.secret });
            save(&all)
        }
        "erase" => {
            let host = host_of(&stdin::read("standard input", Part::All)?);
            let mut all = load()?;
            if all.remove(&host).is_none() {
                return Err(NOT_FOUND.into());
            }
            save(&all)
        }
        "list" => {
            let list: BTreeMap<String, String> = load()?.into_iter().map(|(h, s)| (h, s.username)).collect();
            println!("{}", serde_json::to_string(&list).map_err(|e| e.to_string())?);
            Ok(())
        }
        "get" => {
            let url = stdin::read("standard input", Part::All)?.trim().to_string();
            let stored = crate::cli::block_on(get(&url))??;
            let answer = serde_json::json!({"ServerURL": url, "Username": stored.username, "Secret": stored.secret});
            println!("{answer}");
            Ok(())
        }
        other => {
            Err(format!("unknown action {other:?}: the credential helper protocol has get, store, erase and list"))
        }
    }
}

/// Whether `host` is this machine, where plain HTTP is accepted (as docker does for 127.0.0.0/8).
fn is_loopback(host: &str) -> bool {
    let name =
        host.rsplit_once(':').map_or(host, |(h, p)| if p.chars().all(|c| c.is_ascii_digit()) { h } else { host });
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

async fn get(url: &str) -> Result<Stored, String> {
    let host = host_of(url);
    let http = login::http_client(None)?;
    let stored = load()?.remove(&host);
    // A password docker stored is handed back as it is: only identity tokens are ours to renew.
    if let Some(s) = stored.as_ref().filter(|s| s.username != TOKEN_USER) {
        return Ok(s.clone());
    }
    let reg = match login::discover(&http, &host, false).await {
        Ok(r) => r,
        Err(_) if is_loopback(&host) => match login::discover(&http, &host, true).await {
            Ok(r) => r,
            Err(_) => return stored.ok_or_else(|| NOT_FOUND.to_string()),
        },
        // A certificate this machine does not trust, and no token to hand back: say so (docker prints it),
        // rather than "not found", which would send docker on anonymously with no word of why.
        Err(e) if stored.is_none() && login::untrusted(&e.to_ascii_lowercase()) => {
            return Err(format!("{e}\nThe credential helper reads SSL_CERT_FILE as its trust store when set."))
        }
        // Not a registry tollgate serves, or not reachable: nothing to give (docker then goes anonymous).
        Err(_) => return stored.ok_or_else(|| NOT_FOUND.to_string()),
    };
    if let Some(s) = stored {
        match accepted(&http, &reg, &s.secret).await {
            Some(true) | None => return Ok(s),
            Some(false) => {}
        }
    }
    // Missing or no longer accepted: log in on the user's terminal.
    let mut tty = std::fs::OpenOptions::new().write(true).open("/dev/tty").map_err(|_| {
        format!("{NOT_FOUND}: no identity token for {host} that tollgate accepts, and no terminal to log in on; run `tollgate login {host}`")
    })?;
    let (_, token) = login::device_login(&http, &reg, None, false, &mut tty, true).await?;
    let fresh = Stored { username: TOKEN_USER.to_string(), secret: token };
    let mut all = load()?;
    all.insert(host.clone(), fresh.clone());
    save(&all)?;
    Ok(fresh)
}

/// Whether tollgate still accepts `token` (a refresh grant without scopes); None when it cannot be asked.
async fn accepted(http: &reqwest::Client, reg: &Registry, token: &str) -> Option<bool> {
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", token),
        ("service", reg.service.as_str()),
        ("client_id", LINK_NAME),
    ];
    let resp = http.post(&reg.realm).form(&form).send().await.ok()?;
    match resp.status().as_u16() {
        200 => Some(true),
        400 | 401 | 403 => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_server_urls_and_loopback() {
        assert_eq!(host_of("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(host_of("https://registry.example.com/v1/"), "registry.example.com");
        assert_eq!(host_of(" http://localhost:5000 \n"), "localhost:5000");
        assert!(is_loopback("127.0.0.1:5000") && is_loopback("localhost") && is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example.com:5000") && !is_loopback("10.0.0.1"));
    }
}

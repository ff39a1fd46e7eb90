//! `tollgate token create|list|rotate`, and `token revoke --registry`: a user's access tokens, through the
//! token API of the tollgate that is the registry's realm (`http/access_tokens.rs`).
//!
//! The registry's `/v2/` names its realm, as for `tollgate login`. The caller proves who they are with the
//! refresh token `tollgate login` stored in docker's config.json (fresh enough: at most
//! `access_tokens.max_auth_age` after the device login), or a password: `--password-stdin`, or asked on the
//! terminal. A secret is printed once, on standard output, alone, so that `tollgate token create … > file`
//! or `| gh secret set` takes exactly the token.

use std::path::PathBuf;

use base64::Engine as _;
use serde_json::{json, Value};

use super::docker_config;
use super::login::{discover, http_client};

/// How to reach the registry and prove who the caller is.
pub struct Target {
    /// `host[:port]` or a URL.
    pub registry: String,
    pub plain_http: bool,
    pub ca_file: Option<PathBuf>,
    pub docker_config: Option<PathBuf>,
    /// Log in with this username and a password instead of the stored refresh token.
    pub user: Option<String>,
    /// Read the password from standard input.
    pub password_stdin: bool,
}

/// What to do.
pub enum Action {
    Create { name: String, scope: Vec<String>, expires: String, owner: Option<String> },
    List { all: bool, user: Option<String>, expiring: bool, json: bool },
    Rotate { id: String, grace: String, expires: Option<String> },
    Revoke { id: Option<String>, user: Option<String> },
}

pub fn run(target: Target, action: Action) -> Result<(), String> {
    crate::cli::block_on(run_async(target, action))?
}

/// The stored login for `host` in docker's config: (username, refresh token).
fn stored_login(target: &Target, host: &str) -> Result<Option<(String, String)>, String> {
    let config = docker_config::config_file(target.docker_config.as_deref())?;
    let doc = docker_config::read_leniently(&config);
    let Some(entry) = doc.get("auths").and_then(|a| a.get(host)) else { return Ok(None) };
    let Some(token) = entry.get("identitytoken").and_then(Value::as_str).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let user = entry
        .get("auth")
        .and_then(Value::as_str)
        .and_then(|a| base64::engine::general_purpose::STANDARD.decode(a).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(u, _)| u.to_string()))
        .unwrap_or_default();
    Ok(Some((user, token.to_string())))
}

/// The credentials to send: a password when asked for, else the stored refresh token, else a prompt.
fn credentials(target: &Target, host: &str) -> Result<(String, String), String> {
    use std::io::IsTerminal as _;
    if let Some(user) = &target.user {
        let password = if target.password_stdin {
            crate::cli::stdin::read("standard input", crate::cli::stdin::Part::FirstLine)?
        } else if std::io::stdin().is_terminal() {
            rpassword::prompt_password(format!("Password for {user}: "))
                .map_err(|e| format!("reading the password: {e}"))?
        } else {
            return Err("--user needs --password-stdin when standard input is not a terminal".into());
        };
        return Ok((user.clone(), password));
    }
    if target.password_stdin {
        return Err("--password-stdin needs --user".into());
    }
    stored_login(target, host)?.ok_or_else(|| {
        format!("no login for {host} in docker's config: run `tollgate login {host}` first, or pass --user NAME")
    })
}

async fn run_async(target: Target, action: Action) -> Result<(), String> {
    let http = http_client(target.ca_file.as_deref())?;
    let reg = discover(&http, &target.registry, target.plain_http).await?;
    let base = reg
        .realm
        .split('?')
        .next()
        .and_then(|r| r.strip_suffix("/token"))
        .ok_or_else(|| format!("the registry's token realm {:?} does not end in /token: is it tollgate?", reg.realm))?
        .to_string();
    let (user, password) = credentials(&target, &reg.host)?;
    let call = |method: reqwest::Method, path: String, body: Option<Value>| {
        let mut req = http.request(method, format!("{base}{path}")).basic_auth(&user, Some(&password));
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let resp = req.send().await.map_err(|e| format!("{base}{path}: {e}"))?;
            let status = resp.status();
            let body: Value = resp.json().await.map_err(|e| format!("{base}{path}: not JSON: {e}"))?;
            if !status.is_success() {
                let message = body["error_description"].as_str().unwrap_or("").to_string();
                return Err(format!("tollgate refused ({status}): {message}"));
            }
            Ok(body)
        }
    };
    let service = form_urlencoded::byte_serialize(reg.service.as_bytes()).collect::<String>();
    match action {
        Action::Create { name, scope, expires, owner } => {
            let body = json!({"name": name, "scope": scope, "expires": expires, "owner": owner});
            let t = call(reqwest::Method::POST, format!("/access-tokens?service={service}"), Some(body)).await?;
            announce(&t, "created");
        }
        Action::Rotate { id, grace, expires } => {
            let body = json!({"grace": grace, "expires": expires});
            let path = format!("/access-tokens/{}/rotate?service={service}", encode(&id));
            let t = call(reqwest::Method::POST, path, Some(body)).await?;
            eprintln!("the old token {id} keeps working for {grace}");
            announce(&t, "rotated into");
        }
        Action::List { all, user, expiring, json } => {
            let mut q = format!("?service={service}");
            if all {
                q += "&all=true";
            }
            if let Some(u) = &user {
                q += &format!("&user={}", encode(u));
            }
            if expiring {
                q += "&expiring=true";
            }
            let body = call(reqwest::Method::GET, format!("/access-tokens{q}"), None).await?;
            if json {
                crate::cli::print_json(&body["tokens"])?;
            } else {
                print_table(body["tokens"].as_array().map(Vec::as_slice).unwrap_or(&[]));
            }
        }
        Action::Revoke { id: Some(id), user: None } => {
            let t = call(reqwest::Method::DELETE, format!("/access-tokens/{}?service={service}", encode(&id)), None)
                .await?;
            println!(
                "revoked access token {} ({:?} of {})",
                id,
                t["name"].as_str().unwrap_or(""),
                t["owner"].as_str().unwrap_or("")
            );
        }
        Action::Revoke { id: None, user: Some(u) } => {
            let body = json!({"user": u});
            let r = call(reqwest::Method::POST, format!("/access-tokens/revoke?service={service}"), Some(body)).await?;
            let ids: Vec<&str> =
                r["revoked"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            println!("revoked {} access token(s) of {u}: {}", ids.len(), ids.join(" "));
        }
        Action::Revoke { .. } => return Err("say what to revoke: --id ID or --user NAME".into()),
    }
    Ok(())
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The secret alone on standard output; what it is on standard error.
fn announce(t: &Value, what: &str) {
    let s = |k: &str| t[k].as_str().unwrap_or("").to_string();
    eprintln!(
        "{what} access token {} ({:?}) for {}, scope {}, expires {}. It is shown only now:",
        s("id"),
        s("name"),
        s("owner"),
        t["scope"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
        s("expires")
    );
    println!("{}", s("token"));
}

fn print_table(tokens: &[Value]) {
    println!("{:<13} {:<20} {:<18} {:<8} {:<21} {:<21} SCOPE", "ID", "NAME", "OWNER", "STATE", "EXPIRES", "LAST USED");
    for t in tokens {
        let s = |k: &str| t[k].as_str().unwrap_or("-").to_string();
        let last = t["last_used"]["at"].as_str().unwrap_or("never").to_string();
        let scope: Vec<&str> =
            t["scope"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        println!(
            "{:<13} {:<20} {:<18} {:<8} {:<21} {:<21} {}",
            s("id"),
            crate::support::clip(&s("name"), 20),
            s("owner"),
            s("state"),
            s("expires"),
            last,
            scope.join(" ")
        );
    }
}

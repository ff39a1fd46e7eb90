//! The subcommands behind `main.rs`. Each returns a message for the user on failure.
//!
//! `args.rs` is the command line as clap reads it, `dispatch.rs` the step from it to the commands. The
//! commands use this file's helpers, so it imports neither them nor the dispatcher (no import circle).
//! `client/` holds the commands that run on a user's machine rather than the server: `tollgate login`, the
//! docker credential helper and the kubelet image credential provider.

pub mod args;
pub mod check;
pub mod client;
pub mod dispatch;
pub mod init;
pub mod invalidate;
pub mod logs;
pub mod probe;
pub mod robot;
pub mod stdin;
pub mod workload;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::app::AppState;
use crate::config::providers::AccountsSource;
use crate::config::state::StoreKind;
use crate::config::{ProviderSettings, Settings};
use crate::identity::accounts::parse_accounts;
use crate::identity::hashing::hash_password as hash;
use crate::identity::{AuthMethod, Identity, RequestContext};
use crate::policy::Policy;
use crate::policy_store::PolicyStore;
use crate::scope::Scope;
use crate::store::revocation::{FileStore, Revocation};
use crate::support::time::rfc3339;
use crate::token::keys::load_keys;
use crate::token::refresh::RefreshTokens;

pub(crate) fn join(errors: Vec<String>) -> String {
    let n = errors.len();
    format!("{n} problem{} found:\n  - {}", if n == 1 { "" } else { "s" }, errors.join("\n  - "))
}

pub(crate) fn load(config: Option<&Path>) -> Result<Settings, String> {
    Settings::load(config).map_err(join)
}

/// Run `future` to its end on a one-thread runtime of its own, for a command that does one async thing
/// (a login, a revocation written to Redis).
pub(crate) fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, String> {
    Ok(runtime(tokio::runtime::Builder::new_current_thread())?.block_on(future))
}

/// The runtime `builder` makes, with I/O and timers: one thread for most commands, a thread per core
/// for `serve`.
fn runtime(mut builder: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, String> {
    builder.enable_all().build().map_err(|e| format!("cannot start the runtime: {e}"))
}

/// Print `value` as indented JSON: what `--json` and `--format json` print.
pub(crate) fn print_json(value: &impl serde::Serialize) -> Result<(), String> {
    println!("{}", serde_json::to_string_pretty(value).map_err(|e| e.to_string())?);
    Ok(())
}

pub fn serve(config: Option<&Path>) -> Result<(), String> {
    let settings = load(config)?;
    // Held to the end of `serve`: a graceful shutdown writes out every queued log line.
    let _log = logs::init_tracing(&settings);
    for w in &settings.warnings {
        tracing::warn!("{w}");
    }
    if config.is_none() {
        tracing::warn!(
            "running the embedded demo config (demo accounts, example policy); pass --config for production"
        );
    }
    let (default_key, _) = settings.default_key_paths();
    let first_start = settings.token.keys.is_empty() && !default_key.exists();
    crate::telemetry::install();
    let state = Arc::new(AppState::build(settings).map_err(join)?);
    if first_start {
        let out = state.settings.server.data_dir.join("registry");
        println!("{}", write_registry_files(&state.settings, &state.issuer.keys, None, &out)?);
    }
    runtime(tokio::runtime::Builder::new_multi_thread())?
        .block_on(crate::server::run(config.map(Path::to_path_buf), state))
}

pub fn registry_config(config: Option<&Path>, realm: Option<&str>, out_dir: Option<&Path>) -> Result<(), String> {
    let settings = load(config)?;
    let keys = load_keys(&settings)?;
    let out = out_dir.map(Path::to_path_buf).unwrap_or_else(|| settings.server.data_dir.join("registry"));
    println!("{}", write_registry_files(&settings, &keys, realm, &out)?);
    Ok(())
}

/// Write the root cert bundle and JWKS and return the registry config block that reads them.
fn write_registry_files(
    settings: &Settings,
    keys: &crate::token::keys::KeySet,
    realm: Option<&str>,
    out: &Path,
) -> Result<String, String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let out = std::fs::canonicalize(out).unwrap_or_else(|_| out.to_path_buf());
    let bundle = out.join("rootcertbundle.pem");
    let jwks = out.join("jwks.json");
    std::fs::write(&bundle, keys.cert_bundle()).map_err(|e| format!("{}: {e}", bundle.display()))?;
    let jwks_text = serde_json::to_string_pretty(&keys.jwks()).map_err(|e| e.to_string())?;
    std::fs::write(&jwks, jwks_text).map_err(|e| format!("{}: {e}", jwks.display()))?;
    let realm = realm.map(str::to_string).unwrap_or_else(|| format!("http://{}/token", settings.server.listen));
    let mut block = format!(
        "# Registry config (config.yml) for tollgate. Keys: {}; active kid {}.\n\
         auth:\n  token:\n    realm: {realm}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
        keys.keys().len(),
        keys.active().kid,
        settings.token.services.first().map(String::as_str).unwrap_or(""),
        settings.token.issuer,
        bundle.display(),
    );
    block.push_str(&format!(
        "    # registry v3 only (and kid_format: rfc7638 for kid-only tokens):\n    # jwks: {}\n",
        jwks.display()
    ));
    if keys.keys().iter().any(|k| k.chain.is_empty()) {
        block.push_str(
            "# WARNING: a key without a certificate is missing from rootcertbundle; registry 2.x cannot trust it.\n",
        );
    }
    Ok(block)
}

pub fn token_revoke(
    config: Option<&Path>,
    token: Option<&str>,
    id: Option<&str>,
    user: Option<&str>,
    all: bool,
) -> Result<(), String> {
    let settings = load(config)?;
    // Without a config the embedded demo's ./tollgate-data is meant; writing there when no server ever ran
    // here would say "revoked" while every server goes on accepting the token.
    if config.is_none() && !settings.refresh.secret_file.exists() {
        return Err(format!(
            "no --config given, and no tollgate server keeps its data here ({} does not exist): pass the \
             --config of the server whose tokens you revoke",
            settings.refresh.secret_file.display()
        ));
    }
    let now_ms = crate::support::time::unix_now_ms();
    if let Some(id) = id {
        let stores = crate::store::open(&settings)?;
        if !block_on(stores.access_tokens.revoke(id, now_ms / 1000))?.map_err(|e| e.to_string())? {
            return Err(format!("no access token {id:?} in this server's store"));
        }
        println!("revoked access token {id}");
        return Ok(());
    }
    let (revocation, what) = match (token, user, all) {
        (Some(t), None, false) => {
            let secret = std::fs::read(&settings.refresh.secret_file)
                .map_err(|e| format!("{}: {e}", settings.refresh.secret_file.display()))?;
            let secret = String::from_utf8_lossy(&secret).trim().as_bytes().to_vec();
            let tokens = RefreshTokens::new(&secret, &settings.token.issuer, settings.refresh.lifetime)?;
            let claims = tokens.inspect(t.trim()).map_err(|e| e.to_string())?;
            let what = format!("refresh token {} of {:?}", claims.jti, claims.sub);
            (Revocation::Token { jti: claims.jti, exp: claims.exp }, what)
        }
        (None, Some(u), false) => {
            if let Some(note) = unknown_user_note(&settings, u) {
                eprintln!("{note}");
            }
            (Revocation::User { username: u.to_string(), before_ms: now_ms }, format!("every refresh token of {u:?}"))
        }
        (None, None, true) => (Revocation::All { before_ms: now_ms }, "every refresh token".to_string()),
        _ => return Err("say what to revoke: --token TOKEN, --user NAME or --all".into()),
    };
    let place = match settings.state.store {
        StoreKind::Local => {
            let file = settings.revocation_file();
            std::path::absolute(&file).unwrap_or(file).display().to_string()
        }
        StoreKind::Redis => format!("Redis (keys prefixed {:?})", settings.state.key_prefix),
    };
    match settings.state.store {
        StoreKind::Local => FileStore::new(settings.revocation_file()).revoke_sync(revocation),
        // The store every replica reads: Redis when `state.store: redis`.
        StoreKind::Redis => {
            let stores = crate::store::open(&settings)?;
            block_on(stores.revocations.revoke(revocation))?
        }
    }
    .map_err(|e| e.to_string())?;
    println!("revoked {what} issued until {}; written to {place}", rfc3339(now_ms / 1000));
    if let Some(u) = user {
        // Offboarding: the person's access tokens go too (group tokens are the group's, not theirs).
        let stores = crate::store::open(&settings)?;
        let ids =
            block_on(crate::store::access_tokens::revoke_tokens_of(stores.access_tokens.as_ref(), u, now_ms / 1000))?
                .map_err(|e| e.to_string())?;
        println!(
            "revoked {} access token(s) of {u:?}{}{}",
            ids.len(),
            if ids.is_empty() { "" } else { ": " },
            ids.join(" ")
        );
    }
    Ok(())
}

/// A note when no account of the config's static providers has this name (directory and IdP users cannot be
/// listed offline, so the revocation is written anyway).
fn unknown_user_note(settings: &Settings, user: &str) -> Option<String> {
    let mut names = Vec::new();
    let mut others = false;
    for p in &settings.providers {
        match p {
            ProviderSettings::Static(s) => match &s.source {
                AccountsSource::Inline(inline) => names.extend(inline.iter().map(|a| a.username.clone())),
                AccountsSource::File(file) => {
                    let text = std::fs::read_to_string(file).unwrap_or_default();
                    let parsed = parse_accounts(&file.display().to_string(), &text).unwrap_or_default();
                    names.extend(parsed.accounts.into_iter().map(|a| a.username));
                }
            },
            ProviderSettings::Ldap(_) | ProviderSettings::Oidc(_) => others = true,
            // Workload identities have no account to revoke: their tokens expire with the job.
            ProviderSettings::Workload(_) => {}
        }
    }
    if names.iter().any(|n| n.eq_ignore_ascii_case(user)) {
        return None;
    }
    Some(if others {
        format!("note: no static account is named {user:?} (directory and IdP users are not checked); revoking anyway")
    } else {
        format!("warning: no account is named {user:?}; revoking anyway (a later account of that name starts clean)")
    })
}

fn load_policy(paths: &[PathBuf], config: Option<&Path>) -> Result<(Policy, Option<Settings>), String> {
    if paths.is_empty() {
        let settings = load(config)?;
        let store = PolicyStore::new(&settings).map_err(join)?;
        Ok((store.get().as_ref().clone(), Some(settings)))
    } else {
        let policy = Policy::load(paths).map_err(|e| join(e.iter().map(|x| x.to_string()).collect()))?;
        Ok((policy, None))
    }
}

pub fn policy_test(paths: &[PathBuf], config: Option<&Path>) -> Result<(), String> {
    let (policy, _) = load_policy(paths, config)?;
    let report = policy.run_tests();
    print!("{report}");
    if report.failed() > 0 {
        return Err(format!("{} policy test(s) failed", report.failed()));
    }
    if policy.test_count() == 0 {
        eprintln!("warning: the policy has no tests; write expectations under `tests:` next to the rules");
    }
    Ok(())
}

/// Inputs of `policy explain`.
pub struct ExplainInput {
    pub scope: String,
    pub user: Option<String>,
    pub groups: Vec<String>,
    pub provider: String,
    pub auth_method: Option<String>,
    pub client_ip: IpAddr,
    pub service: Option<String>,
    pub claims: Option<String>,
    pub json: bool,
}

pub fn policy_explain(paths: &[PathBuf], config: Option<&Path>, input: ExplainInput) -> Result<(), String> {
    let (policy, settings) = load_policy(paths, config)?;
    let scope = Scope::parse(&input.scope).map_err(|e| e.to_string())?;
    let claims: BTreeMap<String, serde_json::Value> = match &input.claims {
        Some(c) => serde_json::from_str(c).map_err(|e| format!("--claims must be a JSON object: {e}"))?,
        None => BTreeMap::new(),
    };
    let username = input.user.unwrap_or_default();
    let auth_method = match input.auth_method.as_deref() {
        Some(m) => AuthMethod::parse(m).ok_or(format!(
            "--auth-method {m:?}: use password, refresh_token, device, workload, access_token or anonymous"
        ))?,
        None if username.is_empty() => AuthMethod::Anonymous,
        None => AuthMethod::Password,
    };
    let service = input
        .service
        .or_else(|| settings.and_then(|s| s.token.services.first().cloned()))
        .unwrap_or_else(|| "registry.test".into());
    let ctx = RequestContext {
        identity: Arc::new(Identity {
            username,
            provider: input.provider,
            groups: input.groups,
            claims,
            account: None,
            expires_at: None,
        }),
        auth_method,
        client_ip: input.client_ip,
        service,
    };
    let explanation = policy.explain(&ctx, &scope);
    if input.json {
        print_json(&explanation)?;
    } else {
        print!("{explanation}");
    }
    Ok(())
}

/// The password to hash: asked twice without echo on a terminal, else the first line of standard input.
pub fn read_new_password() -> Result<String, String> {
    use std::io::IsTerminal as _;
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").map_err(|e| format!("reading the password: {e}"))?;
        let again = rpassword::prompt_password("Again: ").map_err(|e| format!("reading the password: {e}"))?;
        if first != again {
            return Err("the two passwords differ; nothing was hashed".into());
        }
        return Ok(first);
    }
    stdin::read("standard input", stdin::Part::FirstLine)
}

pub fn hash_password(password: &str) -> Result<(), String> {
    if password.is_empty() {
        return Err("refusing to hash an empty password".into());
    }
    println!("{}", hash(password)?);
    Ok(())
}

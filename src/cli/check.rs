//! `tollgate check-config`: load everything `serve` would (config, keys, accounts, policy and its tests,
//! the TLS pair), report every problem at once, and warn about what would work but is unsafe: an expired
//! signing certificate, a key or secret file others can read, trusted proxies that cover every address.

use std::path::{Path, PathBuf};

use super::join;
use crate::app::AppState;
use crate::config::{ProviderSettings, Settings};
use crate::support::time::unix_now;

/// A signing certificate this close to its end gets a warning.
const EXPIRY_WARNING_SECS: u64 = 14 * 86400;

/// How `check-config` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Check everything and report every problem at once: the config (each key with its line or variable),
/// then, as far as the config could be read, the keys, accounts, policy and its tests. Writes nothing.
/// With `probe`, then contact every provider and the shared store ([`super::probe`]).
/// Exit status: success when clean (warnings allowed), failure when there are problems.
pub fn check_config(config: Option<&Path>, format: Format, probe: bool) -> Result<(), String> {
    let (settings, findings) = Settings::load_all(config);
    // The probe runs with the config as loaded, even when a key or the policy has a problem: a directory
    // that refuses the service account is worth knowing in the same run.
    let probed = match (&settings, probe) {
        (Some(s), true) => Some(super::probe::probe(s)?),
        _ => None,
    };
    let mut errors: Vec<String> = findings.errors.iter().map(ToString::to_string).collect();
    let mut warnings = findings.warnings;
    let mut notes = Vec::new();
    let mut summary = None;
    if let Some(settings) = settings {
        // serve loads the TLS pair only when it binds: a missing or mismatched file would pass here and stop
        // serve at start.
        if let Some(tls) = &settings.ops.tls {
            if let Err(e) = crate::server::tls::Tls::load(tls) {
                errors.push(e);
            }
        }
        // Building the state loads keys, accounts and the policy (and runs its tests), so every file is
        // checked; nothing is written (a key or secret `serve` would create is made in memory and noted).
        match AppState::check(settings) {
            Ok((state, n)) => {
                notes = n;
                warnings.extend(self::warnings(&state));
                let policy = state.policy.get();
                summary = Some(format!(
                    "{}: ok ({} key(s), active kid {}; {} provider(s); {} rule(s), {} policy test(s) passed)",
                    state.settings.origin,
                    state.issuer.keys.keys().len(),
                    state.issuer.keys.active().kid,
                    state.chain.providers().len(),
                    policy.rule_count(),
                    policy.run_tests().passed()
                ));
            }
            Err(e) => errors.extend(e),
        }
    }
    let config_ok = errors.is_empty();
    let (failed, warned) = probed.as_deref().map(super::probe::counts).unwrap_or((0, 0));
    let probe_verdict =
        probed.as_ref().map(|lines| format!("probe: {} check(s), {failed} failed, {warned} warning(s)", lines.len()));
    let ok = config_ok && failed == 0;
    match format {
        Format::Json => {
            let mut report = serde_json::json!({
                "ok": ok,
                "errors": errors,
                "warnings": warnings,
                "notes": notes,
                "summary": if config_ok { summary.clone() } else { None },
            });
            if let Some(lines) = &probed {
                report["probe"] = serde_json::to_value(lines).map_err(|e| e.to_string())?;
            }
            super::print_json(&report)?;
            match (config_ok, failed) {
                (true, 0) => Ok(()),
                (true, n) => Err(format!("{n} probe check(s) failed")),
                (false, n) => Err(format!("{} problem(s), {n} probe check(s) failed", errors.len())),
            }
        }
        Format::Text => {
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            for n in &notes {
                eprintln!("note: {n}");
            }
            if let (true, Some(line)) = (config_ok, &summary) {
                println!("{line}");
            }
            if let (Some(lines), Some(verdict)) = (&probed, &probe_verdict) {
                super::probe::print_text(lines);
                println!("{verdict}");
            }
            match (config_ok && summary.is_some(), failed) {
                (true, 0) => Ok(()),
                (true, n) => Err(format!("{n} probe check(s) failed: see the FAIL lines above")),
                (false, _) => Err(join(errors)),
            }
        }
    }
}

/// What works but should not be left so.
pub fn warnings(state: &AppState) -> Vec<String> {
    let settings = &state.settings;
    let mut out = Vec::new();
    let now = unix_now() as i64;
    for key in state.issuer.keys.keys() {
        let Some(not_after) = key.not_after else { continue };
        let file = key.key_path.display();
        if not_after <= now {
            out.push(format!(
                "signing key {file} (kid {}): its certificate expired at {}; registries that check it refuse \
                 the tokens: rotate the key (docs/key-rotation.md)",
                key.kid,
                crate::support::time::rfc3339(not_after.max(0) as u64)
            ));
        } else if not_after - now < EXPIRY_WARNING_SECS as i64 {
            out.push(format!(
                "signing key {file} (kid {}): its certificate expires at {}: rotate the key soon",
                key.kid,
                crate::support::time::rfc3339(not_after as u64)
            ));
        }
    }
    for (what, path) in secret_files(settings) {
        if let Some(mode) = readable_by_others(&path) {
            out.push(format!(
                "{what} {}: mode {mode:o} lets other users read a secret: make it readable by the user \
                 tollgate runs as only (chown that user, chmod 600), or keep it in a directory others \
                 cannot enter (chmod 700 on the directory, as compose/secrets.sh does for a container's \
                 secrets)",
                path.display()
            ));
        }
    }
    for net in &settings.ops.trusted_proxies {
        if net.prefix_len() == 0 {
            out.push(format!(
                "server.trusted_proxies: {net} covers every address, so any client can choose the address \
                 that rate limits and client_network rules see; list your proxies' addresses instead"
            ));
        }
    }
    out
}

/// Every file of the config that holds a secret, named by its key.
fn secret_files(settings: &Settings) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    if settings.token.keys.is_empty() {
        out.push(("the generated signing key".to_string(), settings.default_key_paths().0));
    }
    for (i, k) in settings.token.keys.iter().enumerate() {
        out.push((format!("token.keys[{i}].key_file"), k.key_file.clone()));
    }
    if settings.refresh.enabled {
        out.push(("refresh_tokens.secret_file".into(), settings.refresh.secret_file.clone()));
    }
    if let Some(tls) = &settings.ops.tls {
        out.push(("server.tls.key_file".into(), tls.key_file.clone()));
    }
    if let Some(f) = &settings.state.redis_url_file {
        out.push(("state.redis_url_file".into(), f.clone()));
    }
    for (i, p) in settings.providers.iter().enumerate() {
        match p {
            ProviderSettings::Ldap(l) => {
                if let Some(f) = &l.bind_password_file {
                    out.push((format!("providers[{i}].bind_password_file"), f.clone()));
                }
            }
            ProviderSettings::Oidc(o) => {
                if let Some(f) = &o.client_secret_file {
                    out.push((format!("providers[{i}].client_secret_file"), f.clone()));
                }
            }
            ProviderSettings::Static(_) | ProviderSettings::Workload(_) => {}
        }
    }
    out
}

/// The permission bits of `path` when group or others may read it: the file lets them, and so does every
/// directory on the way (a 0644 file in a 0700 directory, as `compose/secrets.sh` makes for containers
/// running as another user, is read by nobody else).
#[cfg(unix)]
fn readable_by_others(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    if mode & 0o044 == 0 {
        return None;
    }
    let path = std::fs::canonicalize(path).ok()?;
    let closed =
        path.ancestors().skip(1).any(|dir| std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o011 == 0));
    (!closed).then_some(mode)
}

#[cfg(not(unix))]
fn readable_by_others(_: &Path) -> Option<u32> {
    None
}

//! `tollgate workload verify`: try a CI job's or pod's JWT against a `type: workload` provider entry of the
//! real config, without the CI: the same verification the server makes (`WorkloadProvider::authenticate`:
//! signature, issuer, audience, lifetime, required claims), the identity it makes, and what the rules would
//! grant it for each `--scope` and why (the explanation of `tollgate policy explain`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use secrecy::SecretString;
use serde::Serialize;

use crate::config::ProviderSettings;
use crate::identity::workload::{jwt_issuer, WorkloadProvider};
use crate::identity::{AuthMethod, Failure, Identity, Outcome, Provider as _, RequestContext};
use crate::policy::Explanation;
use crate::policy_store::PolicyStore;
use crate::scope::Scope;

/// Inputs of `workload verify`.
pub struct VerifyInput {
    pub provider: Option<String>,
    pub token: String,
    pub scopes: Vec<String>,
    pub service: Option<String>,
    pub client_ip: IpAddr,
    pub json: bool,
}

/// The token file `--token FILE` names, without its trailing line endings, at most 1 MiB.
pub fn read_token_file(path: &str) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("--token {path}: {e}"))?;
    if meta.len() > super::stdin::MAX_BYTES {
        return Err(format!("--token {path}: larger than {} bytes: not a token", super::stdin::MAX_BYTES));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("--token {path}: {e}"))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// What `--json` prints.
#[derive(Serialize)]
struct Report<'a> {
    ok: bool,
    provider: &'a str,
    issuer: &'a str,
    /// Why the token is refused (the provider's reason), when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    refused: Option<String>,
    /// "refused" (401) or "unavailable" (503: the issuer's keys could not be fetched).
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<Identity>,
    scopes: Vec<Explanation>,
}

pub fn verify(config: Option<&Path>, input: VerifyInput) -> Result<(), String> {
    let settings = super::load(config)?;
    let workloads: Vec<_> = settings
        .providers
        .iter()
        .filter_map(|p| match p {
            ProviderSettings::Workload(w) => Some(w),
            _ => None,
        })
        .collect();
    let names = || workloads.iter().map(|w| w.name.as_str()).collect::<Vec<_>>().join(", ");
    let entry = match &input.provider {
        Some(name) => workloads.iter().find(|w| &w.name == name).copied().ok_or_else(|| {
            if workloads.is_empty() {
                format!("--provider {name}: the config has no type: workload provider")
            } else {
                format!("--provider {name}: no type: workload provider of that name; the config has: {}", names())
            }
        })?,
        None => match workloads.as_slice() {
            [only] => *only,
            [] => return Err("the config has no type: workload provider".into()),
            _ => {
                return Err(format!("the config has several workload providers; name one with --provider: {}", names()))
            }
        },
    };
    let scopes = input
        .scopes
        .iter()
        .map(|s| Scope::parse(s).map_err(|e| format!("--scope {s:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let token = input.token.trim();
    if token.is_empty() {
        return Err("no token given: pass --token FILE, or the token on standard input".into());
    }
    // The server sends a JWT only to the provider whose issuer is its `iss`: say so when this one would not
    // even be asked (the provider refuses it below all the same, naming iss).
    let routed_elsewhere = match jwt_issuer(token) {
        None => Some("the token is not a JWT (three base64url parts: header, claims, signature)".to_string()),
        Some(peek) if peek.iss != entry.issuer => {
            let other = workloads.iter().find(|w| w.issuer == peek.iss).map(|w| w.name.as_str());
            Some(match other {
                Some(o) => format!(
                    "the token's iss {:?} is provider {o:?}'s issuer, not {:?}'s: the server would verify it there",
                    peek.iss, entry.name
                ),
                None => format!(
                    "the token's iss {:?} is not {:?} (provider {:?}), nor any workload provider's issuer: the \
                     server would treat it as a password",
                    peek.iss, entry.issuer, entry.name
                ),
            })
        }
        Some(_) => None,
    };
    let provider = WorkloadProvider::new(entry)?;
    let secret = SecretString::from(token.to_string());
    let outcome = super::block_on(async { provider.authenticate("", &secret).await })?;
    let identity = match outcome {
        Ok(Outcome::Authenticated(id)) => Ok(id),
        Ok(Outcome::NotMine) => Err(Failure::refused("the provider does not take this token")),
        Err(f) => Err(f),
    };
    let mut report = Report {
        ok: identity.is_ok(),
        provider: &entry.name,
        issuer: &entry.issuer,
        refused: None,
        outcome: None,
        identity: None,
        scopes: Vec::new(),
    };
    let identity = match identity {
        Ok(id) => id,
        Err(f) => {
            let reason = match &routed_elsewhere {
                Some(r) => format!("{}; {r}", f.message()),
                None => f.message().to_string(),
            };
            report.refused = Some(reason.clone());
            report.outcome = Some(f.label());
            if input.json {
                super::print_json(&report)?;
            }
            return Err(match f {
                Failure::Refused(_) => format!("refused by provider {:?}: {reason}", entry.name),
                Failure::Unavailable(_) | Failure::Busy(_) => {
                    format!(
                        "provider {:?} could not verify the token (the server would answer 503): {reason}",
                        entry.name
                    )
                }
            });
        }
    };
    let policy = PolicyStore::new(&settings).map_err(super::join)?.get();
    let service = input
        .service
        .clone()
        .or_else(|| settings.token.services.first().cloned())
        .unwrap_or_else(|| "registry.test".into());
    let ctx = RequestContext {
        identity: Arc::clone(&identity),
        auth_method: AuthMethod::Workload,
        client_ip: input.client_ip,
        service,
    };
    report.scopes = scopes.iter().map(|s| policy.explain(&ctx, s)).collect();
    if input.json {
        report.identity = Some(identity.as_ref().clone());
        return super::print_json(&report);
    }
    print_identity(&entry.name, &identity);
    for e in &report.scopes {
        println!();
        print!("{e}");
    }
    if report.scopes.is_empty() {
        println!("\n(no --scope given: pass --scope repository:NAME:pull,push to see what the rules grant)");
    }
    Ok(())
}

fn print_identity(provider: &str, id: &Identity) {
    println!("verified by provider {provider:?}: signature, issuer, audience, lifetime and required claims hold");
    println!("username: {}", id.username);
    println!("groups:   {}", if id.groups.is_empty() { "(none)".to_string() } else { id.groups.join(", ") });
    if let Some(exp) = id.expires_at {
        let left = exp.saturating_sub(crate::support::time::unix_now());
        println!("expires:  {} (in {left}s)", crate::support::time::rfc3339(exp));
    }
    println!("claims:");
    let claims: &BTreeMap<String, serde_json::Value> = &id.claims;
    for (k, v) in claims {
        println!("  {k}: {v}");
    }
}

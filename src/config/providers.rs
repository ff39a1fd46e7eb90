//! The `providers:` section: the identity providers, tried in order. Each entry's keys and checks are in
//! the file of its type (`static` here, [`super::ldap`], [`super::oidc`], [`super::workload`]); the list
//! itself must name every entry, and no two alike.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::accounts::AccountEntry;
use super::check::resolve;
use super::problem::Problem;
use super::{ldap, oidc, workload};

/// One identity provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
#[allow(clippy::large_enum_variant)] // read once at start-up; a Box would only add noise to every match
pub enum ProviderConfig {
    Static(StaticProviderConfig),
    Ldap(ldap::LdapConfig),
    /// An OpenID Connect provider (Keycloak, GitLab, …); see `identity::oidc`.
    Oidc(oidc::OidcConfig),
    /// A trusted issuer of workload identity tokens (CI jobs, pods); see `identity::workload`.
    Workload(workload::WorkloadConfig),
}

impl ProviderConfig {
    pub fn name(&self) -> &str {
        match self {
            ProviderConfig::Static(s) => &s.name,
            ProviderConfig::Ldap(l) => &l.name,
            ProviderConfig::Oidc(o) => &o.name,
            ProviderConfig::Workload(w) => &w.name,
        }
    }
}

/// The static accounts provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticProviderConfig {
    /// REQUIRED. Unique name; recorded in tokens and usable in rules (`provider:`).
    pub name: String,
    /// The accounts file (see providers/robots.yaml). Exactly one of `file` and `accounts`.
    pub file: Option<PathBuf>,
    /// Accounts written inline.
    pub accounts: Option<Vec<AccountEntry>>,
}

/// Validate `providers:`. `index` is each entry's position in the file (entries that could not be read
/// at all were left out of `raw`); warnings of entries that work but should not be left so are pushed to
/// `warnings`.
pub fn validate(
    raw: Vec<ProviderConfig>,
    index: &[usize],
    base: &Path,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<String>,
) -> Vec<ProviderConfig> {
    let mut providers = raw;
    let mut names = std::collections::HashSet::new();
    for (i, p) in providers.iter_mut().enumerate() {
        // The entry's index in the file (entries that could not be read at all are left out).
        let i = index.get(i).copied().unwrap_or(i);
        if p.name().is_empty() {
            problems.push(Problem::new(format!("providers[{i}].name"), "required"));
        }
        if !names.insert(p.name().to_string()) {
            problems.push(Problem::new(
                format!("providers[{i}].name"),
                format!("{:?} is used by an earlier provider", p.name()),
            ));
        }
        match p {
            ProviderConfig::Static(s) => {
                match (&s.file, &s.accounts) {
                    (Some(_), Some(_)) => {
                        problems.push(Problem::new(format!("providers[{i}]"), "set either file or accounts, not both"))
                    }
                    (None, None) => problems
                        .push(Problem::new(format!("providers[{i}].file"), "required (or write accounts inline)")),
                    _ => {}
                }
                if let Some(f) = &s.file {
                    s.file = Some(resolve(base, f));
                }
            }
            ProviderConfig::Ldap(l) => {
                ldap::validate_config(l, &format!("providers[{i}]"), base, problems);
                warnings.extend(ldap::warnings(l, &format!("providers[{i}]")));
            }
            ProviderConfig::Oidc(o) => {
                oidc::validate(o, i, base, problems);
            }
            ProviderConfig::Workload(w) => {
                workload::validate(w, i, base, problems);
            }
        }
    }
    if providers.is_empty() {
        tracing::warn!("no identity providers configured: only anonymous requests can get tokens");
    }
    providers
}

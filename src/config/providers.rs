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

/// Where a static provider's accounts come from.
#[derive(Debug, Clone)]
pub enum AccountsSource {
    File(PathBuf),
    /// Accounts written inline in the config (the embedded default).
    Inline(Vec<AccountEntry>),
}

/// A `static` entry checked, its file resolved: what `identity::accounts::StaticProvider::new` takes.
#[derive(Debug, Clone)]
pub struct StaticSettings {
    pub name: String,
    pub source: AccountsSource,
}

/// One identity provider, checked: each is what its provider's constructor takes.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // read once at start-up; a Box would only add noise to every match
pub enum ProviderSettings {
    Static(StaticSettings),
    Ldap(ldap::LdapSettings),
    Oidc(oidc::OidcSettings),
    Workload(workload::Workload),
}

impl ProviderSettings {
    pub fn name(&self) -> &str {
        match self {
            ProviderSettings::Static(s) => &s.name,
            ProviderSettings::Ldap(l) => &l.name,
            ProviderSettings::Oidc(o) => &o.name,
            ProviderSettings::Workload(w) => &w.name,
        }
    }
}

/// Check a `static` entry (`at` is e.g. `providers[1]`), resolving its file against `base`. Every problem
/// is pushed, each naming its key; the settings are returned when there was none.
pub fn validate_static(
    raw: StaticProviderConfig,
    at: &str,
    base: &Path,
    problems: &mut Vec<Problem>,
) -> Option<StaticSettings> {
    let source = match (raw.file, raw.accounts) {
        (Some(_), Some(_)) => {
            problems.push(Problem::new(at, "set either file or accounts, not both"));
            return None;
        }
        (None, None) => {
            problems.push(Problem::new(format!("{at}.file"), "required (or write accounts inline)"));
            return None;
        }
        (Some(f), None) => AccountsSource::File(resolve(base, &f)),
        (None, Some(accounts)) => AccountsSource::Inline(accounts),
    };
    Some(StaticSettings { name: raw.name, source })
}

/// Validate `providers:` (entries that could not be read at all were left out of `raw`; the loader
/// counts them back into the indices of the problems); warnings of entries that work but should not be left so are pushed to
/// `warnings`. An entry with a problem is left out of the list returned.
pub fn validate(
    raw: Vec<ProviderConfig>,
    base: &Path,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<String>,
) -> Vec<ProviderSettings> {
    if raw.is_empty() {
        tracing::warn!("no identity providers configured: only anonymous requests can get tokens");
    }
    let mut providers = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, p) in raw.into_iter().enumerate() {
        let at = format!("providers[{i}]");
        if p.name().is_empty() {
            problems.push(Problem::new(format!("{at}.name"), "required"));
        }
        if !names.insert(p.name().to_string()) {
            problems.push(Problem::new(format!("{at}.name"), format!("{:?} is used by an earlier provider", p.name())));
        }
        let checked = match p {
            ProviderConfig::Static(s) => validate_static(s, &at, base, problems).map(ProviderSettings::Static),
            ProviderConfig::Ldap(l) => {
                warnings.extend(ldap::warnings(&l, &at));
                ldap::validate(l, &at, base, problems).map(ProviderSettings::Ldap)
            }
            ProviderConfig::Oidc(o) => {
                let urls = [
                    ("issuer", Some(&o.issuer)),
                    ("device_authorization_endpoint", o.device_authorization_endpoint.as_ref()),
                ];
                plain_http(&at, &urls, warnings);
                oidc::validate(o, &at, base, problems).map(ProviderSettings::Oidc)
            }
            ProviderConfig::Workload(w) => {
                plain_http(&at, &[("issuer", Some(&w.issuer)), ("jwks_url", w.jwks_url.as_ref())], warnings);
                workload::validate(w, &at, base, problems).map(ProviderSettings::Workload)
            }
        };
        providers.extend(checked);
    }
    providers
}

/// Warn about every plain-HTTP URL of an entry that points at another host.
fn plain_http(at: &str, urls: &[(&str, Option<&String>)], warnings: &mut Vec<String>) {
    for (key, url) in urls {
        if let Some(w) = url.and_then(|u| super::check::plain_http_warning(&format!("{at}.{key}"), u)) {
            warnings.push(w);
        }
    }
}

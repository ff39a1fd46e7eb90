//! The `type: ldap` provider entry (OpenLDAP, Active Directory): its keys, defaults and validation, and
//! the template syntax of its filters and DN templates.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::check::resolve;
use crate::support::time::parse_duration;

/// An `ldap` entry of `providers:`. See `providers/openldap.yaml` and `providers/active-directory.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// REQUIRED. Unique name; recorded in tokens and usable in rules (`provider:`).
    pub name: String,
    /// REQUIRED. `ldap://host:389` or `ldaps://host:636`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS before anything else is sent. Default: false.
    #[serde(default)]
    pub starttls: bool,
    /// PEM file of the CA certificates that may sign the server's certificate. Default: the system's trust
    /// store. Certificate checking is always on.
    pub ca_file: Option<PathBuf>,
    /// The service account's DN, for searches. Default: none (anonymous searches). Required when
    /// `bind_password_file` is set.
    pub bind_dn: Option<String>,
    /// A file holding the service account's password. Required when `bind_dn` is set.
    pub bind_password_file: Option<PathBuf>,
    /// Where users are searched (whole subtree). REQUIRED unless `user_dn_template` is set.
    pub user_base_dn: Option<String>,
    /// The user search filter; `{username}` is replaced by the escaped username.
    /// Default: `(uid={username})`.
    pub user_filter: Option<String>,
    /// Bind directly as this DN instead of searching first; `{username}` is replaced with RFC 4514
    /// escaping, e.g. `uid={username},ou=people,dc=example,dc=org`. Default: none (search, then bind).
    pub user_dn_template: Option<String>,
    /// The attribute holding the login name. It must equal the typed username (ignoring ASCII case) and
    /// becomes the identity's username. Default: `uid` (Active Directory: `sAMAccountName`).
    pub username_attribute: Option<String>,
    /// Users matching this filter are refused, and so are their refresh tokens. Default: none. Active
    /// Directory: `(userAccountControl:1.2.840.113556.1.4.803:=2)`.
    pub disabled_filter: Option<String>,
    /// Where group memberships come from. Default: the `memberOf` attribute.
    #[serde(default)]
    pub groups: GroupsConfig,
    /// Timeout for opening a connection (TCP and the TLS or StartTLS handshake). Default: 5s.
    pub connect_timeout: Option<String>,
    /// Timeout for each LDAP operation. Default: 5s.
    pub timeout: Option<String>,
    /// Most service-account connections open at once (and kept for reuse). Default: 4.
    pub pool_size: Option<usize>,
}

/// Where groups come from and how they are named.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupsConfig {
    /// `member_of` (an attribute of the user entry holding group DNs) or `search`. Default: `member_of`.
    #[serde(default)]
    pub from: GroupSource,
    /// The attribute read with `from: member_of`. Default: `memberOf`.
    pub member_of_attribute: Option<String>,
    /// Where groups are searched. REQUIRED with `from: search` or `nested: recursive`.
    pub base_dn: Option<String>,
    /// The group search filter; `{dn}` is the user's DN and `{username}` the login name, both escaped.
    /// Default: `(|(member={dn})(uniqueMember={dn})(memberUid={username}))` (groupOfNames,
    /// groupOfUniqueNames, posixGroup); with `nested: in_chain` `(member:1.2.840.113556.1.4.1941:={dn})`.
    pub filter: Option<String>,
    /// The attribute naming a group found by search (with `member_of`, the value of the group DN's first
    /// RDN is used: `cn=devs,ou=groups,…` is `devs`). Default: `cn`.
    pub name_attribute: Option<String>,
    /// Lower-case group names. Default: false.
    #[serde(default)]
    pub lowercase: bool,
    /// Put before every group name, e.g. `ldap-`. Default: none.
    #[serde(default)]
    pub prefix: String,
    /// Nested groups: `none`, `in_chain` (Active Directory's LDAP_MATCHING_RULE_IN_CHAIN, one search) or
    /// `recursive` (groups of groups, searched level by level). Default: `none`.
    #[serde(default)]
    pub nested: Nested,
    /// Most levels followed with `nested: recursive`. Default: 5.
    pub max_depth: Option<usize>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupSource {
    #[default]
    MemberOf,
    Search,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Nested {
    #[default]
    None,
    InChain,
    Recursive,
}

pub const DEFAULT_USER_FILTER: &str = "(uid={username})";
pub const DEFAULT_GROUP_FILTER: &str = "(|(member={dn})(uniqueMember={dn})(memberUid={username}))";
pub const IN_CHAIN_GROUP_FILTER: &str = "(member:1.2.840.113556.1.4.1941:={dn})";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

impl LdapConfig {
    /// Timeout for opening a connection, default applied (validation refused an unreadable one).
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout.as_deref().and_then(|s| parse_duration(s).ok()).unwrap_or(DEFAULT_TIMEOUT)
    }

    /// Timeout for each operation, default applied.
    pub fn op_timeout(&self) -> Duration {
        self.timeout.as_deref().and_then(|s| parse_duration(s).ok()).unwrap_or(DEFAULT_TIMEOUT)
    }
}

/// The placeholders a template uses, for validation.
pub fn placeholders(template: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(c) => {
                found.push(&after[..c]);
                rest = &after[c + 1..];
            }
            None => break,
        }
    }
    found
}

/// A cheap sanity check of a filter written in the config: balanced parentheses around the whole thing.
/// The server does the real parsing; this catches the typo that would otherwise fail every login.
pub fn looks_like_filter(f: &str) -> bool {
    let f = f.trim();
    if !(f.starts_with('(') && f.ends_with(')')) {
        return false;
    }
    let mut depth = 0i32;
    let mut escaped = false;
    for c in f.chars() {
        match c {
            '\\' if !escaped => {
                escaped = true;
                continue;
            }
            '(' if !escaped => depth += 1,
            ')' if !escaped => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => {}
        }
        escaped = false;
    }
    depth == 0
}

/// Check an `ldap` provider entry, resolving its paths against `base`. Every problem is pushed to
/// `errors` as `AT.key: what to fix`, `at` being e.g. `providers[1]`.
pub fn validate_config(cfg: &mut LdapConfig, at: &str, base: &Path, errors: &mut Vec<String>) {
    let mut err = |key: &str, msg: String| errors.push(format!("{at}.{key}: {msg}"));
    match cfg.url.split_once("://").map(|(s, _)| s.to_ascii_lowercase()) {
        Some(s) if s == "ldap" => {}
        Some(s) if s == "ldaps" => {
            if cfg.starttls {
                err("starttls", "cannot be combined with an ldaps:// url (it is TLS already)".into());
            }
        }
        _ => err("url", format!("{:?} must start with ldap:// or ldaps://", cfg.url)),
    }
    match (&cfg.bind_dn, &cfg.bind_password_file) {
        (Some(_), None) => err("bind_password_file", "required when bind_dn is set".into()),
        (None, Some(_)) => err("bind_dn", "required when bind_password_file is set".into()),
        _ => {}
    }
    let search_mode = cfg.user_dn_template.is_none();
    if search_mode && cfg.user_base_dn.as_deref().is_none_or(str::is_empty) {
        err("user_base_dn", "required (or set user_dn_template to bind without searching)".into());
    }
    if let Some(t) = &cfg.user_dn_template {
        if !placeholders(t).contains(&"username") {
            err("user_dn_template", format!("{t:?} must contain {{username}}"));
        }
    }
    let mut check_filter = |key: &str, f: &str, allowed: &[&str], required: Option<&str>| {
        if !looks_like_filter(f) {
            err(key, format!("{f:?} is not an LDAP filter: it must be in balanced parentheses"));
        }
        for p in placeholders(f) {
            if !allowed.contains(&p) {
                err(key, format!("{f:?}: unknown placeholder {{{p}}}; use {}", allowed.join(", ")));
            }
        }
        if let Some(r) = required {
            if !placeholders(f).contains(&r) {
                err(key, format!("{f:?} must contain {{{r}}}"));
            }
        }
    };
    if let Some(f) = &cfg.user_filter {
        check_filter("user_filter", f, &["username"], Some("username"));
    }
    if let Some(f) = &cfg.disabled_filter {
        check_filter("disabled_filter", f, &[], None);
    }
    if let Some(f) = &cfg.groups.filter {
        check_filter("groups.filter", f, &["dn", "username"], None);
    }
    let g = &cfg.groups;
    let needs_base = g.from == GroupSource::Search || g.nested == Nested::Recursive;
    if needs_base && g.base_dn.as_deref().is_none_or(str::is_empty) {
        err("groups.base_dn", "required with groups.from: search or groups.nested: recursive".into());
    }
    if g.nested == Nested::InChain && g.from != GroupSource::Search {
        err("groups.nested", "in_chain works through a group search: set groups.from: search".into());
    }
    if g.max_depth.is_some_and(|d| d == 0 || d > 20) {
        err("groups.max_depth", "must be between 1 and 20".into());
    }
    for (key, value) in [("connect_timeout", &cfg.connect_timeout), ("timeout", &cfg.timeout)] {
        match value.as_deref().map(parse_duration) {
            Some(Err(e)) => err(key, e.to_string()),
            Some(Ok(d)) if d.is_zero() || d > Duration::from_secs(300) => {
                err(key, "must be between 1ms and 300s".into())
            }
            _ => {}
        }
    }
    if cfg.pool_size.is_some_and(|n| n == 0 || n > 256) {
        err("pool_size", "must be between 1 and 256".into());
    }
    cfg.ca_file = cfg.ca_file.as_deref().map(|p| resolve(base, p));
    cfg.bind_password_file = cfg.bind_password_file.as_deref().map(|p| resolve(base, p));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> LdapConfig {
        serde_norway::from_str(yaml).unwrap()
    }

    fn errors_of(yaml: &str) -> Vec<String> {
        let mut cfg = parse(yaml);
        let mut errors = Vec::new();
        validate_config(&mut cfg, "providers[1]", Path::new("/etc/tollgate"), &mut errors);
        errors
    }

    #[test]
    fn a_minimal_search_config_is_valid_and_paths_resolve() {
        let mut cfg = parse(
            "{name: corp, url: 'ldaps://ldap.example.org', user_base_dn: 'ou=people,dc=example,dc=org', \
             bind_dn: 'cn=svc,dc=example,dc=org', bind_password_file: secrets/ldap, ca_file: /etc/ssl/ca.pem}",
        );
        let mut errors = Vec::new();
        validate_config(&mut cfg, "providers[0]", Path::new("/etc/tollgate"), &mut errors);
        assert_eq!(errors, Vec::<String>::new());
        assert_eq!(cfg.bind_password_file.as_deref(), Some(Path::new("/etc/tollgate/secrets/ldap")));
        assert_eq!(cfg.ca_file.as_deref(), Some(Path::new("/etc/ssl/ca.pem")));
    }

    #[test]
    fn every_mistake_is_reported_with_its_key() {
        let errors = errors_of(
            "{name: x, url: 'http://x', starttls: true, bind_password_file: p, user_filter: 'uid={user}', \
             groups: {from: member_of, nested: in_chain, max_depth: 0}, timeout: forever, pool_size: 0}",
        );
        let all = errors.join("\n");
        for want in [
            "providers[1].url: \"http://x\" must start with ldap:// or ldaps://",
            "providers[1].bind_dn: required when bind_password_file is set",
            "providers[1].user_base_dn: required",
            "providers[1].user_filter: \"uid={user}\" is not an LDAP filter",
            "providers[1].user_filter: \"uid={user}\": unknown placeholder {user}",
            "providers[1].user_filter: \"uid={user}\" must contain {username}",
            "providers[1].groups.nested: in_chain works through a group search",
            "providers[1].groups.max_depth: must be between 1 and 20",
            "providers[1].timeout: \"forever\" is not a duration",
            "providers[1].pool_size: must be between 1 and 256",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
        let errors =
            errors_of("{name: x, url: 'ldaps://x', starttls: true, user_dn_template: 'uid=x,dc=y', bind_dn: d}");
        let all = errors.join("\n");
        assert!(all.contains("providers[1].starttls: cannot be combined with an ldaps:// url"), "{all}");
        assert!(all.contains("providers[1].user_dn_template: \"uid=x,dc=y\" must contain {username}"), "{all}");
        assert!(all.contains("providers[1].bind_password_file: required when bind_dn is set"), "{all}");
        let errors = errors_of("{name: x, url: 'ldap://x', user_base_dn: b, groups: {from: search}}");
        assert!(errors.iter().any(|e| e.contains("providers[1].groups.base_dn: required")), "{errors:?}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = serde_norway::from_str::<LdapConfig>("{name: x, url: 'ldap://x', bind_password: hunter2}").unwrap_err();
        assert!(e.to_string().contains("unknown field `bind_password`"), "{e}");
    }

    #[test]
    fn filters_must_be_parenthesised_and_balanced() {
        assert!(looks_like_filter("(uid={username})"));
        assert!(looks_like_filter(r"(&(cn=a\29b)(x=y))"));
        assert!(!looks_like_filter("uid={username}"));
        assert!(!looks_like_filter("(&(uid=x)"));
        assert!(!looks_like_filter("(a=b))("));
    }

    /// The shipped examples parse and validate, so the README never points at a broken file.
    #[test]
    fn the_example_provider_files_are_valid() {
        for (file, text) in [
            ("providers/openldap.yaml", include_str!("../../providers/openldap.yaml")),
            ("providers/active-directory.yaml", include_str!("../../providers/active-directory.yaml")),
        ] {
            #[derive(serde::Deserialize)]
            struct File {
                providers: Vec<crate::config::ProviderConfig>,
            }
            let parsed: File = serde_norway::from_str(text).unwrap_or_else(|e| panic!("{file}: {e}"));
            for p in parsed.providers {
                let crate::config::ProviderConfig::Ldap(mut cfg) = p else { panic!("{file}: not an ldap provider") };
                let mut errors = Vec::new();
                validate_config(&mut cfg, file, std::path::Path::new("/etc/tollgate"), &mut errors);
                assert_eq!(errors, Vec::<String>::new(), "{file}");
            }
        }
    }
}

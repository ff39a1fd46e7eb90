//! The `type: ldap` provider entry (OpenLDAP, Active Directory): its keys, defaults and validation, and
//! the template syntax of its filters and DN templates.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::check::resolve;
use super::problem::Problem;
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
    /// The attribute whose value becomes the identity's username: the token's subject, what rules match
    /// with `username:`, what a refresh token is bound to. Default: `uid` (Active Directory: `sAMAccountName`).
    pub username_attribute: Option<String>,
    /// The attributes a user may type as the login name: the typed name must equal a value of one of them
    /// (ignoring ASCII case), and `user_filter` must find the entry by each. Whichever was typed, the
    /// username is `username_attribute`'s value. Must include `username_attribute` (refresh tokens look the
    /// user up by it). Default: `[username_attribute]`. Active Directory with both logon names:
    /// `[sAMAccountName, userPrincipalName]`.
    pub login_attributes: Option<Vec<String>>,
    /// Users matching this filter are refused, and so are their refresh tokens. Default: none. Active
    /// Directory: `(userAccountControl:1.2.840.113556.1.4.803:=2)`. Independently of it, the account-state
    /// attributes of Active Directory and OpenLDAP's ppolicy are always read and honoured (expired, locked
    /// out, password expired, must change password; see `identity::ldap::state`).
    pub disabled_filter: Option<String>,
    /// Where group memberships come from. Default: the `memberOf` attribute.
    #[serde(default)]
    pub groups: GroupsConfig,
    /// Timeout for opening a connection (TCP and the TLS or StartTLS handshake). Default: 5s.
    #[serde(default, deserialize_with = "super::check::duration")]
    pub connect_timeout: Option<String>,
    /// Timeout for each LDAP operation. Default: 5s.
    #[serde(default, deserialize_with = "super::check::duration")]
    pub timeout: Option<String>,
    /// Most service-account connections open at once (and kept for reuse). Default: 4.
    pub pool_size: Option<usize>,
    /// Watching the directory for changes (content synchronisation, AD change polling), so a change at the
    /// source reaches cached identities within seconds. Default: `mode: auto`.
    #[serde(default)]
    pub watch: WatchConfig,
}

/// The `watch:` subsection of an `ldap` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// `auto` (ask the root DSE: content synchronisation where offered, else Active Directory's uSNChanged
    /// polling, else nothing), `syncrepl` (RFC 4533 refreshAndPersist; OpenLDAP with the syncprov overlay),
    /// `ad_notify` (Active Directory's change notification control, with uSNChanged catch-up), `usn_poll`
    /// (Active Directory: search `uSNChanged` above the last seen every `poll_interval`) or `off`.
    /// Default: `auto`.
    #[serde(default)]
    pub mode: WatchMode,
    /// How often `usn_poll` asks. Default: 1s.
    #[serde(default, deserialize_with = "super::check::duration")]
    pub poll_interval: Option<String>,
    /// How long the watcher may be unable to see changes (disconnected, refused) before the provider is
    /// degraded: logged, counted in `tollgate_ldap_watch_degraded`, and its identities fresh for
    /// `degraded_ttl` only. Default: 10s.
    #[serde(default, deserialize_with = "super::check::duration")]
    pub degraded_after: Option<String>,
    /// How long identities from a degraded provider stay fresh in the identity cache (never longer than
    /// `identity_cache.ttl`). Default: 10s.
    #[serde(default, deserialize_with = "super::check::duration")]
    pub degraded_ttl: Option<String>,
}

/// How a directory is watched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchMode {
    #[default]
    Auto,
    Syncrepl,
    AdNotify,
    UsnPoll,
    Off,
}

impl WatchMode {
    pub fn as_str(self) -> &'static str {
        match self {
            WatchMode::Auto => "auto",
            WatchMode::Syncrepl => "syncrepl",
            WatchMode::AdNotify => "ad_notify",
            WatchMode::UsnPoll => "usn_poll",
            WatchMode::Off => "off",
        }
    }
}

/// `watch:` checked, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSettings {
    pub mode: WatchMode,
    pub poll_interval: Duration,
    pub degraded_after: Duration,
    pub degraded_ttl: Duration,
}

impl Default for WatchSettings {
    fn default() -> Self {
        WatchSettings {
            mode: WatchMode::Auto,
            poll_interval: Duration::from_secs(1),
            degraded_after: Duration::from_secs(10),
            degraded_ttl: Duration::from_secs(10),
        }
    }
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
    /// Where groups are searched. REQUIRED with `from: search` or `nested: recursive`. With `member_of`,
    /// only groups at or below it count, so a same-named group elsewhere (another OU, `CN=Builtin`) grants
    /// nothing; without it every group counts and `check-config` warns.
    pub base_dn: Option<String>,
    /// The group search filter; `{dn}` is the user's DN and `{username}` the login name, both escaped.
    /// Default: `(|(member={dn})(uniqueMember={dn})(memberUid={username}))` (groupOfNames,
    /// groupOfUniqueNames, posixGroup); with `nested: in_chain` `(member:1.2.840.113556.1.4.1941:={dn})`.
    pub filter: Option<String>,
    /// The attribute naming a group found by search (with `member_of`, the value of the group DN's first
    /// RDN is used: `cn=devs,ou=groups,…` is `devs`). Default: `cn`. Active Directory: `sAMAccountName`,
    /// unique in the domain where a CN is unique only within its OU. Two groups of one user that end up
    /// with the same name both count for nothing (and a warning is logged).
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

/// An `ldap` entry checked, with its paths resolved and its defaults applied: what
/// `identity::ldap::LdapProvider::new` takes.
#[derive(Debug, Clone)]
pub struct LdapSettings {
    pub name: String,
    pub url: String,
    pub starttls: bool,
    pub ca_file: Option<PathBuf>,
    pub bind_dn: Option<String>,
    pub bind_password_file: Option<PathBuf>,
    pub user_base_dn: Option<String>,
    pub user_filter: String,
    pub user_dn_template: Option<String>,
    pub username_attribute: String,
    /// Always includes `username_attribute`.
    pub login_attributes: Vec<String>,
    pub disabled_filter: Option<String>,
    pub groups: LdapGroups,
    pub connect_timeout: Duration,
    /// Timeout for each operation.
    pub timeout: Duration,
    pub pool_size: usize,
    pub watch: WatchSettings,
}

/// The `groups:` of an `ldap` entry, defaults applied.
#[derive(Debug, Clone)]
pub struct LdapGroups {
    pub from: GroupSource,
    pub member_of_attribute: String,
    pub base_dn: Option<String>,
    pub filter: String,
    pub name_attribute: String,
    pub lowercase: bool,
    pub prefix: String,
    pub nested: Nested,
    pub max_depth: usize,
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

/// An LDAP attribute description as a config may name one: letters, digits and `-` (or a numeric OID).
fn is_attribute_name(a: &str) -> bool {
    !a.is_empty() && a.len() <= 100 && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// The attributes `filter` compares with `{username}` (`(sAMAccountName={username})` gives
/// `sAMAccountName`), lower-cased.
pub fn username_attributes_in(filter: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (i, _) in filter.match_indices("={username}") {
        let before = &filter[..i];
        let name = before.rsplit(['(', '&', '|', '!']).next().unwrap_or("");
        // `attr:=` (extensible match) and `attr~=`/`attr>=`: the name stops at the first of these.
        let name = name.split([':', '~', '>', '<']).next().unwrap_or("").trim();
        if !name.is_empty() {
            found.push(name.to_ascii_lowercase());
        }
    }
    found
}

/// What works but should not be left so, for `check-config`: the entry at `at` (e.g. `providers[1]`).
pub fn warnings(cfg: &LdapConfig, at: &str) -> Vec<String> {
    let mut out = Vec::new();
    let g = &cfg.groups;
    if g.from == GroupSource::MemberOf && g.base_dn.as_deref().is_none_or(str::is_empty) {
        out.push(format!(
            "{at}.groups.base_dn: not set, so with groups.from: member_of every group the user is in counts, \
             named by its CN alone: a same-named group in another OU (or BUILTIN\\Guests) grants what the \
             rules give that name. Set groups.base_dn to the OU of the groups your rules name"
        ));
    }
    if cfg.disabled_filter.as_deref().is_some_and(|f| f.to_ascii_lowercase().contains("pwdaccountlockedtime")) {
        out.push(format!(
            "{at}.disabled_filter: names pwdAccountLockedTime, so a user the password policy locked once is \
             never asked for a password again: slapd clears a lock that has run its pwdLockoutDuration only on \
             a successful bind, which tollgate would then never make. Leave locks out of disabled_filter: the \
             directory refuses a locked account's bind itself, and refresh tokens already read the attribute"
        ));
    }
    if cfg.user_dn_template.is_none() {
        let filter = cfg.user_filter.as_deref().unwrap_or(DEFAULT_USER_FILTER);
        let username_attribute = cfg.username_attribute.clone().unwrap_or_else(|| "uid".into());
        let login = cfg.login_attributes.clone().unwrap_or_else(|| vec![username_attribute]);
        for a in username_attributes_in(filter) {
            if !login.iter().any(|l| l.eq_ignore_ascii_case(&a)) {
                out.push(format!(
                    "{at}.user_filter: finds users by {a}, but a name typed in that form is refused because \
                     {a} is not in login_attributes ({}): add it there",
                    login.join(", ")
                ));
            }
        }
    }
    out
}

/// Check an `ldap` provider entry, resolving its paths against `base`. Every problem is pushed as a
/// problem of `AT.key`, `at` being e.g. `providers[1]`; the settings are returned when there was none.
pub fn validate(cfg: LdapConfig, at: &str, base: &Path, errors: &mut Vec<Problem>) -> Option<LdapSettings> {
    let before = errors.len();
    let mut err = |key: &str, msg: String| errors.push(Problem::new(format!("{at}.{key}"), msg));
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
    if let Some(list) = &cfg.login_attributes {
        let username_attribute = cfg.username_attribute.as_deref().unwrap_or("uid");
        if list.is_empty() {
            err("login_attributes", "must name at least one attribute (or be left out)".into());
        } else if !list.iter().any(|a| a.eq_ignore_ascii_case(username_attribute)) {
            err(
                "login_attributes",
                format!(
                    "must include username_attribute {username_attribute:?} (refresh tokens look the user up by it)"
                ),
            );
        }
        for a in list {
            if !is_attribute_name(a) {
                err("login_attributes", format!("{a:?} is not an attribute name"));
            }
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
    let mut timeouts = [DEFAULT_TIMEOUT; 2];
    for (t, (key, value)) in
        [("connect_timeout", &cfg.connect_timeout), ("timeout", &cfg.timeout)].into_iter().enumerate()
    {
        match value.as_deref().map(parse_duration) {
            Some(Err(e)) => err(key, e.to_string()),
            Some(Ok(d)) if d.is_zero() || d > Duration::from_secs(300) => {
                err(key, "must be between 1ms and 300s".into())
            }
            Some(Ok(d)) => timeouts[t] = d,
            None => {}
        }
    }
    if cfg.pool_size.is_some_and(|n| n == 0 || n > 256) {
        err("pool_size", "must be between 1 and 256".into());
    }
    let mut watch = WatchSettings { mode: cfg.watch.mode, ..WatchSettings::default() };
    for (key, value, slot, min) in [
        ("watch.poll_interval", &cfg.watch.poll_interval, &mut watch.poll_interval, "100ms"),
        ("watch.degraded_after", &cfg.watch.degraded_after, &mut watch.degraded_after, "1s"),
        ("watch.degraded_ttl", &cfg.watch.degraded_ttl, &mut watch.degraded_ttl, "1s"),
    ] {
        let least = if min == "100ms" { Duration::from_millis(100) } else { Duration::from_secs(1) };
        match value.as_deref().map(parse_duration) {
            Some(Err(e)) => err(key, e.to_string()),
            Some(Ok(d)) if d < least || d > Duration::from_secs(3600) => {
                err(key, format!("must be between {min} and 1h"))
            }
            Some(Ok(d)) => *slot = d,
            None => {}
        }
    }
    if errors.len() > before {
        return None;
    }
    let username_attribute = cfg.username_attribute.unwrap_or_else(|| "uid".to_string());
    let mut login_attributes = cfg.login_attributes.unwrap_or_default();
    if !login_attributes.iter().any(|a| a.eq_ignore_ascii_case(&username_attribute)) {
        login_attributes.insert(0, username_attribute.clone());
    }
    let g = cfg.groups;
    let filter = g.filter.unwrap_or_else(|| {
        if g.nested == Nested::InChain { IN_CHAIN_GROUP_FILTER } else { DEFAULT_GROUP_FILTER }.to_string()
    });
    let groups = LdapGroups {
        from: g.from,
        member_of_attribute: g.member_of_attribute.unwrap_or_else(|| "memberOf".into()),
        base_dn: g.base_dn,
        filter,
        name_attribute: g.name_attribute.unwrap_or_else(|| "cn".into()),
        lowercase: g.lowercase,
        prefix: g.prefix,
        nested: g.nested,
        max_depth: g.max_depth.unwrap_or(5),
    };
    let [connect_timeout, timeout] = timeouts;
    Some(LdapSettings {
        name: cfg.name,
        url: cfg.url,
        starttls: cfg.starttls,
        ca_file: cfg.ca_file.as_deref().map(|p| resolve(base, p)),
        bind_dn: cfg.bind_dn,
        bind_password_file: cfg.bind_password_file.as_deref().map(|p| resolve(base, p)),
        user_base_dn: cfg.user_base_dn,
        user_filter: cfg.user_filter.unwrap_or_else(|| DEFAULT_USER_FILTER.into()),
        user_dn_template: cfg.user_dn_template,
        username_attribute,
        login_attributes,
        disabled_filter: cfg.disabled_filter,
        groups,
        connect_timeout,
        timeout,
        pool_size: cfg.pool_size.unwrap_or(4),
        watch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> LdapConfig {
        serde_norway::from_str(yaml).unwrap()
    }

    fn errors_of(yaml: &str) -> Vec<String> {
        let cfg = parse(yaml);
        let mut errors = Vec::new();
        validate(cfg, "providers[1]", Path::new("/etc/tollgate"), &mut errors);
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_minimal_search_config_is_valid_and_paths_resolve() {
        let cfg = parse(
            "{name: corp, url: 'ldaps://ldap.example.org', user_base_dn: 'ou=people,dc=example,dc=org', \
             bind_dn: 'cn=svc,dc=example,dc=org', bind_password_file: secrets/ldap, ca_file: /etc/ssl/ca.pem}",
        );
        let mut errors = Vec::new();
        let cfg = validate(cfg, "providers[0]", Path::new("/etc/tollgate"), &mut errors);
        assert_eq!(errors, Vec::<Problem>::new());
        let cfg = cfg.unwrap();
        assert_eq!(cfg.bind_password_file.as_deref(), Some(Path::new("/etc/tollgate/secrets/ldap")));
        assert_eq!(cfg.ca_file.as_deref(), Some(Path::new("/etc/ssl/ca.pem")));
    }

    /// The shipped OpenLDAP example must not lock anyone out for good, and a config that names ppolicy's
    /// lock attribute in disabled_filter is warned about.
    #[test]
    fn a_ppolicy_lock_in_disabled_filter_is_warned_about_and_the_example_has_none() {
        let example: serde_norway::Value =
            serde_norway::from_str(include_str!("../../providers/openldap.yaml")).unwrap();
        let entry: LdapConfig = serde_norway::from_value(
            serde_norway::from_value::<serde_norway::Mapping>(example["providers"][0].clone())
                .map(|mut m| {
                    m.remove("type");
                    serde_norway::Value::Mapping(m)
                })
                .unwrap(),
        )
        .unwrap();
        assert!(warnings(&entry, "providers[0]").iter().all(|w| !w.contains("disabled_filter")));
        // One directory across the examples: the compose deployment's LDAP has the example's DNs.
        let compose: serde_norway::Value =
            serde_norway::from_str(include_str!("../../compose/tollgate/tollgate.full.yaml")).unwrap();
        let ldap = compose["providers"].as_sequence().unwrap().iter().find(|p| p["type"] == "ldap").unwrap();
        assert_eq!(ldap["bind_dn"].as_str(), entry.bind_dn.as_deref());
        assert_eq!(ldap["user_base_dn"].as_str(), entry.user_base_dn.as_deref());
        assert_eq!(ldap["groups"]["base_dn"].as_str(), entry.groups.base_dn.as_deref());
        let locking = parse("{name: x, url: 'ldap://x', user_base_dn: 'dc=x', disabled_filter: '(|(pwdAccountLockedTime=*)(employeeType=disabled))'}");
        let w = warnings(&locking, "providers[0]");
        assert!(w.iter().any(|w| w.starts_with("providers[0].disabled_filter: names pwdAccountLockedTime")), "{w:?}");
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
    fn login_attributes_must_include_the_username_attribute() {
        let errors = errors_of(
            "{name: x, url: 'ldaps://x', user_base_dn: b, username_attribute: sAMAccountName, \
             login_attributes: [userPrincipalName, 'bad attr']}",
        );
        let all = errors.join("\n");
        assert!(
            all.contains("providers[1].login_attributes: must include username_attribute \"sAMAccountName\""),
            "{all}"
        );
        assert!(all.contains("providers[1].login_attributes: \"bad attr\" is not an attribute name"), "{all}");
        assert!(
            errors_of("{name: x, url: 'ldaps://x', user_base_dn: b, login_attributes: []}")[0].contains("at least one")
        );
        let ok = "{name: x, url: 'ldaps://x', user_base_dn: b, username_attribute: sAMAccountName, \
                  login_attributes: [samaccountname, userPrincipalName]}";
        assert_eq!(errors_of(ok), Vec::<String>::new());
    }

    #[test]
    fn check_config_warns_about_ambiguous_groups_and_filters_that_find_unlisted_forms() {
        let w = |yaml: &str| warnings(&parse(yaml), "providers[0]").join("\n");
        // member_of without a base: every group counts, by CN.
        let all = w("{name: ad, url: 'ldaps://x', user_base_dn: b}");
        assert!(all.contains("providers[0].groups.base_dn: not set, so with groups.from: member_of"), "{all}");
        assert_eq!(w("{name: ad, url: 'ldaps://x', user_base_dn: b, groups: {base_dn: 'OU=Groups,DC=x'}}"), "");
        assert_eq!(w("{name: ad, url: 'ldaps://x', user_base_dn: b, groups: {from: search, base_dn: 'DC=x'}}"), "");
        // A filter accepting both logon names, with only one of them listed: the other form is refused.
        let both = "(&(objectClass=user)(|(sAMAccountName={username})(userPrincipalName={username})))";
        let all = w(&format!(
            "{{name: ad, url: 'ldaps://x', user_base_dn: b, username_attribute: sAMAccountName, user_filter: '{both}', \
             groups: {{base_dn: g}}}}"
        ));
        assert!(all.contains("providers[0].user_filter: finds users by userprincipalname"), "{all}");
        let listed = format!(
            "{{name: ad, url: 'ldaps://x', user_base_dn: b, username_attribute: sAMAccountName, user_filter: '{both}', \
             login_attributes: [sAMAccountName, userPrincipalName], groups: {{base_dn: g}}}}"
        );
        assert_eq!(w(&listed), "");
        assert_eq!(username_attributes_in(both), ["samaccountname", "userprincipalname"]);
        assert_eq!(username_attributes_in("(uid:caseExactMatch:={username})"), ["uid"]);
    }

    #[test]
    fn watch_settings_have_defaults_and_bounds() {
        let cfg = parse("{name: x, url: 'ldap://x', user_base_dn: b}");
        let mut errors = Vec::new();
        let s = validate(cfg, "providers[0]", Path::new(""), &mut errors).unwrap();
        assert_eq!(s.watch, WatchSettings::default());
        assert_eq!((s.watch.mode, s.watch.poll_interval), (WatchMode::Auto, Duration::from_secs(1)));
        let cfg = parse("{name: x, url: 'ldap://x', user_base_dn: b, watch: {mode: usn_poll, poll_interval: 250ms, degraded_ttl: 30s}}");
        let s = validate(cfg, "providers[0]", Path::new(""), &mut errors).unwrap();
        assert_eq!(s.watch.mode, WatchMode::UsnPoll);
        assert_eq!(
            (s.watch.poll_interval, s.watch.degraded_ttl),
            (Duration::from_millis(250), Duration::from_secs(30))
        );
        let all = errors_of(
            "{name: x, url: 'ldap://x', user_base_dn: b, watch: {poll_interval: 1ms, degraded_after: 2h, degraded_ttl: soon}}",
        )
        .join("\n");
        for want in [
            "providers[1].watch.poll_interval: must be between 100ms and 1h",
            "providers[1].watch.degraded_after: must be between 1s and 1h",
            "providers[1].watch.degraded_ttl: \"soon\" is not a duration",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
        let e =
            serde_norway::from_str::<LdapConfig>("{name: x, url: 'ldap://x', watch: {mode: sometimes}}").unwrap_err();
        assert!(e.to_string().contains("unknown variant `sometimes`"), "{e}");
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
                let crate::config::ProviderConfig::Ldap(cfg) = p else { panic!("{file}: not an ldap provider") };
                let mut errors = Vec::new();
                validate(cfg, file, std::path::Path::new("/etc/tollgate"), &mut errors);
                assert_eq!(errors, Vec::<Problem>::new(), "{file}");
            }
        }
    }
}

//! The LDAP / Active Directory provider.
//!
//! A login is: refuse an empty password before anything is sent (many servers treat a DN with an empty
//! password as a successful anonymous bind); find the user with the service account through an escaped
//! filter (or build the DN from a template with RFC 4514 escaping); bind as that DN with the password on a
//! connection of its own; read the groups (`memberOf`, or a group search, optionally nested). The entry's
//! login attribute must equal the typed username (ignoring ASCII case), so a username the directory
//! normalises (a leading space) or that a careless filter template widens can never become someone else.
//!
//! A refresh token comes back through [`LdapProvider::recheck`], which re-reads the user and the groups
//! with the service account: a deleted user, one matching `disabled_filter`, or one whose account-state
//! attributes say expired, locked out or must change password ([`state`]) is gone. The same attributes are
//! checked after every successful bind, and a refused bind is explained by Active Directory's sub-code.
//!
//! Group names must mean one group each: with `member_of`, only groups under `groups.base_dn` count, and a
//! name that two of a user's groups would share counts for neither.
//!
//! The identity cache in front of this provider ([`crate::identity::cache`]) is what makes repeated token
//! requests free; this module makes the cold path cheap: pooled service connections, one search, one bind
//! and the group look-up.

mod check;
pub mod pool;
pub mod state;
pub mod text;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ldap3::{LdapConnSettings, LdapError, Scope, SearchEntry, SearchOptions};
use secrecy::{ExposeSecret as _, SecretString};

use self::pool::{Connector, Op, OpCounters, Pool};
use self::text::{fill, first_rdn_value, is_under, normalized_rdns, Escape};
use super::{Failure, Identity, Outcome, Provider};
use crate::config::ldap::{GroupSource, LdapSettings, Nested};
use crate::support::BoxFuture;

/// The service account's DN and password.
pub(crate) type ServiceAccount = Option<(String, SecretString)>;

/// How to reach the directory of `cfg`: the connector (TLS, timeouts) and the service account, whose password
/// is read from its file now. Shared by the provider's pools and the change watcher ([`watch`]).
pub(crate) fn connection(
    cfg: &LdapSettings,
    counters: Arc<OpCounters>,
) -> Result<(Arc<Connector>, ServiceAccount), Vec<String>> {
    let at = format!("provider {:?}", cfg.name);
    let service = match (&cfg.bind_dn, &cfg.bind_password_file) {
        (Some(dn), Some(file)) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| vec![format!("{at}: bind_password_file {}: {e}", file.display())])?;
            // A trailing newline is what `echo secret > file` leaves; it is never part of the password.
            let password = text.trim_end_matches(['\r', '\n']).to_string();
            if password.is_empty() {
                return Err(vec![format!("{at}: bind_password_file {} is empty", file.display())]);
            }
            Some((dn.clone(), SecretString::from(password)))
        }
        _ => None,
    };
    let needs_tls = cfg.starttls || cfg.url.to_ascii_lowercase().starts_with("ldaps://");
    let mut settings = LdapConnSettings::new().set_conn_timeout(cfg.connect_timeout).set_starttls(cfg.starttls);
    if needs_tls {
        settings =
            settings.set_config(pool::tls_config(cfg.ca_file.as_deref()).map_err(|e| vec![format!("{at}: {e}")])?);
    }
    let connector = Arc::new(Connector {
        url: cfg.url.clone(),
        settings,
        op_timeout: cfg.timeout,
        counters,
        provider: cfg.name.clone(),
    });
    Ok((connector, service))
}

/// The provider.
pub struct LdapProvider {
    name: String,
    cfg: LdapSettings,
    user_filter: String,
    username_attribute: String,
    /// The attributes a typed login name may match (always including `username_attribute`).
    login_attributes: Vec<String>,
    member_of_attribute: String,
    group_name_attribute: String,
    group_filter: String,
    max_depth: usize,
    /// Service-account connections: searches.
    service: Pool,
    /// Connections for checking user passwords.
    binds: Pool,
    counters: Arc<OpCounters>,
}

/// A user entry as found in the directory.
struct UserEntry {
    dn: String,
    username: String,
    /// Group DNs from the member-of attribute (empty unless that strategy is used).
    member_of: Vec<String>,
    /// The account-state attributes the entry has ([`state::ATTRIBUTES`]), judged by [`UserEntry::refusal`].
    state: std::collections::HashMap<String, Vec<String>>,
}

impl UserEntry {
    /// Why the account's state says it may not be used now, if it does ([`state::refusal`]).
    fn refusal(&self, moment: state::Moment) -> Option<String> {
        state::refusal(&self.state, crate::support::time::unix_now() as i64, moment)
    }
}

/// Which name a user entry must carry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lookup {
    /// A typed login name: any of `login_attributes`.
    Login,
    /// A username vouched for earlier (a refresh token's subject): `username_attribute` only.
    Username,
}

impl From<LdapError> for Failure {
    fn from(e: LdapError) -> Self {
        Failure::Unavailable(describe(&e))
    }
}

/// An LDAP error for the log: never contains a password (ldap3 does not echo bind credentials).
fn describe(e: &LdapError) -> String {
    match e {
        LdapError::LdapResult { result } => {
            format!("the directory answered rc={} {}", result.rc, result.text.trim()).trim_end().to_string()
        }
        other => other.to_string(),
    }
}

fn attr<'a>(entry: &'a SearchEntry, name: &str) -> &'a [String] {
    entry.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice()).unwrap_or(&[])
}

impl LdapProvider {
    /// Build from a validated config: reads the service password file and the CA file. No connection is
    /// opened yet, so tollgate starts even when the directory is down.
    pub fn new(cfg: &LdapSettings) -> Result<LdapProvider, Vec<String>> {
        let counters = Arc::new(OpCounters::default());
        let (connector, service) = connection(cfg, counters.clone())?;
        let size = cfg.pool_size;
        let g = &cfg.groups;
        let group_filter = g.filter.clone();
        for op in ["search", "bind"] {
            metrics::counter!("tollgate_ldap_operations_total", "provider" => cfg.name.clone(), "op" => op)
                .increment(0);
        }
        let username_attribute = cfg.username_attribute.clone();
        let mut login_attributes = cfg.login_attributes.clone();
        if !login_attributes.iter().any(|a| a.eq_ignore_ascii_case(&username_attribute)) {
            login_attributes.insert(0, username_attribute.clone());
        }
        Ok(LdapProvider {
            name: cfg.name.clone(),
            user_filter: cfg.user_filter.clone(),
            username_attribute,
            login_attributes,
            member_of_attribute: g.member_of_attribute.clone(),
            group_name_attribute: g.name_attribute.clone(),
            group_filter,
            max_depth: g.max_depth,
            service: Pool::new(connector.clone(), service, size),
            binds: Pool::new(connector, None, size),
            counters,
            cfg: cfg.clone(),
        })
    }

    /// LDAP operations sent so far, for tests and the benchmark.
    pub fn counters(&self) -> Arc<OpCounters> {
        self.counters.clone()
    }

    fn op_timeout(&self) -> Duration {
        self.service.connector().op_timeout
    }

    /// Attributes read from a user entry: its names, its groups (with `member_of`) and its state.
    fn user_attrs(&self) -> Vec<&str> {
        let mut attrs: Vec<&str> = self.login_attributes.iter().map(String::as_str).collect();
        if self.cfg.groups.from == GroupSource::MemberOf {
            attrs.push(self.member_of_attribute.as_str());
        }
        attrs.extend(state::ATTRIBUTES);
        attrs
    }

    /// `filter` with the disabled filter excluded, so disabled users are never found.
    fn enabled_only(&self, filter: String) -> String {
        match &self.cfg.disabled_filter {
            Some(d) => format!("(&{filter}(!{d}))"),
            None => filter,
        }
    }

    /// A search with the service account, retried once on a fresh connection when a pooled one turns out
    /// to be broken (the directory restarted since it was opened).
    async fn service_search(
        &self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
        size_limit: i32,
    ) -> Result<Vec<SearchEntry>, Failure> {
        let mut force_fresh = false;
        loop {
            let mut conn = self.service.take(force_fresh).await?;
            self.service.connector().count(Op::Search);
            let result = conn
                .ldap
                .with_search_options(SearchOptions::new().sizelimit(size_limit))
                .with_timeout(self.op_timeout())
                .search(base, scope, filter, attrs.to_vec())
                .await;
            match result {
                Ok(res) => {
                    self.service.put(conn);
                    return match res.1.rc {
                        0 => Ok(res.0.into_iter().map(SearchEntry::construct).collect()),
                        // noSuchObject: the base does not exist, so nothing under it does either. invalidDNSyntax:
                        // a DN built from a username the server cannot parse names nobody.
                        32 | 34 => Ok(Vec::new()),
                        // sizeLimitExceeded: more entries than asked for; the caller treats that as ambiguous.
                        4 => Ok(res.0.into_iter().map(SearchEntry::construct).collect()),
                        _ => Err(Failure::Unavailable(describe(&LdapError::from(res.1)))),
                    };
                }
                Err(e) if !conn.fresh && pool::is_connection_error(&e) => {
                    tracing::debug!(provider = %self.name, error = %e, "pooled LDAP connection broken; reconnecting");
                    force_fresh = true;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Find the user with the service account. None: no such (enabled) user.
    async fn find_user(&self, username: &str, lookup: Lookup) -> Result<Option<UserEntry>, Failure> {
        let (base, scope, filter) = match &self.cfg.user_dn_template {
            Some(t) => (fill(t, &[("username", username)], Escape::Dn), Scope::Base, "(objectClass=*)".to_string()),
            None => (
                self.cfg.user_base_dn.clone().unwrap_or_default(),
                Scope::Subtree,
                fill(&self.user_filter, &[("username", username)], Escape::Filter),
            ),
        };
        let filter = self.enabled_only(filter);
        let entries = self.service_search(&base, scope, &filter, &self.user_attrs(), 2).await?;
        match entries.len() {
            0 => Ok(None),
            1 => Ok(entries.into_iter().next().and_then(|e| self.user_entry(e, username, lookup))),
            n => Err(Failure::Refused(format!("{n} or more directory entries match the username; check user_filter"))),
        }
    }

    /// Turn a directory entry into a user, if one of its login names (for [`Lookup::Login`], any of
    /// `login_attributes`; otherwise `username_attribute`) is the typed name. The username is always
    /// `username_attribute`'s value, whichever name was typed.
    fn user_entry(&self, entry: SearchEntry, typed: &str, lookup: Lookup) -> Option<UserEntry> {
        let names = attr(&entry, &self.username_attribute);
        let Some(first) = names.first() else {
            tracing::warn!(provider = %self.name, attribute = %self.username_attribute,
                "user entry has no such attribute; check username_attribute");
            return None;
        };
        let username = match names.iter().find(|n| n.eq_ignore_ascii_case(typed)) {
            Some(n) => n.clone(),
            None if lookup == Lookup::Login
                && self
                    .login_attributes
                    .iter()
                    .any(|a| attr(&entry, a).iter().any(|v| v.eq_ignore_ascii_case(typed))) =>
            {
                first.clone()
            }
            None => {
                // The filter found this entry for the typed name, yet none of the login names is that name: a
                // form of the name that login_attributes does not list (check-config warns), or a name the
                // directory normalised (` alice`), which must never become someone else.
                tracing::info!(provider = %self.name, dn = %entry.dn, attributes = %self.login_attributes.join(","),
                    "the user filter found an entry whose login names differ from the typed name; refused \
                     (add the attribute holding that form to login_attributes if it is one)");
                return None;
            }
        };
        let state: std::collections::HashMap<String, Vec<String>> = state::ATTRIBUTES
            .iter()
            .map(|a| (a.to_string(), attr(&entry, a).to_vec()))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        Some(UserEntry { username, member_of: attr(&entry, &self.member_of_attribute).to_vec(), state, dn: entry.dn })
    }

    /// Bind as `dn` with the password on a connection used only for that. Ok(Some(entry)) in the direct-
    /// bind mode, where the entry is read as the user on the same connection.
    async fn bind_as(&self, dn: &str, password: &SecretString, typed: &str) -> Result<Option<UserEntry>, Failure> {
        let mut force_fresh = false;
        loop {
            let mut conn = self.binds.take(force_fresh).await?;
            self.binds.connector().count(Op::UserBind);
            let bound = conn.ldap.with_timeout(self.op_timeout()).simple_bind(dn, password.expose_secret()).await;
            let result = match bound {
                Err(e) if !conn.fresh && pool::is_connection_error(&e) => {
                    force_fresh = true;
                    continue;
                }
                Err(e) => return Err(e.into()),
                Ok(r) => r,
            };
            match result.rc {
                0 => {}
                // invalidCredentials (also: no such DN), inappropriateAuthentication, and a DN built from a
                // username that the server cannot parse (invalidDNSyntax). Active Directory says why in a
                // sub-code (expired, locked out, ...), which goes to the log and the audit line only.
                49 | 48 | 34 => {
                    self.binds.put(conn);
                    let reason = state::bind_refusal(&result.text).unwrap_or_else(|| "wrong password".into());
                    return Err(Failure::Refused(reason));
                }
                // unwillingToPerform: locked, disabled or password expired on several servers.
                53 => {
                    let reason = state::bind_refusal(&result.text)
                        .unwrap_or_else(|| format!("the directory refused the bind: {}", result.text.trim()));
                    return Err(Failure::Refused(reason));
                }
                _ => return Err(Failure::Unavailable(describe(&LdapError::from(result)))),
            }
            if self.cfg.user_dn_template.is_none() {
                self.binds.put(conn);
                return Ok(None);
            }
            // Direct bind: read the user's own entry as the user (no service account needed).
            self.binds.connector().count(Op::Search);
            let filter = self.enabled_only("(objectClass=*)".into());
            let res =
                conn.ldap.with_timeout(self.op_timeout()).search(dn, Scope::Base, &filter, self.user_attrs()).await;
            let res = res?;
            self.binds.put(conn);
            if res.1.rc != 0 && res.1.rc != 32 {
                return Err(Failure::Unavailable(describe(&LdapError::from(res.1))));
            }
            let entry = res.0.into_iter().next().map(SearchEntry::construct);
            return match entry.and_then(|e| self.user_entry(e, typed, Lookup::Login)) {
                Some(u) => Ok(Some(u)),
                None => Err(Failure::Refused("the account is disabled or its name does not match".into())),
            };
        }
    }

    /// The user's groups, mapped to short names.
    async fn groups(&self, user: &UserEntry) -> Result<Vec<String>, Failure> {
        let g = &self.cfg.groups;
        // (DN, short name) of the groups found so far.
        let mut found: BTreeMap<String, String> = BTreeMap::new();
        match g.from {
            GroupSource::MemberOf => {
                let base = g.base_dn.as_deref().filter(|b| !b.trim().is_empty());
                for dn in &user.member_of {
                    // Outside the base: another OU's group of the same CN, BUILTIN's, anything the rules do
                    // not mean.
                    if base.is_some_and(|b| !is_under(dn, b)) {
                        continue;
                    }
                    if let Some(name) = first_rdn_value(dn) {
                        found.insert(dn.to_ascii_lowercase(), name);
                    }
                }
            }
            GroupSource::Search => {
                let filter =
                    fill(&self.group_filter, &[("dn", &user.dn), ("username", &user.username)], Escape::Filter);
                found.extend(self.search_groups(&filter).await?);
            }
        }
        if g.nested == Nested::Recursive {
            let mut frontier: Vec<String> = found.keys().cloned().collect();
            let mut depth = 0;
            while !frontier.is_empty() && depth < self.max_depth {
                depth += 1;
                let mut filter = String::from("(|");
                for dn in &frontier {
                    filter += &fill("(member={dn})(uniqueMember={dn})", &[("dn", dn)], Escape::Filter);
                }
                filter.push(')');
                let next = self.search_groups(&filter).await?;
                frontier = next.keys().filter(|dn| !found.contains_key(*dn)).cloned().collect();
                found.extend(next);
            }
        }
        // Short name -> the groups that have it (DNs compared as the directory compares them, so one group
        // spelt two ways is one group). A name two groups share would let either grant what the rules give
        // that name: it counts for neither.
        let mut by_name: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (dn, name) in found {
            let name = if g.lowercase { name.to_lowercase() } else { name };
            let same = normalized_rdns(&dn).map(|rdns| rdns.join(",")).unwrap_or(dn);
            by_name.entry(format!("{}{name}", g.prefix)).or_default().insert(same);
        }
        let mut names = Vec::with_capacity(by_name.len());
        for (name, dns) in by_name {
            if dns.len() > 1 {
                tracing::warn!(provider = %self.name, user = %user.username, group = %name,
                    dns = %dns.iter().cloned().collect::<Vec<_>>().join(" | "),
                    "two or more of the user's groups have this name; it counts for none of them (name groups \
                     by a unique attribute such as sAMAccountName, or narrow groups.base_dn)");
                continue;
            }
            names.push(name);
        }
        Ok(names)
    }

    /// Search groups; returns lower-cased DN → short name.
    async fn search_groups(&self, filter: &str) -> Result<BTreeMap<String, String>, Failure> {
        let base = self.cfg.groups.base_dn.clone().unwrap_or_default();
        let attrs = [self.group_name_attribute.as_str()];
        let entries = self.service_search(&base, Scope::Subtree, filter, &attrs, 0).await?;
        Ok(entries
            .into_iter()
            .filter_map(|e| {
                let name = attr(&e, &self.group_name_attribute).first().cloned().or_else(|| first_rdn_value(&e.dn))?;
                Some((e.dn.to_ascii_lowercase(), name))
            })
            .collect())
    }

    fn identity(&self, user: &UserEntry, groups: Vec<String>) -> Identity {
        let mut claims = BTreeMap::new();
        claims.insert("dn".to_string(), serde_json::Value::String(user.dn.clone()));
        Identity {
            username: user.username.clone(),
            provider: self.name.clone(),
            groups,
            claims,
            account: None,
            expires_at: None,
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(provider = %self.name, user = %username))]
    async fn login(&self, username: &str, password: &SecretString) -> Result<Outcome, Failure> {
        if password.expose_secret().is_empty() {
            // Before any bind: with `olcAllows: bind_anon_dn` (and on AD) a DN with an empty password
            // "succeeds" as an anonymous bind.
            return Err(Failure::refused("empty password"));
        }
        if username.is_empty() {
            return Ok(Outcome::NotMine);
        }
        let user = match &self.cfg.user_dn_template {
            Some(t) => {
                let dn = fill(t, &[("username", username)], Escape::Dn);
                match self.bind_as(&dn, password, username).await? {
                    Some(u) => u,
                    None => return Err(Failure::refused("entry not readable after bind")),
                }
            }
            None => {
                let Some(user) = self.find_user(username, Lookup::Login).await? else { return Ok(Outcome::NotMine) };
                match self.bind_as(&user.dn, password, username).await {
                    Err(Failure::Refused(reason)) => {
                        return Err(Failure::Refused(state::refused_bind(&user.state, reason)))
                    }
                    other => other?,
                };
                user
            }
        };
        // The bind succeeded, yet the entry may say otherwise (a directory that does not refuse the bind
        // of a locked or expired account by itself): the same rule as for refresh tokens.
        if let Some(reason) = user.refusal(state::Moment::AfterBind) {
            return Err(Failure::Refused(reason));
        }
        let groups = self.groups(&user).await?;
        Ok(Outcome::Authenticated(Arc::new(self.identity(&user, groups))))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(provider = %self.name, user = %username))]
    async fn reread(&self, username: &str) -> Result<Identity, Failure> {
        let Some(user) = self.find_user(username, Lookup::Username).await? else {
            return Err(Failure::refused("no longer in the directory, or disabled"));
        };
        if let Some(reason) = user.refusal(state::Moment::Recheck) {
            return Err(Failure::Refused(reason));
        }
        let groups = self.groups(&user).await?;
        Ok(self.identity(&user, groups))
    }
}

impl Provider for LdapProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn authenticate<'a>(
        &'a self,
        username: &'a str,
        password: &'a SecretString,
    ) -> BoxFuture<'a, Result<Outcome, Failure>> {
        Box::pin(self.login(username, password))
    }

    fn recheck<'a>(&'a self, username: &'a str) -> BoxFuture<'a, Result<Identity, Failure>> {
        Box::pin(self.reread(username))
    }

    /// A read of the root DSE with the service account: proves the directory answers and the service
    /// account can bind, bounded by the connect and operation timeouts.
    fn probe(&self) -> BoxFuture<'_, Result<(), Failure>> {
        Box::pin(async move {
            match self.service_search("", Scope::Base, "(objectClass=*)", &["1.1"], 1).await {
                Ok(_) => Ok(()),
                // Whatever the directory says, a probe that cannot read the root DSE makes the provider unready.
                Err(Failure::Unavailable(m) | Failure::Refused(m)) => Err(Failure::Unavailable(m)),
                Err(busy @ Failure::Busy(_)) => Err(busy),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> LdapSettings {
        let mut problems = Vec::new();
        let raw = serde_norway::from_str(yaml).unwrap();
        crate::config::ldap::validate(raw, "providers[0]", std::path::Path::new(""), &mut problems).unwrap()
    }

    #[test]
    fn in_chain_nesting_searches_with_the_active_directory_matching_rule() {
        let cfg = parse(
            "{name: ad, url: 'ldaps://dc', user_base_dn: 'DC=corp', groups: {from: search, base_dn: 'DC=corp', nested: in_chain}}",
        );
        let p = LdapProvider::new(&cfg).unwrap();
        let user = UserEntry {
            dn: "CN=Smith\\, J (*),OU=Staff,DC=corp".into(),
            username: "js".into(),
            member_of: vec![],
            state: Default::default(),
        };
        let filter = fill(&p.group_filter, &[("dn", &user.dn), ("username", &user.username)], Escape::Filter);
        assert_eq!(filter, r"(member:1.2.840.113556.1.4.1941:=CN=Smith\5c, J \28\2a\29,OU=Staff,DC=corp)");
    }

    /// memberOf needs no search, so the naming rules run without a server: only groups under the base
    /// count, one group spelt two ways is one group, and a name two groups share counts for neither.
    #[tokio::test]
    async fn member_of_groups_count_under_the_base_only_and_shared_names_count_for_neither() {
        let user = |dns: &[&str]| UserEntry {
            dn: "CN=u,OU=Staff,DC=corp".into(),
            username: "u".into(),
            member_of: dns.iter().map(|d| d.to_string()).collect(),
            state: Default::default(),
        };
        let p = LdapProvider::new(&parse(
            "{name: ad, url: 'ldaps://dc', user_base_dn: 'DC=corp', groups: {base_dn: 'ou=groups, dc=CORP', lowercase: true}}",
        ))
        .unwrap();
        let contractor = user(&["CN=admins,OU=Contractors,DC=corp", "CN=Guests,CN=Builtin,DC=corp"]);
        assert_eq!(p.groups(&contractor).await.ok().unwrap(), Vec::<String>::new());
        let staff =
            user(&["CN=Admins,OU=Groups,DC=corp", "cn=admins, ou=groups,dc=corp", "CN=Devs,OU=Team,OU=Groups,DC=corp"]);
        assert_eq!(p.groups(&staff).await.ok().unwrap(), ["admins", "devs"]);
        let both =
            user(&["CN=admins,OU=Groups,DC=corp", "CN=admins,OU=Old,OU=Groups,DC=corp", "CN=devs,OU=Groups,DC=corp"]);
        assert_eq!(p.groups(&both).await.ok().unwrap(), ["devs"], "admins is two groups here");
        // Without a base every group counts (check-config warns), still never a shared name.
        let p = LdapProvider::new(&parse("{name: ad, url: 'ldaps://dc', user_base_dn: 'DC=corp'}")).unwrap();
        assert_eq!(p.groups(&contractor).await.ok().unwrap(), ["Guests", "admins"]);
    }

    #[tokio::test]
    async fn an_empty_password_is_refused_before_any_connection() {
        // Port 9 (discard) on loopback: nothing listens, so any connection attempt would be an error.
        let cfg = parse("{name: x, url: 'ldap://127.0.0.1:9', user_base_dn: 'dc=x'}");
        let p = LdapProvider::new(&cfg).unwrap();
        let outcome = p.authenticate("alice", &SecretString::from(String::new())).await;
        assert!(matches!(outcome, Err(Failure::Refused(r)) if r == "empty password"));
        assert_eq!(p.counters().snapshot(), (0, 0, 0, 0));
    }

    #[tokio::test]
    async fn an_unreachable_directory_is_unavailable_not_rejected() {
        let cfg = parse("{name: x, url: 'ldap://127.0.0.1:9', user_base_dn: 'dc=x', connect_timeout: 2s}");
        let p = LdapProvider::new(&cfg).unwrap();
        let err = p.authenticate("alice", &SecretString::from("pw".to_string())).await.unwrap_err();
        assert!(matches!(err, Failure::Unavailable(_)), "{err:?}");
        assert!(p.probe().await.is_err());
    }
}

//! What a watcher knows about the directory's users and groups, and which [`Change`]s a changed entry means.
//!
//! Every entry the change feed delivers is reduced to what a cached identity depends on: for a user its
//! login name and the attributes of its groups and its account state (and those `disabled_filter` reads);
//! for a group its mapped name and its members. A digest of those attributes is kept per entry (by its
//! entryUUID or objectGUID), so an entry delivered again unchanged (a `description` edit, a full resync, a
//! uSNChanged poll that sees an entry twice) reports nothing, while a rename reports both names and a group
//! edit reports the group and every member added or removed.
//!
//! The table is persisted with the feed's position (syncrepl cookies, the last uSNChanged) in the data dir,
//! so a restarted watcher resumes where it stopped and still knows a group's old members.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ldap3::SearchEntry;
use serde::{Deserialize, Serialize};

use super::super::state;
use super::super::text::{first_rdn_value, is_under, normalized_rdns};
use crate::config::ldap::{GroupSource, LdapSettings};
use crate::identity::watch::Change;

/// Object classes that make an entry a group.
const GROUP_CLASSES: [&str; 5] = ["group", "groupofnames", "groupofuniquenames", "posixgroup", "groupofurls"];
/// Member attributes of the group classes above.
const MEMBER_ATTRIBUTES: [&str; 3] = ["member", "uniqueMember", "memberUid"];
/// Active Directory's lock: set when the account is locked out by bad passwords (replicated, so it moves
/// uSNChanged; the computed lockout flag does not).
const AD_LOCKOUT_TIME: &str = "lockoutTime";

/// One user or group the watcher has seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Known {
    /// The DN, as the directory spelt it.
    pub dn: String,
    pub kind: Kind,
    /// The login name (users) or the mapped group name (groups).
    pub name: String,
    /// Groups: the login names of the members the watcher can name. Users: empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// Of the attributes a cached identity depends on.
    pub digest: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    User,
    Group,
}

/// How the provider names users and groups, read from its settings.
#[derive(Debug, Clone)]
pub struct Naming {
    provider: String,
    username_attribute: String,
    name_attribute: Option<String>,
    lowercase: bool,
    prefix: String,
    groups_base: Option<String>,
    /// Attributes whose change matters, requested from the directory.
    attributes: Vec<String>,
}

impl Naming {
    pub fn new(cfg: &LdapSettings) -> Naming {
        let g = &cfg.groups;
        let mut attributes: Vec<String> =
            vec!["objectClass".into(), cfg.username_attribute.clone(), g.member_of_attribute.clone()];
        attributes.extend(state::ATTRIBUTES.iter().map(|a| a.to_string()));
        attributes.push(AD_LOCKOUT_TIME.into());
        attributes.extend(MEMBER_ATTRIBUTES.iter().map(|a| a.to_string()));
        attributes.push(g.name_attribute.clone());
        if let Some(f) = &cfg.disabled_filter {
            attributes.extend(filter_attributes(f));
        }
        let mut seen = BTreeSet::new();
        attributes.retain(|a| seen.insert(a.to_ascii_lowercase()));
        Naming {
            provider: cfg.name.clone(),
            username_attribute: cfg.username_attribute.clone(),
            // With member_of the provider names a group by its DN's first RDN value; with a search, by the
            // name attribute (falling back to that RDN value).
            name_attribute: (g.from == GroupSource::Search).then(|| g.name_attribute.clone()),
            lowercase: g.lowercase,
            prefix: g.prefix.clone(),
            groups_base: g.base_dn.clone().filter(|b| !b.trim().is_empty()),
            attributes,
        }
    }

    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The attributes to request.
    pub fn attributes(&self) -> Vec<String> {
        self.attributes.clone()
    }

    fn group_name(&self, entry: &SearchEntry) -> Option<String> {
        let name = match &self.name_attribute {
            Some(a) => attr(entry, a).first().cloned().or_else(|| first_rdn_value(&entry.dn)),
            None => first_rdn_value(&entry.dn),
        }?;
        let name = if self.lowercase { name.to_lowercase() } else { name };
        Some(format!("{}{name}", self.prefix))
    }
}

/// The attribute names a filter tests: `(&(employeeType=disabled)(x:1.2.3:=2))` gives employeeType and x.
pub fn filter_attributes(filter: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in filter.split('(').skip(1) {
        let name: String = part.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.').collect();
        let rest = &part[name.len()..];
        if !name.is_empty() && rest.starts_with(['=', ':', '~', '<', '>']) {
            out.push(name);
        }
    }
    out
}

fn attr<'a>(entry: &'a SearchEntry, name: &str) -> &'a [String] {
    entry.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice()).unwrap_or(&[])
}

/// A DN in the form two spellings of it share.
fn dn_key(dn: &str) -> String {
    normalized_rdns(dn).map(|r| r.join(",")).unwrap_or_else(|| dn.to_ascii_lowercase())
}

/// Everything a watcher remembers between changes, and persists.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Tracker {
    /// Entries by id (entryUUID or objectGUID, base64).
    known: HashMap<String, Known>,
    /// syncrepl: the cookie of each watched base.
    #[serde(default)]
    pub cookies: BTreeMap<String, String>,
    /// uSNChanged polling: the highest committed USN already looked at.
    #[serde(default)]
    pub usn: Option<u64>,
    /// User DN (normalised) → login name, for naming group members; rebuilt from `known`.
    #[serde(skip)]
    users: HashMap<String, String>,
}

pub fn id_of(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

impl Tracker {
    /// What was persisted at `path`, or an empty tracker (first start, or an unreadable file: then the
    /// watcher starts over, which reports nothing it cannot compare).
    pub fn load(path: &Path) -> Tracker {
        let mut t: Tracker = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), error = %e, "unreadable watcher state; starting over");
                Tracker::default()
            }),
            Err(_) => Tracker::default(),
        };
        t.users = t.known.values().filter(|k| k.kind == Kind::User).map(|k| (dn_key(&k.dn), k.name.clone())).collect();
        t
    }

    /// Write the state to `path` (through a temporary file and a rename, so a crash leaves the old one).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let bytes = serde_json::to_vec(self).map_err(|e| e.to_string())?;
        let tmp = path.with_extension("tmp");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Whether anything under `base` is known (a refresh without a cookie can then be compared).
    pub fn knows_under(&self, base: &str) -> bool {
        self.known.values().any(|k| is_under(&k.dn, base))
    }

    /// The ids of the entries known under `base`.
    pub fn ids_under(&self, base: &str) -> Vec<String> {
        self.known.iter().filter(|(_, k)| is_under(&k.dn, base)).map(|(id, _)| id.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// What `entry` (with id `id`) is to a cached identity, if anything.
    fn reduce(&self, naming: &Naming, entry: &SearchEntry) -> Option<Known> {
        let classes: Vec<String> = attr(entry, "objectClass").iter().map(|c| c.to_ascii_lowercase()).collect();
        let is_group = classes.iter().any(|c| GROUP_CLASSES.contains(&c.as_str()))
            || (classes.is_empty()
                && MEMBER_ATTRIBUTES.iter().any(|a| !attr(entry, a).is_empty())
                && attr(entry, &naming.username_attribute).is_empty());
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        dn_key(&entry.dn).hash(&mut hasher);
        for a in &naming.attributes {
            let mut values: Vec<&String> = attr(entry, a).iter().collect();
            values.sort();
            (a.to_ascii_lowercase(), values).hash(&mut hasher);
        }
        let digest = hasher.finish();
        if is_group {
            if naming.groups_base.as_deref().is_some_and(|b| !is_under(&entry.dn, b)) {
                return None;
            }
            let name = naming.group_name(entry)?;
            let mut members = BTreeSet::new();
            for a in ["member", "uniqueMember"] {
                for dn in attr(entry, a) {
                    if let Some(name) = self.user_name(naming, dn) {
                        members.insert(name);
                    }
                }
            }
            members.extend(attr(entry, "memberUid").iter().cloned());
            let members = members.into_iter().collect();
            return Some(Known { dn: entry.dn.clone(), kind: Kind::Group, name, members, digest });
        }
        let name = attr(entry, &naming.username_attribute).first()?.clone();
        Some(Known { dn: entry.dn.clone(), kind: Kind::User, name, members: Vec::new(), digest })
    }

    /// The login name of the user at `dn`: one the watcher has seen, or the DN's first RDN value when its
    /// attribute is the username attribute (`uid=alice,…`).
    fn user_name(&self, naming: &Naming, dn: &str) -> Option<String> {
        if let Some(n) = self.users.get(&dn_key(dn)) {
            return Some(n.clone());
        }
        let first = normalized_rdns(dn)?.into_iter().next()?;
        let (kind, _) = first.split_once('=')?;
        if kind.eq_ignore_ascii_case(&naming.username_attribute) {
            return first_rdn_value(dn);
        }
        None
    }

    /// Record `entry` (id `id`); the changes it means when `report` (nothing on a first full load, where
    /// there is nothing to compare with).
    pub fn observe(&mut self, naming: &Naming, id: String, entry: &SearchEntry, report: bool) -> Vec<Change> {
        let new = self.reduce(naming, entry);
        let old = match &new {
            Some(n) => {
                if n.kind == Kind::User {
                    self.users.insert(dn_key(&n.dn), n.name.clone());
                }
                self.known.insert(id, n.clone())
            }
            None => self.known.remove(&id),
        };
        if let Some(o) = &old {
            if o.kind == Kind::User && new.as_ref().is_none_or(|n| dn_key(&n.dn) != dn_key(&o.dn)) {
                self.users.remove(&dn_key(&o.dn));
            }
        }
        if !report || old.as_ref().zip(new.as_ref()).is_some_and(|(o, n)| o.digest == n.digest) {
            return Vec::new();
        }
        diff(naming, old.as_ref(), new.as_ref())
    }

    /// [`Tracker::remove`], if the entry with id `id` is known under `base` (a feed of one base speaks for
    /// that base only).
    pub fn remove_under(&mut self, naming: &Naming, id: &str, base: &str, report: bool) -> Vec<Change> {
        match self.known.get(id) {
            Some(k) if is_under(&k.dn, base) => self.remove(naming, id, report),
            _ => Vec::new(),
        }
    }

    /// The entry with id `id` is gone (deleted, or moved out of the watched bases).
    pub fn remove(&mut self, naming: &Naming, id: &str, report: bool) -> Vec<Change> {
        let Some(old) = self.known.remove(id) else { return Vec::new() };
        if old.kind == Kind::User {
            self.users.remove(&dn_key(&old.dn));
        }
        if report {
            diff(naming, Some(&old), None)
        } else {
            Vec::new()
        }
    }
}

/// The changes between what an entry was and what it is.
fn diff(naming: &Naming, old: Option<&Known>, new: Option<&Known>) -> Vec<Change> {
    let provider = naming.provider.clone();
    let mut out = BTreeSet::new();
    let account = |name: &str| Change::Account { provider: provider.clone(), username: name.to_string() };
    for k in [old, new].into_iter().flatten() {
        match k.kind {
            Kind::User => {
                out.insert(account(&k.name));
            }
            Kind::Group => {
                let members = if Some(k) == new { k.members.clone() } else { Vec::new() };
                // A renamed or deleted group: its old name, with no members now.
                if Some(k) == new || new.is_none_or(|n| n.name != k.name || n.kind != k.kind) {
                    out.insert(Change::Group { provider: provider.clone(), group: k.name.clone(), members });
                }
            }
        }
    }
    // Members added or removed: their identities list the group, or should.
    let members = |k: Option<&Known>| -> BTreeSet<String> {
        k.filter(|k| k.kind == Kind::Group).map(|k| k.members.iter().cloned().collect()).unwrap_or_default()
    };
    let (before, after) = (members(old), members(new));
    for name in before.symmetric_difference(&after) {
        out.insert(account(name));
    }
    out.into_iter().collect()
}

/// Where a provider's watcher keeps its state: `DATA_DIR/watch/PROVIDER.json` (the name made safe).
pub fn state_file(data_dir: &Path, provider: &str) -> PathBuf {
    let safe: String =
        provider.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    data_dir.join("watch").join(format!("{safe}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naming() -> Naming {
        let mut problems = Vec::new();
        let raw = serde_norway::from_str(
            "{name: corp, url: 'ldap://x', user_base_dn: 'ou=people,dc=x', disabled_filter: '(employeeType=disabled)', \
             groups: {base_dn: 'ou=groups,dc=x', lowercase: true, prefix: 'ldap-'}}",
        )
        .unwrap();
        Naming::new(&crate::config::ldap::validate(raw, "p", Path::new(""), &mut problems).unwrap())
    }

    fn entry(dn: &str, attrs: &[(&str, &[&str])]) -> SearchEntry {
        SearchEntry {
            dn: dn.into(),
            attrs: attrs.iter().map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect())).collect(),
            bin_attrs: Default::default(),
        }
    }

    fn account(u: &str) -> Change {
        Change::Account { provider: "corp".into(), username: u.into() }
    }

    #[test]
    fn a_group_edit_reports_the_group_under_its_mapped_name_and_each_member_added_or_removed() {
        let n = naming();
        assert!(n.attributes.iter().any(|a| a == "employeeType"), "disabled_filter's attribute is watched");
        let mut t = Tracker::default();
        let alice = entry("uid=alice,ou=people,dc=x", &[("objectClass", &["inetOrgPerson"]), ("uid", &["alice"])]);
        assert_eq!(t.observe(&n, "u1".into(), &alice, false), vec![]);
        let devs = |members: &[&str]| {
            entry("cn=Devs,ou=groups,dc=x", &[("objectClass", &["groupOfNames"]), ("member", members)])
        };
        assert_eq!(
            t.observe(&n, "g1".into(), &devs(&["uid=alice,ou=people,dc=x", "uid=bob,ou=people,dc=x"]), false),
            vec![]
        );
        let changes = t.observe(&n, "g1".into(), &devs(&["uid=bob,ou=people,dc=x"]), true);
        assert_eq!(
            changes,
            vec![
                account("alice"),
                Change::Group { provider: "corp".into(), group: "ldap-devs".into(), members: vec!["bob".into()] }
            ]
        );
        // Delivered again unchanged: nothing.
        assert_eq!(t.observe(&n, "g1".into(), &devs(&["uid=bob,ou=people,dc=x"]), true), vec![]);
        // A user disabled, then renamed.
        let disabled = entry(
            "uid=alice,ou=people,dc=x",
            &[("objectClass", &["inetOrgPerson"]), ("uid", &["alice"]), ("employeeType", &["disabled"])],
        );
        assert_eq!(t.observe(&n, "u1".into(), &disabled, true), vec![account("alice")]);
        let renamed = entry("uid=alicia,ou=people,dc=x", &[("objectClass", &["inetOrgPerson"]), ("uid", &["alicia"])]);
        assert_eq!(t.observe(&n, "u1".into(), &renamed, true), vec![account("alice"), account("alicia")]);
        assert_eq!(t.remove(&n, "u1", true), vec![account("alicia")]);
        // A group outside groups.base_dn names nothing the provider would map.
        let other = entry(
            "cn=Devs,ou=old,dc=x",
            &[("objectClass", &["groupOfNames"]), ("member", &["uid=bob,ou=people,dc=x"])],
        );
        assert_eq!(t.observe(&n, "g2".into(), &other, true), vec![]);
    }

    #[test]
    fn the_state_survives_a_save_and_load_with_its_cookies() {
        let n = naming();
        let dir = tempfile::tempdir().unwrap();
        let path = state_file(dir.path(), "corp/1");
        assert!(path.ends_with("watch/corp_1.json"));
        let mut t = Tracker::default();
        t.observe(
            &n,
            "u1".into(),
            &entry("cn=Alice Smith,ou=people,dc=x", &[("objectClass", &["person"]), ("uid", &["alice"])]),
            false,
        );
        t.cookies.insert("ou=people,dc=x".into(), "rid=000,csn=1".into());
        t.save(&path).unwrap();
        let mut back = Tracker::load(&path);
        assert_eq!(back.cookies, t.cookies);
        // The user's DN still names her in a group, although its RDN is not her login name.
        let g = entry(
            "cn=ops,ou=groups,dc=x",
            &[("objectClass", &["groupOfNames"]), ("member", &["cn=alice smith,ou=people,dc=x"])],
        );
        let changes = back.observe(&n, "g".into(), &g, true);
        assert!(
            changes.contains(&Change::Group {
                provider: "corp".into(),
                group: "ldap-ops".into(),
                members: vec!["alice".into()]
            }),
            "{changes:?}"
        );
        assert_eq!(
            filter_attributes("(&(x:1.2.840.113556.1.4.803:=2)(!(employeeType=disabled)))"),
            ["x", "employeeType"]
        );
    }
}

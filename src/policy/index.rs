//! The rule index: which rules a request could possibly match, found without looking at the others.
//!
//! Checking every rule on every request costs time in proportion to the rules file (one rule per team,
//! thousands of teams). Most rules name who they are for with a literal: `group: team-42`,
//! `account: ci-bot`, `provider: corp-ldap`. A rule is filed under such a condition, one that must hold
//! for it to apply, and a request looks up only the rules filed under what its identity presents (its
//! username, each of its groups, its provider, ...), plus the rules that cannot be filed and are checked
//! on every request. Every rule left out has a condition the request fails, so evaluating the found
//! rules in file order gives exactly the decision of the full scan.
//!
//! What is filed, and under which condition (the first of these the rule has):
//!
//! 1. `account:` when every alternative is a literal name (no `*`, no `{capture}`): under each name;
//! 2. `group:` when every alternative is a literal name: under each group;
//! 3. a `claims:` entry whose values are all literal and bind nothing: under each (claim path, value);
//! 4. `provider:`, 5. `service:`, 6. `auth_method:`: under each value;
//! 7. `anonymous: true`: under the anonymous identity.
//!
//! Anything else (regexes, globs and captures in `account`/`group`, networks, negations, no `match` at
//! all) is checked on every request: those conditions cannot be looked up by value.

use std::collections::HashMap;

use super::eval::{claim_items, Rule};
use crate::identity::{claim_text, AuthMethod, RequestContext};

/// Rule numbers (positions in the compiled rule list), ascending.
type Ids = Box<[u32]>;

/// The maps' hasher: a request looks up every group of its identity (fifty, for a user in fifty teams), and
/// SipHash, the standard one, was most of the index's cost. foldhash is several times faster on short
/// keys and still seeded at random per map, so group names chosen to collide cannot slow a compile down.
type Hasher = foldhash::fast::RandomState;

/// Rules by the value a condition requires.
type ByValue = HashMap<Box<str>, Ids, Hasher>;

/// Rules by the literal values some condition of theirs requires.
#[derive(Debug, Default)]
pub(crate) struct Index {
    accounts: ByValue,
    groups: ByValue,
    /// Per claim path (in first-use order): rules by claim value, as `claim_text` writes it.
    claims: Vec<(Box<str>, ByValue)>,
    providers: ByValue,
    services: ByValue,
    auth_methods: Vec<(AuthMethod, Ids)>,
    anonymous: Ids,
    /// Rules with no condition that can be looked up by value: checked on every request.
    always: Ids,
}

/// Where one rule is filed.
enum Filing {
    Account(Vec<Box<str>>),
    Group(Vec<Box<str>>),
    Claim(Box<str>, Vec<Box<str>>),
    Provider(Vec<Box<str>>),
    Service(Vec<Box<str>>),
    AuthMethod(Vec<AuthMethod>),
    Anonymous,
    Always,
}

/// The first condition of `rule`, in the module doc's order, without which it cannot apply, with every
/// value that satisfies it. Only conditions whose test is equality with one of a list of values qualify.
fn filing(rule: &Rule) -> Filing {
    let c = &rule.cond;
    // All alternatives literal, or none filed: one glob among them could match any name.
    let literals = |patterns: &[std::sync::Arc<super::pattern::Pattern>]| -> Option<Vec<Box<str>>> {
        if patterns.is_empty() {
            return None;
        }
        patterns.iter().map(|p| p.literal().map(Box::from)).collect()
    };
    if let Some(names) = literals(&c.account) {
        return Filing::Account(names);
    }
    if let Some(names) = literals(&c.group) {
        return Filing::Group(names);
    }
    // A claim that binds captures is checked in the capture chain (numbers and booleans then match
    // literal values only), so only the plain ones, checked up front by `holds`, are filed.
    for claim in c.claims.iter().filter(|claim| !claim.binds) {
        if let Some(values) = literals(&claim.values) {
            return Filing::Claim(claim.key.as_str().into(), values);
        }
    }
    if !c.provider.is_empty() {
        return Filing::Provider(c.provider.iter().map(|p| p.as_str().into()).collect());
    }
    if !c.service.is_empty() {
        return Filing::Service(c.service.iter().map(|s| s.as_str().into()).collect());
    }
    if !c.auth_method.is_empty() {
        return Filing::AuthMethod(c.auth_method.clone());
    }
    if c.anonymous == Some(true) {
        return Filing::Anonymous;
    }
    Filing::Always
}

fn freeze(map: HashMap<Box<str>, Vec<u32>, Hasher>) -> ByValue {
    map.into_iter().map(|(k, mut v)| (k, dedup(&mut v))).collect()
}

/// Ascending, once each (`group: [a, a]` files a rule twice under `a`).
fn dedup(ids: &mut Vec<u32>) -> Ids {
    ids.dedup();
    std::mem::take(ids).into_boxed_slice()
}

impl Index {
    pub(crate) fn build(rules: &[Rule]) -> Index {
        type Building = HashMap<Box<str>, Vec<u32>, Hasher>;
        let (mut accounts, mut groups, mut providers, mut services) =
            (Building::default(), Building::default(), Building::default(), Building::default());
        let mut claims: Vec<(Box<str>, Building)> = Vec::new();
        let mut auth_methods: Vec<(AuthMethod, Vec<u32>)> = Vec::new();
        let (mut anonymous, mut always) = (Vec::new(), Vec::new());
        let file = |map: &mut Building, keys: Vec<Box<str>>, id: u32| {
            for key in keys {
                map.entry(key).or_default().push(id);
            }
        };
        // Rule numbers are pushed in ascending order, so every list comes out sorted.
        for (id, rule) in (0u32..).zip(rules) {
            match filing(rule) {
                Filing::Account(keys) => file(&mut accounts, keys, id),
                Filing::Group(keys) => file(&mut groups, keys, id),
                Filing::Claim(path, keys) => {
                    let at = match claims.iter().position(|(p, _)| *p == path) {
                        Some(at) => at,
                        None => {
                            claims.push((path, Building::default()));
                            claims.len() - 1
                        }
                    };
                    if let Some((_, map)) = claims.get_mut(at) {
                        file(map, keys, id);
                    }
                }
                Filing::Provider(keys) => file(&mut providers, keys, id),
                Filing::Service(keys) => file(&mut services, keys, id),
                Filing::AuthMethod(methods) => {
                    for method in methods {
                        match auth_methods.iter_mut().find(|(m, _)| *m == method) {
                            Some((_, ids)) => ids.push(id),
                            None => auth_methods.push((method, vec![id])),
                        }
                    }
                }
                Filing::Anonymous => anonymous.push(id),
                Filing::Always => always.push(id),
            }
        }
        Index {
            accounts: freeze(accounts),
            groups: freeze(groups),
            claims: claims.into_iter().map(|(path, map)| (path, freeze(map))).collect(),
            providers: freeze(providers),
            services: freeze(services),
            auth_methods: auth_methods.into_iter().map(|(m, mut ids)| (m, dedup(&mut ids))).collect(),
            anonymous: dedup(&mut anonymous),
            always: dedup(&mut always),
        }
    }

    /// The numbers of every rule that could apply to `ctx`, ascending and once each, into `out`. A rule
    /// left out cannot apply: the condition it is filed under does not hold for this identity.
    pub(crate) fn candidates(&self, ctx: &RequestContext, out: &mut Vec<u32>) {
        let id = &ctx.identity;
        out.extend_from_slice(&self.always);
        let mut add = |ids: Option<&Ids>| {
            if let Some(ids) = ids {
                out.extend_from_slice(ids);
            }
        };
        if id.is_anonymous() {
            // `account:` never matches the anonymous identity (compile.rs refuses an empty name anyway).
            add(Some(&self.anonymous));
        } else if !self.accounts.is_empty() {
            add(self.accounts.get(id.username.as_str()));
        }
        if !self.groups.is_empty() {
            for group in &id.groups {
                add(self.groups.get(group.as_str()));
            }
        }
        for (path, by_value) in &self.claims {
            for item in claim_items(&id.claims, path) {
                if let Some(text) = claim_text(item) {
                    add(by_value.get(&*text));
                }
            }
        }
        if !self.providers.is_empty() {
            add(self.providers.get(id.provider.as_str()));
        }
        if !self.services.is_empty() {
            add(self.services.get(ctx.service.as_str()));
        }
        add(self.auth_methods.iter().find(|(m, _)| *m == ctx.auth_method).map(|(_, ids)| ids));
        // Rule order decides the order of the names in a decision, as in the full scan; a rule reached
        // twice (a user in two of its groups) is evaluated once.
        out.sort_unstable();
        out.dedup();
    }

    /// How many rules are checked on every request.
    #[cfg(test)]
    pub(crate) fn unfiled(&self) -> usize {
        self.always.len()
    }
}

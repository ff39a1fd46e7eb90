//! Compiled rules and the evaluation of one rule against one request.
//!
//! This is the hot path: no I/O, no allocation for rules without regexes. A rule that does not apply
//! says why with a [`Miss`], a small value that `explain` turns into words only when someone asks.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use regex::Regex;

use super::pattern::{is_capture_value, Bindings, CaptureNames, Pattern, MAX_CAPTURES, USERNAME};
use crate::identity::{claim_at, claim_text, AuthMethod, Identity, RequestContext};
use crate::scope::{Action, ResourceType, Scope};

pub(crate) const PULL: u8 = 1;
pub(crate) const PUSH: u8 = 2;
pub(crate) const DELETE: u8 = 4;
pub(crate) const ALL: u8 = PULL | PUSH | DELETE;

/// The concrete-action bits an action stands for (`*` stands for all three).
pub(crate) fn bits(a: Action) -> u8 {
    match a {
        Action::Pull => PULL,
        Action::Push => PUSH,
        Action::Delete => DELETE,
        Action::All => ALL,
    }
}

pub(crate) fn mask_of(actions: &[Action]) -> u8 {
    actions.iter().fold(0, |m, a| m | bits(*a))
}

/// The concrete actions in a mask, in pull, push, delete order.
pub(crate) fn concrete(mask: u8) -> impl Iterator<Item = Action> {
    Action::CONCRETE.into_iter().filter(move |a| mask & bits(*a) != 0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    Allow,
    Deny,
}

impl Effect {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        }
    }
}

/// An anchored regex whose named groups bind captures.
#[derive(Debug, Clone)]
pub(crate) struct Rx {
    pub source: String,
    /// Shared by every rule with the same regex text (compile.rs): one compiled program and one match
    /// cache, however many rules use it. `groups` stays per rule, since capture numbers are.
    pub regex: Arc<Regex>,
    /// (regex group index, capture index) for every named group.
    pub groups: Vec<(usize, usize)>,
}

impl Rx {
    /// Match `input` and call `k` with the named groups bound. A group value outside the capture
    /// character set, or one that disagrees with an earlier binding, drops this binding.
    fn bind<'a>(&self, input: &'a str, b: &mut Bindings<'a>, k: &mut dyn FnMut(&mut Bindings<'a>) -> bool) -> bool {
        if self.groups.is_empty() {
            return self.regex.is_match(input) && k(b);
        }
        let Some(caps) = self.regex.captures(input) else {
            return false;
        };
        let saved = *b;
        for &(group, capture) in &self.groups {
            // A group that did not take part (`(?P<x>..)?`) stays unbound; a resource using it then fails.
            let Some(m) = caps.get(group) else { continue };
            let value = m.as_str();
            let consistent = match b[capture] {
                Some(old) => old == value,
                None => is_capture_value(value),
            };
            if !consistent {
                *b = saved;
                return false;
            }
            b[capture] = Some(value);
        }
        let ok = k(b);
        if !ok {
            *b = saved;
        }
        ok
    }
}

/// `claims:` entry: the claim at `key` (a dotted path into nested objects), or one of its items when it is
/// a list, must match one of `values`: exact text, or a claim glob (`*` never crosses `/` or `:`), with
/// `{captures}` bound from string claims.
#[derive(Debug, Clone)]
pub(crate) struct ClaimCond {
    pub key: String,
    pub values: Vec<Arc<Pattern>>,
    /// Some value binds a capture: the condition is checked in the capture chain, not up front.
    pub binds: bool,
}

impl ClaimCond {
    pub(crate) fn lookup<'c>(&self, claims: &'c BTreeMap<String, serde_json::Value>) -> Option<&'c serde_json::Value> {
        claim_at(claims, &self.key)
    }

    /// The claim's scalar items: the value itself, or the items of a list.
    fn items<'c>(&self, claims: &'c BTreeMap<String, serde_json::Value>) -> &'c [serde_json::Value] {
        claim_items(claims, &self.key)
    }

    /// For conditions without captures.
    fn holds(&self, claims: &BTreeMap<String, serde_json::Value>) -> bool {
        self.items(claims).iter().any(|v| claim_text(v).is_some_and(|t| self.values.iter().any(|p| p.matches(&t))))
    }

    /// Bind captures from the claim's string items and call `k` for every way it matches.
    fn bind<'a>(&self, id: &'a Identity, b: &mut Bindings<'a>, k: &mut dyn FnMut(&mut Bindings<'a>) -> bool) -> bool {
        self.items(&id.claims).iter().any(|v| match v {
            serde_json::Value::String(text) => self.values.iter().any(|p| p.bind(text, b, k)),
            // Numbers and booleans match literal values only: there is no borrowed text to capture.
            other => claim_text(other)
                .is_some_and(|t| self.values.iter().any(|p| p.captures().next().is_none() && p.matches(&t) && k(b))),
        })
    }
}

/// The items a claim condition on `key` compares: the claim itself, or the items of a list. The rule
/// index reads claims through this too, so that it files and finds rules by exactly what they compare.
pub(crate) fn claim_items<'c>(claims: &'c BTreeMap<String, serde_json::Value>, key: &str) -> &'c [serde_json::Value] {
    match claim_at(claims, key) {
        Some(serde_json::Value::Array(items)) => items,
        Some(v) => std::slice::from_ref(v),
        None => &[],
    }
}

/// An IPv4 client seen through an IPv6 socket arrives as `::ffff:a.b.c.d`; compare it as IPv4 so that
/// `10.0.0.0/8` means what it says.
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// The conditions of a rule's `match:` section. Empty lists and `None` mean "no condition". A rule stores
/// them as [`RuleConditions`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Conditions {
    pub account: Vec<Arc<Pattern>>,
    pub not_account: Vec<Arc<Pattern>>,
    pub account_regex: Option<Box<Rx>>,
    pub group: Vec<Arc<Pattern>>,
    pub not_group: Vec<Arc<Pattern>>,
    pub group_regex: Option<Box<Rx>>,
    pub provider: Vec<String>,
    pub auth_method: Vec<AuthMethod>,
    pub anonymous: Option<bool>,
    pub claims: Vec<ClaimCond>,
    pub client_network: Vec<IpNet>,
    pub service: Vec<String>,
}

/// No condition at all: what a rule without any condition besides `account` and `group` reads.
static NO_CONDITIONS: Conditions = Conditions {
    account: Vec::new(),
    not_account: Vec::new(),
    account_regex: None,
    group: Vec::new(),
    not_group: Vec::new(),
    group_regex: None,
    provider: Vec::new(),
    auth_method: Vec::new(),
    anonymous: None,
    claims: Vec::new(),
    client_network: Vec::new(),
    service: Vec::new(),
};

/// A rule's [`Conditions`] as it stores them. A generated rules file has tens of thousands of rules that
/// name a group or an account and nothing else, so those two lists are kept inline, exactly sized, and the
/// other conditions in one box that such rules do without. It reads as [`Conditions`] (through `Deref`):
/// `account` and `group` are its own fields, every other condition the box's, or none.
#[derive(Debug, Clone, Default)]
pub(crate) struct RuleConditions {
    pub account: Box<[Arc<Pattern>]>,
    pub group: Box<[Arc<Pattern>]>,
    /// Every other condition; its `account` and `group` are always empty. None when all are absent.
    rest: Option<Box<Conditions>>,
}

impl From<Conditions> for RuleConditions {
    fn from(c: Conditions) -> RuleConditions {
        // Spelt out field by field, so that a condition added to `Conditions` cannot be dropped here unnoticed.
        let Conditions {
            account,
            not_account,
            account_regex,
            group,
            not_group,
            group_regex,
            provider,
            auth_method,
            anonymous,
            claims,
            client_network,
            service,
        } = c;
        let none = not_account.is_empty()
            && account_regex.is_none()
            && not_group.is_empty()
            && group_regex.is_none()
            && provider.is_empty()
            && auth_method.is_empty()
            && anonymous.is_none()
            && claims.is_empty()
            && client_network.is_empty()
            && service.is_empty();
        let rest = (!none).then(|| {
            Box::new(Conditions {
                account: Vec::new(),
                not_account,
                account_regex,
                group: Vec::new(),
                not_group,
                group_regex,
                provider,
                auth_method,
                anonymous,
                claims,
                client_network,
                service,
            })
        });
        RuleConditions { account: account.into_boxed_slice(), group: group.into_boxed_slice(), rest }
    }
}

impl std::ops::Deref for RuleConditions {
    type Target = Conditions;
    /// The conditions other than `account` and `group` (those read as this struct's own fields).
    fn deref(&self) -> &Conditions {
        self.rest.as_deref().unwrap_or(&NO_CONDITIONS)
    }
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub name: String,
    /// Shared by the rules of one file.
    pub file: Arc<str>,
    pub description: Option<String>,
    pub effect: Effect,
    pub rtype: ResourceType,
    /// Repository patterns; empty for `type: registry`, whose only resource is the catalog. Shared with
    /// every rule that has the same pattern.
    pub resources: Box<[Arc<Pattern>]>,
    pub actions: u8,
    pub cond: RuleConditions,
    /// The rule mentions `{username}` somewhere, so it can never apply to the anonymous identity.
    pub needs_username: bool,
    pub captures: CaptureNames,
}

/// Why a rule did not apply: the first condition that failed, in evaluation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Miss {
    Type,
    Action,
    Anonymous,
    Username,
    AuthMethod,
    Provider,
    Service,
    ClientNetwork,
    Claim(usize),
    NotAccount(usize),
    NotGroup { group: usize, pattern: usize },
    Account,
    AccountRegex,
    Group,
    GroupRegex,
    Resource,
}

/// Stages of the capture chain before the claims that bind captures, in order; the deepest stage entered
/// is the one that failed. Then come the binding claims, one stage each, then the resources.
const STAGES: [Miss; 4] = [Miss::Account, Miss::AccountRegex, Miss::Group, Miss::GroupRegex];

impl Rule {
    /// The requested concrete actions this rule covers, if it applies to the request at all.
    pub(crate) fn evaluate(&self, ctx: &RequestContext, scope: &Scope, requested: u8) -> Result<u8, Miss> {
        if self.rtype != scope.rtype {
            return Err(Miss::Type);
        }
        let covered = self.actions & requested;
        if covered == 0 {
            return Err(Miss::Action);
        }
        self.check_identity(ctx)?;
        let name = scope.name.as_str();
        let mut resource = |b: &Bindings<'_>| match self.rtype {
            ResourceType::Registry => name == "catalog",
            ResourceType::Repository => self.resources.iter().any(|p| p.matches_with(name, b)),
        };
        self.chain(&ctx.identity, &mut resource)?;
        Ok(covered)
    }

    /// [`Rule::evaluate`] for `authorize`, which needs only whether and what: the same answer, with a cheap
    /// test that the rule could match the requested name at all before the identity is looked at. Most
    /// rules a request's identity leads to are for other repositories (one rule per team, a user in fifty
    /// teams), and a prefix comparison rules them out faster than the group and capture conditions.
    /// `explain` keeps using `evaluate`, whose order of checks decides the reason it reports.
    pub(crate) fn applies(&self, ctx: &RequestContext, scope: &Scope, requested: u8) -> Option<u8> {
        if self.rtype != scope.rtype || self.actions & requested == 0 {
            return None;
        }
        let name = scope.name.as_str();
        // Necessary for the resource closure in `evaluate` to hold under any bindings: the catalog, or
        // some pattern's leading literal text (captures are substituted after it, never before).
        let possible = match self.rtype {
            ResourceType::Registry => name == "catalog",
            ResourceType::Repository => self.resources.iter().any(|p| name.starts_with(p.prefix())),
        };
        if !possible {
            return None;
        }
        self.evaluate(ctx, scope, requested).ok()
    }

    /// The conditions that bind no captures, cheapest first.
    fn check_identity(&self, ctx: &RequestContext) -> Result<(), Miss> {
        let c = &self.cond;
        let id = &ctx.identity;
        if c.anonymous.is_some_and(|want| want != id.is_anonymous()) {
            return Err(Miss::Anonymous);
        }
        if self.needs_username && id.is_anonymous() {
            return Err(Miss::Username);
        }
        if !c.auth_method.is_empty() && !c.auth_method.contains(&ctx.auth_method) {
            return Err(Miss::AuthMethod);
        }
        if !c.provider.is_empty() && !c.provider.contains(&id.provider) {
            return Err(Miss::Provider);
        }
        if !c.service.is_empty() && !c.service.contains(&ctx.service) {
            return Err(Miss::Service);
        }
        if !c.client_network.is_empty() {
            let ip = canonical_ip(ctx.client_ip);
            if !c.client_network.iter().any(|net| net.contains(&ip)) {
                return Err(Miss::ClientNetwork);
            }
        }
        if let Some(i) = c.claims.iter().position(|claim| !claim.binds && !claim.holds(&id.claims)) {
            return Err(Miss::Claim(i));
        }
        if !id.is_anonymous() {
            if let Some(i) = c.not_account.iter().position(|p| p.matches(&id.username)) {
                return Err(Miss::NotAccount(i));
            }
        }
        for (gi, g) in id.groups.iter().enumerate() {
            if let Some(pi) = c.not_group.iter().position(|p| p.matches(g)) {
                return Err(Miss::NotGroup { group: gi, pattern: pi });
            }
        }
        Ok(())
    }

    /// Run the capture-binding conditions (account, account_regex, group, group_regex) and call
    /// `resource` with every complete binding until one matches.
    pub(crate) fn chain<'a>(
        &self,
        id: &'a Identity,
        resource: &mut dyn FnMut(&Bindings<'a>) -> bool,
    ) -> Result<(), Miss> {
        let mut b: Bindings<'a> = [None; MAX_CAPTURES];
        // A username that is not a safe capture value (`bob/evil`, `..`, `a*`) stays unbound: a rule that
        // substitutes it then matches nothing, instead of granting inside someone else's namespace.
        if !id.is_anonymous() && is_capture_value(&id.username) {
            b[USERNAME] = Some(id.username.as_str());
        }
        let reached = Cell::new(0);
        if self.stage(0, id, &mut b, &reached, resource) {
            return Ok(());
        }
        let r = reached.get();
        Err(match STAGES.get(r) {
            Some(miss) => *miss,
            None => match self.binding_claims().nth(r - STAGES.len()) {
                Some((i, _)) => Miss::Claim(i),
                None => Miss::Resource,
            },
        })
    }

    /// The claim conditions that bind captures, with their index in `cond.claims`.
    fn binding_claims(&self) -> impl Iterator<Item = (usize, &ClaimCond)> {
        self.cond.claims.iter().enumerate().filter(|(_, c)| c.binds)
    }

    fn stage<'a>(
        &self,
        n: usize,
        id: &'a Identity,
        b: &mut Bindings<'a>,
        reached: &Cell<usize>,
        resource: &mut dyn FnMut(&Bindings<'a>) -> bool,
    ) -> bool {
        reached.set(reached.get().max(n));
        if n >= STAGES.len() {
            return match self.binding_claims().nth(n - STAGES.len()) {
                Some((_, claim)) => {
                    let mut next = |b: &mut Bindings<'a>| self.stage(n + 1, id, b, reached, resource);
                    claim.bind(id, b, &mut next)
                }
                None => resource(b),
            };
        }
        let c = &self.cond;
        let mut next = |b: &mut Bindings<'a>| self.stage(n + 1, id, b, reached, resource);
        match n {
            0 if !c.account.is_empty() => {
                !id.is_anonymous() && c.account.iter().any(|p| p.bind(&id.username, b, &mut next))
            }
            1 => match &c.account_regex {
                Some(rx) => !id.is_anonymous() && rx.bind(&id.username, b, &mut next),
                None => next(b),
            },
            2 if !c.group.is_empty() => id.groups.iter().any(|g| c.group.iter().any(|p| p.bind(g, b, &mut next))),
            3 => match &c.group_regex {
                Some(rx) => id.groups.iter().any(|g| rx.bind(g, b, &mut next)),
                None => next(b),
            },
            _ => next(b),
        }
    }
}

//! `policy explain`: which rules decided a request, and in plain words why every other rule did not apply.
//!
//! Built only on demand (the CLI, a failing policy test), so it may allocate freely. The evaluation
//! itself is the one `authorize` uses; this module only turns its [`Miss`] values into sentences.

use std::fmt;

use serde::{Serialize, Serializer};

use super::eval::{bits, canonical_ip, concrete, Effect, Miss, Rule, ALL};
use super::pattern::Bindings;
use crate::identity::RequestContext;
use crate::scope::{Action, ResourceType, Scope};

/// The explanation of one decision. `Display` is for a terminal; `Serialize` gives the same as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The scope as requested.
    pub scope: String,
    pub identity: ExplainedIdentity,
    /// The granted actions, in request order (the same as [`super::Decision::granted`]).
    #[serde(serialize_with = "actions_as_strings")]
    pub granted: Vec<Action>,
    /// One entry per requested action, in request order.
    pub actions: Vec<ActionExplanation>,
    /// Every rule that did not apply, with the first reason; in a bounded explanation
    /// ([`super::Policy::explain_bounded`]) the first of those the identity could reach, up to the bound.
    pub not_applied: Vec<RuleNotApplied>,
    /// Rules that did not apply and are not listed in `not_applied` (0, and absent from the JSON, when
    /// every one is listed).
    #[serde(skip_serializing_if = "is_zero")]
    pub not_applied_omitted: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The request as the policy saw it.
#[derive(Debug, Clone, Serialize)]
pub struct ExplainedIdentity {
    /// Empty for the anonymous identity.
    pub username: String,
    pub anonymous: bool,
    pub provider: String,
    pub groups: Vec<String>,
    pub auth_method: String,
    pub client_ip: String,
    pub service: String,
}

/// What happened to one requested action.
#[derive(Debug, Clone, Serialize)]
pub struct ActionExplanation {
    #[serde(serialize_with = "action_as_string")]
    pub action: Action,
    pub granted: bool,
    /// Allow rules that cover this action (for `*`: any of the three).
    pub allowed_by: Vec<String>,
    /// Deny rules that cover this action (for `*`: any of the three).
    pub denied_by: Vec<String>,
    /// A sentence for the reader, such as why `*` was not granted.
    pub note: Option<String>,
}

/// A rule that played no part, and why.
#[derive(Debug, Clone, Serialize)]
pub struct RuleNotApplied {
    pub rule: String,
    pub file: String,
    pub effect: &'static str,
    /// The rule's `description`, if it has one.
    pub description: Option<String>,
    pub reason: String,
}

fn actions_as_strings<S: Serializer>(actions: &[Action], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(actions.iter().map(|a| a.as_str()))
}

fn action_as_string<S: Serializer>(action: &Action, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(action.as_str())
}

/// Build the explanation from the evaluated rules, in file order: each with the requested actions it
/// covers or the reason it did not apply. Every rule that applies must be among them; `limit` bounds the
/// rules listed as not applying, and `unlisted` counts those not evaluated (they did not apply either).
pub(crate) fn build(
    evaluated: &[(&Rule, Result<u8, Miss>)],
    ctx: &RequestContext,
    scope: &Scope,
    granted: Vec<Action>,
    final_mask: u8,
    limit: usize,
    unlisted: usize,
) -> Explanation {
    let requested = super::eval::mask_of(&scope.actions);
    let id = &ctx.identity;
    let mut actions = Vec::new();
    for &action in &scope.actions {
        let want = bits(action);
        let names = |effect: Effect| -> Vec<String> {
            evaluated
                .iter()
                .filter(|(r, res)| r.effect == effect && matches!(res, Ok(m) if m & want != 0))
                .map(|(r, _)| r.name.clone())
                .collect()
        };
        let (allowed_by, denied_by) = (names(Effect::Allow), names(Effect::Deny));
        let is_granted = granted.contains(&action);
        let note = if action == Action::All && !is_granted {
            let missing: Vec<&str> = concrete(ALL & !final_mask).map(Action::as_str).collect();
            Some(format!("\"*\" needs pull, push and delete all granted; not granted: {}", missing.join(", ")))
        } else if !is_granted && allowed_by.is_empty() {
            Some("no allow rule covers it".to_string())
        } else {
            None
        };
        actions.push(ActionExplanation { action, granted: is_granted, allowed_by, denied_by, note });
    }
    let mut misses = evaluated.iter().filter_map(|(rule, res)| Some((*rule, *res.as_ref().err()?)));
    let not_applied: Vec<RuleNotApplied> = misses
        .by_ref()
        .take(limit)
        .map(|(rule, miss)| RuleNotApplied {
            rule: rule.name.clone(),
            file: rule.file.to_string(),
            effect: rule.effect.as_str(),
            description: rule.description.clone(),
            reason: reason(rule, ctx, scope, requested, miss),
        })
        .collect();
    let not_applied_omitted = misses.count() + unlisted;
    Explanation {
        scope: scope.to_string(),
        identity: ExplainedIdentity {
            username: id.username.clone(),
            anonymous: id.is_anonymous(),
            provider: id.provider.clone(),
            groups: id.groups.clone(),
            auth_method: ctx.auth_method.as_str().to_string(),
            client_ip: ctx.client_ip.to_string(),
            service: ctx.service.clone(),
        },
        granted,
        actions,
        not_applied,
        not_applied_omitted,
    }
}

/// `[a, b]`, the way the rules file writes a list.
fn list<T: fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let parts: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// `"p"` for one pattern, `any of ["p", "q"]` for several.
fn one_or_any<T: fmt::Display>(items: &[T]) -> String {
    match items {
        [one] => format!("\"{one}\""),
        _ => {
            let quoted: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
            format!("any of [{}]", quoted.join(", "))
        }
    }
}

/// The first reason a rule did not apply, in words.
pub(crate) fn reason(rule: &Rule, ctx: &RequestContext, scope: &Scope, requested: u8, miss: Miss) -> String {
    let id = &ctx.identity;
    let c = &rule.cond;
    let verb = match rule.effect {
        Effect::Allow => "allows",
        Effect::Deny => "denies",
    };
    match miss {
        Miss::Type => match rule.rtype {
            ResourceType::Registry => "type: rule is for the registry catalog, not repositories".to_string(),
            ResourceType::Repository => "type: rule is for repositories, not the registry catalog".to_string(),
        },
        Miss::Action => format!(
            "action: rule {verb} {}, not {}",
            list(concrete(rule.actions).map(Action::as_str)),
            list(concrete(requested).map(Action::as_str)).trim_matches(['[', ']'])
        ),
        Miss::Anonymous if c.anonymous == Some(true) => {
            format!("anonymous: rule is only for the anonymous identity, this is {:?}", id.username)
        }
        Miss::Anonymous => "anonymous: rule is only for signed-in identities, this request is anonymous".to_string(),
        Miss::Username => "account: rule uses {username}, and this request is anonymous".to_string(),
        Miss::AuthMethod => format!(
            "auth_method: {} is not in {}",
            ctx.auth_method.as_str(),
            list(c.auth_method.iter().map(|a| a.as_str()))
        ),
        Miss::Provider => format!("provider: {:?} is not in {}", id.provider, list(&c.provider)),
        Miss::Service => format!("service: {:?} is not in {}", ctx.service, list(&c.service)),
        Miss::ClientNetwork => {
            format!("client_network: {} is not in {}", canonical_ip(ctx.client_ip), list(&c.client_network))
        }
        Miss::Claim(i) => match c.claims.get(i) {
            Some(claim) => match claim.lookup(&id.claims) {
                Some(v) => format!("claims: {} is {v}, rule wants one of {}", claim.key, list(&claim.values)),
                None => format!("claims: {} is missing, rule wants one of {}", claim.key, list(&claim.values)),
            },
            None => "claims: a claim does not match".to_string(),
        },
        Miss::NotAccount(i) => {
            let pattern = c.not_account.get(i).map_or("?", |p| p.source());
            format!("not_account: {:?} matches \"{pattern}\"", id.username)
        }
        Miss::NotGroup { group, pattern } => {
            let g = id.groups.get(group).map_or("?", String::as_str);
            let p = c.not_group.get(pattern).map_or("?", |p| p.source());
            format!("not_group: group {g:?} matches \"{p}\"")
        }
        Miss::Account if id.is_anonymous() => {
            format!("account: this request is anonymous, rule wants {}", one_or_any(&c.account))
        }
        Miss::Account => format!("account: {:?} does not match {}", id.username, one_or_any(&c.account)),
        Miss::AccountRegex => {
            regex_reason("account_regex", c.account_regex.as_deref(), std::slice::from_ref(&id.username))
        }
        Miss::Group if id.groups.is_empty() => {
            format!("group: the identity has no groups, rule wants {}", one_or_any(&c.group))
        }
        Miss::Group => format!("group: none of {} matches {}", list(&id.groups), one_or_any(&c.group)),
        Miss::GroupRegex => regex_reason("group_regex", c.group_regex.as_deref(), &id.groups),
        Miss::Resource => resource_reason(rule, ctx, scope),
    }
}

fn regex_reason(field: &str, rx: Option<&super::eval::Rx>, subjects: &[String]) -> String {
    let Some(rx) = rx else {
        return format!("{field}: does not match");
    };
    if subjects.iter().any(|s| rx.regex.is_match(s)) {
        format!(
            "{field}: {} matches \"{}\", but a named group captured characters outside [A-Za-z0-9._-] or disagreed with another capture",
            list(subjects.iter().map(|s| format!("{s:?}"))),
            rx.source
        )
    } else if subjects.is_empty() {
        format!("{field}: the identity has none, rule wants \"{}\"", rx.source)
    } else {
        format!("{field}: none of {} matches \"{}\"", list(subjects), rx.source)
    }
}

/// Name the resource patterns and every binding they were tried with.
fn resource_reason(rule: &Rule, ctx: &RequestContext, scope: &Scope) -> String {
    let used: Vec<usize> = {
        let mut u: Vec<usize> = rule.resources.iter().flat_map(|p| p.captures()).collect();
        u.sort_unstable();
        u.dedup();
        u
    };
    let mut tried: Vec<String> = Vec::new();
    let mut record = |b: &Bindings<'_>| {
        let parts: Vec<String> = used
            .iter()
            .map(|&i| match b[i] {
                Some(v) => format!("{}={v}", rule.captures.name(i)),
                None => format!("{} unbound", rule.captures.name(i)),
            })
            .collect();
        let text = parts.join(", ");
        if !text.is_empty() && !tried.contains(&text) {
            tried.push(text);
        }
        false
    };
    // Re-run the capture chain only to list the bindings; every one fails at the resource stage.
    let _ = rule.chain(&ctx.identity, &mut record);
    let with = if tried.is_empty() { String::new() } else { format!(" with {}", tried.join(" or with ")) };
    format!("resource: {:?} does not match {}{with}", scope.name, one_or_any(&rule.resources))
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = &self.identity;
        writeln!(f, "scope:    {}", self.scope)?;
        if id.anonymous {
            write!(f, "identity: anonymous")?;
        } else {
            write!(f, "identity: {} (provider {:?}, groups {})", id.username, id.provider, list(&id.groups))?;
        }
        writeln!(f, " by {} from {}, service {}", id.auth_method, id.client_ip, id.service)?;
        if self.granted.is_empty() {
            writeln!(f, "result:   NOTHING GRANTED")?;
        } else {
            writeln!(f, "result:   granted {}", list(self.granted.iter().map(|a| a.as_str())))?;
        }
        writeln!(f)?;
        for a in &self.actions {
            write!(f, "  {:<7} {:<8}", a.action.as_str(), if a.granted { "granted" } else { "REFUSED" })?;
            let mut parts = Vec::new();
            if !a.allowed_by.is_empty() {
                parts.push(format!("allowed by {}", a.allowed_by.join(", ")));
            }
            if !a.denied_by.is_empty() {
                parts.push(format!("denied by {}", a.denied_by.join(", ")));
            }
            if let Some(note) = &a.note {
                parts.push(note.clone());
            }
            writeln!(f, " {}", parts.join("; "))?;
        }
        if !self.not_applied.is_empty() {
            writeln!(f)?;
            writeln!(f, "rules that did not apply ({}):", self.not_applied.len())?;
            for r in &self.not_applied {
                writeln!(f, "  {} ({}, {}): {}", r.rule, r.effect, r.file, r.reason)?;
            }
        }
        if self.not_applied_omitted > 0 {
            writeln!(
                f,
                "and {} more rules that did not apply, not listed (`tollgate policy explain` lists every one)",
                self.not_applied_omitted
            )?;
        }
        Ok(())
    }
}

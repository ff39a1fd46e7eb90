//! The policy engine: rules files compiled once, evaluated per scope with no I/O.
//!
//! A request is granted the union of the actions of every matching `allow` rule, minus the actions of
//! every matching `deny` rule. Rule order never changes a result, so a reader can judge each rule on
//! its own. A requested `*` is granted only when pull, push and delete all are. `registry:catalog:*`
//! is reachable only through a `type: registry` rule, never through a repository glob.
//!
//! Compilation ([`Policy::compile`]) validates everything up front and reports every problem at once,
//! naming the file, the rule and the field; a policy that compiled cannot fail at request time. It also
//! files the rules by what an identity must present for them to apply (`index.rs`), so that a request
//! evaluates the few rules its identity can match, not the whole file.
//! [`Policy::load`] is the only function here that touches the file system.

mod compile;
mod error;
mod eval;
mod explain;
mod index;
mod pattern;
mod raw;
mod testing;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::{ErrorItem, PolicyError};
pub use explain::{ActionExplanation, ExplainedIdentity, Explanation, RuleNotApplied};
pub use pattern::is_capture_value;
pub use testing::{TestOutcome, TestReport};

use compile::Compiled;
use eval::{bits, mask_of, Effect, Miss, Rule};

use crate::identity::RequestContext;
use crate::scope::{Action, Scope};

/// The example policy embedded in the binary (`policies/default.yaml`), used when no policy is
/// configured and printed by the CLI as a starting point.
pub const EXAMPLE_POLICY: &str = include_str!("../../policies/default.yaml");

/// A resource pattern of the rules' syntax without captures (`payments/**`, `users/alice/*`): how an access
/// token's scope names repositories.
#[derive(Debug, Clone)]
pub struct Glob(pattern::Pattern);

impl Glob {
    /// Compile `src`; the error says what is wrong with it.
    pub fn parse(src: &str) -> Result<Glob, String> {
        pattern::Pattern::parse(src, pattern::CaptureMode::Forbidden).map(Glob)
    }

    pub fn matches(&self, name: &str) -> bool {
        self.0.matches(name)
    }

    /// A name the pattern matches, with a fresh segment for every wildcard: what a ceiling check asks the
    /// rules about.
    pub fn sample(&self) -> String {
        self.0.sample()
    }

    pub fn source(&self) -> &str {
        self.0.source()
    }
}

/// The text of one rules file and the path to name in errors.
#[derive(Debug, Clone)]
pub struct PolicySource {
    pub path: String,
    pub text: String,
}

/// A compiled policy. Cloning is cheap (one reference count), so a reloaded policy can be swapped in
/// while requests still hold the old one.
#[derive(Clone)]
pub struct Policy {
    inner: Arc<Compiled>,
}

/// The outcome of [`Policy::authorize`] for one scope.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// The granted actions, in request order. Empty when nothing is granted, which is not an error.
    pub granted: Vec<Action>,
    /// Allow rules that granted at least one of the granted actions.
    pub allowed_by: Vec<String>,
    /// Deny rules that removed at least one action an allow rule would have granted.
    pub denied_by: Vec<String>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("rules", &self.inner.rules.iter().map(|r| r.name.as_str()).collect::<Vec<_>>())
            .field("tests", &self.inner.tests.len())
            .finish()
    }
}

/// The explanation of `evaluated` (file order, every rule that applies among them): the decision they
/// make, and at most `limit` of the rules that did not apply; `unlisted` did not apply and were not evaluated.
fn explained(
    evaluated: &[(&Rule, Result<u8, Miss>)],
    ctx: &RequestContext,
    scope: &Scope,
    limit: usize,
    unlisted: usize,
) -> Explanation {
    let (mut allow, mut deny) = (0u8, 0u8);
    for (rule, result) in evaluated {
        if let Ok(covered) = result {
            match rule.effect {
                Effect::Allow => allow |= covered,
                Effect::Deny => deny |= covered,
            }
        }
    }
    let final_mask = allow & !deny;
    let granted = granted_actions(&scope.actions, final_mask);
    explain::build(evaluated, ctx, scope, granted, final_mask, limit, unlisted)
}

/// The decision from the rules that apply (in rule order) and the requested actions each covers: union
/// of the allows minus the denies, and the rules that made a difference, in the order they come.
fn decide<'r>(scope: &Scope, applying: impl Iterator<Item = (&'r Rule, u8)>) -> Decision {
    let (mut allow, mut deny) = (0u8, 0u8);
    let mut matched: Vec<(&Rule, u8)> = Vec::new();
    for (rule, covered) in applying {
        match rule.effect {
            Effect::Allow => allow |= covered,
            Effect::Deny => deny |= covered,
        }
        matched.push((rule, covered));
    }
    let granted = granted_actions(&scope.actions, allow & !deny);
    let granted_mask = mask_of(&granted);
    let names = |effect: Effect, relevant: u8| -> Vec<String> {
        matched
            .iter()
            .filter(|(r, covered)| r.effect == effect && covered & relevant != 0)
            .map(|(r, _)| r.name.clone())
            .collect()
    };
    Decision { allowed_by: names(Effect::Allow, granted_mask), denied_by: names(Effect::Deny, allow), granted }
}

/// The requested actions that `mask` grants, in request order. `*` needs every concrete action.
fn granted_actions(requested: &[Action], mask: u8) -> Vec<Action> {
    requested.iter().copied().filter(|a| mask & bits(*a) == bits(*a)).collect()
}

impl Policy {
    /// Compile rules files given as text. Every problem in every source is reported.
    pub fn compile(sources: &[PolicySource]) -> Result<Policy, Vec<PolicyError>> {
        compile::compile(sources).map(|c| Policy { inner: Arc::new(c) })
    }

    /// Read and compile rules files. A directory stands for every `*.yaml` and `*.yml` file directly in
    /// it, in sorted order. Unreadable files are reported together with the compile errors of the rest.
    pub fn load(paths: &[PathBuf]) -> Result<Policy, Vec<PolicyError>> {
        let (sources, mut errors) = read_sources(paths);
        match Policy::compile(&sources) {
            Ok(policy) if errors.is_empty() => Ok(policy),
            Ok(_) => Err(errors),
            Err(more) => {
                errors.extend(more);
                Err(errors)
            }
        }
    }

    /// [`Policy::load`] for a checker that wants every problem at once: with the errors, the policy of the
    /// files that have none (compiled together), so their tests can still be run. None when no file is
    /// free of errors, or when those files do not compile together. The files are read once.
    pub fn load_partial(paths: &[PathBuf]) -> (Option<Policy>, Vec<PolicyError>) {
        let (sources, mut errors) = read_sources(paths);
        match Policy::compile(&sources) {
            Ok(policy) if errors.is_empty() => return (Some(policy), errors),
            Ok(_) => {}
            Err(more) => errors.extend(more),
        }
        let bad: std::collections::HashSet<&str> = errors.iter().map(|e| e.file.as_str()).collect();
        let good: Vec<PolicySource> = sources.into_iter().filter(|s| !bad.contains(s.path.as_str())).collect();
        let partial = if good.is_empty() { None } else { Policy::compile(&good).ok() };
        (partial, errors)
    }

    /// Decide one scope. Pure and allocation-light: the candidate list and the result vectors are all it
    /// allocates. Only the rules the index finds for this identity are evaluated, in file order, so the
    /// decision and the order of the rule names are those of evaluating every rule ([`Policy::authorize_scan`]).
    pub fn authorize(&self, ctx: &RequestContext, scope: &Scope) -> Decision {
        let mut ids = Vec::new();
        self.inner.index.candidates(ctx, &mut ids);
        let rules = &self.inner.rules;
        let requested = mask_of(&scope.actions);
        let applying = ids
            .iter()
            .filter_map(|&i| rules.get(i as usize))
            .filter_map(|rule| rule.applies(ctx, scope, requested).map(|covered| (rule, covered)));
        decide(scope, applying)
    }

    /// [`Policy::authorize`] by evaluating every rule, without the index or any shortcut: the reference the
    /// property tests compare the indexed engine with, and the before of the benchmark. Not for serving.
    #[doc(hidden)]
    pub fn authorize_scan(&self, ctx: &RequestContext, scope: &Scope) -> Decision {
        let requested = mask_of(&scope.actions);
        let applying = self
            .inner
            .rules
            .iter()
            .filter_map(|rule| rule.evaluate(ctx, scope, requested).ok().map(|covered| (rule, covered)));
        decide(scope, applying)
    }

    /// Explain the decision for one scope: per action, the rules that allowed and denied it, and for
    /// every other rule the first reason it did not apply. Evaluates every rule (it must name them all),
    /// the way [`Policy::authorize_scan`] does. For the operator's `policy explain` and failing policy tests;
    /// a server answering its users uses [`Policy::explain_bounded`].
    pub fn explain(&self, ctx: &RequestContext, scope: &Scope) -> Explanation {
        let requested = mask_of(&scope.actions);
        let evaluated: Vec<_> = self.inner.rules.iter().map(|r| (r, r.evaluate(ctx, scope, requested))).collect();
        explained(&evaluated, ctx, scope, usize::MAX, 0)
    }

    /// [`Policy::explain`] with at most `limit` rules listed as not applying, at a cost that follows the
    /// identity, not the size of the policy: what `/whoami` answers. When every rule that did not apply
    /// fits, it is exactly [`Policy::explain`]. Otherwise only the rules the index finds for this identity
    /// are evaluated (every rule that applies is among them), the first `limit` of those that do not apply
    /// are listed in file order, and `not_applied_omitted` counts the rest. The decision, the rules named
    /// per action and the notes are the same either way.
    pub fn explain_bounded(&self, ctx: &RequestContext, scope: &Scope, limit: usize) -> Explanation {
        let rules = &self.inner.rules;
        let mut ids = Vec::new();
        self.inner.index.candidates(ctx, &mut ids);
        let requested = mask_of(&scope.actions);
        let evaluated: Vec<_> =
            ids.iter().filter_map(|&i| rules.get(i as usize)).map(|r| (r, r.evaluate(ctx, scope, requested))).collect();
        let unlisted = rules.len() - evaluated.len();
        let misses = evaluated.iter().filter(|(_, res)| res.is_err()).count();
        if misses + unlisted <= limit {
            return self.explain(ctx, scope);
        }
        explained(&evaluated, ctx, scope, limit, unlisted)
    }

    /// Run the `tests:` of every loaded file against this policy.
    pub fn run_tests(&self) -> TestReport {
        let outcomes = self
            .inner
            .tests
            .iter()
            .map(|t| {
                let mut got = self.authorize(&t.ctx, &t.scope).granted;
                got.sort();
                got.dedup();
                let passed = got == t.expect;
                TestOutcome {
                    file: t.file.clone(),
                    name: t.name.clone(),
                    scope: t.scope.to_string(),
                    expected: t.expect.clone(),
                    got,
                    passed,
                    explanation: (!passed).then(|| self.explain(&t.ctx, &t.scope)),
                }
            })
            .collect();
        TestReport { outcomes }
    }

    pub fn rule_count(&self) -> usize {
        self.inner.rules.len()
    }

    pub fn test_count(&self) -> usize {
        self.inner.tests.len()
    }
}

/// The rules files `paths` stand for (a directory: its `*.yaml` and `*.yml` files, sorted), read; with the
/// files and directories that could not be read or listed.
fn read_sources(paths: &[PathBuf]) -> (Vec<PolicySource>, Vec<PolicyError>) {
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        let shown = path.display().to_string();
        if path.is_dir() {
            match policy_files(path) {
                Ok(files) if files.is_empty() => {
                    errors.push(PolicyError::file(&shown, "directory holds no *.yaml or *.yml files"))
                }
                Ok(files) => {
                    for file in files {
                        read_source(&file, &mut sources, &mut errors);
                    }
                }
                Err(e) => errors.push(PolicyError::file(&shown, format!("cannot list directory: {e}"))),
            }
        } else {
            read_source(path, &mut sources, &mut errors);
        }
    }
    (sources, errors)
}

/// The rules files directly inside `dir`, sorted. Hidden files are skipped: editors leave `.#x.yaml`
/// lock files and half-written swap files next to the real ones.
fn policy_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let hidden = path.file_name().and_then(|n| n.to_str()).is_none_or(|n| n.starts_with('.'));
        let yaml = matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
        if yaml && !hidden && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn read_source(path: &Path, sources: &mut Vec<PolicySource>, errors: &mut Vec<PolicyError>) {
    let shown = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => sources.push(PolicySource { path: shown, text }),
        Err(e) => errors.push(PolicyError::file(&shown, format!("cannot read: {e}"))),
    }
}

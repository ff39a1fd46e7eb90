//! From YAML text to compiled rules and tests, reporting every problem at once.
//!
//! Each file is read as one YAML document (a syntax error anywhere stops that file only, and it then
//! contributes nothing else). The items of `rules:` are compiled one at a time as the document is read, each
//! from its own YAML value, so that the parse of a large file never holds a value tree of all its rules;
//! every rule and every test is deserialized on its own, so a typo in rule 2 does not hide a bad regex in
//! rule 7.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use regex::{Regex, RegexBuilder};
use serde_norway::Value;

use super::error::{ErrorItem, PolicyError};
use super::eval::{Conditions, Effect, Rule, Rx, ALL};
use super::index::Index;
use super::pattern::{is_capture_name, CaptureMode, CaptureNames, Pattern, USERNAME};
use super::raw::{RawMatch, RawRule, RawTest, StrList};
use super::testing::TestCase;
use super::PolicySource;
use crate::identity::{AuthMethod, Identity, RequestContext};
use crate::scope::{Action, ResourceType, Scope};

/// Default service name in test cases.
const TEST_SERVICE: &str = "registry.test";

/// Everything compiled from a set of sources.
#[derive(Debug, Default)]
pub(crate) struct Compiled {
    pub rules: Vec<Rule>,
    /// Which rules a request could match, by what its identity presents (index.rs).
    pub index: Index,
    pub tests: Vec<TestCase>,
}

/// Patterns and regexes already compiled in this policy, so that the many rules that share one (`prod/**`
/// in every protection rule, one `group_regex` in a rule per team) hold one copy of it. A compiled regex
/// is kilobytes, and its match cache grows with use: one per distinct text, not one per rule.
#[derive(Default)]
struct Shared {
    patterns: HashSet<Arc<Pattern>>,
    regexes: HashMap<String, Arc<Regex>>,
}

impl Shared {
    /// The shared copy of `p`: equal patterns (same text, same capture numbers) behave the same.
    fn pattern(&mut self, p: Pattern) -> Arc<Pattern> {
        if let Some(shared) = self.patterns.get(&p) {
            return shared.clone();
        }
        let shared = Arc::new(p);
        self.patterns.insert(shared.clone());
        shared
    }

    fn all(&mut self, patterns: Vec<Pattern>) -> Vec<Arc<Pattern>> {
        patterns.into_iter().map(|p| self.pattern(p)).collect()
    }
}

pub(crate) fn compile(sources: &[PolicySource]) -> Result<Compiled, Vec<PolicyError>> {
    let mut out = Compiled::default();
    let mut errors = Vec::new();
    // Rule name -> where it was first defined, for duplicate messages naming both files.
    let mut seen: HashMap<String, Seen> = HashMap::new();
    let mut shared = Shared::default();
    for (source_no, source) in sources.iter().enumerate() {
        compile_file(source, source_no, &mut out, &mut errors, &mut seen, &mut shared);
    }
    if errors.is_empty() {
        out.rules.shrink_to_fit();
        out.index = Index::build(&out.rules);
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Collects errors about one item (file, rule or test).
struct Errs<'e> {
    file: &'e str,
    item: ErrorItem,
    out: &'e mut Vec<PolicyError>,
    start: usize,
}

impl<'e> Errs<'e> {
    fn new(file: &'e str, item: ErrorItem, out: &'e mut Vec<PolicyError>) -> Self {
        let start = out.len();
        Errs { file, item, out, start }
    }

    fn at(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.push(Some(field.into()), message.into());
    }

    fn whole(&mut self, message: impl Into<String>) {
        self.push(None, message.into());
    }

    fn push(&mut self, field: Option<String>, message: String) {
        self.out.push(PolicyError { file: self.file.to_string(), item: self.item.clone(), field, message });
    }

    fn any(&self) -> bool {
        self.out.len() > self.start
    }
}

fn compile_file(
    source: &PolicySource,
    source_no: usize,
    out: &mut Compiled,
    errors: &mut Vec<PolicyError>,
    seen: &mut HashMap<String, Seen>,
    shared: &mut Shared,
) {
    let file = source.path.as_str();
    let rules_before = out.rules.len();
    let mut reader = FileReader {
        file,
        file_name: file.into(),
        source_no,
        rules: &mut out.rules,
        seen,
        shared,
        key_errors: Vec::new(),
        rule_errors: Vec::new(),
        has_rules: false,
        rule_count: 0,
        tests: None,
        not_a_mapping: None,
    };
    // The rules are compiled while the document is read, one item at a time: only the item being compiled
    // exists as a YAML value, never the whole file's tree (most of a large file's parse memory).
    let read = serde::de::DeserializeSeed::deserialize(&mut reader, serde_norway::Deserializer::from_str(&source.text));
    let FileReader { key_errors, rule_errors, has_rules, tests, not_a_mapping, .. } = reader;
    if let Err(e) = read {
        // A file that does not parse contributes nothing but this error, however much of it was compiled.
        out.rules.truncate(rules_before);
        seen.retain(|_, first| first.source_no != source_no);
        errors.push(PolicyError::file(file, format!("YAML syntax error: {e}")));
        return;
    }
    match not_a_mapping {
        Some(Value::Null) => {
            errors.push(PolicyError::file(file, "file is empty: expected `rules:` (and optionally `tests:`)"));
            return;
        }
        Some(_) => {
            errors.push(PolicyError::file(file, "expected a mapping with `rules:` and `tests:` at the top level"));
            return;
        }
        None => {}
    }
    errors.extend(key_errors);
    if !has_rules && tests.is_none() {
        errors.push(PolicyError::file(file, "file has neither `rules:` nor `tests:`"));
    }
    errors.extend(rule_errors);
    let mut test_names: HashMap<String, usize> = HashMap::new();
    for (index, value) in list(file, "tests", tests, errors).into_iter().enumerate() {
        let index = index + 1;
        let name = value.get("name").and_then(Value::as_str).map(str::to_string);
        let mut e = Errs::new(file, ErrorItem::Test { index, name: name.clone() }, errors);
        if let Some(name) = name {
            if let Some(first) = test_names.insert(name.clone(), index) {
                e.at("name", format!("duplicate test name {name:?}: test {first} has it too"));
            }
        }
        if let Some(test) = compile_test(file, value, &mut e) {
            out.tests.push(test);
        }
    }
}

/// Where a rule name was first defined, for duplicate messages naming both files.
struct Seen {
    file: Arc<str>,
    index: usize,
    /// Which source defined it, so that the names of a file that turns out not to parse can be forgotten.
    source_no: usize,
}

/// Reads one rules file, compiling each rule as soon as its item has been read. What it finds besides the
/// rules is kept until the whole document has parsed, then reported in the order the file-wide errors
/// have always come: unknown top-level keys, then the rules' problems, then the tests'.
struct FileReader<'a> {
    file: &'a str,
    file_name: Arc<str>,
    source_no: usize,
    rules: &'a mut Vec<Rule>,
    seen: &'a mut HashMap<String, Seen>,
    shared: &'a mut Shared,
    key_errors: Vec<PolicyError>,
    rule_errors: Vec<PolicyError>,
    has_rules: bool,
    rule_count: usize,
    tests: Option<Value>,
    /// The document when it is not a mapping (`Null` for an empty file).
    not_a_mapping: Option<Value>,
}

impl FileReader<'_> {
    /// Compile the next item of `rules:`.
    fn rule(&mut self, value: Value) {
        self.rule_count += 1;
        let index = self.rule_count;
        let file = self.file;
        let errors = &mut self.rule_errors;
        let name = value.get("name").and_then(Value::as_str).map(str::to_string);
        if let Some(name) = &name {
            if let Some(first) = self.seen.get(name) {
                let mut e = Errs::new(file, ErrorItem::Rule { index, name: Some(name.clone()) }, errors);
                e.at(
                    "name",
                    format!("duplicate rule name {name:?}: rule {} in {} has it too", first.index, first.file),
                );
            } else {
                let first = Seen { file: self.file_name.clone(), index, source_no: self.source_no };
                self.seen.insert(name.clone(), first);
            }
        }
        let mut e = Errs::new(file, ErrorItem::Rule { index, name }, errors);
        if let Some(rule) = compile_rule(&self.file_name, value, &mut e, self.shared) {
            self.rules.push(rule);
        }
    }

    /// `rules:` when it is not a sequence (read as a whole, as any YAML value).
    fn rules_value(&mut self, value: Value) {
        for item in list(self.file, "rules", Some(value), &mut self.rule_errors) {
            self.rule(item);
        }
    }
}

/// What a YAML value's visitor calls itself, so that type errors read as they would for a `Value`.
const ANY_YAML_VALUE: &str = "any YAML value";

/// The whole document: a mapping is read key by key, with `rules:` streamed; anything else is kept as a
/// value to report. Every other way in builds exactly the `Value` that `serde_norway::Value` would.
impl<'de> serde::de::DeserializeSeed<'de> for &mut FileReader<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// The value a visitor was handed, built the way `serde_norway::Value`'s own visitor builds it.
macro_rules! as_value {
    ($($method:ident($t:ty) => $build:expr;)*) => {
        $(fn $method<E: serde::de::Error>(self, v: $t) -> Result<Self::Value, E> {
            #[allow(clippy::redundant_closure_call)]
            self.other(($build)(v))
        })*
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            self.other(Value::Null)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            self.other(Value::Null)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            self.other(serde::Deserialize::deserialize(d)?)
        }
        fn visit_enum<A: serde::de::EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
            self.other(serde::Deserialize::deserialize(serde::de::value::EnumAccessDeserializer::new(data))?)
        }
    };
}

/// Scalars as `Value` builds them.
macro_rules! scalars_as_value {
    () => {
        as_value! {
            visit_bool(bool) => Value::Bool;
            visit_i64(i64) => |i: i64| Value::Number(i.into());
            visit_u64(u64) => |u: u64| Value::Number(u.into());
            visit_f64(f64) => |f: f64| Value::Number(f.into());
            visit_str(&str) => |s: &str| Value::String(s.to_owned());
            visit_string(String) => Value::String;
        }
    };
}

trait Other<'de>: Sized {
    fn other<E>(self, value: Value) -> Result<(), E>;
}

impl<'de> Other<'de> for &mut FileReader<'_> {
    fn other<E>(self, value: Value) -> Result<(), E> {
        // A plain mapping goes to `visit_map`; whatever comes here (a scalar, a list, a tagged value) is
        // not one, as `Value` would have said.
        self.not_a_mapping = Some(value);
        Ok(())
    }
}

impl<'de> serde::de::Visitor<'de> for &mut FileReader<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(ANY_YAML_VALUE)
    }

    scalars_as_value!();

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        let items: Vec<Value> = serde::Deserialize::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
        self.other(Value::Sequence(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // The keys seen so far, compared as `Value`s: a repeated key is the error a YAML mapping reports.
        let mut keys = serde_norway::Mapping::new();
        while let Some(key) = map.next_key::<Value>()? {
            if keys.contains_key(&key) {
                return Err(serde::de::Error::custom(duplicate_key(&key)));
            }
            match key.as_str() {
                Some("rules") => {
                    self.has_rules = true;
                    map.next_value_seed(RulesList(&mut *self))?;
                }
                Some("tests") => self.tests = Some(map.next_value()?),
                _ => {
                    map.next_value::<Value>()?;
                    self.key_errors.push(PolicyError::file(
                        self.file,
                        format!("unknown top-level key {} (expected `rules` and `tests`)", describe_key(&key)),
                    ));
                }
            }
            keys.insert(key, Value::Null);
        }
        Ok(())
    }
}

/// The value of `rules:`. A sequence is compiled item by item as it is read; anything else is read as a
/// whole `Value` and judged as before (null: no rules; otherwise not a list).
struct RulesList<'r, 'a>(&'r mut FileReader<'a>);

impl<'de> serde::de::DeserializeSeed<'de> for RulesList<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Other<'de> for RulesList<'_, '_> {
    fn other<E>(self, value: Value) -> Result<(), E> {
        self.0.rules_value(value);
        Ok(())
    }
}

impl<'de> serde::de::Visitor<'de> for RulesList<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(ANY_YAML_VALUE)
    }

    scalars_as_value!();

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element::<Value>()? {
            self.0.rule(item);
        }
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let mapping: serde_norway::Mapping =
            serde::Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        self.other(Value::Mapping(mapping))
    }
}

/// The message `serde_norway::Mapping` gives for a repeated key.
fn duplicate_key(key: &Value) -> String {
    match key {
        Value::Null => "duplicate entry with null key".to_string(),
        Value::Bool(b) => format!("duplicate entry with key `{b}`"),
        Value::Number(n) => format!("duplicate entry with key {n}"),
        Value::String(s) => format!("duplicate entry with key {s:?}"),
        Value::Sequence(_) | Value::Mapping(_) | Value::Tagged(_) => "duplicate entry in YAML map".to_string(),
    }
}

fn describe_key(key: &Value) -> String {
    match key.as_str() {
        Some(s) => format!("`{s}`"),
        None => format!("{key:?}"),
    }
}

/// The items of a top-level list; a missing or empty (`rules:` with nothing after it) list is empty.
fn list(file: &str, key: &str, value: Option<Value>, errors: &mut Vec<PolicyError>) -> Vec<Value> {
    match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Sequence(items)) => items,
        Some(_) => {
            errors.push(PolicyError::file(file, format!("`{key}` must be a list (each item starting with `- `)")));
            Vec::new()
        }
    }
}

fn compile_rule(file: &Arc<str>, value: Value, e: &mut Errs<'_>, shared: &mut Shared) -> Option<Rule> {
    let raw: RawRule = match serde_norway::from_value(value) {
        Ok(r) => r,
        Err(err) => {
            e.whole(err.to_string());
            return None;
        }
    };
    let name = match raw.name {
        Some(n) if !n.trim().is_empty() => n,
        _ => {
            e.at("name", "required: every rule needs a unique name, shown in logs and `policy explain`");
            String::new()
        }
    };
    let effect = match raw.effect.as_deref() {
        None | Some("allow") => Effect::Allow,
        Some("deny") => Effect::Deny,
        Some(other) => {
            e.at("effect", format!("unknown effect {other:?} (expected allow or deny)"));
            Effect::Allow
        }
    };
    let rtype = match raw.rtype.as_deref() {
        None => ResourceType::Repository,
        Some(t) => ResourceType::parse(t).unwrap_or_else(|| {
            e.at("type", format!("unknown type {t:?} (expected repository or registry)"));
            ResourceType::Repository
        }),
    };
    let (actions, star) = compile_actions(e, raw.actions);

    let mut names = CaptureNames::new();
    let compiled_match = match raw.match_ {
        None | Some(Value::Null) => Some((Conditions::default(), vec!["username".to_string()], Vec::new())),
        Some(v) => match serde_norway::from_value::<RawMatch>(v) {
            Ok(m) => Some(compile_match(e, m, &mut names, shared)),
            Err(err) => {
                e.at("match", err.to_string());
                None
            }
        },
    };

    let mut resources = Vec::new();
    let mut needs_username = false;
    match (&raw.resources, rtype) {
        (None, _) => e.at(
            "resources",
            "required: repository name patterns such as [\"team/**\"], or [catalog] for type registry",
        ),
        (Some(StrList(list)), _) if list.is_empty() => {
            e.at("resources", "empty list: a rule without resources can never apply")
        }
        (Some(StrList(list)), ResourceType::Registry) => {
            for (i, r) in list.iter().enumerate() {
                if r != "catalog" {
                    e.at(
                        format!("resources[{i}]"),
                        format!("{r:?}: a registry rule only takes `catalog`, the registry's one resource"),
                    );
                }
            }
            if effect == Effect::Allow && !star && actions != 0 {
                e.at("actions", "a registry rule must list \"*\": registries only ask for registry:catalog:*");
            }
        }
        (Some(StrList(list)), ResourceType::Repository) => {
            // Without a valid match section we do not know which captures exist; skip to avoid noise.
            if let Some((_, available, partial)) = &compiled_match {
                for (i, r) in list.iter().enumerate() {
                    match Pattern::parse(r, CaptureMode::Use(&names, available, partial)) {
                        Ok(p) => {
                            needs_username |= p.captures().any(|c| c == USERNAME);
                            resources.push(shared.pattern(p));
                        }
                        Err(msg) => e.at(format!("resources[{i}]"), msg),
                    }
                }
            }
        }
    }
    let (cond, _, _) = compiled_match?;
    needs_username |= cond.account.iter().chain(&cond.group).any(|p| p.captures().any(|c| c == USERNAME));
    needs_username |= [&cond.account_regex, &cond.group_regex]
        .into_iter()
        .flatten()
        .any(|rx| rx.groups.iter().any(|&(_, c)| c == USERNAME));
    if cond.anonymous == Some(true) && needs_username {
        e.at("match.anonymous", "anonymous: true contradicts {username}: the anonymous identity has no username");
    }
    if e.any() {
        return None;
    }
    Some(Rule {
        name,
        file: file.clone(),
        description: raw.description,
        effect,
        rtype,
        resources: resources.into_boxed_slice(),
        actions,
        cond: cond.into(),
        needs_username,
        captures: names,
    })
}

/// The action mask, and whether `"*"` was listed.
fn compile_actions(e: &mut Errs<'_>, actions: Option<StrList>) -> (u8, bool) {
    let Some(StrList(list)) = actions else {
        e.at("actions", "required: a list of pull, push, delete or \"*\"");
        return (0, false);
    };
    if list.is_empty() {
        e.at("actions", "empty list: a rule without actions grants or denies nothing");
    }
    let mut mask = 0;
    let mut star = false;
    for (i, a) in list.iter().enumerate() {
        match Action::parse(a) {
            Some(action) => {
                star |= action == Action::All;
                mask |= super::eval::bits(action);
            }
            None => {
                e.at(format!("actions[{i}]"), format!("unknown action {a:?} (expected pull, push, delete or \"*\")"))
            }
        }
    }
    (mask & ALL, star)
}

/// Compile the `match:` section. Returns the conditions, the capture names every way of matching
/// binds (available to `resources`), and the names only some alternatives bind.
fn compile_match(
    e: &mut Errs<'_>,
    m: RawMatch,
    names: &mut CaptureNames,
    shared: &mut Shared,
) -> (Conditions, Vec<String>, Vec<String>) {
    let mut guaranteed = vec![USERNAME];
    let mut partial = Vec::new();
    let mut cond = Conditions {
        account: shared.all(bind_patterns(e, "match.account", m.account, names, &mut guaranteed, &mut partial)),
        not_account: plain_patterns(e, "match.not_account", m.not_account, shared),
        ..Conditions::default()
    };
    cond.account_regex =
        m.account_regex.and_then(|src| compile_regex(e, "match.account_regex", &src, names, shared)).map(Box::new);
    cond.group = shared.all(bind_patterns(e, "match.group", m.group, names, &mut guaranteed, &mut partial));
    cond.not_group = plain_patterns(e, "match.not_group", m.not_group, shared);
    cond.group_regex =
        m.group_regex.and_then(|src| compile_regex(e, "match.group_regex", &src, names, shared)).map(Box::new);
    for rx in [&cond.account_regex, &cond.group_regex].into_iter().flatten() {
        guaranteed.extend(rx.groups.iter().map(|&(_, c)| c));
    }
    cond.provider = strings(e, "match.provider", m.provider);
    cond.service = strings(e, "match.service", m.service);
    for (i, s) in strings(e, "match.auth_method", m.auth_method).iter().enumerate() {
        match AuthMethod::parse(s) {
            Some(a) => cond.auth_method.push(a),
            None => e.at(
                format!("match.auth_method[{i}]"),
                format!("unknown auth method {s:?} (expected password, refresh_token, device, workload, access_token or anonymous)"),
            ),
        }
    }
    for (i, s) in strings(e, "match.client_network", m.client_network).iter().enumerate() {
        let net = s.parse::<IpNet>().map(|n| n.trunc()).or_else(|_| s.parse::<IpAddr>().map(IpNet::from));
        match net {
            Ok(n) => cond.client_network.push(n),
            Err(_) => e.at(
                format!("match.client_network[{i}]"),
                format!("invalid network {s:?}: expected CIDR such as 10.0.0.0/8 or fd00::/8, or one IP address"),
            ),
        }
    }
    for (key, value) in m.claims.unwrap_or_default() {
        let field = format!("match.claims.{key}");
        if key.is_empty() || key.split('.').any(str::is_empty) {
            e.at(&field, "not a claim path: names joined by dots");
            continue;
        }
        let items = match value {
            Value::Sequence(items) => items,
            scalar => vec![scalar],
        };
        if items.is_empty() {
            e.at(&field, "empty list matches nothing: remove the claim to mean no condition");
        }
        let mut values = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let src = match item {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    e.at(&field, format!("expected a string, number or boolean (or a list of them), got {other:?}"));
                    continue;
                }
            };
            match Pattern::parse_claim(&src, CaptureMode::Bind(names)) {
                Ok(p) => values.push(shared.pattern(p)),
                Err(msg) => e.at(format!("{field}[{i}]"), msg),
            }
        }
        let binds = classify_captures(&values, &mut guaranteed, &mut partial);
        cond.claims.push(super::eval::ClaimCond { key, values, binds });
    }
    cond.anonymous = m.anonymous;
    if m.anonymous == Some(true) {
        let contradictions: Vec<&str> = [
            ("account", !cond.account.is_empty()),
            ("account_regex", cond.account_regex.is_some()),
            ("group", !cond.group.is_empty()),
            ("group_regex", cond.group_regex.is_some()),
        ]
        .into_iter()
        .filter_map(|(f, present)| present.then_some(f))
        .collect();
        if !contradictions.is_empty() {
            e.at(
                "match.anonymous",
                format!(
                    "anonymous: true contradicts `{}`: the anonymous identity has no username and no groups, so this rule could never apply",
                    contradictions.join("`, `")
                ),
            );
        }
    }
    let mut available: Vec<String> = guaranteed.iter().map(|&i| names.name(i).to_string()).collect();
    available.sort();
    available.dedup();
    let partial = partial.iter().map(|&i| names.name(i).to_string()).filter(|n| !available.contains(n)).collect();
    (cond, available, partial)
}

/// A non-empty list, or an error saying that an empty list would match nothing.
fn strings(e: &mut Errs<'_>, field: &str, list: Option<StrList>) -> Vec<String> {
    check_not_empty(e, field, &list);
    let list = list.map(|l| l.0).unwrap_or_default();
    if list.is_empty() {
        return list;
    }
    for (i, s) in list.iter().enumerate() {
        if s.is_empty() {
            e.at(format!("{field}[{i}]"), "empty string");
        }
    }
    list
}

fn check_not_empty(e: &mut Errs<'_>, field: &str, list: &Option<StrList>) {
    if list.as_ref().is_some_and(|l| l.0.is_empty()) {
        e.at(field, "empty list matches nothing: remove the field to mean no condition");
    }
}

fn plain_patterns(e: &mut Errs<'_>, field: &str, list: Option<StrList>, shared: &mut Shared) -> Vec<Arc<Pattern>> {
    check_not_empty(e, field, &list);
    let mut out = Vec::new();
    for (i, src) in list.map(|l| l.0).unwrap_or_default().iter().enumerate() {
        match Pattern::parse(src, CaptureMode::Forbidden) {
            Ok(p) => out.push(shared.pattern(p)),
            Err(msg) => e.at(format!("{field}[{i}]"), msg),
        }
    }
    out
}

/// Compile "any of" patterns that bind captures. A capture bound by every alternative is guaranteed;
/// one bound by only some is recorded as partial, since the rule could match through an alternative
/// that leaves it without a value.
fn bind_patterns(
    e: &mut Errs<'_>,
    field: &str,
    list: Option<StrList>,
    names: &mut CaptureNames,
    guaranteed: &mut Vec<usize>,
    partial: &mut Vec<usize>,
) -> Vec<Pattern> {
    check_not_empty(e, field, &list);
    let mut out: Vec<Pattern> = Vec::new();
    for (i, src) in list.map(|l| l.0).unwrap_or_default().iter().enumerate() {
        match Pattern::parse(src, CaptureMode::Bind(names)) {
            Ok(p) => out.push(p),
            Err(msg) => e.at(format!("{field}[{i}]"), msg),
        }
    }
    classify_captures(&out, guaranteed, partial);
    out
}

/// Sort the captures of "any of" patterns: bound by every alternative (guaranteed) or by only some
/// (partial). Returns whether there are any.
fn classify_captures<P: Borrow<Pattern>>(
    alternatives: &[P],
    guaranteed: &mut Vec<usize>,
    partial: &mut Vec<usize>,
) -> bool {
    let all: Vec<usize> = alternatives.iter().flat_map(|p| p.borrow().captures()).collect();
    for &c in &all {
        if alternatives.iter().all(|p| p.borrow().captures().any(|x| x == c)) {
            guaranteed.push(c);
        } else {
            partial.push(c);
        }
    }
    !all.is_empty()
}

fn compile_regex(
    e: &mut Errs<'_>,
    field: &str,
    src: &str,
    names: &mut CaptureNames,
    shared: &mut Shared,
) -> Option<Rx> {
    let regex = match shared.regexes.get(src) {
        Some(regex) => regex.clone(),
        None => {
            // Compile the text as written first, so an error points into what the user wrote rather than
            // into our anchoring wrapper.
            if let Err(err) = RegexBuilder::new(src).build() {
                e.at(field, format!("invalid regex: {err}"));
                return None;
            }
            let regex = match RegexBuilder::new(&format!("^(?:{src})$")).build() {
                Ok(r) => Arc::new(r),
                Err(err) => {
                    e.at(field, format!("invalid regex: {err}"));
                    return None;
                }
            };
            shared.regexes.insert(src.to_string(), regex.clone());
            regex
        }
    };
    let mut groups = Vec::new();
    for (index, name) in regex.capture_names().enumerate() {
        let Some(name) = name else { continue };
        if !is_capture_name(name) {
            e.at(field, format!("invalid capture name {name:?}: use letters, digits and `_`"));
            continue;
        }
        match names.define(name) {
            Ok(c) => groups.push((index, c)),
            Err(msg) => e.at(field, msg),
        }
    }
    Some(Rx { source: src.to_string(), regex, groups })
}

fn compile_test(file: &str, value: Value, e: &mut Errs<'_>) -> Option<TestCase> {
    let raw: RawTest = match serde_norway::from_value(value) {
        Ok(t) => t,
        Err(err) => {
            e.whole(err.to_string());
            return None;
        }
    };
    let name = raw.name.unwrap_or_default();
    if name.trim().is_empty() {
        e.at("name", "required: every test needs a name, shown when it fails");
    }
    let raw_id = raw.identity.unwrap_or_default();
    let identity = Identity {
        username: raw_id.username,
        provider: raw_id.provider,
        groups: raw_id.groups,
        claims: raw_id.claims,
        account: None,
        expires_at: None,
    };
    let auth_method = match raw.auth_method.as_deref() {
        None if identity.is_anonymous() => AuthMethod::Anonymous,
        None => AuthMethod::Password,
        Some(s) => AuthMethod::parse(s).unwrap_or_else(|| {
            e.at(
                "auth_method",
                format!("unknown auth method {s:?} (expected password, refresh_token, device, workload, access_token or anonymous)"),
            );
            AuthMethod::Password
        }),
    };
    let client_ip = match raw.client_ip.as_deref() {
        None => IpAddr::from([127, 0, 0, 1]),
        Some(s) => s.parse().unwrap_or_else(|_| {
            e.at("client_ip", format!("invalid IP address {s:?}"));
            IpAddr::from([127, 0, 0, 1])
        }),
    };
    let scope = match raw.scope.as_deref() {
        None => {
            e.at("scope", "required: one scope such as \"repository:team/app:pull,push\"");
            None
        }
        Some(s) => Scope::parse(s).map_err(|err| e.at("scope", err.to_string())).ok(),
    };
    let mut expect = Vec::new();
    match raw.expect {
        None => e.at("expect", "required: the exact actions granted, such as [pull] or [] for nothing"),
        Some(StrList(list)) => {
            for (i, a) in list.iter().enumerate() {
                match Action::parse(a) {
                    Some(action) => expect.push(action),
                    None => e.at(
                        format!("expect[{i}]"),
                        format!("unknown action {a:?} (expected pull, push, delete or \"*\")"),
                    ),
                }
            }
        }
    }
    expect.sort();
    expect.dedup();
    let scope = scope?;
    if e.any() {
        return None;
    }
    Some(TestCase {
        file: file.to_string(),
        name,
        ctx: RequestContext {
            identity: Arc::new(identity),
            auth_method,
            client_ip,
            service: raw.service.unwrap_or_else(|| TEST_SERVICE.to_string()),
        },
        scope,
        expect,
    })
}

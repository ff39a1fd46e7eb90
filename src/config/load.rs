//! Reading a config file so that every problem shows up in one run, each saying where it is.
//!
//! - The YAML is parsed once; a syntax error stops here (with its line), since nothing after it can be
//!   trusted.
//! - `TOLLGATE_<SECTION>__<KEY>` variables override keys. Only variables whose first part names a config
//!   section count: Kubernetes puts `TOLLGATE_PORT`, `TOLLGATE_SERVICE_HOST`, ... into every pod of a
//!   namespace with a Service called `tollgate`, and those are ignored with one warning naming them. A typo
//!   inside a known section is an error that names the variable, not the file.
//! - The tree is read key by key ([`read_tolerant`]): a value that cannot be read (a wrong type, a word
//!   that is not one of an enum's, an unknown key of a strict section) is reported at its own key, taken
//!   out, and the tree is read again, so one bad value costs only itself and every other key is still
//!   read and validated. A required key that is missing is reported and stood in for, so its entry is
//!   still checked. Each provider entry is read as the type its `type:` names.
//! - Unknown keys are reported with their line (or their variable) and the closest known key.
//! - Validation problems that only follow from a value that could not be read (a key "required" next to
//!   a key whose value was refused) are not reported: the operator fixes the value and sees the rest.
//! - Every problem is placed at its key's own line, found by the YAML parser ([`super::locate`]), or at
//!   the environment variable that set it; problems are listed in the order of the file.

use serde::de::DeserializeOwned;
use serde_norway::{Mapping, Value};

use super::locate::line_or_enclosing;
pub use super::problem::closest;
use super::problem::{in_words, one_of, Location, Problem, Said};
use super::tracked::{self, KeyPath, Seg};

/// The top-level sections of a config file.
pub const SECTIONS: [&str; 11] = [
    "server",
    "token",
    "refresh_tokens",
    "providers",
    "identity_cache",
    "policy",
    "log",
    "rate_limit",
    "state",
    "access_tokens",
    "invalidation",
];

/// The keys of the sections read without `deny_unknown_fields` (their unknown keys are collected, not
/// fatal), for "did you mean". A unit test checks every key here is accepted.
pub const KNOWN_KEYS: &[(&str, &[&str])] = &[
    (
        "server",
        &[
            "listen",
            "data_dir",
            "max_body_bytes",
            "max_scopes",
            "tls",
            "metrics_listen",
            "trusted_proxies",
            "probe_interval",
            "connections",
        ],
    ),
    ("token", &["issuer", "services", "lifetime", "kid_format", "header", "keys"]),
    ("refresh_tokens", &["enabled", "lifetime", "secret_file"]),
    ("identity_cache", &["ttl", "capacity", "negative_ttl", "serve_stale_for"]),
    ("policy", &["paths", "builtin_example", "reload_interval", "settle"]),
    ("log", &["level", "format"]),
    ("access_tokens", &["enabled", "max_lifetime", "max_auth_age", "group_admins", "secret_file"]),
];

/// Environment variables that are not config overrides.
const NON_CONFIG_ENV: &[&str] = &["TOLLGATE_CONFIG", "TOLLGATE_LOG"];

/// What reading found besides the tree: problems, warnings, and which variable set which key.
#[derive(Default)]
pub struct Findings {
    pub errors: Vec<Problem>,
    pub warnings: Vec<String>,
    /// (dotted key path, variable) of every override applied.
    pub from_env: Vec<(String, String)>,
}

/// Where a key came from: its variable, or the file and its line (or, for a key that is not written, the
/// line of the nearest enclosing key).
pub fn place(path: &KeyPath, origin: &str, text: &str, findings: &Findings) -> Location {
    let dotted = path.dotted();
    if let Some((_, var)) = findings.from_env.iter().find(|(p, _)| *p == dotted || dotted.starts_with(&format!("{p}.")))
    {
        return Location::Env(var.clone());
    }
    Location::File { origin: origin.to_string(), line: line_or_enclosing(text, path) }
}

/// Apply the environment's overrides to `root`.
pub fn apply_env(
    root: &mut Value,
    env: &[(String, String)],
    findings: &mut Findings,
    apply: impl Fn(&mut Value, &[String], &str) -> Result<(), String>,
) {
    let mut ignored = Vec::new();
    for (k, v) in env {
        let Some(rest) = k.strip_prefix("TOLLGATE_") else { continue };
        if NON_CONFIG_ENV.contains(&k.as_str()) {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if !SECTIONS.contains(&path[0].as_str()) {
            ignored.push(k.clone());
            continue;
        }
        match apply(root, &path, v) {
            Ok(()) => findings.from_env.push((path.join("."), k.clone())),
            Err(e) => findings.errors.push(Problem::new("", e).at(Location::Env(k.clone()))),
        }
    }
    if !ignored.is_empty() {
        ignored.sort();
        findings.warnings.push(format!(
            "ignored {} environment variable(s) that start with TOLLGATE_ but name no config section ({}): {}",
            ignored.len(),
            SECTIONS.join(", "),
            ignored.join(", ")
        ));
    }
}

/// What reading the tree found, in the file's coordinates (list indices as written, before any entry was
/// taken out).
#[derive(Debug, Default)]
pub struct Reading {
    /// Each problem of a value, at its key.
    pub problems: Vec<Problem>,
    /// Values that could not be read (taken out, or stood in for when required): problems of validation
    /// at or under them, or that hang on them, are not reported.
    pub failed: Vec<KeyPath>,
    /// Values taken out of the tree: list items among them shift the later items' indices.
    pub removed: Vec<KeyPath>,
    /// Keys of lenient sections that nothing reads.
    pub unknown: Vec<KeyPath>,
}

impl Reading {
    /// `current` (a path in the tree as it is now, under `at`, which is in the file's coordinates) in the
    /// file's coordinates.
    fn original(&self, at: &KeyPath, current: &KeyPath) -> KeyPath {
        let mut out = at.clone();
        for seg in &current.0 {
            let next = match seg {
                Seg::Index(c) => {
                    let gone: Vec<usize> = self
                        .removed
                        .iter()
                        .filter(|r| r.0.len() == out.0.len() + 1 && r.starts_with(&out))
                        .filter_map(|r| match r.0.last() {
                            Some(Seg::Index(i)) => Some(*i),
                            _ => None,
                        })
                        .collect();
                    let mut o = 0;
                    let mut seen = 0;
                    loop {
                        if !gone.contains(&o) {
                            if seen == *c {
                                break;
                            }
                            seen += 1;
                        }
                        o += 1;
                    }
                    Seg::Index(o)
                }
                key => key.clone(),
            };
            out = out.join(next);
        }
        out
    }

    /// The translation of a validation problem's key (written against the tree read) to the file's.
    pub fn original_key(&self, key: &str) -> String {
        if key.is_empty() {
            return String::new();
        }
        self.original(&KeyPath::default(), &KeyPath::parse(key)).to_string()
    }
}

/// The most values one tree may lose before reading gives up (each attempt takes out one).
const MAX_ATTEMPTS: usize = 1000;

/// Read `value` (found at `at`) as a `T`, taking out each value that cannot be read and reading again,
/// so that every bad value is reported at its own key and the rest is still read. Returns the `T` and
/// the tree it was read from, or None when the tree as a whole is not a `T`.
pub fn read_tolerant<T: DeserializeOwned>(mut value: Value, at: &KeyPath, reading: &mut Reading) -> Option<(T, Value)> {
    // Required keys stood in for by an empty text.
    let mut stood_in: Vec<KeyPath> = Vec::new();
    for _ in 0..MAX_ATTEMPTS {
        let failure = match tracked::read::<T>(value.clone()) {
            Ok((t, ignored)) => {
                for p in ignored {
                    let unknown = reading.original(at, &p);
                    reading.unknown.push(unknown);
                }
                return Some((t, value));
            }
            Err(f) => f,
        };
        let current = failure.path;
        let path = reading.original(at, &current);
        if stood_in.contains(&path) {
            // An empty text does not do for this key: give up on its map.
            if !take_out(&mut value, &current.parent(), &path.parent(), reading) {
                return None;
            }
            continue;
        }
        match in_words(&failure.message) {
            Said::Missing(field) => {
                let missing = path.key(&field);
                if stood_in.contains(&missing) {
                    if !take_out(&mut value, &current, &path, reading) {
                        return None;
                    }
                    continue;
                }
                // A key taken out for its value is not also missing, nor a key whose typo was reported.
                let explained = reading.failed.contains(&missing)
                    || reading.problems.iter().any(|p| {
                        KeyPath::parse(&p.key).parent() == path && p.message.contains(&format!("`{missing}`"))
                    });
                if !explained {
                    reading.problems.push(Problem::new(missing.to_string(), "required"));
                }
                reading.failed.push(missing.clone());
                stood_in.push(missing);
                // Stand in for the key so the rest of its map is still read; give up on the map if an
                // empty text will not do.
                let stood_in = match value_at_mut(&mut value, &current) {
                    Some(Value::Mapping(m)) if !m.contains_key(field.as_str()) => {
                        m.insert(Value::String(field), Value::String(String::new()));
                        true
                    }
                    _ => false,
                };
                if !stood_in && !take_out(&mut value, &current, &path, reading) {
                    return None;
                }
                continue;
            }
            Said::UnknownKey { key, expected } => {
                let known: Vec<&str> = expected.iter().map(String::as_str).collect();
                let message = unknown_message(&key, &path.parent(), &known);
                reading.problems.push(Problem::new(path.to_string(), message));
            }
            Said::NotAWord { found } => {
                let mut probe = value.clone();
                let words = match value_at_mut(&mut probe, &current) {
                    Some(v) => {
                        *v = Value::String("\u{1}".into());
                        match tracked::read::<T>(probe).map(|_| ()) {
                            Err(f) => match in_words(&f.message) {
                                Said::Value(m) => m.split_once("must be one of: ").and_then(|(_, rest)| {
                                    rest.split_once(';')
                                        .map(|(w, _)| w.split(", ").map(str::to_string).collect::<Vec<String>>())
                                }),
                                _ => None,
                            },
                            Ok(()) => None,
                        }
                    }
                    None => None,
                };
                let message = match words {
                    Some(words) => one_of(&words, &found),
                    None => format!("must be a word; found {found}"),
                };
                reading.problems.push(Problem::new(path.to_string(), message));
                reading.failed.push(path.clone());
            }
            Said::Value(message) => {
                reading.problems.push(Problem::new(path.to_string(), message));
                reading.failed.push(path.clone());
            }
        }
        if !take_out(&mut value, &current, &path, reading) {
            return None;
        }
    }
    None
}

/// Take the value at `current` (`original` in the file) out of `value`; false when it is the whole tree.
fn take_out(value: &mut Value, current: &KeyPath, original: &KeyPath, reading: &mut Reading) -> bool {
    let Some((last, parent)) = current.0.split_last() else { return false };
    let removed = match (value_at_mut(value, &KeyPath(parent.to_vec())), last) {
        (Some(Value::Mapping(m)), Seg::Key(k)) => m.remove(k.as_str()).is_some(),
        (Some(Value::Sequence(s)), Seg::Index(i)) if *i < s.len() => {
            s.remove(*i);
            true
        }
        _ => false,
    };
    if removed {
        reading.removed.push(original.clone());
    }
    // Nothing to take out (a key that is not a text, say): give up rather than read the same tree again.
    removed
}

/// The value at `path` in `value`.
pub fn value_at<'v>(value: &'v Value, path: &KeyPath) -> Option<&'v Value> {
    let mut node = value;
    for seg in &path.0 {
        node = match (node, seg) {
            (Value::Mapping(m), Seg::Key(k)) => m.get(k.as_str())?,
            (Value::Sequence(s), Seg::Index(i)) => s.get(*i)?,
            _ => return None,
        };
    }
    Some(node)
}

fn value_at_mut<'v>(value: &'v mut Value, path: &KeyPath) -> Option<&'v mut Value> {
    let mut node = value;
    for seg in &path.0 {
        node = match (node, seg) {
            (Value::Mapping(m), Seg::Key(k)) => m.get_mut(k.as_str())?,
            (Value::Sequence(s), Seg::Index(i)) => s.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(node)
}

/// A value as an operator would describe it: `"text"`, `5`, `true`, `a list`, `a mapping`.
pub fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing (an empty value)".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// `unknown key (did you mean `parent.k`?)`, the closest of `known` suggested.
fn unknown_message(wrong: &str, parent: &KeyPath, known: &[&str]) -> String {
    match closest(wrong, known.iter().copied()) {
        Some(k) if parent.0.is_empty() => format!("unknown key (did you mean `{k}`?)"),
        Some(k) => format!("unknown key (did you mean `{}`?)", parent.key(k)),
        None => "unknown key (see docs/configuration.md for every key)".to_string(),
    }
}

/// The problem of an unknown key of a lenient section (at the top level: an unknown section).
pub fn unknown_key(path: &KeyPath) -> Problem {
    let parent = path.parent();
    let known: Vec<&str> = if parent.0.is_empty() {
        SECTIONS.to_vec()
    } else {
        let name = parent.to_string();
        KNOWN_KEYS.iter().find(|(s, _)| *s == name).map(|(_, k)| k.to_vec()).unwrap_or_default()
    };
    Problem::new(path.to_string(), unknown_message(path.last_key().unwrap_or(""), &parent, &known))
}

/// The kinds of provider entry, as `type:` names them.
pub const PROVIDER_TYPES: [&str; 4] = ["static", "ldap", "oidc", "workload"];

/// Read `providers:` entry by entry, each as the type its `type:` names (so a bad key in an entry is
/// found at its own key), and put back only what can be read.
pub fn read_providers(
    root: &mut Mapping,
    reading: &mut Reading,
    read_entry: impl Fn(&str, Value, &KeyPath, &mut Reading) -> Option<Value>,
) {
    let at = KeyPath::default().key("providers");
    let entries = match root.get("providers") {
        None | Some(Value::Null) => return,
        Some(Value::Sequence(entries)) => entries.clone(),
        Some(other) => {
            reading.problems.push(Problem::new(
                "providers",
                format!(
                    "must be a list of provider entries (one `- type: ...` entry per line); found {}",
                    describe(other)
                ),
            ));
            reading.failed.push(at);
            root.remove("providers");
            return;
        }
    };
    let mut kept = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let at = at.join(Seg::Index(i));
        let read = match entry {
            Value::Mapping(mut m) => match m.remove("type") {
                Some(Value::String(t)) if PROVIDER_TYPES.contains(&t.as_str()) => {
                    read_entry(&t, Value::Mapping(m), &at, reading).map(|v| (t, v))
                }
                None | Some(Value::Null) => {
                    let words = PROVIDER_TYPES.join(", ");
                    reading
                        .problems
                        .push(Problem::new(at.key("type").to_string(), format!("required; one of: {words}")));
                    None
                }
                Some(other) => {
                    let words: Vec<String> = PROVIDER_TYPES.iter().map(|t| t.to_string()).collect();
                    reading.problems.push(Problem::new(at.key("type").to_string(), one_of(&words, &describe(&other))));
                    None
                }
            },
            other => {
                reading.problems.push(Problem::new(
                    at.to_string(),
                    format!("must be a mapping with `type:`, `name:` and the type's keys; found {}", describe(&other)),
                ));
                None
            }
        };
        match read {
            Some((t, Value::Mapping(mut m))) => {
                m.insert(Value::String("type".into()), Value::String(t));
                kept.push(Value::Mapping(m));
            }
            _ => {
                reading.failed.push(at.clone());
                reading.removed.push(at);
            }
        }
    }
    root.insert(Value::String("providers".into()), Value::Sequence(kept));
}

/// Whether a problem found by validating the tree only follows from a value that could not be read
/// (and was taken out, or stood in for): the problem is of that value or under it; or of the list that
/// lost it; or of a key of the same map that is not written (a "required" the refused value may have
/// met) or whose message names the refused key (`only used with store: redis`, when `store` was
/// refused). `key` is the problem's key in the file, `read` the same key in the tree as read.
pub fn follows_from_unread(problem: &Problem, read: &KeyPath, reading: &Reading, tree: &Value) -> bool {
    let key = KeyPath::parse(&problem.key);
    // Words of the message outside its quotes (a quoted value is the operator's, not a key's name).
    let unquoted: String = problem.message.split('"').step_by(2).collect::<Vec<_>>().join(" ");
    reading.failed.iter().any(|f| {
        let map = f.parent();
        if key.starts_with(f) {
            return true;
        }
        let Some(name) = f.last_key() else { return key == map };
        if map.0.is_empty() || !key.starts_with(&map) {
            return false;
        }
        let named = unquoted.split(|c: char| !(c.is_alphanumeric() || c == '_')).any(|word| word == name);
        named || value_at(tree, read).is_none()
    })
}

/// Problems in the order of the file: the file's own first, then by line, then keys not written in the
/// file, then those set by environment variables.
pub fn sort(problems: &mut [Problem]) {
    problems.sort_by_key(|p| match &p.location {
        Location::File { line: None, .. } if p.key.is_empty() => (0, 0, String::new()),
        Location::File { line: Some(l), .. } => (1, *l, String::new()),
        Location::File { line: None, .. } => (2, 0, String::new()),
        // Variables by name, as `env` lists them.
        Location::Env(var) => (3, 0, var.clone()),
        Location::Unplaced => (4, 0, String::new()),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_the_closest_known_name() {
        assert_eq!(closest("lisen", ["listen", "data_dir"]), Some("listen"));
        assert_eq!(closest("ldpa", ["static", "ldap", "oidc", "workload"]), Some("ldap"));
        assert_eq!(closest("completely", ["listen"]), None);
        assert_eq!(
            unknown_message("clent_id", &KeyPath::parse("providers[2]"), &["name", "client_id"]),
            "unknown key (did you mean `providers[2].client_id`?)"
        );
    }

    #[test]
    fn indices_after_a_removed_item_are_the_files() {
        let mut reading = Reading::default();
        reading.removed.push(KeyPath::parse("token.keys[1]"));
        reading.removed.push(KeyPath::parse("token.keys[2]"));
        reading.removed.push(KeyPath::parse("providers[0]"));
        let at = KeyPath::default();
        assert_eq!(reading.original(&at, &KeyPath::parse("token.keys[0]")).to_string(), "token.keys[0]");
        assert_eq!(reading.original(&at, &KeyPath::parse("token.keys[1].x")).to_string(), "token.keys[3].x");
        assert_eq!(reading.original_key("providers[1].name"), "providers[2].name");
    }
}

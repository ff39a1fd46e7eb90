//! Reading a config file so that every problem shows up in one run, each saying where it is.
//!
//! - The YAML is parsed once; a syntax error stops here (with its line), since nothing after it can be
//!   trusted.
//! - `TOLLGATE_<SECTION>__<KEY>` variables override keys. Only variables whose first part names a config
//!   section count: Kubernetes puts `TOLLGATE_PORT`, `TOLLGATE_SERVICE_HOST`, ... into every pod of a
//!   namespace with a Service called `tollgate`, and those are ignored with one warning naming them. A typo
//!   inside a known section is an error that names the variable, not the file.
//! - Each section, and each provider entry, is read on its own: a wrong type in one (a provider `type:
//!   ldpa`) is reported with its line and a "did you mean", and the others are still read and validated.
//! - Unknown keys are reported with their line (or their variable) and the closest known key.

use serde_norway::{Mapping, Value};

use super::problem::{Location, Problem};

/// The top-level sections of a config file.
pub const SECTIONS: [&str; 9] =
    ["server", "token", "refresh_tokens", "providers", "identity_cache", "policy", "log", "rate_limit", "state"];

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
    /// Original index of each provider entry kept (entries that could not be read are dropped).
    pub provider_index: Vec<usize>,
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The known name closest to `wrong`, if it is close enough to be a typo.
pub fn closest<'a>(wrong: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let wrong = wrong.to_ascii_lowercase();
    known
        .into_iter()
        .map(|k| (distance(&wrong, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3) && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// " (did you mean `x`?)" for a serde message naming an unknown field or variant and what it expected.
fn suggestion_for(message: &str) -> String {
    for what in ["unknown field `", "unknown variant `"] {
        let Some(rest) = message.split(what).nth(1) else { continue };
        let Some((wrong, after)) = rest.split_once('`') else { continue };
        let expected: Vec<&str> = after.split("expected").nth(1).unwrap_or("").split('`').skip(1).step_by(2).collect();
        if let Some(k) = closest(wrong, expected) {
            return format!(" (did you mean `{k}`?)");
        }
    }
    String::new()
}

/// The 1-based line of the key at dotted `path` (list indices as numbers), found by indentation.
pub fn line_of(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0;
    let mut min_indent = 0;
    let mut found = None;
    for seg in path.split('.') {
        if let Ok(n) = seg.parse::<usize>() {
            // The n-th list item after the parent key.
            let items: Vec<usize> = (from..lines.len())
                .take_while(|&i| {
                    let l = lines[i];
                    l.trim().is_empty() || l.trim_start().starts_with('#') || indent(l) >= min_indent || i == from
                })
                .filter(|&i| lines[i].trim_start().starts_with("- ") && indent(lines[i]) >= min_indent)
                .collect();
            let i = *items.get(n)?;
            found = Some(i);
            from = i;
            min_indent = indent(lines[i]) + 2;
            continue;
        }
        let i = (from..lines.len()).find(|&i| {
            let t = lines[i].trim_start().trim_start_matches("- ");
            indent(lines[i]) >= min_indent
                && (t.starts_with(&format!("{seg}:")) || t.starts_with(&format!("\"{seg}\":")))
        })?;
        found = Some(i);
        from = i + 1;
        let l = lines[i];
        min_indent = indent(l) + if l.trim_start().starts_with("- ") { 2 } else { 1 };
    }
    found.map(|i| i + 1)
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
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

/// Where a key came from: its variable, or the file and line. `path` is dotted, list indices as numbers.
pub fn place(path: &str, origin: &str, text: &str, findings: &Findings) -> Location {
    if let Some((_, var)) = findings.from_env.iter().find(|(p, _)| p == path || path.starts_with(&format!("{p}."))) {
        return Location::Env(var.clone());
    }
    Location::File { origin: origin.to_string(), line: line_of(text, path) }
}

/// Where the key of `problem` came from, found from its key (`providers[1].name` is looked up as
/// `providers.1.name`). A problem without a key is left as it is.
pub fn place_problem(problem: Problem, origin: &str, text: &str, findings: &Findings) -> Problem {
    if problem.key.is_empty() {
        return problem;
    }
    let path = problem.key.replace('[', ".").replace(']', "");
    let location = place(&path, origin, text, findings);
    problem.at(location)
}

/// The tree with every section (and provider entry) that `read` accepts on its own; the others are
/// reported, with their place and a suggestion, and left out so the rest can still be checked.
pub fn isolate<T>(
    root: Value,
    origin: &str,
    text: &str,
    findings: &mut Findings,
    read: impl Fn(Value) -> Result<T, String>,
    read_provider: impl Fn(Value) -> Result<(), String>,
) -> Value {
    let Value::Mapping(map) = root else {
        findings
            .errors
            .push(Problem::file(origin, format!("the config must be a mapping of sections ({})", SECTIONS.join(", "))));
        return Value::Mapping(Mapping::new());
    };
    let mut kept = Mapping::new();
    for (k, v) in map {
        let key = k.as_str().unwrap_or("").to_string();
        if key == "providers" {
            let entries = match v {
                Value::Sequence(entries) => entries,
                Value::Null => Vec::new(),
                _ => {
                    let at = place("providers", origin, text, findings);
                    findings.errors.push(Problem::new("providers", "must be a list of provider entries").at(at));
                    continue;
                }
            };
            let mut good = Vec::new();
            for (i, entry) in entries.into_iter().enumerate() {
                match read_provider(entry.clone()) {
                    Ok(()) => {
                        good.push(entry);
                        findings.provider_index.push(i);
                    }
                    Err(e) => {
                        // An unknown field is pointed at on its own line, anything else at the entry.
                        let field = e.split("unknown field `").nth(1).and_then(|r| r.split('`').next());
                        let path = match field {
                            Some(f) if line_of(text, &format!("providers.{i}.{f}")).is_some() => {
                                format!("providers.{i}.{f}")
                            }
                            _ => format!("providers.{i}"),
                        };
                        let at = place(&path, origin, text, findings);
                        let message = format!("{e}{}", suggestion_for(&e));
                        findings.errors.push(Problem::new(format!("providers[{i}]"), message).at(at));
                    }
                }
            }
            kept.insert(k, Value::Sequence(good));
            continue;
        }
        let mut single = Mapping::new();
        single.insert(k.clone(), v.clone());
        match read(Value::Mapping(single)) {
            Ok(_) => {
                kept.insert(k, v);
            }
            Err(e) => {
                let at = place(&key, origin, text, findings);
                findings.errors.push(Problem::new("", format!("{e}{}", suggestion_for(&e))).at(at));
            }
        }
    }
    Value::Mapping(kept)
}

/// Report an unknown key found while reading (a dotted path), with its place and the closest known key.
pub fn unknown_key(path: &str, origin: &str, text: &str, findings: &mut Findings) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let wrong = parts.pop().unwrap_or("");
    let parent = parts.join(".");
    let known: Vec<&str> = if parent.is_empty() {
        SECTIONS.to_vec()
    } else {
        KNOWN_KEYS.iter().find(|(s, _)| *s == parent).map(|(_, k)| k.to_vec()).unwrap_or_default()
    };
    let hint = match closest(wrong, known) {
        Some(k) if parent.is_empty() => format!(" (did you mean `{k}`?)"),
        Some(k) => format!(" (did you mean `{parent}.{k}`?)"),
        None => " (see docs/configuration.md for every key)".to_string(),
    };
    let at = place(path, origin, text, findings);
    findings.errors.push(Problem::new(path, format!("unknown key{hint}")).at(at));
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
            suggestion_for("unknown variant `ldpa`, expected one of `static`, `ldap`, `oidc`, `workload`"),
            " (did you mean `ldap`?)"
        );
        assert_eq!(
            suggestion_for("unknown field `clent_id`, expected one of `name`, `client_id`"),
            " (did you mean `client_id`?)"
        );
    }

    #[test]
    fn lines_are_found_by_indentation() {
        let text = "server:\n  listen: x\n  lisen: y\ntoken:\n  issuer: z\nproviders:\n  - type: static\n    name: a\n  - type: ldpa\n    name: b\n";
        assert_eq!(line_of(text, "server.lisen"), Some(3));
        assert_eq!(line_of(text, "token.issuer"), Some(5));
        assert_eq!(line_of(text, "providers.1"), Some(9));
        assert_eq!(line_of(text, "providers.1.name"), Some(10));
        assert_eq!(line_of(text, "nothing.here"), None);
    }
}

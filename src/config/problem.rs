//! One problem found in a config: which key, what to fix, and where the key was set.
//!
//! Validation names the key (a dotted path such as `token.keys[0].cert_file`) and says what to fix; the
//! loader then fills in where that key came from (its line in the file, or the environment variable that
//! set it), from the key itself. Printed, a problem reads `t.yaml:3: server.lisen: unknown key (...)`.

use std::fmt;

/// Where the key of a [`Problem`] was set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Location {
    /// Not placed: a problem found by validating a section on its own, before the loader placed it.
    #[default]
    Unplaced,
    /// The config file (its path, or "embedded default"), at this line when the key's line was found.
    File { origin: String, line: Option<usize> },
    /// The environment variable whose override set the key.
    Env(String),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Unplaced => Ok(()),
            Location::File { origin, line: Some(line) } => write!(f, "{origin}:{line}"),
            Location::File { origin, line: None } => f.write_str(origin),
            Location::Env(var) => write!(f, "environment variable {var}"),
        }
    }
}

/// One problem of the config. Nothing in it is secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The dotted path of the key at fault, list indices in brackets (`providers[1].name`); empty when
    /// the problem is the file's (unreadable, not YAML).
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
    pub location: Location,
}

impl Problem {
    /// A problem of `key`, not placed yet.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem { key: key.into(), message: message.into(), location: Location::Unplaced }
    }

    /// A problem of the whole file (or text) `origin`.
    pub fn file(origin: &str, message: impl Into<String>) -> Problem {
        Problem::new("", message).at(Location::File { origin: origin.to_string(), line: None })
    }

    /// The same problem, placed at `location`.
    pub fn at(self, location: Location) -> Problem {
        Problem { location, ..self }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.location != Location::Unplaced {
            write!(f, "{}: ", self.location)?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for Problem {}

/// What a duration key is expected to be, in serde's messages (see `check::duration`).
pub const DURATION_EXPECTED: &str = "a duration such as 30s or 5m";

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

/// What serde said about a value, in an operator's words: the one place its messages are translated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Said {
    /// A key the struct does not know; `expected` are the keys it does.
    UnknownKey { key: String, expected: Vec<String> },
    /// A required key is not there.
    Missing(String),
    /// A value of the wrong type, out of range or not one of its words (`must be ...; found ...`), or a
    /// message serde did not word as any of these, passed on as it is.
    Value(String),
    /// A value that must be one of an enum's words but is not even a word (`kid_format: 5`): the caller
    /// asks the enum for its words and words it with [`one_of`].
    NotAWord { found: String },
}

/// serde's `message` in words (see [`Said`]).
pub fn in_words(message: &str) -> Said {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (key, after) = rest.split_once('`').unwrap_or((rest, ""));
        return Said::UnknownKey { key: key.to_string(), expected: quoted(after) };
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        return Said::Missing(rest.split('`').next().unwrap_or(rest).to_string());
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let (word, after) = rest.split_once('`').unwrap_or((rest, ""));
        return Said::Value(one_of(&quoted(after), &format!("{word:?}")));
    }
    for (prefix, out_of_range) in [("invalid type: ", false), ("invalid value: ", true)] {
        let Some((found, expected)) = message.strip_prefix(prefix).and_then(|r| r.rsplit_once(", expected ")) else {
            continue;
        };
        let found = found_words(found);
        if expected.contains("Value::Tagged enum") {
            return Said::NotAWord { found };
        }
        let Some(kind) = must_be(expected) else { break };
        let kind = match (out_of_range, integer_range(expected)) {
            (true, Some((min, _))) if found.starts_with('-') => format!("{kind} of at least {min}"),
            (true, Some((_, max))) => format!("{kind} no larger than {max}"),
            _ => kind.to_string(),
        };
        return Said::Value(format!("{kind}; found {found}"));
    }
    Said::Value(message.to_string())
}

/// `must be one of: a, b; found X (did you mean `a`?)`.
pub fn one_of(words: &[String], found: &str) -> String {
    // Only a word written as text can be a typo of one.
    let typo = found.strip_prefix('"').and_then(|f| f.strip_suffix('"'));
    let hint = match typo.and_then(|t| closest(t, words.iter().map(String::as_str))) {
        Some(w) => format!(" (did you mean `{w}`?)"),
        None => String::new(),
    };
    format!("must be one of: {}; found {found}{hint}", words.join(", "))
}

/// The names serde quotes in backticks after "expected" (`expected one of `a`, `b``, `expected `a` or `b``).
fn quoted(after: &str) -> Vec<String> {
    let Some((_, list)) = after.split_once("expected") else { return Vec::new() };
    list.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

/// What a value of serde's `expected` type must be, in words.
fn must_be(expected: &str) -> Option<&'static str> {
    Some(match expected {
        e if integer_range(e).is_some() || e == "an integer" => "must be a whole number",
        "f32" | "f64" | "a float" => "must be a number",
        "a boolean" => "must be true or false",
        "a string" | "path string" | "a borrowed string" | "a character" | "a char" => "must be a text",
        "a sequence" => "must be a list (write `[a, b]` or one `- item` per line)",
        "a map" => "must be a mapping (write `key: value` lines indented under it, or `{key: value}`)",
        e if e.starts_with("struct ") => {
            "must be a mapping (write `key: value` lines indented under it, or `{key: value}`)"
        }
        DURATION_EXPECTED => "must be a duration such as 30s or 5m",
        _ => return None,
    })
}

/// The smallest and largest value of a Rust integer type named by serde.
fn integer_range(ty: &str) -> Option<(i128, u128)> {
    Some(match ty {
        "u8" => (0, u8::MAX.into()),
        "u16" => (0, u16::MAX.into()),
        "u32" => (0, u32::MAX.into()),
        "u64" | "usize" => (0, u64::MAX.into()),
        "i8" => (i8::MIN.into(), 127),
        "i16" => (i16::MIN.into(), 32_767),
        "i32" => (i32::MIN.into(), 2_147_483_647),
        "i64" | "isize" => (i64::MIN.into(), 9_223_372_036_854_775_807),
        _ => return None,
    })
}

/// serde's description of what was found (`string "lots"`, `integer `5``, `sequence`), as written.
fn found_words(found: &str) -> String {
    if let Some(s) = found.strip_prefix("string ") {
        return s.to_string();
    }
    for kind in ["integer `", "floating point `", "boolean `", "char `"] {
        if let Some(v) = found.strip_prefix(kind) {
            return v.trim_end_matches('`').to_string();
        }
    }
    match found {
        "unit value" => "nothing (an empty value)".to_string(),
        "sequence" => "a list".to_string(),
        "map" => "a mapping".to_string(),
        "enum" => "a tagged value".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_print_place_key_and_message() {
        let p = Problem::new("server.lisen", "unknown key");
        assert_eq!(p.to_string(), "server.lisen: unknown key");
        let placed = p.clone().at(Location::File { origin: "t.yaml".into(), line: Some(3) });
        assert_eq!(placed.to_string(), "t.yaml:3: server.lisen: unknown key");
        let env = p.at(Location::Env("TOLLGATE_SERVER__LISEN".into()));
        assert_eq!(env.to_string(), "environment variable TOLLGATE_SERVER__LISEN: server.lisen: unknown key");
        assert_eq!(Problem::file("t.yaml", "not YAML").to_string(), "t.yaml: not YAML");
    }

    #[test]
    fn serde_messages_are_said_in_an_operators_words() {
        let value = |m: &str| match in_words(m) {
            Said::Value(v) => v,
            other => panic!("{other:?}"),
        };
        assert_eq!(value("invalid type: string \"lots\", expected usize"), "must be a whole number; found \"lots\"");
        assert_eq!(
            value("invalid type: string \"a\", expected a sequence"),
            "must be a list (write `[a, b]` or one `- item` per line); found \"a\""
        );
        assert_eq!(
            value("invalid type: string \"yes please\", expected a boolean"),
            "must be true or false; found \"yes please\""
        );
        assert_eq!(value("invalid type: sequence, expected a string"), "must be a text; found a list");
        assert_eq!(value("invalid type: integer `5`, expected path string"), "must be a text; found 5");
        assert_eq!(
            value("invalid type: integer `5`, expected a duration such as 30s or 5m"),
            "must be a duration such as 30s or 5m; found 5"
        );
        assert_eq!(
            value("invalid value: integer `-1`, expected usize"),
            "must be a whole number of at least 0; found -1"
        );
        assert_eq!(
            value("invalid value: integer `4294967296`, expected u32"),
            "must be a whole number no larger than 4294967295; found 4294967296"
        );
        assert_eq!(
            value("unknown variant `rfc7368`, expected `libtrust` or `rfc7638`"),
            "must be one of: libtrust, rfc7638; found \"rfc7368\" (did you mean `rfc7638`?)"
        );
        assert_eq!(
            in_words("unknown field `clent_id`, expected one of `name`, `client_id`"),
            Said::UnknownKey { key: "clent_id".into(), expected: vec!["name".into(), "client_id".into()] }
        );
        assert_eq!(in_words("missing field `url`"), Said::Missing("url".into()));
        assert_eq!(
            in_words("invalid type: integer `5`, expected a Value::Tagged enum"),
            Said::NotAWord { found: "5".into() }
        );
        assert_eq!(value("something else"), "something else");
    }
}

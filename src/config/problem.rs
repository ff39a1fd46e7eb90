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
}

//! Errors found while loading and compiling rules files.
//!
//! Every error names the file and, when it concerns one rule or test, its position (counting from 1, as
//! a person reading the file counts) and name, then the field. Compilation collects all of them, so one
//! run of `tollgate policy test` shows everything that needs fixing.

use std::fmt;

/// What part of a file an error is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorItem {
    /// The file as a whole (unreadable, YAML syntax, top-level keys).
    File,
    /// The rule at this position (1-based) in `rules:`, with its name when it has one.
    Rule { index: usize, name: Option<String> },
    /// The test at this position (1-based) in `tests:`, with its name when it has one.
    Test { index: usize, name: Option<String> },
}

/// One problem in the policy. The caller prints it and keeps the previous policy (on reload) or refuses
/// to start; nothing in it is secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The file as given to [`super::Policy::load`] or in [`super::PolicySource::path`].
    pub file: String,
    pub item: ErrorItem,
    /// The field path inside the rule or test, such as `resources[0]` or `match.group[1]`.
    pub field: Option<String>,
    pub message: String,
}

impl PolicyError {
    pub(crate) fn file(file: &str, message: impl Into<String>) -> Self {
        PolicyError { file: file.to_string(), item: ErrorItem::File, field: None, message: message.into() }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file)?;
        let (kind, index, name) = match &self.item {
            ErrorItem::File => ("", 0, None),
            ErrorItem::Rule { index, name } => ("rule", *index, name.as_deref()),
            ErrorItem::Test { index, name } => ("test", *index, name.as_deref()),
        };
        if !kind.is_empty() {
            match name {
                Some(name) => write!(f, "{kind} {index} {name:?}: ")?,
                None => write!(f, "{kind} {index} (unnamed): ")?,
            }
        }
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for PolicyError {}

//! The scope grammar of the distribution token protocol.
//!
//! A scope is `type[(class)]:name:actions`. Repository names may themselves contain `:` (a `host:port`
//! prefix), so the type is everything before the first `:` and the actions everything after the last one.
//! Anything that does not parse is rejected with a message naming the offending scope, because a scope we
//! guess at is a scope we might over-grant.

use std::fmt;

/// Longest scope string accepted. Repository names are limited to 255 characters by the registry.
pub const MAX_SCOPE_LEN: usize = 512;

/// The kind of resource a scope names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    /// `repository` (and `repository(plugin)`, which the registry treats the same).
    Repository,
    /// `registry`, whose only resource is `catalog`.
    Registry,
}

impl ResourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Repository => "repository",
            ResourceType::Registry => "registry",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "repository" => Some(ResourceType::Repository),
            "registry" => Some(ResourceType::Registry),
            _ => None,
        }
    }
}

/// An action on a resource. `*` is its own action: the registry asks for it on DELETE from some clients,
/// and the policy grants it only when every concrete action is granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Pull,
    Push,
    Delete,
    All,
}

impl Action {
    /// The concrete actions that `*` stands for.
    pub const CONCRETE: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
            Action::All => "*",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pull" => Some(Action::Pull),
            "push" => Some(Action::Push),
            "delete" => Some(Action::Delete),
            "*" => Some(Action::All),
            _ => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One parsed scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub rtype: ResourceType,
    /// The optional class in `repository(plugin)`; kept for display only, it does not change grants.
    pub class: Option<String>,
    pub name: String,
    /// Requested actions, deduplicated, in request order.
    pub actions: Vec<Action>,
}

/// `type:name:action,action`, the scope syntax, written to `out`.
fn write_scope<'a>(
    out: &mut impl fmt::Write,
    rtype: &str,
    name: &str,
    actions: impl IntoIterator<Item = &'a str>,
) -> fmt::Result {
    for part in [rtype, ":", name, ":"] {
        out.write_str(part)?;
    }
    for (i, a) in actions.into_iter().enumerate() {
        if i > 0 {
            out.write_char(',')?;
        }
        out.write_str(a)?;
    }
    Ok(())
}

/// `type:name:action,action` as a string allocated once at its final size (`to_string` would grow it
/// several times). For the audit record and the granted scopes of every token response.
pub fn scope_text<'a>(rtype: &str, name: &str, actions: impl IntoIterator<Item = &'a str> + Clone) -> String {
    let len = rtype.len() + name.len() + 2 + actions.clone().into_iter().map(|a| a.len() + 1).sum::<usize>();
    let mut s = String::with_capacity(len);
    // Writing into a String cannot fail.
    let _ = write_scope(&mut s, rtype, name, actions);
    s
}

impl Scope {
    /// The scope as a string (what `to_string` gives), in one allocation of the right size.
    pub fn text(&self) -> String {
        scope_text(self.rtype.as_str(), &self.name, self.actions.iter().map(|a| a.as_str()))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_scope(f, self.rtype.as_str(), &self.name, self.actions.iter().map(|a| a.as_str()))
    }
}

/// Why a scope was refused. Each message names the scope, so the client sees what it sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("scope is longer than {MAX_SCOPE_LEN} characters")]
    TooLong,
    #[error("scope {0:?} contains a control or non-ASCII character")]
    BadCharacter(String),
    #[error("scope {0:?} is not of the form type:name:actions")]
    Shape(String),
    #[error("scope {scope:?} has unknown resource type {rtype:?} (expected repository or registry)")]
    UnknownType { scope: String, rtype: String },
    #[error("scope {scope:?} has an invalid resource class")]
    BadClass { scope: String },
    #[error("scope {scope:?} has an invalid repository name: {why}")]
    BadName { scope: String, why: &'static str },
    #[error("scope {scope:?} names unknown registry resource {name:?} (only catalog exists)")]
    UnknownRegistryResource { scope: String, name: String },
    #[error("scope {scope:?} has unknown action {action:?} (expected pull, push, delete or *)")]
    UnknownAction { scope: String, action: String },
    #[error("scope {0:?} has no actions")]
    NoActions(String),
}

impl Scope {
    /// Parse one scope string (one element of a space-separated list).
    pub fn parse(s: &str) -> Result<Scope, ScopeError> {
        if s.len() > MAX_SCOPE_LEN {
            return Err(ScopeError::TooLong);
        }
        if s.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
            return Err(ScopeError::BadCharacter(s.to_string()));
        }
        let (Some(first), Some(last)) = (s.find(':'), s.rfind(':')) else {
            return Err(ScopeError::Shape(s.to_string()));
        };
        if first == last {
            return Err(ScopeError::Shape(s.to_string()));
        }
        let type_part = &s[..first];
        let name = &s[first + 1..last];
        let actions_part = &s[last + 1..];

        let (type_name, class) = match type_part.find('(') {
            Some(open) => {
                let inner = type_part[open + 1..]
                    .strip_suffix(')')
                    .ok_or_else(|| ScopeError::BadClass { scope: s.to_string() })?;
                if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(ScopeError::BadClass { scope: s.to_string() });
                }
                (&type_part[..open], Some(inner.to_string()))
            }
            None => (type_part, None),
        };
        let rtype = ResourceType::parse(type_name)
            .ok_or_else(|| ScopeError::UnknownType { scope: s.to_string(), rtype: type_name.to_string() })?;
        match rtype {
            ResourceType::Repository => {
                validate_repository_name(name).map_err(|why| ScopeError::BadName { scope: s.to_string(), why })?
            }
            ResourceType::Registry => {
                if name != "catalog" {
                    return Err(ScopeError::UnknownRegistryResource { scope: s.to_string(), name: name.to_string() });
                }
            }
        }
        let mut actions = Vec::new();
        for a in actions_part.split(',') {
            if a.is_empty() {
                continue;
            }
            let action = Action::parse(a)
                .ok_or_else(|| ScopeError::UnknownAction { scope: s.to_string(), action: a.to_string() })?;
            if !actions.contains(&action) {
                actions.push(action);
            }
        }
        if actions.is_empty() {
            return Err(ScopeError::NoActions(s.to_string()));
        }
        Ok(Scope { rtype, class, name: name.to_string(), actions })
    }
}

/// Check a repository name against the distribution reference grammar: path components of lower-case
/// alphanumerics separated by `.`, `_`, `__` or runs of `-`, joined by `/`; the first component may be a
/// host name with an optional `:port`.
pub fn validate_repository_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > 255 {
        return Err("longer than 255 characters");
    }
    let mut components = name.split('/').peekable();
    let mut first = true;
    while let Some(c) = components.next() {
        let is_domain =
            first && components.peek().is_some() && (c.contains('.') || c.contains(':') || c == "localhost");
        first = false;
        if is_domain {
            validate_domain(c)?;
        } else {
            validate_path_component(c)?;
        }
    }
    Ok(())
}

fn validate_domain(c: &str) -> Result<(), &'static str> {
    let (host, port) = match c.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (c, None),
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err("invalid port in registry host");
        }
    }
    if host.is_empty() {
        return Err("empty registry host");
    }
    for label in host.split('.') {
        let b = label.as_bytes();
        if b.is_empty()
            || !b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            || b[0] == b'-'
            || b[b.len() - 1] == b'-'
        {
            return Err("invalid registry host");
        }
    }
    Ok(())
}

fn validate_path_component(c: &str) -> Result<(), &'static str> {
    let b = c.as_bytes();
    if b.is_empty() {
        return Err("empty path component");
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Err("path components must start and end with a lower-case letter or digit");
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator: '.', '_', '__', or one or more '-'.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return Err("only lower-case letters, digits, '.', '_', '-' and '/' are allowed"),
        }
        if i >= b.len() || !alnum(b[i]) || start == 0 {
            return Err("separators must sit between letters or digits");
        }
    }
    Ok(())
}

/// Split the raw `scope` values of a request (each possibly space-separated, possibly repeated) into
/// scope strings, dropping exact duplicates. More than `max` distinct scopes is an error, found without
/// looking past the first one too many; the work is linear in the input.
pub fn split_scopes<'a>(values: impl IntoIterator<Item = &'a str>, max: usize) -> Result<Vec<&'a str>, TooManyScopes> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<&str> = Vec::new();
    for v in values {
        for s in v.split(' ').filter(|s| !s.is_empty()) {
            if seen.insert(s) {
                if out.len() == max {
                    return Err(TooManyScopes(max));
                }
                out.push(s);
            }
        }
    }
    Ok(out)
}

/// More distinct scopes in one request than `server.max_scopes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many scopes: more than {0} in one request")]
pub struct TooManyScopes(pub usize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_the_display_form() {
        for raw in ["repository:payments/api:pull", "repository:a/b:push,pull,delete", "registry:catalog:*"] {
            let scope = Scope::parse(raw).expect("a valid scope");
            assert_eq!(scope.text(), scope.to_string(), "{raw}");
        }
    }

    #[test]
    fn parses_the_scopes_real_clients_send() {
        let table: &[(&str, ResourceType, &str, &[Action])] = &[
            ("repository:team/app:pull", ResourceType::Repository, "team/app", &[Action::Pull]),
            ("repository:team/app:push,pull", ResourceType::Repository, "team/app", &[Action::Push, Action::Pull]),
            ("repository:team/app:*", ResourceType::Repository, "team/app", &[Action::All]),
            ("repository:team/app:delete", ResourceType::Repository, "team/app", &[Action::Delete]),
            ("repository(plugin):team/app:pull", ResourceType::Repository, "team/app", &[Action::Pull]),
            (
                "repository:127.0.0.1:5000/team/app:pull",
                ResourceType::Repository,
                "127.0.0.1:5000/team/app",
                &[Action::Pull],
            ),
            ("repository:localhost/app:pull", ResourceType::Repository, "localhost/app", &[Action::Pull]),
            ("repository:a/b/c/d:pull,pull", ResourceType::Repository, "a/b/c/d", &[Action::Pull]),
            ("repository:my-app__x.y:pull", ResourceType::Repository, "my-app__x.y", &[Action::Pull]),
            ("registry:catalog:*", ResourceType::Registry, "catalog", &[Action::All]),
        ];
        for (input, rtype, name, actions) in table {
            let s = Scope::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(s.rtype, *rtype, "{input}");
            assert_eq!(s.name, *name, "{input}");
            assert_eq!(s.actions, *actions, "{input}");
        }
        let plugin = Scope::parse("repository(plugin):team/app:pull").unwrap();
        assert_eq!(plugin.class.as_deref(), Some("plugin"));
    }

    #[test]
    fn rejects_malformed_scopes_with_a_message_naming_them() {
        let table: &[(&str, &str)] = &[
            ("", "not of the form"),
            ("repository", "not of the form"),
            ("repository:app", "not of the form"),
            ("image:team/app:pull", "unknown resource type \"image\""),
            ("repository:team/app:fly", "unknown action \"fly\""),
            ("repository:team/app:", "no actions"),
            ("repository:Team/app:pull", "invalid repository name"),
            ("repository:team//app:pull", "invalid repository name"),
            ("repository:team/app/:pull", "invalid repository name"),
            ("repository:-app:pull", "invalid repository name"),
            ("repository::pull", "invalid repository name"),
            ("repository:a..b:pull", "invalid repository name"),
            ("repository:a___b:pull", "invalid repository name"),
            ("repository:host:99999999/app:pull", "invalid repository name"),
            ("repository:te\u{1}am/app:pull", "control or non-ASCII"),
            ("repository:té/app:pull", "control or non-ASCII"),
            ("repository(:team/app:pull", "invalid resource class"),
            ("repository(a b):team/app:pull", "control or non-ASCII"),
            ("registry:everything:*", "only catalog"),
        ];
        for (input, want) in table {
            let err = Scope::parse(input).expect_err(input).to_string();
            assert!(err.contains(want), "{input:?}: {err:?} should contain {want:?}");
        }
        let long = format!("repository:{}:pull", "a".repeat(600));
        assert_eq!(Scope::parse(&long), Err(ScopeError::TooLong));
    }

    #[test]
    fn split_scopes_accepts_repeated_and_space_separated_values() {
        let got =
            split_scopes(["repository:a:pull repository:b:push", "repository:a:pull", "  ", "registry:catalog:*"], 3);
        assert_eq!(got, Ok(vec!["repository:a:pull", "repository:b:push", "registry:catalog:*"]));
        assert_eq!(split_scopes(["a b c", "d"], 3), Err(TooManyScopes(3)), "a fourth distinct scope is refused");
    }

    #[test]
    fn splitting_is_linear_and_stops_at_the_limit() {
        // 768 KiB of one scope repeated, and of distinct short ones: both answered at once (the list used
        // to be searched for every scope, 11 s of CPU for a 700 KB body).
        let same = "repository:a:pull ".repeat(40_000);
        let started = std::time::Instant::now();
        assert_eq!(split_scopes([same.as_str()], 64).map(|v| v.len()), Ok(1));
        let distinct: String = (0..100_000).map(|i| format!("r:{i}:pull ")).collect();
        assert_eq!(split_scopes([distinct.as_str()], 64), Err(TooManyScopes(64)));
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "took {:?}", started.elapsed());
    }

    #[test]
    fn display_round_trips() {
        let s = Scope::parse("repository(plugin):x/y:pull,push").unwrap();
        assert_eq!(s.to_string(), "repository:x/y:pull,push");
    }
}

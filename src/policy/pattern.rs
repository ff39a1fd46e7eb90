//! Patterns for repository names, usernames and group names.
//!
//! One small glob language serves every pattern in a rules file:
//!
//! - `*` matches one or more characters other than `/` (one path segment, or part of one);
//! - `**` matches one or more characters including `/` (any depth, but never nothing, so `team/**`
//!   does not match `team` itself);
//! - `{name}` is a capture. In `account` and `group` patterns it binds one or more characters from
//!   `[A-Za-z0-9._-]` (never `.`, nor anything containing `..`); in `resources` it stands for the bound
//!   value, compared as literal text. `{username}` is bound only when the whole username is such a value:
//!   a username like `bob/evil` or `..` matches no rule that uses it;
//! - everything else is literal.
//!
//! The capture character set is deliberately narrow: a group literally named `*`, `team-*` or `a/b`
//! must never turn into a wildcard or a path when its value is substituted into a resource pattern.
//! Substituted values are compared byte for byte and are never parsed as glob syntax.
//!
//! Matching is continuation-passing: a pattern that can bind captures in several ways (`{a}-{b}` on
//! `x-y-z`) calls the continuation once per way, so the rule tries every binding without building a
//! list of them. Bindings live in a fixed array on the stack, which keeps the hot path allocation-free.

use std::fmt;

/// Most distinct captures one rule may use, `username` included. Bindings are a fixed array of this
/// size so that evaluating a rule does not allocate.
pub(crate) const MAX_CAPTURES: usize = 8;

/// Index of the always-bound `{username}` capture.
pub(crate) const USERNAME: usize = 0;

/// Capture values of one rule evaluation, indexed by capture number.
pub(crate) type Bindings<'a> = [Option<&'a str>; MAX_CAPTURES];

/// Whether a byte may be part of a captured value.
pub(crate) fn is_capture_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// Whether a whole string may be captured and substituted: capture bytes only, and no path step (`.`,
/// `..`), so that a substituted value can never add a path segment, a wildcard or a way out of one.
pub fn is_capture_value(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_capture_byte) && s != "." && !s.contains("..")
}

/// Whether a capture name is well formed: letters, digits and `_`, not starting with a digit.
pub(crate) fn is_capture_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The name of capture 0, bound from the username in every rule.
const USERNAME_NAME: &str = "username";

/// The capture names of one rule. Index 0 is always `username`, which is implied rather than stored: most
/// rules define no other capture, and with tens of thousands of rules one string each is memory for nothing.
#[derive(Debug, Clone)]
pub(crate) struct CaptureNames {
    /// Captures 1, 2, ... in order of definition.
    names: Vec<Box<str>>,
}

impl CaptureNames {
    pub(crate) fn new() -> Self {
        CaptureNames { names: Vec::new() }
    }

    /// The index of `name`, adding it if it is new.
    pub(crate) fn define(&mut self, name: &str) -> Result<usize, String> {
        if let Some(i) = self.lookup(name) {
            return Ok(i);
        }
        if self.names.len() + 1 >= MAX_CAPTURES {
            return Err(format!("too many captures: a rule may use at most {} besides username", MAX_CAPTURES - 1));
        }
        self.names.push(name.into());
        Ok(self.names.len())
    }

    pub(crate) fn lookup(&self, name: &str) -> Option<usize> {
        if name == USERNAME_NAME {
            return Some(USERNAME);
        }
        self.names.iter().position(|n| &**n == name).map(|i| i + 1)
    }

    pub(crate) fn name(&self, index: usize) -> &str {
        match index {
            USERNAME => USERNAME_NAME,
            i => self.names.get(i - 1).map_or("?", |n| &**n),
        }
    }
}

/// How a pattern may use `{captures}`.
pub(crate) enum CaptureMode<'n> {
    /// No captures at all (`not_account`, `not_group`).
    Forbidden,
    /// Captures bind values (`account`, `group`); new names are defined.
    Bind(&'n mut CaptureNames),
    /// Captures stand for values bound elsewhere (`resources`); unknown names are errors. The first
    /// slice lists the names the rule's match section always binds; the second those that only some
    /// alternatives bind (usable nowhere, but worth a precise message).
    Use(&'n CaptureNames, &'n [String], &'n [String]),
}

// Hash and Eq: identical patterns are compiled once and shared between rules (compile.rs interns them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Token {
    /// Literal text: the bytes `start..end` of the pattern's source (a pattern has no escapes, so its
    /// literal parts are its source's own text, and need no copy of their own).
    Lit {
        start: u32,
        end: u32,
    },
    Star,
    DoubleStar,
    /// `*` in a claim pattern: never crosses `/` or `:`, the separators of claim values such as GitHub's
    /// `repo:acme/app:ref:refs/heads/main`, so a pattern for one repository never matches another's.
    ClaimStar,
    Capture(usize),
}

/// A compiled pattern, keeping its source text for messages. Two patterns are equal when their source and
/// their tokens are: the same text with captures numbered differently (`{team}` is capture 1 in one rule
/// and 2 in another) is two patterns.
///
/// A pattern that is all literal text (`team-42`, the most common kind in a large rules file) stores no
/// tokens: its one token is its whole source. That and literal tokens pointing into the source keep a
/// pattern to two small allocations besides its record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Pattern {
    source: Box<str>,
    /// Empty for a pattern that is all literal text.
    tokens: Box<[Token]>,
}

/// Longest pattern source accepted: literal tokens record their place in it as 32-bit offsets.
const MAX_PATTERN_BYTES: usize = u32::MAX as usize;

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Pattern {
    /// Compile `src`. The error is a sentence naming what is wrong, without the field (the caller adds it).
    pub(crate) fn parse(src: &str, mode: CaptureMode<'_>) -> Result<Pattern, String> {
        Self::parse_as(src, mode, false)
    }

    /// Compile a claim value pattern: `*` never crosses `/` or `:`, and `**` is refused.
    pub(crate) fn parse_claim(src: &str, mode: CaptureMode<'_>) -> Result<Pattern, String> {
        Self::parse_as(src, mode, true)
    }

    fn parse_as(src: &str, mut mode: CaptureMode<'_>, claim: bool) -> Result<Pattern, String> {
        if src.is_empty() {
            return Err("empty pattern".to_string());
        }
        if src.len() > MAX_PATTERN_BYTES {
            return Err(format!("pattern of {} bytes is too long", src.len()));
        }
        let mut tokens = Vec::new();
        // Where the literal text being read started, if any.
        let mut lit: Option<usize> = None;
        let mut chars = src.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '*' => {
                    let mut stars = 1;
                    while chars.peek().is_some_and(|&(_, c)| c == '*') {
                        chars.next();
                        stars += 1;
                    }
                    if stars > 2 {
                        return Err(format!(
                            "{src:?}: `{}` is not a wildcard; use `*` (within one path segment) or `**` (any depth)",
                            "*".repeat(stars)
                        ));
                    }
                    if claim && stars == 2 {
                        return Err(format!(
                            "{src:?}: `**` is not allowed in a claim value; `*` matches within one part between `/` and `:`"
                        ));
                    }
                    flush(&mut lit, at, &mut tokens);
                    tokens.push(match (stars, claim) {
                        (1, true) => Token::ClaimStar,
                        (1, false) => Token::Star,
                        _ => Token::DoubleStar,
                    });
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for (_, c) in chars.by_ref() {
                        match c {
                            '}' => {
                                closed = true;
                                break;
                            }
                            '{' => return Err(format!("{src:?}: unbalanced `{{`")),
                            c => name.push(c),
                        }
                    }
                    if !closed {
                        return Err(format!("{src:?}: unbalanced `{{` (no closing `}}`)"));
                    }
                    if !is_capture_name(&name) {
                        return Err(format!("{src:?}: invalid capture name {{{name}}}: use letters, digits and `_`"));
                    }
                    let index = match &mut mode {
                        CaptureMode::Forbidden => {
                            return Err(format!(
                                "{src:?}: captures like {{{name}}} are not allowed here, only names and globs"
                            ))
                        }
                        CaptureMode::Bind(names) => names.define(&name)?,
                        CaptureMode::Use(names, available, partial) => match names.lookup(&name) {
                            Some(i) if available.contains(&name) => i,
                            _ if partial.contains(&name) => {
                                return Err(format!(
                                    "capture {{{name}}} is bound by only some of the `account`/`group`/`claims` alternatives, so the rule could apply with no value for it; give every pattern the capture or split the rule"
                                ))
                            }
                            _ => {
                                return Err(format!(
                                    "unknown capture {{{name}}} (available: {})",
                                    available.join(", ")
                                ))
                            }
                        },
                    };
                    flush(&mut lit, at, &mut tokens);
                    tokens.push(Token::Capture(index));
                }
                '}' => return Err(format!("{src:?}: unbalanced `}}`")),
                _ => {
                    lit.get_or_insert(at);
                }
            }
        }
        flush(&mut lit, src.len(), &mut tokens);
        if let [Token::Lit { start: 0, end }] = tokens[..] {
            if end as usize == src.len() {
                tokens.clear();
            }
        }
        Ok(Pattern { source: src.into(), tokens: tokens.into_boxed_slice() })
    }

    /// The tokens, with the one token of an all-literal pattern spelt out, for `f`.
    fn with_tokens<R>(&self, f: impl FnOnce(&[Token]) -> R) -> R {
        if self.tokens.is_empty() {
            // The source is at most MAX_PATTERN_BYTES long (checked when parsed).
            let whole = [Token::Lit { start: 0, end: self.source.len() as u32 }];
            f(&whole)
        } else {
            f(&self.tokens)
        }
    }

    /// The literal text of a `Lit` token.
    fn text(&self, start: u32, end: u32) -> &str {
        self.source.get(start as usize..end as usize).unwrap_or("")
    }

    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// The one text this pattern matches, when it has no wildcard and no capture: then matching is
    /// equality, and a rule can be filed under that text in the rule index.
    pub(crate) fn literal(&self) -> Option<&str> {
        self.tokens.is_empty().then_some(&*self.source)
    }

    /// The literal text every match starts with (empty when the pattern starts with a wildcard or a
    /// capture). Whatever the captures are bound to, an input without this prefix cannot match, which
    /// makes a cheap first test for a resource pattern.
    pub(crate) fn prefix(&self) -> &str {
        match self.tokens.first() {
            None => &self.source,
            Some(&Token::Lit { start, end }) => self.text(start, end),
            Some(_) => "",
        }
    }

    /// The capture indices this pattern mentions.
    pub(crate) fn captures(&self) -> impl Iterator<Item = usize> + '_ {
        self.tokens.iter().filter_map(|t| match t {
            Token::Capture(i) => Some(*i),
            _ => None,
        })
    }

    /// A name this pattern matches, made by standing a fresh segment in for every wildcard (`**` becomes
    /// two segments): for patterns without captures.
    pub(crate) fn sample(&self) -> String {
        let mut out = String::new();
        if self.tokens.is_empty() {
            return self.source.to_string();
        }
        for (i, t) in self.tokens.iter().enumerate() {
            match *t {
                Token::Lit { start, end } => out.push_str(self.text(start, end)),
                Token::Star | Token::ClaimStar => out.push_str(&format!("zz-sample{i}")),
                Token::DoubleStar => out.push_str(&format!("zz-sample{i}/zz-sample{i}b")),
                Token::Capture(_) => out.push_str("zz-capture"),
            }
        }
        out
    }

    /// Whether `input` matches, for patterns without captures.
    pub(crate) fn matches(&self, input: &str) -> bool {
        if self.tokens.is_empty() {
            return input == &*self.source;
        }
        let mut b: Bindings<'_> = [None; MAX_CAPTURES];
        step(&self.source, &self.tokens, input, 0, &mut b, false, &mut |_| true)
    }

    /// Whether `input` matches with captures replaced by their bound values, as literal text. An
    /// unbound capture never matches.
    pub(crate) fn matches_with(&self, input: &str, bindings: &Bindings<'_>) -> bool {
        if self.tokens.is_empty() {
            return input == &*self.source;
        }
        let mut b = *bindings;
        step(&self.source, &self.tokens, input, 0, &mut b, false, &mut |_| true)
    }

    /// Match `input`, binding unbound captures, and call `k` for every way it matches until `k`
    /// returns true. Already-bound captures must match their value. `bindings` is restored on a
    /// false return.
    pub(crate) fn bind<'a>(
        &self,
        input: &'a str,
        bindings: &mut Bindings<'a>,
        k: &mut dyn FnMut(&mut Bindings<'a>) -> bool,
    ) -> bool {
        self.with_tokens(|tokens| step(&self.source, tokens, input, 0, bindings, true, k))
    }
}

/// End the literal text that started at `lit` (if any) at byte `end`.
fn flush(lit: &mut Option<usize>, end: usize, tokens: &mut Vec<Token>) {
    if let Some(start) = lit.take() {
        // Both offsets are within a source of at most MAX_PATTERN_BYTES (checked before parsing).
        tokens.push(Token::Lit { start: start as u32, end: end as u32 });
    }
}

/// Backtracking matcher. Patterns are short and written by administrators, and repository names are
/// at most 255 bytes, so plain backtracking is fast enough and keeps "try every binding" simple.
#[allow(clippy::too_many_arguments)]
fn step<'a>(
    source: &str,
    tokens: &[Token],
    input: &'a str,
    pos: usize,
    b: &mut Bindings<'a>,
    bind: bool,
    k: &mut dyn FnMut(&mut Bindings<'a>) -> bool,
) -> bool {
    let Some((first, rest_tokens)) = tokens.split_first() else {
        return pos == input.len() && k(b);
    };
    let rest = &input[pos..];
    match first {
        &Token::Lit { start, end } => {
            let lit = source.get(start as usize..end as usize).unwrap_or("");
            rest.starts_with(lit) && step(source, rest_tokens, input, pos + lit.len(), b, bind, k)
        }
        Token::Star | Token::DoubleStar | Token::ClaimStar => {
            for (off, ch) in rest.char_indices() {
                let stop = match first {
                    Token::Star => ch == '/',
                    Token::ClaimStar => ch == '/' || ch == ':',
                    _ => false,
                };
                if stop {
                    break;
                }
                let end = pos + off + ch.len_utf8();
                if step(source, rest_tokens, input, end, b, bind, k) {
                    return true;
                }
            }
            false
        }
        Token::Capture(i) => {
            let i = *i;
            match b.get(i).copied().flatten() {
                Some(value) => {
                    rest.starts_with(value) && step(source, rest_tokens, input, pos + value.len(), b, bind, k)
                }
                None if bind => {
                    // Capture bytes are ASCII, so every prefix of the run below ends on a char boundary.
                    let run = rest.bytes().take_while(|c| is_capture_byte(*c)).count();
                    for len in 1..=run {
                        if !is_capture_value(&rest[..len]) {
                            continue;
                        }
                        b[i] = Some(&rest[..len]);
                        if step(source, rest_tokens, input, pos + len, b, bind, k) {
                            return true;
                        }
                    }
                    b[i] = None;
                    false
                }
                None => false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(src: &str) -> Pattern {
        Pattern::parse(src, CaptureMode::Forbidden).unwrap_or_else(|e| panic!("{src}: {e}"))
    }

    #[test]
    fn repository_globs_match_segments_and_depths() {
        let table: &[(&str, &str, bool)] = &[
            ("team/**", "team/a", true),
            ("team/**", "team/a/b", true),
            ("team/**", "team", false),
            ("team/**", "team/", false),
            ("team/**", "teamx/a", false),
            ("team/*", "team/a", true),
            ("team/*", "team/a/b", false),
            ("*", "app", true),
            ("*", "a/b", false),
            ("**", "a/b/c", true),
            ("**", "", false),
            ("*/prod/**", "payments/prod/api", true),
            ("*/prod/**", "payments/prod", false),
            ("*/prod/**", "a/b/prod/c", false),
            ("**/prod/**", "a/b/prod/c", true),
            ("prod/**", "prod/api", true),
            ("prod/**", "production/api", false),
            ("shared/*-base", "shared/go-base", true),
            ("shared/*-base", "shared/-base", false),
            ("alice", "alice", true),
            ("alice", "alicex", false),
            ("ci-*", "ci-payments", true),
            ("ci-*", "ci-", false),
            ("a.b", "axb", false),
        ];
        for (pattern, input, want) in table {
            assert_eq!(glob(pattern).matches(input), *want, "{pattern:?} on {input:?}");
        }
    }

    #[test]
    fn rejects_malformed_patterns_with_a_reason() {
        let table: &[(&str, &str)] = &[
            ("", "empty pattern"),
            ("team/***", "`***` is not a wildcard"),
            ("team/{x", "unbalanced `{`"),
            ("team/{a{b}}", "unbalanced `{`"),
            ("team/x}", "unbalanced `}`"),
            ("team/{}", "invalid capture name"),
            ("team/{a b}", "invalid capture name"),
            ("team/{team}", "not allowed here"),
        ];
        for (src, want) in table {
            let err = Pattern::parse(src, CaptureMode::Forbidden).expect_err(src);
            assert!(err.contains(want), "{src:?}: {err:?} should contain {want:?}");
        }
        let names = CaptureNames::new();
        let err = Pattern::parse("{tem}/**", CaptureMode::Use(&names, &["team".into(), "username".into()], &[]))
            .expect_err("unknown capture");
        assert_eq!(err, "unknown capture {tem} (available: team, username)");
    }

    fn all_bindings(pattern: &str, input: &str) -> Vec<String> {
        let mut names = CaptureNames::new();
        let p = Pattern::parse(pattern, CaptureMode::Bind(&mut names)).unwrap_or_else(|e| panic!("{e}"));
        let mut b: Bindings<'_> = [None; MAX_CAPTURES];
        let mut seen = Vec::new();
        p.bind(input, &mut b, &mut |b| {
            let parts: Vec<String> =
                (1..MAX_CAPTURES).filter_map(|i| b[i].map(|v| format!("{}={v}", names.name(i)))).collect();
            seen.push(parts.join(","));
            false
        });
        seen
    }

    #[test]
    fn captures_bind_only_safe_characters_and_try_every_split() {
        assert_eq!(all_bindings("team-{team}", "team-payments"), ["team=payments"]);
        assert!(all_bindings("team-{team}", "team-*").is_empty());
        assert!(all_bindings("team-{team}", "team-a/b").is_empty());
        assert!(all_bindings("team-{team}", "team-").is_empty());
        assert!(all_bindings("team-{team}", "*").is_empty());
        assert_eq!(all_bindings("{a}-{b}", "x-y-z"), ["a=x,b=y-z", "a=x-y,b=z"]);
        // A repeated capture must bind the same text both times.
        assert_eq!(all_bindings("{a}/{a}", "x/x"), ["a=x"]);
        assert!(all_bindings("{a}/{a}", "x/y").is_empty());
    }

    #[test]
    fn captures_never_bind_a_path_step() {
        assert!(!is_capture_value(".") && !is_capture_value("..") && !is_capture_value("a..b"));
        assert!(!is_capture_value("bob/evil") && !is_capture_value("a*") && !is_capture_value(""));
        assert!(is_capture_value("team.web-2_x") && is_capture_value("v1.2"));
        // `team-{team}` on the group `team-..` binds nothing; on `team-a..b` neither.
        assert_eq!(all_bindings("team-{team}", "team-.."), Vec::<String>::new());
        assert_eq!(all_bindings("team-{team}", "team-a..b"), Vec::<String>::new());
    }

    #[test]
    fn claim_stars_stop_at_slashes_and_colons() {
        let claim = |src: &str| Pattern::parse_claim(src, CaptureMode::Forbidden).unwrap();
        let table: &[(&str, &str, bool)] = &[
            ("repo:acme/*:ref:refs/heads/main", "repo:acme/app:ref:refs/heads/main", true),
            ("repo:acme/*:ref:refs/heads/main", "repo:acme/app:pull_request", false),
            ("repo:acme/*:*", "repo:acme/app:pull_request", true),
            ("repo:acme/*:*", "repo:acme/app:ref:refs/heads/main", false),
            ("repo:acme/app:*", "repo:acme/app:environment:prod", false),
            ("repo:acme/app*", "repo:acme/app-fork", true),
            ("repo:acme/app*", "repo:acme/app/x", false),
            ("refs/tags/v*", "refs/tags/v1.2.3", true),
            ("refs/tags/v*", "refs/tags/v1/evil", false),
        ];
        for (pattern, input, want) in table {
            assert_eq!(claim(pattern).matches(input), *want, "{pattern:?} on {input:?}");
        }
        let err = Pattern::parse_claim("repo:acme/**", CaptureMode::Forbidden).unwrap_err();
        assert!(err.contains("`**` is not allowed in a claim value"), "{err}");
        // Captures in claims bind the safe set only, so `acme/{repo}` never binds across a `/` or `:`.
        let mut names = CaptureNames::new();
        let p = Pattern::parse_claim("repo:acme/{repo}:ref:refs/heads/main", CaptureMode::Bind(&mut names)).unwrap();
        let mut b: Bindings<'_> = [None; MAX_CAPTURES];
        assert!(p.bind("repo:acme/app:ref:refs/heads/main", &mut b, &mut |_| true));
        assert_eq!(b[1], Some("app"));
        let mut b: Bindings<'_> = [None; MAX_CAPTURES];
        assert!(!p.bind("repo:acme/a/b:ref:refs/heads/main", &mut b, &mut |_| true));
    }

    #[test]
    fn substituted_values_are_literal_text() {
        let mut names = CaptureNames::new();
        let team = names.define("team").unwrap();
        let p = Pattern::parse("{team}/**", CaptureMode::Use(&names, &["team".into()], &[])).unwrap();
        let mut b: Bindings<'_> = [None; MAX_CAPTURES];
        b[team] = Some("a.b");
        assert!(p.matches_with("a.b/x", &b));
        assert!(!p.matches_with("axb/x", &b));
        b[team] = None;
        assert!(!p.matches_with("anything/x", &b), "an unbound capture never matches");
    }
}

//! `tollgate robot add | list | disable | enable | rotate | remove`: robot accounts over their life.
//!
//! Every command edits the accounts file IN PLACE: only the lines of the robot's own entry change (a key
//! set, added or removed, or the entry appended or cut out); comments, blank lines, order, quoting and the
//! other entries stay byte for byte, and the file keeps its mode. The edit is checked before it is written:
//! the edited text must parse, and parse to exactly the accounts it should (the old ones with the one
//! change). A file laid out so that a line edit cannot be proven right (flow style, a multi-line value
//! where a key is set) is refused with a message, never rewritten. The new file replaces the old one
//! atomically, under the same lock `serve` never needs, and the running server picks it up as it picks
//! up any edit (within `RECHECK_FILE`).

use std::path::{Path, PathBuf};

use super::load;
use crate::config::accounts::{AccountEntry, AccountsFile};
use crate::config::providers::AccountsSource;
use crate::config::ProviderSettings;
use crate::identity::accounts::{parse_accounts, validate_username};
use crate::identity::hashing::hash_password;
use crate::support::random::random_id;
use crate::support::time::{parse_duration, rfc3339, unix_now};

/// Where the accounts file is: `--file`, or the first static provider's file in the config.
pub fn accounts_path(config: Option<&Path>, file: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(f) = file {
        return Ok(f.to_path_buf());
    }
    let settings = load(config)?;
    settings
        .providers
        .iter()
        .find_map(|p| match p {
            ProviderSettings::Static(s) => match &s.source {
                AccountsSource::File(f) => Some(f.clone()),
                AccountsSource::Inline(_) => None,
            },
            _ => None,
        })
        .ok_or_else(|| "no static provider with an accounts file in the config; pass --file".to_string())
}

/// The accounts file as lines, with where each entry's lines are.
struct Layout {
    lines: Vec<String>,
    /// Index of the `accounts:` line.
    header: usize,
    /// Line spans (start inclusive, end exclusive) of the entries, in file order.
    entries: Vec<(usize, usize)>,
    /// Column of the `-` of list items.
    item_indent: usize,
    /// Whether the file ends with a newline.
    final_newline: bool,
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_blank_or_comment(line: &str) -> bool {
    let t = line.trim_start();
    t.is_empty() || t.starts_with('#')
}

impl Layout {
    fn parse(text: &str) -> Result<Layout, String> {
        let final_newline = text.is_empty() || text.ends_with('\n');
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.iter().any(|l| l.contains('\t')) {
            return Err("it contains tabs".into());
        }
        let header =
            lines.iter().position(|l| l.starts_with("accounts:")).ok_or("it has no top-level `accounts:` line")?;
        let after = lines[header]["accounts:".len()..].trim();
        if !(after.is_empty() || after.starts_with('#')) {
            if after.starts_with("[]") {
                return Ok(Layout { lines, header, entries: Vec::new(), item_indent: 2, final_newline });
            }
            return Err("its `accounts:` list is written inline (flow style)".into());
        }
        let mut entries: Vec<(usize, usize)> = Vec::new();
        let mut item_indent = None;
        let mut i = header + 1;
        while i < lines.len() {
            let line = &lines[i];
            if is_blank_or_comment(line) {
                i += 1;
                continue;
            }
            let ind = indent_of(line);
            let rest = &line[ind..];
            if !(rest.starts_with("- ") || rest == "-") {
                if ind == 0 {
                    break; // the next top-level key
                }
                return Err(format!("line {} is not part of a list item", i + 1));
            }
            match item_indent {
                None => item_indent = Some(ind),
                Some(want) if want != ind => {
                    return Err(format!("line {}: list items are indented differently", i + 1))
                }
                Some(_) => {}
            }
            let start = i;
            let mut end = i + 1;
            let mut j = i + 1;
            // The entry runs while lines are indented deeper than its `-`; comments and blank lines
            // count only when a deeper line follows them.
            while j < lines.len() {
                let l = &lines[j];
                if l.trim().is_empty() || (l.trim_start().starts_with('#') && indent_of(l) > ind) {
                    j += 1;
                    continue;
                }
                if indent_of(l) > ind && !is_blank_or_comment(l) {
                    j += 1;
                    end = j;
                    continue;
                }
                break;
            }
            entries.push((start, end));
            i = end;
        }
        Ok(Layout { lines, header, entries, item_indent: item_indent.unwrap_or(2), final_newline })
    }

    fn text(&self) -> String {
        let mut s = self.lines.join("\n");
        if self.final_newline && !self.lines.is_empty() {
            s.push('\n');
        }
        s
    }

    /// Column of the keys of the entry at `n` (after its `- `).
    fn key_indent(&self, n: usize) -> usize {
        let (start, _) = self.entries[n];
        let line = &self.lines[start];
        let after_dash = indent_of(line) + 1;
        after_dash + (line.len() - after_dash - line[after_dash..].trim_start_matches(' ').len())
    }

    /// The line of `key` in entry `n`, at the entry's key column.
    fn find_key(&self, n: usize, key: &str) -> Option<usize> {
        let (start, end) = self.entries[n];
        let col = self.key_indent(n);
        (start..end).find(|&i| {
            let l = &self.lines[i];
            l.len() > col
                && (i == start || indent_of(l) == col)
                && l[col..].strip_prefix(key).is_some_and(|r| r.starts_with(':'))
        })
    }

    /// Set `key: value` in entry `n`: the value of an existing line is replaced (a trailing comment
    /// stays), or a line is added at the end of the entry.
    fn set(&mut self, n: usize, key: &str, value: &str) -> Result<(), String> {
        let col = self.key_indent(n);
        match self.find_key(n, key) {
            Some(i) => {
                let line = self.lines[i].clone();
                let prefix = &line[..col + key.len() + 1];
                let rest = &line[col + key.len() + 1..];
                let comment = trailing_comment(rest);
                if rest.trim().is_empty() || rest.trim_start().starts_with('#') {
                    return Err(format!("{key:?} has its value on the following lines"));
                }
                self.lines[i] = format!("{prefix} {value}{comment}");
            }
            None => {
                let (_, end) = self.entries[n];
                self.lines.insert(end, format!("{}{key}: {value}", " ".repeat(col)));
                self.shift(n, 1);
            }
        }
        Ok(())
    }

    /// Remove the line of `key` from entry `n`, if there is one.
    fn unset(&mut self, n: usize, key: &str) -> Result<(), String> {
        let Some(i) = self.find_key(n, key) else { return Ok(()) };
        let (start, _) = self.entries[n];
        if i == start {
            return Err(format!("{key:?} is on the entry's first line"));
        }
        self.lines.remove(i);
        self.shift(n, -1);
        Ok(())
    }

    /// Entry `n` grew or shrank by `by` lines: move its end and the entries after it.
    fn shift(&mut self, n: usize, by: isize) {
        let add = |x: usize| x.checked_add_signed(by).unwrap_or(x);
        self.entries[n].1 = add(self.entries[n].1);
        for e in self.entries.iter_mut().skip(n + 1) {
            *e = (add(e.0), add(e.1));
        }
    }

    fn remove(&mut self, n: usize) {
        let (start, end) = self.entries.remove(n);
        self.lines.drain(start..end);
        let len = end - start;
        for e in self.entries.iter_mut().skip(n) {
            *e = (e.0 - len, e.1 - len);
        }
    }

    /// Append an entry after the last one (or right under `accounts:`).
    fn append(&mut self, entry_lines: &[String]) {
        if let Some(line) = self.lines.get_mut(self.header) {
            if line["accounts:".len()..].trim_start().starts_with("[]") {
                *line = "accounts:".to_string();
            }
        }
        let at = self.entries.last().map_or(self.header + 1, |e| e.1);
        let pad = " ".repeat(self.item_indent);
        for (k, l) in entry_lines.iter().enumerate() {
            let bullet = if k == 0 { "- " } else { "  " };
            self.lines.insert(at + k, format!("{pad}{bullet}{l}"));
        }
        self.entries.push((at, at + entry_lines.len()));
    }
}

/// The ` # comment` at the end of a value, if any (a `#` inside quotes is not one).
fn trailing_comment(rest: &str) -> String {
    let mut quote = None;
    let bytes = rest.as_bytes();
    for (i, c) in rest.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if i > 0 && bytes[i - 1] == b' ' => {
                let start = rest[..i].trim_end().len();
                return rest[start..].to_string();
            }
            _ => {}
        }
    }
    String::new()
}

/// A YAML scalar for a value we write: double-quoted JSON string syntax, which YAML reads as written.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// An accounts file read for editing.
struct Editing {
    path: PathBuf,
    layout: Layout,
    parsed: AccountsFile,
}

impl Editing {
    fn open(path: &Path, create: bool) -> Result<Editing, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if create && e.kind() == std::io::ErrorKind::NotFound => "accounts:\n".to_string(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let parsed = parse_accounts(&path.display().to_string(), &text).map_err(|e| e.join("\n"))?;
        let layout = Layout::parse(&text)
            .map_err(|why| format!("{}: cannot edit it in place because {why}; edit it by hand", path.display()))?;
        if layout.entries.len() != parsed.accounts.len() {
            return Err(format!(
                "{}: cannot edit it in place: found {} entries by their lines but {} accounts; edit it by hand",
                path.display(),
                layout.entries.len(),
                parsed.accounts.len()
            ));
        }
        Ok(Editing { path: path.to_path_buf(), layout, parsed })
    }

    /// The index of robot `name`; people are not managed by these commands.
    fn robot(&self, name: &str) -> Result<usize, String> {
        let n = self
            .parsed
            .accounts
            .iter()
            .position(|a| a.username == name)
            .ok_or_else(|| format!("{}: no account named {name:?}", self.path.display()))?;
        if !self.parsed.accounts[n].robot {
            return Err(format!(
                "{}: {name:?} is not a robot (robot: true); people's accounts are edited by hand",
                self.path.display()
            ));
        }
        Ok(n)
    }

    /// Check that the edited text parses to `want`, then replace the file, keeping its mode.
    fn save(self, want: &AccountsFile) -> Result<(), String> {
        let text = self.layout.text();
        let got = parse_accounts("the edited accounts file", &text).map_err(|e| e.join("\n"))?;
        if got != *want {
            return Err(format!(
                "{}: the edit would not come out as intended (unusual layout); nothing was written, edit it by hand",
                self.path.display()
            ));
        }
        write_keeping_mode(&self.path, text.as_bytes())
    }
}

/// Replace `path` atomically with `data`, keeping the old file's permissions (owner-only for a new one:
/// it holds password hashes).
fn write_keeping_mode(path: &Path, data: &[u8]) -> Result<(), String> {
    let mode = std::fs::metadata(path).ok().map(|m| m.permissions());
    let tmp = path.with_extension(format!("edit-{}", random_id(6)));
    let result = (|| {
        crate::support::fs::write_private(&tmp, data).map_err(|e| e.to_string())?;
        if let Some(perm) = mode {
            std::fs::set_permissions(&tmp, perm).map_err(|e| format!("{}: {e}", tmp.display()))?;
        }
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn new_secret() -> Result<(String, String), String> {
    let secret = format!("tg_{}", random_id(32));
    let hash = hash_password(&secret)?;
    Ok((secret, hash))
}

/// What `robot add` needs besides the file.
pub struct NewRobot {
    pub name: String,
    pub groups: Vec<String>,
    pub no_groups: bool,
    pub expires_in: Option<String>,
    pub description: Option<String>,
}

pub fn add(path: &Path, robot: NewRobot) -> Result<(), String> {
    let name = robot.name.as_str();
    validate_username(name).map_err(|e| format!("robot name {name:?}: {e}"))?;
    // Rules substitute the username ({username}) as literal text; a name that could not be substituted
    // safely would match none of them (a `/` would otherwise reach into another namespace).
    if !crate::policy::is_capture_value(name) {
        return Err(format!(
            "robot name {name:?}: use only letters, digits, '.', '_' and '-' (and no \"..\"), so rules can use it as {{username}}"
        ));
    }
    let groups: Vec<String> = robot.groups.into_iter().filter(|g| !g.trim().is_empty()).collect();
    match (groups.is_empty(), robot.no_groups) {
        (true, false) => {
            return Err("--groups is required (e.g. --groups robots,ci-payments): a robot without groups \
                        gets nothing from group rules; pass --no-groups if that is what you want"
                .into())
        }
        (false, true) => return Err("--groups and --no-groups contradict each other".into()),
        _ => {}
    }
    let expires_at = match robot.expires_in.as_deref() {
        Some(d) => Some(rfc3339(unix_now() + parse_duration(d).map_err(|e| format!("--expires-in: {e}"))?.as_secs())),
        None => None,
    };
    let mut ed = Editing::open(path, true)?;
    if ed.parsed.accounts.iter().any(|a| a.username == name) {
        return Err(format!("{}: an account named {name:?} already exists", path.display()));
    }
    let (secret, hash) = new_secret()?;
    let entry = AccountEntry {
        username: name.to_string(),
        password_hash: hash,
        groups,
        robot: true,
        disabled: false,
        expires_at: expires_at.clone(),
        description: robot.description,
        previous_password_hash: None,
        previous_valid_until: None,
    };
    let mut lines =
        vec![format!("username: {}", quoted(name)), format!("password_hash: {}", quoted(&entry.password_hash))];
    lines.push(format!("groups: [{}]", entry.groups.iter().map(|g| quoted(g)).collect::<Vec<_>>().join(", ")));
    lines.push("robot: true".into());
    if let Some(e) = &entry.expires_at {
        lines.push(format!("expires_at: {}", quoted(e)));
    }
    if let Some(d) = &entry.description {
        lines.push(format!("description: {}", quoted(d)));
    }
    ed.layout.append(&lines);
    let mut want = ed.parsed.clone();
    want.accounts.push(entry);
    ed.save(&want)?;
    eprintln!(
        "robot {name:?} added to {}{}. Its secret is printed below, once; only its hash is stored.",
        path.display(),
        expires_at.map(|e| format!(", expires {e}")).unwrap_or_default()
    );
    println!("{secret}");
    Ok(())
}

pub fn list(path: &Path, json: bool) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let parsed = parse_accounts(&path.display().to_string(), &text).map_err(|e| e.join("\n"))?;
    let now = unix_now();
    let robots: Vec<serde_json::Value> = parsed
        .accounts
        .iter()
        .filter(|a| a.robot)
        .map(|a| {
            let expired = a
                .expires_at
                .as_deref()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .is_some_and(|d| d.as_secs() <= now);
            let state = match (a.disabled, expired) {
                (true, _) => "disabled",
                (false, true) => "expired",
                _ => "active",
            };
            serde_json::json!({
                "name": a.username,
                "groups": a.groups,
                "state": state,
                "expires_at": a.expires_at,
                "previous_secret_valid_until": a.previous_valid_until,
                "description": a.description,
            })
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&robots).map_err(|e| e.to_string())?);
        return Ok(());
    }
    let cell = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => a.iter().filter_map(|g| g.as_str()).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    };
    println!("{:<24} {:<9} {:<32} {:<22} DESCRIPTION", "NAME", "STATE", "GROUPS", "EXPIRES");
    for r in &robots {
        println!(
            "{:<24} {:<9} {:<32} {:<22} {}",
            cell(&r["name"]),
            cell(&r["state"]),
            cell(&r["groups"]),
            cell(&r["expires_at"]),
            cell(&r["description"])
        );
    }
    if robots.is_empty() {
        eprintln!("no robots in {}", path.display());
    }
    Ok(())
}

/// `robot disable` (true) and `robot enable` (false).
pub fn set_disabled(path: &Path, name: &str, disabled: bool) -> Result<(), String> {
    let mut ed = Editing::open(path, false)?;
    let n = ed.robot(name)?;
    if ed.parsed.accounts[n].disabled == disabled {
        eprintln!("robot {name:?} is already {}", if disabled { "disabled" } else { "enabled" });
        return Ok(());
    }
    if disabled {
        ed.layout.set(n, "disabled", "true")?;
    } else {
        ed.layout.unset(n, "disabled")?;
    }
    let mut want = ed.parsed.clone();
    want.accounts[n].disabled = disabled;
    ed.save(&want)?;
    eprintln!(
        "robot {name:?} {} in {}; a running server applies it within a second",
        if disabled { "disabled (its refresh tokens stop too)" } else { "enabled" },
        path.display()
    );
    Ok(())
}

/// `robot rotate`: a new secret; the old one keeps working for `grace` (default: not at all).
pub fn rotate(path: &Path, name: &str, grace: Option<&str>) -> Result<(), String> {
    let grace = match grace {
        Some(g) => parse_duration(g).map_err(|e| format!("--grace: {e}"))?,
        None => std::time::Duration::ZERO,
    };
    let mut ed = Editing::open(path, false)?;
    let n = ed.robot(name)?;
    let (secret, hash) = new_secret()?;
    let old = ed.parsed.accounts[n].password_hash.clone();
    let mut want = ed.parsed.clone();
    want.accounts[n].password_hash = hash.clone();
    ed.layout.set(n, "password_hash", &quoted(&hash))?;
    if grace.is_zero() {
        ed.layout.unset(n, "previous_password_hash")?;
        ed.layout.unset(n, "previous_valid_until")?;
        want.accounts[n].previous_password_hash = None;
        want.accounts[n].previous_valid_until = None;
    } else {
        let until = rfc3339(unix_now() + grace.as_secs());
        ed.layout.set(n, "previous_password_hash", &quoted(&old))?;
        ed.layout.set(n, "previous_valid_until", &quoted(&until))?;
        want.accounts[n].previous_password_hash = Some(old);
        want.accounts[n].previous_valid_until = Some(until);
    }
    ed.save(&want)?;
    let old_note = if grace.is_zero() {
        "the old secret stops working now".to_string()
    } else {
        format!("the old secret keeps working for {}", humantime::format_duration(grace))
    };
    eprintln!("robot {name:?} has a new secret in {} ({old_note}). It is printed below, once.", path.display());
    println!("{secret}");
    Ok(())
}

pub fn remove(path: &Path, name: &str) -> Result<(), String> {
    let mut ed = Editing::open(path, false)?;
    let n = ed.robot(name)?;
    ed.layout.remove(n);
    let mut want = ed.parsed.clone();
    want.accounts.remove(n);
    ed.save(&want)?;
    eprintln!("robot {name:?} removed from {}; its refresh tokens stop with it", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# robots of the payments team\naccounts:\n  - username: alice   # a person\n    password_hash: \"$argon2id$v=19$m=19456,t=2,p=1$AtiDFKy/+HWH5g59co7l4A$rTG/LhtG9M85V0D1kP9HmOTg6lwUgaG5u4cb4ezHZxo\"\n    groups: [team-payments]\n\n  # the pipeline's robot\n  - username: ci-payments\n    # secret kept in the CI settings\n    password_hash: \"$argon2id$v=19$m=19456,t=2,p=1$HG4NgfdJypAcW+1XN14qBg$zMZq4MFUTQBFzOnui+2IpmJex3SR8wMUs46SBiLgtNs\"\n    groups:\n      - robots\n      - ci-payments\n    robot: true        # the rules see robot: true\n  - username: old-robot\n    password_hash: '$argon2id$v=19$m=19456,t=2,p=1$ZuRLasi6TbYrIjZlFbUNAQ$OgVUjUiqjs+bKmMyjeh3Eh3uiERvHC5f1wxXessIuMU'\n    robot: true\n    disabled: true     # since the migration\n# end of file\n";

    #[test]
    fn entries_are_found_with_their_own_comments_and_nothing_else() {
        let l = Layout::parse(FILE).unwrap();
        assert_eq!(l.entries.len(), 3);
        let span = |n: usize| l.lines[l.entries[n].0..l.entries[n].1].join("\n");
        assert!(span(0).starts_with("  - username: alice") && span(0).ends_with("groups: [team-payments]"));
        assert!(span(1).contains("# secret kept") && !span(1).contains("# the pipeline's robot"));
        assert!(span(2).ends_with("disabled: true     # since the migration"));
        assert_eq!(l.text(), FILE, "an untouched layout gives the file back byte for byte");
    }

    #[test]
    fn keys_are_set_added_and_removed_with_their_comments_kept() {
        let mut l = Layout::parse(FILE).unwrap();
        l.set(2, "disabled", "false").unwrap();
        assert!(l.text().contains("    disabled: false     # since the migration\n"));
        l.unset(2, "disabled").unwrap();
        l.set(1, "disabled", "true").unwrap();
        let text = l.text();
        assert!(
            text.contains(
                "    robot: true        # the rules see robot: true\n    disabled: true\n  - username: old-robot"
            ),
            "{text}"
        );
        assert!(!text.contains("since the migration"));
        assert!(l.set(1, "groups", "[x]").is_err(), "a block value is not replaced by a line edit");
    }

    #[test]
    fn trailing_comments_are_found_outside_quotes_only() {
        assert_eq!(trailing_comment(" true   # why"), "   # why");
        assert_eq!(trailing_comment(" \"a # b\""), "");
        assert_eq!(trailing_comment(" 'x#y' # z"), " # z");
    }

    #[test]
    fn flow_style_and_odd_layouts_are_refused() {
        assert!(Layout::parse("accounts: [{username: a, password_hash: x}]\n").is_err());
        assert!(Layout::parse("accounts:\n\t- username: a\n").is_err());
        assert!(Layout::parse("accounts: []\n").unwrap().entries.is_empty());
    }
}

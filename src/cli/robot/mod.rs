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
//!
//! The line work is `yaml_edit.rs`'s, which knows YAML lines and nothing of accounts; this file knows
//! accounts and robots, and checks each edit with the accounts parser.

mod yaml_edit;

use std::path::{Path, PathBuf};

use self::yaml_edit::{quoted, BlockList};
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

/// An accounts file read for editing.
struct Editing {
    path: PathBuf,
    /// The `accounts:` list, line by line.
    list: BlockList,
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
        let list = BlockList::parse(&text, "accounts")
            .map_err(|why| format!("{}: cannot edit it in place because {why}; edit it by hand", path.display()))?;
        if list.len() != parsed.accounts.len() {
            return Err(format!(
                "{}: cannot edit it in place: found {} entries by their lines but {} accounts; edit it by hand",
                path.display(),
                list.len(),
                parsed.accounts.len()
            ));
        }
        Ok(Editing { path: path.to_path_buf(), list, parsed })
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
        let text = self.list.text();
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
    ed.list.append(&lines);
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
        return super::print_json(&robots);
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
        ed.list.set(n, "disabled", "true")?;
    } else {
        ed.list.unset(n, "disabled")?;
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
    ed.list.set(n, "password_hash", &quoted(&hash))?;
    if grace.is_zero() {
        ed.list.unset(n, "previous_password_hash")?;
        ed.list.unset(n, "previous_valid_until")?;
        want.accounts[n].previous_password_hash = None;
        want.accounts[n].previous_valid_until = None;
    } else {
        let until = rfc3339(unix_now() + grace.as_secs());
        ed.list.set(n, "previous_password_hash", &quoted(&old))?;
        ed.list.set(n, "previous_valid_until", &quoted(&until))?;
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
    ed.list.remove(n);
    let mut want = ed.parsed.clone();
    want.accounts.remove(n);
    ed.save(&want)?;
    eprintln!("robot {name:?} removed from {}; its refresh tokens stop with it", path.display());
    Ok(())
}

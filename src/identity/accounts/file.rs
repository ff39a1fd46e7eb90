//! Reading an accounts file: every entry checked (names, hashes, times, groups), every problem reported
//! at once, each naming the file, the account and the field; and, outside the embedded demo, no account
//! carrying a published demo hash (`demo.rs`).

use std::collections::HashMap;

use super::demo::demo_hash_problems;
use crate::config::accounts::AccountsFile;
use crate::identity::hashing::hash_kind;
use crate::identity::MAX_USERNAME_LEN;

/// Parse and validate an accounts file; every problem is reported, each naming the account and field.
pub fn parse_accounts(origin: &str, text: &str) -> Result<AccountsFile, Vec<String>> {
    let file: AccountsFile = serde_norway::from_str(text).map_err(|e| vec![format!("{origin}: {e}")])?;
    let mut errors = Vec::new();
    let mut seen = HashMap::new();
    for (i, a) in file.accounts.iter().enumerate() {
        let at = format!("{origin}: accounts[{i}] ({:?})", a.username);
        if let Err(e) = validate_username(&a.username) {
            errors.push(format!("{at}.username: {e}"));
        }
        if let Some(first) = seen.insert(a.username.clone(), i) {
            errors.push(format!("{at}.username: duplicate of accounts[{first}]"));
        }
        if let Err(e) = hash_kind(&a.password_hash) {
            errors.push(format!("{at}.password_hash: {e}"));
        }
        for (field, t) in [("expires_at", &a.expires_at), ("previous_valid_until", &a.previous_valid_until)] {
            if let Some(t) = t {
                if humantime::parse_rfc3339_weak(t).is_err() {
                    errors.push(format!("{at}.{field}: {t:?} is not an RFC 3339 time such as 2027-01-31T00:00:00Z"));
                }
            }
        }
        match (&a.previous_password_hash, &a.previous_valid_until) {
            (Some(h), Some(_)) => {
                if let Err(e) = hash_kind(h) {
                    errors.push(format!("{at}.previous_password_hash: {e}"));
                }
            }
            (Some(_), None) => errors.push(format!(
                "{at}.previous_valid_until: required with previous_password_hash (until when the old secret is accepted)"
            )),
            (None, Some(_)) => {
                errors.push(format!("{at}.previous_password_hash: required with previous_valid_until"))
            }
            (None, None) => {}
        }
        for g in &a.groups {
            if g.is_empty() || g.chars().any(char::is_control) {
                errors.push(format!("{at}.groups: {g:?} is not a valid group name"));
            }
        }
    }
    if errors.is_empty() {
        Ok(file)
    } else {
        Err(errors)
    }
}

/// [`parse_accounts`], and unless `allow_demo`, no account with a published demo hash.
pub(super) fn parse_checked(origin: &str, text: &str, allow_demo: bool) -> Result<AccountsFile, Vec<String>> {
    let file = parse_accounts(origin, text)?;
    let demo = if allow_demo { Vec::new() } else { demo_hash_problems(origin, &file) };
    if demo.is_empty() {
        Ok(file)
    } else {
        Err(demo)
    }
}

/// Whether `u` may name an account: what Basic credentials can carry, and what the token endpoint accepts.
pub fn validate_username(u: &str) -> Result<(), String> {
    if u.is_empty() {
        return Err("must not be empty".into());
    }
    if u.len() > MAX_USERNAME_LEN {
        return Err(format!("longer than {MAX_USERNAME_LEN} bytes"));
    }
    if u.contains(':') {
        return Err("must not contain ':' (Basic credentials cannot carry it)".into());
    }
    if u.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain spaces or control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_passwords_and_bad_fields_are_all_reported() {
        let text = "accounts:\n- username: 'a:b'\n  password_hash: hunter2\n- username: c\n  password_hash: '$2b$04$invalid'\n  expires_at: tomorrow\n- username: c\n  password_hash: '$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA'\n";
        let errors = parse_accounts("accounts.yaml", text).unwrap_err();
        let all = errors.join("\n");
        assert!(all.contains("accounts[0] (\"a:b\").username: must not contain ':'"), "{all}");
        assert!(all.contains("accounts[0] (\"a:b\").password_hash: must be a bcrypt"), "{all}");
        assert!(all.contains("accounts[1] (\"c\").password_hash: invalid bcrypt hash"), "{all}");
        assert!(all.contains("accounts[1] (\"c\").expires_at"), "{all}");
        assert!(all.contains("accounts[2] (\"c\").username: duplicate of accounts[1]"), "{all}");
        let unknown = parse_accounts("f", "accounts:\n- username: a\n  password: x\n").unwrap_err();
        assert!(unknown[0].contains("unknown field `password`"), "{unknown:?}");
    }
}

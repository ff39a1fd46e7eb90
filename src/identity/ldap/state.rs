//! What the directory says about an account besides "right password or not".
//!
//! Two sources, for two moments:
//! - a password login binds as the user, and Active Directory (and Samba) explain a refused bind with a
//!   sub-code in the diagnostic message (`…AcceptSecurityContext error, data 775, v1db1`): expired, locked
//!   out, must change password. [`bind_refusal`] turns it into a reason for the log and the audit line. The
//!   client is never told which (it would tell a stranger that the account exists and is locked);
//! - a refresh token is re-checked WITHOUT the user's password, so no bind can refuse it: the account's state
//!   has to be read from its entry. [`refusal`] reads the attributes in [`ATTRIBUTES`] (Active Directory's
//!   and OpenLDAP ppolicy's; a directory that has none of them simply returns none) and says why the account
//!   may not be used, if it may not. Password logins apply the same check after a successful bind, except
//!   for ppolicy's lock, which the directory's own bind has judged by then ([`Moment::AfterBind`]).

use std::collections::HashMap;

/// Attributes read from every user entry to judge the account's state. Constructed attributes such as
/// `msDS-User-Account-Control-Computed` are only returned when asked for by name.
pub const ATTRIBUTES: [&str; 5] = [
    "userAccountControl",
    "msDS-User-Account-Control-Computed",
    "accountExpires",
    "pwdLastSet",
    "pwdAccountLockedTime",
];

/// userAccountControl: ACCOUNTDISABLE.
const UF_ACCOUNTDISABLE: u64 = 0x2;
/// userAccountControl / msDS-User-Account-Control-Computed: LOCKOUT (AD keeps it current only in the
/// computed attribute).
const UF_LOCKOUT: u64 = 0x10;
/// userAccountControl: DONT_EXPIRE_PASSWORD (AD then ignores `pwdLastSet: 0`).
const UF_DONT_EXPIRE_PASSWD: u64 = 0x1_0000;
/// msDS-User-Account-Control-Computed: PASSWORD_EXPIRED.
const UF_PASSWORD_EXPIRED: u64 = 0x80_0000;
/// `accountExpires` values that mean "never".
const NEVER: [i64; 2] = [0, i64::MAX];
/// Seconds between 1601-01-01 (the FILETIME epoch) and 1970-01-01.
const FILETIME_UNIX_OFFSET: i64 = 11_644_473_600;

/// The reason a refused bind gives, from Active Directory's sub-code in the diagnostic message, or None
/// when the message has none (OpenLDAP, or another error).
pub fn bind_refusal(message: &str) -> Option<String> {
    let code = ad_subcode(message)?;
    let what = match code.as_str() {
        "525" => "user not found",
        "52e" => "wrong password",
        "530" => "not permitted to log on at this time (logon hours)",
        "531" => "not permitted to log on from this workstation",
        "532" => "password expired",
        "533" => "account disabled",
        "701" => "account expired",
        "773" => "must change password",
        "775" => "account locked out",
        _ => "the directory refused the bind",
    };
    Some(format!("{what} (AD data {code})"))
}

/// The hexadecimal word after `data ` in an Active Directory bind error, lower-cased.
fn ad_subcode(message: &str) -> Option<String> {
    let lower = message.to_ascii_lowercase();
    let start = lower.find(", data ").map(|i| i + 7).or_else(|| lower.strip_prefix("data ").map(|_| 5))?;
    let code: String = lower[start..].chars().take_while(char::is_ascii_hexdigit).take(8).collect();
    (!code.is_empty()).then_some(code)
}

/// When the state is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// A refresh token's re-check: no bind, the entry is all there is.
    Recheck,
    /// Right after the directory accepted the user's password. `pwdAccountLockedTime` is then left to the
    /// directory: ppolicy refuses the bind of a locked account itself, and knows when a lock has run its
    /// `pwdLockoutDuration` (the attribute, read before the bind, stays until that successful bind clears it).
    AfterBind,
}

/// The reason for a bind the directory refused, with what the entry (read before the bind) says of a
/// password-policy lock: OpenLDAP's ppolicy answers a locked account's bind exactly as a wrong password,
/// so without this the log would blame the password of a user the directory has locked out.
pub fn refused_bind(attrs: &HashMap<String, Vec<String>>, reason: String) -> String {
    let locked =
        attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case("pwdAccountLockedTime")).and_then(|(_, v)| v.first());
    match locked {
        Some(since) => format!(
            "{reason}, or the account is locked by the directory's password policy (pwdAccountLockedTime {}): \
             ppolicy refuses a locked account's bind with the same answer",
            crate::support::clip(since.trim(), 40)
        ),
        None => reason,
    }
}

/// Why the account whose state attributes are `attrs` (name → values, names in any case) may not be used
/// at `now` (unix seconds), or None when nothing says so. A value that does not parse refuses: the
/// directory's word on an account is never guessed in the account's favour.
pub fn refusal(attrs: &HashMap<String, Vec<String>>, now: i64, moment: Moment) -> Option<String> {
    let get = |name: &str| {
        attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).and_then(|(_, v)| v.first()).map(|v| v.trim())
    };
    let flags = |name: &str| -> Result<u64, String> {
        match get(name) {
            None => Ok(0),
            // AD writes userAccountControl as a signed 32-bit number.
            Some(v) => v
                .parse::<i64>()
                .map(|n| n as u32 as u64)
                .map_err(|_| format!("unreadable {name} {:?}", crate::support::clip(v, 40))),
        }
    };
    let uac = match flags("userAccountControl") {
        Ok(f) => f,
        Err(e) => return Some(e),
    };
    let computed = match flags("msDS-User-Account-Control-Computed") {
        Ok(f) => f,
        Err(e) => return Some(e),
    };
    if uac & UF_ACCOUNTDISABLE != 0 {
        return Some("account disabled (userAccountControl)".into());
    }
    if let Some(v) = get("accountExpires") {
        match v.parse::<i64>() {
            Ok(n) if NEVER.contains(&n) => {}
            Ok(n) if n / 10_000_000 - FILETIME_UNIX_OFFSET <= now => {
                return Some("account expired (accountExpires)".into())
            }
            Ok(_) => {}
            Err(_) => return Some(format!("unreadable accountExpires {:?}", crate::support::clip(v, 40))),
        }
    }
    if (uac | computed) & UF_LOCKOUT != 0 {
        return Some("account locked out (msDS-User-Account-Control-Computed)".into());
    }
    if moment == Moment::Recheck && get("pwdAccountLockedTime").is_some() {
        return Some("account locked (pwdAccountLockedTime)".into());
    }
    if get("pwdLastSet") == Some("0") && uac & UF_DONT_EXPIRE_PASSWD == 0 {
        return Some("must change password (pwdLastSet=0)".into());
    }
    if computed & UF_PASSWORD_EXPIRED != 0 {
        return Some("password expired (msDS-User-Account-Control-Computed)".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
        pairs.iter().map(|(k, v)| (k.to_string(), vec![v.to_string()])).collect()
    }

    #[test]
    fn a_refused_bind_of_a_ppolicy_locked_entry_names_the_lock() {
        let locked = attrs(&[("pwdAccountLockedTime", "20261206120000Z")]);
        let reason = refused_bind(&locked, "wrong password".into());
        assert!(reason.starts_with("wrong password, or the account is locked"), "{reason}");
        assert!(reason.contains("pwdAccountLockedTime 20261206120000Z"), "{reason}");
        assert_eq!(refused_bind(&attrs(&[("uid", "bob")]), "wrong password".into()), "wrong password");
    }

    /// Every sub-code of the issue, as Active Directory and Samba write them. 525 and 532 cannot be produced
    /// by the Samba rig (it answers 52e for an unknown user, and a password cannot be aged on purpose).
    #[test]
    fn active_directory_sub_codes_become_reasons() {
        let msg = |code: &str| {
            format!("80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data {code}, v1db1")
        };
        for (code, want) in [
            ("525", "user not found (AD data 525)"),
            ("52e", "wrong password (AD data 52e)"),
            ("530", "not permitted to log on at this time (logon hours) (AD data 530)"),
            ("531", "not permitted to log on from this workstation (AD data 531)"),
            ("532", "password expired (AD data 532)"),
            ("533", "account disabled (AD data 533)"),
            ("701", "account expired (AD data 701)"),
            ("773", "must change password (AD data 773)"),
            ("775", "account locked out (AD data 775)"),
            ("52F", "the directory refused the bind (AD data 52f)"),
        ] {
            assert_eq!(bind_refusal(&msg(code)).as_deref(), Some(want), "{code}");
        }
        assert_eq!(bind_refusal(""), None);
        assert_eq!(bind_refusal("invalid credentials"), None);
        assert_eq!(bind_refusal("comment: AcceptSecurityContext error, data , v1db1"), None);
    }

    #[test]
    fn account_state_attributes_refuse_what_they_should() {
        let now = 1_800_000_000;
        let filetime = |unix: i64| ((unix + FILETIME_UNIX_OFFSET) * 10_000_000).to_string();
        let usable = [
            attrs(&[]),
            attrs(&[("userAccountControl", "512"), ("accountExpires", "9223372036854775807"), ("pwdLastSet", "1")]),
            attrs(&[("accountExpires", "0"), ("msDS-User-Account-Control-Computed", "0")]),
            attrs(&[("accountExpires", &filetime(now + 60))]),
            // "Password never expires" wins over "must change password", as in AD.
            attrs(&[("userAccountControl", "66048"), ("pwdLastSet", "0")]),
        ];
        for a in usable {
            assert_eq!(refusal(&a, now, Moment::Recheck), None, "{a:?}");
        }
        // A lock the directory lifted when it accepted the password (its duration ran out) refuses nothing
        // after that bind; a re-check, which has no bind, still refuses until the attribute is gone.
        let lapsed = attrs(&[("pwdAccountLockedTime", "20261205120000Z")]);
        assert_eq!(refusal(&lapsed, now, Moment::AfterBind), None);
        for (a, want) in [
            (attrs(&[("userAccountControl", "514")]), "account disabled"),
            (attrs(&[("accountExpires", &filetime(now - 1))]), "account expired"),
            (attrs(&[("ACCOUNTEXPIRES", &filetime(now))]), "account expired"),
            (attrs(&[("msDS-User-Account-Control-Computed", "16")]), "account locked out"),
            (attrs(&[("pwdAccountLockedTime", "000001010000Z")]), "account locked (pwdAccountLockedTime)"),
            (attrs(&[("pwdAccountLockedTime", "20261205120000Z")]), "account locked (pwdAccountLockedTime)"),
            (attrs(&[("userAccountControl", "512"), ("pwdLastSet", "0")]), "must change password"),
            (attrs(&[("msDS-User-Account-Control-Computed", "8388608")]), "password expired"),
            (attrs(&[("userAccountControl", "-2147483646")]), "account disabled"),
            (attrs(&[("accountExpires", "soon")]), "unreadable accountExpires"),
            (attrs(&[("userAccountControl", "x")]), "unreadable userAccountControl"),
        ] {
            let got = refusal(&a, now, Moment::Recheck).unwrap_or_default();
            assert!(got.starts_with(want), "{a:?}: {got:?}");
            if !want.contains("pwdAccountLockedTime") {
                assert_eq!(refusal(&a, now, Moment::AfterBind), Some(got), "after a bind too");
            }
        }
    }
}

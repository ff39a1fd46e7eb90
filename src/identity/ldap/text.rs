//! Building filters and DNs from untrusted text, and reading group names out of DNs.
//!
//! Every value a client controls (the username) and every value the directory returns (a user or group DN
//! substituted into a group filter) goes through the escaping of its context: RFC 4515 for filter values,
//! RFC 4514 for DN attribute values. Templates are filled in one pass, so text inserted for one placeholder
//! is never scanned for another: a username of `{dn}` stays literal.

use ldap3::{dn_escape, ldap_escape};

/// How a value is escaped before it is put into a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// RFC 4515: `*`, `(`, `)`, `\` and NUL become `\2a` etc.
    Filter,
    /// RFC 4514: `,` `+` `"` `\` `<` `>` `;` `=` NUL, a leading space or `#` and a trailing space.
    Dn,
}

/// Fill `template`'s `{name}` placeholders from `values`, escaping each value for `escape`. Unknown
/// placeholders are left as they are (config validation rejects them before this is ever called).
pub fn fill(template: &str, values: &[(&str, &str)], escape: Escape) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}');
        let hit = close.and_then(|c| values.iter().find(|(k, _)| *k == &after[..c]).map(|(_, v)| (c, *v)));
        match hit {
            Some((c, v)) => {
                match escape {
                    Escape::Filter => out.push_str(&ldap_escape(v)),
                    Escape::Dn => out.push_str(&dn_escape(v)),
                }
                rest = &after[c + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The value of a DN's first RDN, unescaped: `cn=team\2cweb,ou=groups,dc=x` gives `team,web`. A
/// multi-valued first RDN (`cn=a+ou=b`) gives the first value. None for a DN that does not parse.
pub fn first_rdn_value(dn: &str) -> Option<String> {
    let eq = dn.find('=')?;
    let raw = &dn.as_bytes()[eq + 1..];
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b',' | b'+' => break,
            b'\\' => {
                let next = *raw.get(i + 1)?;
                let hex = raw.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(next);
                        i += 2;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    let value = String::from_utf8(out).ok()?;
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_string())
}

/// A DN as a list of normalised RDNs, leaf first, for comparing DNs the way a directory does: attribute
/// types and values compared without case, escapes (`\,` and `\2c`) decoded, spaces around `,` `=` `+`
/// ignored, the values of a multi-valued RDN in a fixed order. None for text that is not a DN.
pub fn normalized_rdns(dn: &str) -> Option<Vec<String>> {
    if dn.trim().is_empty() {
        return Some(Vec::new());
    }
    let bytes = dn.as_bytes();
    let mut rdns = Vec::new();
    let mut avas: Vec<String> = Vec::new();
    // The current attribute type, and the value's bytes, each with whether it was escaped (escaped spaces
    // are part of the value; unescaped ones at either end are not).
    let mut typ: Option<String> = None;
    let mut current: Vec<(u8, bool)> = Vec::new();
    let finish = |typ: &mut Option<String>, current: &mut Vec<(u8, bool)>, avas: &mut Vec<String>| -> Option<()> {
        let t = typ.take()?;
        while current.first().is_some_and(|(b, esc)| *b == b' ' && !esc) {
            current.remove(0);
        }
        while current.last().is_some_and(|(b, esc)| *b == b' ' && !esc) {
            current.pop();
        }
        let value = String::from_utf8(current.drain(..).map(|(b, _)| b).collect()).ok()?;
        let t = t.trim().to_ascii_lowercase();
        if t.is_empty() {
            return None;
        }
        avas.push(format!("{t}={}", value.to_lowercase()));
        Some(())
    };
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match (typ.is_some(), b) {
            (_, b'\\') => {
                let next = *bytes.get(i + 1)?;
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                let (byte, width) = match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => (v, 3),
                    None => (next, 2),
                };
                // An escape in an attribute type: not a DN.
                typ.as_ref()?;
                current.push((byte, true));
                i += width;
                continue;
            }
            (false, b'=') => typ = Some(String::from_utf8(current.drain(..).map(|(b, _)| b).collect()).ok()?),
            (false, b',' | b';' | b'+') => return None,
            (true, b'+') => finish(&mut typ, &mut current, &mut avas)?,
            (true, b',' | b';') => {
                finish(&mut typ, &mut current, &mut avas)?;
                avas.sort();
                rdns.push(avas.join("+"));
                avas.clear();
            }
            _ => current.push((b, false)),
        }
        i += 1;
    }
    finish(&mut typ, &mut current, &mut avas)?;
    avas.sort();
    rdns.push(avas.join("+"));
    Some(rdns)
}

/// Whether `dn` is `base` or below it, compared as [`normalized_rdns`] does. False when either does not
/// parse: a group the base cannot be proven to contain does not count.
pub fn is_under(dn: &str, base: &str) -> bool {
    match (normalized_rdns(dn), normalized_rdns(base)) {
        (Some(d), Some(b)) => d.len() >= b.len() && d[d.len() - b.len()..] == b[..],
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ldap::placeholders;

    #[test]
    fn hostile_usernames_are_escaped_in_filters_and_dns() {
        let f = |u: &str| fill("(&(objectClass=person)(uid={username}))", &[("username", u)], Escape::Filter);
        assert_eq!(f("*"), r"(&(objectClass=person)(uid=\2a))");
        assert_eq!(f("al*)(uid=*"), r"(&(objectClass=person)(uid=al\2a\29\28uid=\2a))");
        assert_eq!(f("alice)(|(uid=*"), r"(&(objectClass=person)(uid=alice\29\28|\28uid=\2a))");
        assert_eq!(f("a\0b"), r"(&(objectClass=person)(uid=a\00b))");
        assert_eq!(f(r"back\slash"), r"(&(objectClass=person)(uid=back\5cslash))");
        let d = |u: &str| fill("uid={username},ou=people,dc=example,dc=org", &[("username", u)], Escape::Dn);
        assert_eq!(d("dev,ops"), r"uid=dev\2cops,ou=people,dc=example,dc=org");
        assert_eq!(d("a+b"), r"uid=a\2bb,ou=people,dc=example,dc=org");
        assert_eq!(d("#hash"), r"uid=\23hash,ou=people,dc=example,dc=org");
        assert_eq!(d(" lead"), r"uid=\20lead,ou=people,dc=example,dc=org");
        assert_eq!(d(r"x\y"), r"uid=x\5cy,ou=people,dc=example,dc=org");
        assert_eq!(d("uid=admin"), r"uid=uid\3dadmin,ou=people,dc=example,dc=org");
    }

    #[test]
    fn inserted_text_is_never_scanned_for_placeholders() {
        let out =
            fill("(|(member={dn})(memberUid={username}))", &[("dn", "{username}"), ("username", "u")], Escape::Filter);
        assert_eq!(out, "(|(member={username})(memberUid=u))");
        assert_eq!(fill("(x={unknown})", &[("username", "u")], Escape::Filter), "(x={unknown})");
        assert_eq!(placeholders("(&(a={username})(b={dn}))"), vec!["username", "dn"]);
    }

    #[test]
    fn group_names_come_from_the_first_rdn_unescaped() {
        assert_eq!(first_rdn_value("cn=devs,ou=groups,dc=x").as_deref(), Some("devs"));
        assert_eq!(first_rdn_value(r"cn=team\2cweb,ou=groups").as_deref(), Some("team,web"));
        assert_eq!(first_rdn_value(r"CN=Domain Users,CN=Users,DC=corp").as_deref(), Some("Domain Users"));
        assert_eq!(first_rdn_value(r"cn=a\,b+ou=c,dc=x").as_deref(), Some("a,b"));
        assert_eq!(first_rdn_value("no-equals-sign"), None);
        assert_eq!(first_rdn_value("cn=,dc=x"), None);
    }

    #[test]
    fn dns_compare_without_case_spacing_or_escape_form() {
        let base = "OU=Groups,DC=ad,DC=example,DC=org";
        assert!(is_under("CN=admins,OU=Groups,DC=ad,DC=example,DC=org", base));
        assert!(is_under("cn=admins, ou=groups , dc=AD,dc=Example,dc=ORG", base));
        assert!(is_under("CN=x,OU=Team,OU=Groups,DC=ad,DC=example,DC=org", base));
        assert!(is_under(base, base));
        assert!(is_under(r"CN=a\2cb,OU=Groups,DC=ad,DC=example,DC=org", base));
        // Same CN, another OU; a look-alike OU whose name only ends like the base's; the base's parent.
        assert!(!is_under("CN=admins,OU=Contractors,DC=ad,DC=example,DC=org", base));
        assert!(!is_under("CN=admins,OU=Other Groups,DC=ad,DC=example,DC=org", base));
        assert!(!is_under(r"CN=admins\,OU=Groups,DC=ad,DC=example,DC=org", "OU=Groups,DC=example,DC=org"));
        assert!(!is_under("DC=ad,DC=example,DC=org", base));
        assert!(!is_under(r"CN=x\,OU=Groups,OU=Contractors,DC=ad,DC=example,DC=org", base));
        // An escaped comma is part of a value, never a separator.
        assert_eq!(
            normalized_rdns(r"CN=Smith\, J (*) \\ x,OU=Staff,DC=corp").unwrap(),
            [r"cn=smith, j (*) \ x", "ou=staff", "dc=corp"]
        );
        assert_eq!(normalized_rdns(r"cn=b+ou=a ,dc=x").unwrap(), ["cn=b+ou=a", "dc=x"]);
        assert_eq!(normalized_rdns(r"cn=trailing\ ,dc=x").unwrap(), ["cn=trailing ", "dc=x"]);
        for bad in ["no-equals", "cn=a,,dc=x", "=a", r"c\n=a", "cn=a\\"] {
            assert_eq!(normalized_rdns(bad), None, "{bad:?}");
            assert!(!is_under(bad, "dc=x"), "{bad:?}");
        }
    }
}

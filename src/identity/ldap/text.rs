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
}

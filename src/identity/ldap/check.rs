//! `tollgate check-config --probe` for a directory: connect (naming TLS problems), bind as the service
//! account, and read the base DNs the config names, each step in words.

use ldap3::{Ldap, LdapError, Scope};
use secrecy::ExposeSecret as _;

use super::{describe, state, LdapProvider};
use crate::identity::Check;

/// An LDAP result code in words, with the code after them for searching the server's documentation.
pub fn rc_words(rc: u32) -> String {
    let words = match rc {
        0 => "success",
        1 => "operations error",
        2 => "protocol error",
        3 => "time limit exceeded",
        4 => "size limit exceeded",
        7 => "the authentication method is not supported",
        8 => "the server requires a stronger authentication (TLS or StartTLS) for this",
        11 => "an administrative limit was exceeded",
        13 => "the server requires a confidential (TLS) connection",
        16 => "no such attribute",
        32 => "no such object",
        34 => "the DN is not valid syntax",
        48 => "inappropriate authentication (an empty password, or anonymous binds not allowed)",
        49 => "invalid credentials",
        50 => "insufficient access rights",
        51 => "the server is busy",
        52 => "the server is unavailable",
        53 => "the server is unwilling to perform it",
        _ => "an error",
    };
    format!("{words} (rc={rc})")
}

/// What went wrong opening a connection, in words: TLS certificate problems named for what to fix.
fn connect_words(e: &LdapError, url: &str, has_ca_file: bool) -> String {
    let text = crate::support::error_chain(e);
    let lower = text.to_ascii_lowercase();
    let trust = if has_ca_file { "ca_file" } else { "the system trust store (set ca_file for a private CA)" };
    if lower.contains("unknownissuer") || lower.contains("unknown issuer") {
        format!("TLS: the server's certificate is not trusted: no CA in {trust} signed it ({text})")
    } else if lower.contains("notvalidforname") || lower.contains("not valid for name") {
        format!(
            "TLS: the server's certificate does not name the host of url {url}: use a name it is issued for ({text})"
        )
    } else if lower.contains("expired") && lower.contains("certificate") {
        format!("TLS: the server's certificate has expired ({text})")
    } else if lower.contains("certificate") || lower.contains("handshake") || lower.contains("tls") {
        format!("TLS handshake failed: {text}")
    } else if lower.contains("connection refused") {
        format!("nothing listens there (connection refused): {text}")
    } else if lower.contains("timed out") || lower.contains("timeout") || lower.contains("elapsed") {
        format!("no answer within connect_timeout: {text}")
    } else {
        text
    }
}

/// A refused bind of the service account, in words.
fn bind_words(rc: u32, text: &str) -> String {
    let why = match rc {
        49 => {
            let ad = state::bind_refusal(text).map(|r| format!("; Active Directory says: {r}")).unwrap_or_default();
            format!("the bind DN or its password is wrong (bind_dn, bind_password_file){ad}")
        }
        53 => match state::bind_refusal(text) {
            Some(r) => format!("the directory refuses this account: {r}"),
            None => {
                "the directory is unwilling to bind this account (locked, disabled or its password expired?)".into()
            }
        },
        _ => "the directory refused the bind".into(),
    };
    let text = text.trim();
    if text.is_empty() {
        format!("{why}: {}", rc_words(rc))
    } else {
        format!("{why}: {}, {text:?}", rc_words(rc))
    }
}

impl LdapProvider {
    /// Connect, bind as the service account, and read `user_base_dn` and `groups.base_dn`, bounded by
    /// `connect_timeout` and `timeout`. One line per step; the steps stop at the first that fails.
    pub async fn check(&self) -> Vec<Check> {
        let mut out = Vec::new();
        let connector = self.service.connector();
        let url = &self.cfg.url;
        let tls = if self.cfg.starttls {
            " with StartTLS"
        } else if url.to_ascii_lowercase().starts_with("ldaps://") {
            " over TLS"
        } else {
            ""
        };
        let what = format!("connect to {url}{tls}");
        let connected = tokio::time::timeout(self.cfg.connect_timeout * 2, connector.connect()).await;
        let mut ldap = match connected {
            Ok(Ok(l)) => {
                out.push(Check::pass(what, "connected"));
                l
            }
            Ok(Err(e)) => {
                out.push(Check::fail(what, connect_words(&e, url, self.cfg.ca_file.is_some())));
                return out;
            }
            Err(_) => {
                out.push(Check::fail(
                    what,
                    format!("no answer within connect_timeout ({}s)", self.cfg.connect_timeout.as_secs()),
                ));
                return out;
            }
        };
        match self.service.service_account() {
            Some((dn, password)) => {
                let what = format!("bind as {dn}");
                let bound = ldap.with_timeout(self.op_timeout()).simple_bind(dn, password.expose_secret()).await;
                match bound {
                    Ok(r) if r.rc == 0 => out.push(Check::pass(what, "the service account's password is accepted")),
                    Ok(r) => {
                        out.push(Check::fail(what, bind_words(r.rc, &r.text)));
                        let _ = ldap.unbind().await;
                        return out;
                    }
                    Err(e) => {
                        out.push(Check::fail(what, describe(&e)));
                        return out;
                    }
                }
            }
            None => out.push(Check::pass(
                "bind",
                "no bind_dn configured: searches run anonymously (the directory must allow them)",
            )),
        }
        let mut bases = Vec::new();
        match (&self.cfg.user_base_dn, &self.cfg.user_dn_template) {
            (Some(b), _) if !b.trim().is_empty() => bases.push(("user_base_dn", b.clone())),
            (_, Some(t)) => out.push(Check::pass(
                "user_base_dn",
                format!("users are bound directly through user_dn_template {t:?}: no base to read"),
            )),
            _ => {}
        }
        if let Some(b) = self.cfg.groups.base_dn.as_ref().filter(|b| !b.trim().is_empty()) {
            bases.push(("groups.base_dn", b.clone()));
        }
        for (key, base) in bases {
            out.push(self.read_base(&mut ldap, key, &base).await);
        }
        let _ = ldap.unbind().await;
        out
    }

    /// A base-scope read of `base` on the bound connection.
    async fn read_base(&self, ldap: &mut Ldap, key: &str, base: &str) -> Check {
        let what = format!("read {key} {base}");
        let res = ldap.with_timeout(self.op_timeout()).search(base, Scope::Base, "(objectClass=*)", vec!["1.1"]).await;
        match res {
            Ok(r) => match r.1.rc {
                0 if r.0.is_empty() => {
                    Check::fail(what, "the search returned no entry: the service account may not read it")
                }
                0 => Check::pass(what, "exists and is readable"),
                32 => Check::fail(
                    what,
                    format!("the base DN does not exist (or is hidden from the service account): {}", rc_words(32)),
                ),
                50 => Check::fail(what, format!("the service account may not read it: {}", rc_words(50))),
                34 => Check::fail(what, format!("not a valid DN: {}", rc_words(34))),
                rc => Check::fail(what, format!("{} {}", rc_words(rc), r.1.text.trim()).trim_end().to_string()),
            },
            Err(e) => Check::fail(what, describe(&e)),
        }
    }
}

//! What an invalidation is about: an account, its membership, an IdP session, or a group.

use serde::{Deserialize, Serialize};

/// What is invalidated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    /// An account: its cached logins, and its refresh tokens issued up to the moment.
    Account { provider: Option<String>, username: String },
    /// An account whose groups or attributes changed (a directory watcher saw it): its cached identity is
    /// dropped everywhere and read again; its refresh tokens stay valid (each re-check reads the account).
    Membership { provider: Option<String>, username: String },
    /// An IdP session (`sid`), or every session of an IdP subject (`sub`), at an OIDC provider.
    Session { provider: String, sid: Option<String>, sub: Option<String> },
    /// A group: every cached identity in it is read again (membership changed).
    Group { name: String },
}

impl Subject {
    /// How the audit line names it.
    pub fn describe(&self) -> String {
        match self {
            Subject::Account { provider: Some(p), username } => format!("account {p}/{username}"),
            Subject::Account { provider: None, username } => format!("account {username}"),
            Subject::Session { provider, sid, sub } => {
                let mut s = format!("session at {provider}");
                if let Some(sid) = sid {
                    s.push_str(&format!(" sid={}", crate::support::clip(sid, 100)));
                }
                if let Some(sub) = sub {
                    s.push_str(&format!(" sub={}", crate::support::clip(sub, 100)));
                }
                s
            }
            Subject::Membership { provider: Some(p), username } => format!("membership of {p}/{username}"),
            Subject::Membership { provider: None, username } => format!("membership of {username}"),
            Subject::Group { name } => format!("group {name}"),
        }
    }
}

//! The accounts file (`type: static` providers, `file:` or inline `accounts:`): one entry per person or
//! robot. Reading and checking the hashes is the static provider's job (`identity::accounts`).

use serde::{Deserialize, Serialize};

/// One account as written in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountEntry {
    /// REQUIRED. The login name; no `:` (Basic credentials cannot carry one) and no control characters.
    pub username: String,
    /// REQUIRED. A bcrypt (`$2b$…`) or argon2 (`$argon2id$…`) hash; `tollgate hash-password` makes one.
    pub password_hash: String,
    /// Group names for the rules file. Default: none.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Marks a machine account (CI). Exposed to the rules as the claim `robot: true`. Default: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub robot: bool,
    /// A disabled account is refused, and so are its refresh tokens. Default: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// RFC 3339 time after which the account is refused. Default: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Free text for people (who owns this robot, what for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The hash of a secret being replaced (`tollgate robot rotate --grace`), accepted until
    /// `previous_valid_until`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_password_hash: Option<String>,
    /// RFC 3339 time until which `previous_password_hash` is accepted. Required with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_valid_until: Option<String>,
}

/// The accounts file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountsFile {
    #[serde(default)]
    pub accounts: Vec<AccountEntry>,
}

#[cfg(test)]
impl AccountEntry {
    /// An account with only a name and a hash, for tests.
    pub(crate) fn with_hash(username: &str, hash: &str) -> AccountEntry {
        AccountEntry {
            username: username.into(),
            password_hash: hash.into(),
            groups: vec![],
            robot: false,
            disabled: false,
            expires_at: None,
            description: None,
            previous_password_hash: None,
            previous_valid_until: None,
        }
    }
}

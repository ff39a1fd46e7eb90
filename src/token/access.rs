//! Personal and group access tokens: the secret's format, its keyed hash, and what is kept of a token.
//!
//! A secret is `tgp_` + 32 base62 characters from the OS random source (190 bits) + 6 base62 characters of
//! the CRC32 of those 32 (as GitHub's tokens do). The checksum lets tollgate, and any secret scanner, tell a
//! mistyped or made-up token from a real one without a store lookup. It is no protection: anyone can compute
//! it; the secret's strength is its random part.
//!
//! The secret is never kept. The store holds its HMAC-SHA256 under a server secret (a file, generated like
//! the signing key), hex: fast to compute on every use (no key-derivation function is needed for 190 random
//! bits) and useless to whoever reads the store without the server secret. A token is named by an [`id`]
//! that is not secret (logs, the audit line, the CLI).
//!
//! [`id`]: TokenRecord::id

use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::support::random::fill;

/// What every access token starts with.
pub const PREFIX: &str = "tgp_";
/// Random base62 characters after the prefix (32 x log2(62) = 190 bits).
const RANDOM_LEN: usize = 32;
/// Base62 characters of the CRC32 (62^6 > 2^32).
const CHECK_LEN: usize = 6;
/// The length of every secret.
pub const SECRET_LEN: usize = PREFIX.len() + RANDOM_LEN + CHECK_LEN;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `n` base62 characters, each uniform (bytes >= 248 are drawn again, so no character is more likely).
fn random_base62(n: usize) -> String {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        fill(&mut buf);
        for b in buf {
            if b < 248 && out.len() < n {
                out.push(BASE62[(b % 62) as usize] as char);
            }
        }
    }
    out
}

/// CRC-32 (IEEE 802.3, the one zlib and GitHub's tokens use), bit by bit: a secret is 32 bytes.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// `v` in base62, left-padded with `0` to [`CHECK_LEN`] characters.
fn checksum_text(v: u32) -> [u8; CHECK_LEN] {
    let mut out = [b'0'; CHECK_LEN];
    let mut v = u64::from(v);
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(v % 62) as usize];
        v /= 62;
    }
    out
}

/// A new secret: `tgp_` + random + checksum.
pub fn new_secret() -> String {
    let random = random_base62(RANDOM_LEN);
    let check = checksum_text(crc32(random.as_bytes()));
    let mut s = String::with_capacity(SECRET_LEN);
    s.push_str(PREFIX);
    s.push_str(&random);
    s.extend(check.iter().map(|&b| b as char));
    s
}

/// Whether `secret` has the shape of a token and its checksum is right. Costs no store read.
pub fn well_formed(secret: &str) -> bool {
    let Some(rest) = secret.strip_prefix(PREFIX) else { return false };
    if rest.len() != RANDOM_LEN + CHECK_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let (random, check) = rest.split_at(RANDOM_LEN);
    checksum_text(crc32(random.as_bytes())) == check.as_bytes()
}

/// A new token id: not secret, short enough to type (`tollgate token revoke ID`).
pub fn new_id() -> String {
    random_base62(12)
}

/// The keyed hash that stands for a secret at rest.
pub struct SecretHasher {
    key: hmac::Key,
}

impl std::fmt::Debug for SecretHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHasher(***)")
    }
}

impl SecretHasher {
    /// `server_secret` is the content of `access_tokens.secret_file` (at least 32 bytes).
    pub fn new(server_secret: &[u8]) -> Result<SecretHasher, String> {
        if server_secret.len() < 32 {
            return Err("the access token secret must be at least 32 bytes".into());
        }
        Ok(SecretHasher { key: hmac::Key::new(hmac::HMAC_SHA256, server_secret) })
    }

    /// HMAC-SHA256 of the secret, lower-case hex.
    pub fn hash(&self, secret: &str) -> String {
        let tag = hmac::sign(&self.key, secret.as_bytes());
        let mut hex = String::with_capacity(64);
        for b in tag.as_ref() {
            hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            hex.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        hex
    }
}

/// Whose a token is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    /// `user` (a person, re-checked at their provider on every use) or `group` (a group's token for CI).
    pub kind: OwnerKind,
    /// The username, or the group's name.
    pub name: String,
    /// The provider that vouched for the user (empty for a group).
    #[serde(default)]
    pub provider: String,
    /// The account instance (`Identity::account`) the token was created for: an account deleted and
    /// created again under the same name is another account, and the token is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The login session at the provider (an OIDC user's): the token works while the IdP keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OwnerKind {
    User,
    Group,
}

impl Owner {
    /// `alice` or `group:ci`, as the CLI and the audit line show it.
    pub fn label(&self) -> String {
        match self.kind {
            OwnerKind::User => self.name.clone(),
            OwnerKind::Group => format!("group:{}", self.name),
        }
    }
}

/// When and from where a token was last used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastUsed {
    pub at: u64,
    pub address: String,
}

/// Everything kept of a token: the hash of its secret and its metadata. Never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    pub id: String,
    /// HMAC-SHA256 of the secret under the server secret, hex.
    pub hmac: String,
    pub name: String,
    pub owner: Owner,
    /// Scope entries in the rules' syntax: `repository:payments/**:pull,push`.
    pub scope: Vec<String>,
    /// Who created it (the owner, or for a group token the admin).
    pub created_by: String,
    pub created: u64,
    pub expires: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<LastUsed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<u64>,
    /// The token that replaced this one (`rotate`); this one works until `expires`, cut to the grace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_to: Option<String>,
}

/// What a token's state is at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    Active,
    Expired,
    Revoked,
}

impl TokenState {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Active => "active",
            TokenState::Expired => "expired",
            TokenState::Revoked => "revoked",
        }
    }
}

impl TokenRecord {
    /// Its state at `now` (Unix seconds). A revocation wins over an expiry.
    pub fn state(&self, now: u64) -> TokenState {
        if self.revoked.is_some_and(|r| r <= now) {
            TokenState::Revoked
        } else if self.expires <= now {
            TokenState::Expired
        } else {
            TokenState::Active
        }
    }

    /// How long a record is kept after it stopped working: long enough for the audit and `list` to say why
    /// a token is refused, short enough that the store does not grow forever.
    pub const KEPT_AFTER_END: u64 = 30 * 24 * 3600;

    /// When the store may forget this record.
    pub fn forget_at(&self) -> u64 {
        self.revoked.unwrap_or(self.expires).min(self.expires).saturating_add(Self::KEPT_AFTER_END)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_the_ieee_one() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn new_secrets_have_the_format_and_pass_their_own_checksum() {
        let a = new_secret();
        let b = new_secret();
        assert_ne!(a, b);
        assert_eq!(a.len(), SECRET_LEN);
        assert!(a.starts_with("tgp_"));
        assert!(well_formed(&a) && well_formed(&b));
    }

    #[test]
    fn any_single_typo_fails_the_checksum() {
        let s = new_secret();
        for i in PREFIX.len()..s.len() {
            let mut bytes = s.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let typo = String::from_utf8(bytes).unwrap();
            assert!(!well_formed(&typo), "typo at {i} passed: {typo}");
        }
        for junk in ["", "tgp_", "tgr_x", &s[..s.len() - 1], &format!("{s}0"), &s.replace("tgp_", "tgx_")] {
            assert!(!well_formed(junk), "{junk}");
        }
    }

    #[test]
    fn the_hash_is_keyed_and_does_not_contain_the_secret() {
        let s = new_secret();
        let h1 = SecretHasher::new(&[1u8; 32]).unwrap();
        let h2 = SecretHasher::new(&[2u8; 32]).unwrap();
        assert_eq!(h1.hash(&s), h1.hash(&s));
        assert_ne!(h1.hash(&s), h2.hash(&s));
        assert_eq!(h1.hash(&s).len(), 64);
        assert!(!h1.hash(&s).contains(&s[4..12]));
        assert!(SecretHasher::new(b"short").is_err());
    }

    #[test]
    fn state_revoked_wins_over_expired() {
        let owner =
            Owner { kind: OwnerKind::User, name: "a".into(), provider: "p".into(), account: None, session: None };
        let mut r = TokenRecord {
            id: "i".into(),
            hmac: "h".into(),
            name: "n".into(),
            owner,
            scope: vec![],
            created_by: "a".into(),
            created: 10,
            expires: 100,
            last_used: None,
            revoked: None,
            rotated_to: None,
        };
        assert_eq!(r.state(50), TokenState::Active);
        assert_eq!(r.state(100), TokenState::Expired);
        r.revoked = Some(60);
        assert_eq!(r.state(50), TokenState::Active);
        assert_eq!(r.state(70), TokenState::Revoked);
        assert_eq!(r.state(200), TokenState::Revoked);
    }
}

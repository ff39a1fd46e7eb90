//! Access tokens: the claims the registry reads, signed by the active key.

pub mod access;
pub mod der;
pub mod keys;
pub mod refresh;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::support::time::{rfc3339, unix_now};
use keys::{KeySet, SignError};

/// One entry of the `access` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    #[serde(rename = "type")]
    pub rtype: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl AccessEntry {
    /// `type:name:action,action`, the scope syntax, in one allocation of the right size.
    pub fn text(&self) -> String {
        crate::scope::scope_text(&self.rtype, &self.name, self.actions.iter().map(String::as_str))
    }
}

/// The claims of an access token. `aud` is a single string: registry 2.8 cannot read an array.
#[derive(Debug, Serialize)]
pub struct Claims<'a> {
    pub iss: &'a str,
    pub sub: &'a str,
    pub aud: &'a str,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: &'a str,
    pub access: &'a [AccessEntry],
}

/// A signed access token and the response fields derived from it.
#[derive(Debug)]
pub struct IssuedToken {
    pub token: String,
    pub expires_in: u64,
    pub issued_at: String,
    pub jti: String,
}

/// Signs access tokens with the active key.
#[derive(Debug)]
pub struct TokenIssuer {
    pub keys: KeySet,
    pub issuer: String,
    pub lifetime: Duration,
    /// Subtracted from `exp` (at most `lifetime`): the registry's own leeway past `exp`
    /// (`token.registry_leeway`), so that it stops accepting the token `lifetime` after issue.
    pub registry_leeway: Duration,
}

impl TokenIssuer {
    pub fn issue(&self, subject: &str, audience: &str, access: &[AccessEntry]) -> Result<IssuedToken, SignError> {
        let now = unix_now();
        let jti = token_id();
        let claims = Claims {
            iss: &self.issuer,
            sub: subject,
            aud: audience,
            exp: now + self.lifetime.saturating_sub(self.registry_leeway).as_secs(),
            nbf: now,
            iat: now,
            jti: &jti,
            access,
        };
        // Sized for a typical claims set, so serialising it does not grow the buffer several times over.
        let mut json = Vec::with_capacity(256);
        serde_json::to_writer(&mut json, &claims).map_err(|e| SignError::Encode(e.to_string()))?;
        let token = self.keys.active().sign(&json)?;
        Ok(IssuedToken { token, expires_in: self.lifetime.as_secs(), issued_at: rfc3339(now), jti })
    }
}

/// A unique access token id (`jti`): 80 random bits drawn once per process, then a counter. It only has to
/// be unique (RFC 7519 section 4.1.7), not secret: it is readable in the token. One system call per process
/// instead of one per token. Secrets (refresh token ids, device codes) still come from `random_id`.
pub fn token_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PREFIX: OnceLock<[u8; 10]> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let mut p = [0u8; 10];
        crate::support::random::fill(&mut p);
        p
    });
    let mut id = [0u8; 16];
    id[..10].copy_from_slice(prefix);
    id[10..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes()[2..]);
    URL_SAFE_NO_PAD.encode(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_entry_text_is_the_scope_syntax() {
        let entry = |actions: &[&str]| AccessEntry {
            rtype: "repository".into(),
            name: "payments/api".into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        };
        assert_eq!(entry(&["pull"]).text(), "repository:payments/api:pull");
        assert_eq!(entry(&["pull", "push"]).text(), "repository:payments/api:pull,push");
        assert_eq!(entry(&[]).text(), "repository:payments/api:");
    }

    #[test]
    fn token_ids_are_unique_and_shaped_like_random_ids() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| token_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| id.len() == 22 && !id.contains(['+', '/', '='])));
    }
}

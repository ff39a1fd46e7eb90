//! Refresh tokens: long-lived, reusable, bound to a subject and a service, revocable.
//!
//! A refresh token is `tgr_` followed by an HS256 JWT signed with the refresh secret. The prefix lets the
//! token endpoint recognise one given as a Basic password (CI systems that only know username and password)
//! and answer with a precise error instead of trying it against the directory. Tokens are never rotated:
//! docker stores the first one it gets and keeps using it.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::keys::SignError;
use crate::support::random::random_id;
use crate::support::time::unix_now_ms;

pub const PREFIX: &str = "tgr_";
const TOKEN_TYPE: &str = "tollgate-refresh";

/// What a refresh token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshClaims {
    pub typ: String,
    pub iss: String,
    pub sub: String,
    /// The service (registry) the token is bound to.
    pub aud: String,
    /// The provider that authenticated the subject; the account is re-checked there on each use.
    pub prv: String,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
    /// The login session at the provider (OIDC: group snapshot and IdP refresh token), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The epoch of the shared state (Redis) the token was issued under: a token from before a data loss
    /// carries another one and is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epo: Option<String>,
    /// When it was issued, in milliseconds: a revocation "of every token of alice until now" must not catch
    /// a token issued later in the same second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat_ms: Option<u64>,
    /// Which account it was issued to (see `Identity::account`): an account deleted and created again under
    /// the same name is another account, and the token is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aid: Option<String>,
    /// When the interactive login (password or device) behind this token happened, Unix seconds: a token
    /// issued from a refresh-token login carries its predecessor's. Creating an access token with a refresh
    /// token needs this to be recent (`access_tokens.max_auth_age`); a token without it is not fresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ats: Option<u64>,
}

impl RefreshClaims {
    /// When the token was issued, in milliseconds (a token without `iat_ms` counts as issued at the start
    /// of its second, so a revocation in that second still catches it).
    pub fn issued_ms(&self) -> u64 {
        self.iat_ms.unwrap_or(self.iat.saturating_mul(1000))
    }
}

/// What links a refresh token to state beyond its user: the provider's login session, the shared state's
/// epoch, the account instance.
#[derive(Debug, Clone, Default)]
pub struct Links {
    pub sid: Option<String>,
    pub epoch: Option<String>,
    pub account: Option<String>,
    /// When the interactive login behind the token happened (its `ats`).
    pub auth_time: Option<u64>,
}

/// Why a refresh token was refused. The message is safe to show the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    #[error("refresh token is malformed or was not issued by this server")]
    Invalid,
    #[error("refresh token has expired; log in again")]
    Expired,
    #[error("refresh token was issued for service {0:?}, not this one")]
    WrongService(String),
    #[error("refresh token has been revoked; log in again")]
    Revoked,
    #[error("the account of this refresh token no longer exists or is disabled")]
    AccountGone,
    #[error("refresh token belongs to a different user")]
    WrongUser,
}

/// Issues and verifies refresh tokens.
pub struct RefreshTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    issuer: String,
    pub lifetime: Duration,
}

impl std::fmt::Debug for RefreshTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshTokens").field("issuer", &self.issuer).field("lifetime", &self.lifetime).finish()
    }
}

impl RefreshTokens {
    pub fn new(secret: &[u8], issuer: &str, lifetime: Duration) -> Result<Self, String> {
        if secret.len() < 32 {
            return Err("the refresh token secret must be at least 32 bytes".into());
        }
        Ok(RefreshTokens {
            encoding: EncodingKey::from_secret(secret).map_err(|e| e.to_string())?,
            decoding: DecodingKey::from_secret(secret).map_err(|e| e.to_string())?,
            issuer: issuer.to_string(),
            lifetime,
        })
    }

    pub fn issue(&self, subject: &str, provider: &str, service: &str) -> Result<(String, RefreshClaims), SignError> {
        self.issue_for_session(subject, provider, service, Links::default())
    }

    /// Issue a refresh token with its [`Links`].
    pub fn issue_for_session(
        &self,
        subject: &str,
        provider: &str,
        service: &str,
        links: Links,
    ) -> Result<(String, RefreshClaims), SignError> {
        let now_ms = unix_now_ms();
        let now = now_ms / 1000;
        let claims = RefreshClaims {
            typ: TOKEN_TYPE.into(),
            iss: self.issuer.clone(),
            sub: subject.into(),
            aud: service.into(),
            prv: provider.into(),
            iat: now,
            exp: now + self.lifetime.as_secs(),
            jti: random_id(16),
            sid: links.sid,
            epo: links.epoch,
            iat_ms: Some(now_ms),
            aid: links.account,
            ats: links.auth_time,
        };
        let jwt = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| SignError::Encode(e.to_string()))?;
        Ok((format!("{PREFIX}{jwt}"), claims))
    }

    /// Check signature, type, issuer, expiry and service. Revocation and the account are checked by the caller.
    pub fn verify(&self, token: &str, service: &str) -> Result<RefreshClaims, RefreshError> {
        let jwt = token.strip_prefix(PREFIX).ok_or(RefreshError::Invalid)?;
        if jwt.len() > 4096 {
            return Err(RefreshError::Invalid);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&self.issuer]);
        validation.validate_aud = false; // checked below to give a precise message
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        let data =
            jsonwebtoken::decode::<RefreshClaims>(jwt, &self.decoding, &validation).map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => RefreshError::Expired,
                _ => RefreshError::Invalid,
            })?;
        let claims = data.claims;
        if claims.typ != TOKEN_TYPE {
            return Err(RefreshError::Invalid);
        }
        if claims.aud != service {
            return Err(RefreshError::WrongService(claims.aud));
        }
        Ok(claims)
    }
}

impl RefreshTokens {
    /// Check the signature and issuer only (expired tokens and any service accepted): used to find the id of
    /// a token an operator wants revoked.
    pub fn inspect(&self, token: &str) -> Result<RefreshClaims, RefreshError> {
        let jwt = token.strip_prefix(PREFIX).ok_or(RefreshError::Invalid)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&self.issuer]);
        validation.validate_aud = false;
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["iss", "sub"]);
        let data = jsonwebtoken::decode::<RefreshClaims>(jwt, &self.decoding, &validation)
            .map_err(|_| RefreshError::Invalid)?;
        if data.claims.typ != TOKEN_TYPE {
            return Err(RefreshError::Invalid);
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(secret: &[u8]) -> RefreshTokens {
        RefreshTokens::new(secret, "tollgate", Duration::from_secs(3600)).unwrap()
    }

    #[test]
    fn issued_token_verifies_and_is_bound_to_its_service() {
        let t = tokens(b"0123456789abcdef0123456789abcdef");
        let (tok, claims) = t.issue("alice", "local", "registry.test").unwrap();
        assert!(tok.starts_with(PREFIX));
        assert_eq!(t.verify(&tok, "registry.test").unwrap(), claims);
        assert_eq!(t.verify(&tok, "other"), Err(RefreshError::WrongService("registry.test".into())));
    }

    #[test]
    fn foreign_expired_and_garbage_tokens_are_refused() {
        let ours = tokens(b"0123456789abcdef0123456789abcdef");
        let theirs = tokens(b"another-secret-another-secret-xx");
        let (foreign, _) = theirs.issue("alice", "local", "registry.test").unwrap();
        assert_eq!(ours.verify(&foreign, "registry.test"), Err(RefreshError::Invalid));
        let expired =
            RefreshTokens::new(b"0123456789abcdef0123456789abcdef", "tollgate", Duration::from_secs(0)).unwrap();
        let (old, _) = expired.issue("alice", "local", "registry.test").unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(ours.verify(&old, "registry.test"), Err(RefreshError::Expired));
        for junk in ["", "tgr_", "tgr_a.b.c", "eyJ.x.y", &"tgr_".repeat(5000)] {
            assert_eq!(ours.verify(junk, "registry.test"), Err(RefreshError::Invalid), "{junk:.20}");
        }
    }
}

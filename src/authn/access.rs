//! A personal or group access token (`tgp_…`) as the password of a Basic login.
//!
//! In order, each step refusing before the next costs anything: the format and checksum (no store read:
//! a made-up or mistyped token is refused from memory), the failed-login limits, the lookup by HMAC, the
//! token's own state (expired, revoked: the reason goes to the log and the audit line, the client gets the
//! usual 401), then its owner, re-checked through the same path as a refresh token's
//! (`Chain::recheck_session`: the LDAP entry re-read, the OIDC session at the IdP, within
//! `identity_cache.ttl`). A group's token stands for the group itself. The login carries the token's scope:
//! the grant step gives the scope ∩ what the rules give the owner now. No refresh token ever comes out of
//! it, and no key-derivation function is on this path (the secret has 190 random bits; an HMAC suffices).

use std::net::IpAddr;
use std::sync::Arc;

use super::login::{Login, LoginError, Outage, Refusal, TokenUse};
use crate::app::AppState;
use crate::identity::{AuthMethod, Failure, Identity};
use crate::store::error::StoreError;
use crate::support::time::unix_now;
use crate::telemetry::{access_token_login, access_token_lookup, ACCESS_TOKEN_LAST_USED_WRITES};
use crate::token::access::{well_formed, LastUsed, OwnerKind, TokenRecord, TokenState};

/// What every refused token is told; why is in the log and the audit line only.
const BAD_TOKEN: &str = "invalid username or password";
/// The claimed subject of an unknown token, for the failed-login limits: an unknown token proves nobody, so
/// it is charged as any unverified credential is (`LoginLimiter::failed_unproven`): to the sender's address
/// (an IPv6 /64) and its pair with this name, never to a subject across addresses. A token cannot be
/// guessed, but a client trying many still costs store reads.
const UNPROVEN: &str = "access token";
/// The provider name of a group token's identity.
pub const GROUP_PROVIDER: &str = "access_tokens";

/// The identity a group's token stands for: the group's name as `group:NAME`, member of that group only.
pub fn group_identity(name: &str) -> Identity {
    Identity {
        username: format!("group:{name}"),
        provider: GROUP_PROVIDER.to_string(),
        groups: vec![name.to_string()],
        ..Identity::default()
    }
}

fn refused(outcome: &'static str, reason: String, subject: Option<String>) -> LoginError {
    access_token_login(outcome);
    let mut r = Refusal::new(BAD_TOKEN).because(reason);
    r.subject = subject;
    LoginError::Refused(r)
}

fn unavailable(e: StoreError) -> LoginError {
    access_token_login("unavailable");
    LoginError::Unavailable(Outage::State, e.to_string())
}

/// Log in with the access token `secret`.
pub(super) async fn login(state: &AppState, secret: &str, ip: IpAddr) -> Result<Login, LoginError> {
    if !well_formed(secret) {
        // No store read, and no failed-login charge either: this cost nothing.
        tracing::info!(client_ip = %ip, "access token refused: malformed (prefix, length or checksum)");
        return Err(refused("malformed", "malformed access token (bad checksum)".into(), None));
    }
    let Some(hasher) = &state.access_hasher else {
        return Err(refused("disabled", "access tokens are disabled on this server".into(), None));
    };
    state.limiter.check_unproven(ip, UNPROVEN).await?;
    access_token_lookup();
    let found = state.access_tokens.find(&hasher.hash(secret)).await.map_err(unavailable)?;
    let Some(token) = found else {
        tracing::info!(client_ip = %ip, "access token refused: unknown");
        state.limiter.failed_unproven(ip, UNPROVEN).await?;
        return Err(refused("unknown", "unknown access token".into(), None));
    };
    let now = unix_now();
    let owner = token.owner.label();
    match token.state(now) {
        TokenState::Active => {}
        s @ (TokenState::Expired | TokenState::Revoked) => {
            let why = s.as_str();
            tracing::info!(token = %token.id, owner = %owner, client_ip = %ip, reason = why, "access token refused: {why}");
            return Err(refused(why, format!("access token {} {why}", token.id), Some(owner)));
        }
    }
    let identity = match token.owner.kind {
        OwnerKind::Group => Arc::new(group_identity(&token.owner.name)),
        OwnerKind::User => Arc::new(recheck_owner(state, &token, &owner, ip).await?),
    };
    record_use(state, &token, now, ip).await;
    access_token_login("ok");
    let used = TokenUse { id: token.id, scope: token.scope };
    let mut login = Login::new(identity, AuthMethod::AccessToken);
    login.token = Some(Arc::new(used));
    Ok(login)
}

/// The owner as their provider sees them now, through the refresh-token path.
async fn recheck_owner(state: &AppState, token: &TokenRecord, owner: &str, ip: IpAddr) -> Result<Identity, LoginError> {
    let o = &token.owner;
    let gone = |reason: String| {
        tracing::info!(token = %token.id, owner = %owner, provider = %o.provider, client_ip = %ip, reason = %reason,
            "access token refused: the owner is refused");
        refused("owner_refused", format!("access token {}: owner refused: {reason}", token.id), Some(owner.to_string()))
    };
    match state.chain.recheck_session(&o.provider, &o.name, o.session.as_deref()).await {
        // The same name may be another account now (deleted and created again): its tokens are not ours.
        Ok(identity) if o.account.as_deref().is_some_and(|aid| identity.account.as_deref() != Some(aid)) => {
            Err(gone("the account was replaced".into()))
        }
        Ok(identity) => Ok(identity),
        Err(e) => match e.failure {
            Failure::Refused(reason) => Err(gone(reason)),
            Failure::Unavailable(_) => {
                access_token_login("unavailable");
                Err(LoginError::Unavailable(Outage::of_provider(e.provider.as_deref()), e.to_string()))
            }
            Failure::Busy(_) => {
                access_token_login("unavailable");
                Err(LoginError::Unavailable(Outage::Busy, e.to_string()))
            }
        },
    }
}

/// Write `last used` (at most once a minute per token: the store decides). A failure is logged, not
/// fatal: the login itself was proven.
async fn record_use(state: &AppState, token: &TokenRecord, now: u64, ip: IpAddr) {
    if token.last_used.as_ref().is_some_and(|l| l.at + crate::store::access_tokens::LAST_USED_EVERY > now) {
        return;
    }
    match state.access_tokens.touch(&token.id, LastUsed { at: now, address: ip.to_string() }).await {
        Ok(true) => metrics::counter!(ACCESS_TOKEN_LAST_USED_WRITES).increment(1),
        Ok(false) => {}
        Err(e) => tracing::warn!(token = %token.id, error = %e, "cannot record an access token's last use"),
    }
}

//! Managing personal and group access tokens: create, list, rotate, revoke. Pure of HTTP: the handlers in
//! `http/access_tokens.rs` parse and authenticate, these decide and write, and `http/error.rs` maps
//! [`AccessError`] to a status.
//!
//! Who may do what:
//! - creating or rotating needs a fresh interactive login: a directory password (or robot secret), a device
//!   login, or a refresh token whose interactive login is at most `access_tokens.max_auth_age` old. Never an
//!   access token, nor a workload's JWT (403);
//! - listing and revoking need any login but an access token or a workload's;
//! - members of `access_tokens.group_admins` create group tokens (`group:NAME`), list and revoke anyone's,
//!   and revoke every token of a user (offboarding).
//!
//! A token's scope is refused at creation, naming the entry, when the rules do not grant its owner (the
//! caller, or the group) that entry now; nothing is written then. What holds on every use is the grant
//! step's cut of the token's scope to what the rules give the owner at that moment (`crate::grant`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::app::AppState;
use crate::authn::{Login, Outage};
use crate::grant::{context, TokenScope};
use crate::identity::{AuthMethod, Identity, RequestContext};
use crate::store::error::StoreError;
use crate::support::time::unix_now;
use crate::token::access::{new_id, new_secret, Owner, OwnerKind, TokenRecord, TokenState};

/// Longest token name.
pub const MAX_NAME_LEN: usize = 100;
/// Longest grace a rotation may leave the old token.
pub const MAX_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);
/// "Expiring soon" for `list --expiring` and the metric.
pub const EXPIRING_SOON: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why a token operation was refused, by the status it answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// 400: the request is malformed (a scope entry, an expiry); the message names it.
    #[error("{0}")]
    BadRequest(String),
    /// 403: the caller may not do this (an access token used to create one, a stale login, a scope beyond
    /// the rules, a group they do not administer).
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such token among those the caller may see.
    #[error("{0}")]
    NotFound(String),
    /// 503: the token store or a provider cannot be reached.
    #[error("{1}")]
    Unavailable(Outage, String),
}

fn store(e: StoreError) -> AccessError {
    AccessError::Unavailable(Outage::State, e.to_string())
}

/// What `POST /access-tokens` asks for.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub name: String,
    pub scope: Vec<String>,
    pub expires_in: Duration,
    /// `group:NAME` for a group's token; None for the caller's own.
    pub owner: Option<String>,
}

/// A token just created or rotated: its record and its secret, shown this once.
#[derive(Debug, Clone)]
pub struct Created {
    pub record: TokenRecord,
    pub secret: String,
}

/// Who is asking, once checked to be someone who may manage tokens at all.
struct Caller {
    identity: Arc<Identity>,
    admin: bool,
}

fn caller(state: &AppState, login: &Login) -> Result<Caller, AccessError> {
    match login.method {
        AuthMethod::AccessToken => {
            return Err(AccessError::Forbidden(
                "an access token cannot manage access tokens; log in with your password, `tollgate login`, or a refresh token"
                    .into(),
            ))
        }
        AuthMethod::Workload | AuthMethod::Anonymous => {
            return Err(AccessError::Forbidden("access tokens belong to people and groups: log in as a user".into()))
        }
        AuthMethod::Password | AuthMethod::RefreshToken | AuthMethod::Device => {}
    }
    if state.access_hasher.is_none() {
        return Err(AccessError::Forbidden("access tokens are disabled on this server (access_tokens.enabled)".into()));
    }
    let admins = &state.settings.access_tokens.group_admins;
    let admin = login.identity.groups.iter().any(|g| admins.contains(g));
    Ok(Caller { identity: login.identity.clone(), admin })
}

/// Creating or rotating needs an interactive login at most `max_auth_age` old.
fn fresh(state: &AppState, login: &Login) -> Result<(), AccessError> {
    let max = state.settings.access_tokens.max_auth_age.as_secs();
    match login.auth_time {
        Some(t) if unix_now().saturating_sub(t) <= max => Ok(()),
        _ => Err(AccessError::Forbidden(format!(
            "creating or rotating an access token needs a login at most {} old: log in again (`tollgate login`) or use your password",
            humantime::format_duration(state.settings.access_tokens.max_auth_age)
        ))),
    }
}

/// The policy's view of a token's owner using it: the caller as an access token's login, or the group.
fn owner_context(login: &Login, owner: &Owner, ip: IpAddr, service: &str) -> (RequestContext, Option<String>) {
    let (mut ctx, sid) = match owner.kind {
        OwnerKind::User => context(login.clone(), ip, service),
        OwnerKind::Group => {
            let l = Login { identity: Arc::new(crate::authn::group_identity(&owner.name)), ..login.clone() };
            (context(l, ip, service).0, None)
        }
    };
    ctx.auth_method = AuthMethod::AccessToken;
    (ctx, sid)
}

fn check_name(name: &str) -> Result<(), AccessError> {
    if name.trim().is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(AccessError::BadRequest(format!(
            "name: required, at most {MAX_NAME_LEN} bytes, no control characters"
        )));
    }
    Ok(())
}

fn check_expiry(state: &AppState, expires_in: Duration) -> Result<u64, AccessError> {
    let max = state.settings.access_tokens.max_lifetime;
    if expires_in < Duration::from_secs(1) || expires_in > max {
        return Err(AccessError::BadRequest(format!(
            "expires: between 1s and {} (access_tokens.max_lifetime)",
            humantime::format_duration(max)
        )));
    }
    Ok(unix_now() + expires_in.as_secs())
}

/// The service a ceiling is checked for: rules may match on it, and a token is usable at every service.
fn first_service(state: &AppState) -> String {
    state.settings.token.services.first().cloned().unwrap_or_default()
}

/// Refuse `scope` unless the rules grant `owner` every entry now; the error names the first that is not.
fn check_ceiling(
    state: &AppState,
    login: &Login,
    owner: &Owner,
    scope: &[String],
    ip: IpAddr,
) -> Result<Option<String>, AccessError> {
    let parsed = TokenScope::parse(scope).map_err(|e| AccessError::BadRequest(e.to_string()))?;
    let (ctx, sid) = owner_context(login, owner, ip, &first_service(state));
    if let Some(entry) = parsed.first_beyond(scope, &state.policy.get(), &ctx) {
        return Err(AccessError::Forbidden(format!(
            "scope entry {entry:?} is not within what the rules grant {} now",
            owner.label()
        )));
    }
    Ok(sid)
}

/// Create a token for the caller or, for a group admin, for a group.
pub async fn create(state: &AppState, login: &Login, ip: IpAddr, req: CreateRequest) -> Result<Created, AccessError> {
    let who = caller(state, login)?;
    fresh(state, login)?;
    check_name(&req.name)?;
    let expires = check_expiry(state, req.expires_in)?;
    let mut owner = match req.owner.as_deref() {
        None | Some("") => Owner {
            kind: OwnerKind::User,
            name: who.identity.username.clone(),
            provider: who.identity.provider.clone(),
            account: who.identity.account.clone(),
            session: None,
        },
        Some(o) => {
            let Some(group) = o.strip_prefix("group:").filter(|g| crate::policy::is_capture_value(g)) else {
                return Err(AccessError::BadRequest(format!(
                    "owner {:?}: write group:NAME, or leave it out for your own token",
                    crate::support::clip(o, 100)
                )));
            };
            if !who.admin {
                return Err(AccessError::Forbidden(format!(
                    "only members of access_tokens.group_admins may create a token for group {group:?}"
                )));
            }
            Owner {
                kind: OwnerKind::Group,
                name: group.to_string(),
                provider: String::new(),
                account: None,
                session: None,
            }
        }
    };
    let sid = check_ceiling(state, login, &owner, &req.scope, ip)?;
    if let (OwnerKind::User, Some(sid)) = (owner.kind, sid) {
        // The IdP session of an OIDC owner is kept as long as a refresh token's would be.
        state
            .chain
            .keep_session(&owner.provider, &sid)
            .await
            .map_err(|e| AccessError::Unavailable(Outage::of_provider(e.provider.as_deref()), e.to_string()))?;
        owner.session = Some(sid);
    }
    let secret = new_secret();
    let hasher =
        state.access_hasher.as_ref().ok_or_else(|| AccessError::Forbidden("access tokens are disabled".into()))?;
    let record = TokenRecord {
        id: new_id(),
        hmac: hasher.hash(&secret),
        name: req.name,
        owner,
        scope: req.scope,
        created_by: who.identity.username.clone(),
        created: unix_now(),
        expires,
        last_used: None,
        revoked: None,
        rotated_to: None,
    };
    state.access_tokens.insert(record.clone()).await.map_err(store)?;
    tracing::info!(token = %record.id, owner = %record.owner.label(), created_by = %record.created_by,
        expires = record.expires, "access token created");
    Ok(Created { record, secret })
}

/// Whether `record` is a personal token of `identity`.
fn owns(identity: &Identity, record: &TokenRecord) -> bool {
    record.owner.kind == OwnerKind::User
        && record.owner.name == identity.username
        && record.owner.provider == identity.provider
}

/// Whether `caller` may see and revoke `record`: their own, or anyone's for an admin.
fn visible(who: &Caller, record: &TokenRecord) -> bool {
    who.admin || owns(&who.identity, record)
}

/// What `GET /access-tokens` asks for.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    /// Admins only: this user's tokens (or `group:NAME`).
    pub user: Option<String>,
    /// Admins only: everyone's.
    pub all: bool,
    /// Only active tokens expiring within [`EXPIRING_SOON`].
    pub expiring: bool,
}

/// The tokens the caller may see, oldest first.
pub async fn list(state: &AppState, login: &Login, req: ListRequest) -> Result<Vec<TokenRecord>, AccessError> {
    let who = caller(state, login)?;
    if (req.all || req.user.is_some()) && !who.admin {
        return Err(AccessError::Forbidden("only members of access_tokens.group_admins list others' tokens".into()));
    }
    let now = unix_now();
    let soon = now + EXPIRING_SOON.as_secs();
    let mut out: Vec<TokenRecord> = state
        .access_tokens
        .list()
        .await
        .map_err(store)?
        .into_iter()
        .filter(|r| match (&req.user, req.all) {
            (Some(u), _) => &r.owner.label() == u,
            (None, true) => true,
            (None, false) => owns(&who.identity, r),
        })
        .filter(|r| !req.expiring || (r.state(now) == TokenState::Active && r.expires <= soon))
        .collect();
    out.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
    Ok(out)
}

async fn find_visible(state: &AppState, who: &Caller, id: &str) -> Result<TokenRecord, AccessError> {
    let all = state.access_tokens.list().await.map_err(store)?;
    all.into_iter()
        .find(|r| r.id == id && visible(who, r))
        .ok_or_else(|| AccessError::NotFound(format!("no access token {:?} of yours", crate::support::clip(id, 40))))
}

/// Revoke one token, at once (every replica refuses it at its next use).
pub async fn revoke(state: &AppState, login: &Login, id: &str) -> Result<TokenRecord, AccessError> {
    let who = caller(state, login)?;
    let record = find_visible(state, &who, id).await?;
    state.access_tokens.revoke(&record.id, unix_now()).await.map_err(store)?;
    tracing::info!(token = %record.id, owner = %record.owner.label(), by = %who.identity.username, "access token revoked");
    Ok(record)
}

/// Offboarding: revoke every active token `user` owns. Admins only. Returns the ids revoked.
pub async fn revoke_user(state: &AppState, login: &Login, user: &str) -> Result<Vec<String>, AccessError> {
    let who = caller(state, login)?;
    if !who.admin {
        return Err(AccessError::Forbidden("only members of access_tokens.group_admins revoke others' tokens".into()));
    }
    let revoked = crate::store::access_tokens::revoke_tokens_of(state.access_tokens.as_ref(), user, unix_now())
        .await
        .map_err(store)?;
    tracing::info!(user = %user, tokens = revoked.len(), by = %who.identity.username, "access tokens of a user revoked");
    Ok(revoked)
}

/// Rotate: a new secret with the same name, owner and scope (re-checked against the rules now); the old
/// one keeps working for `grace`, then stops.
pub async fn rotate(
    state: &AppState,
    login: &Login,
    ip: IpAddr,
    id: &str,
    grace: Duration,
    expires_in: Option<Duration>,
) -> Result<Created, AccessError> {
    let who = caller(state, login)?;
    fresh(state, login)?;
    if grace > MAX_GRACE {
        return Err(AccessError::BadRequest(format!("grace: at most {}", humantime::format_duration(MAX_GRACE))));
    }
    let old = find_visible(state, &who, id).await?;
    let now = unix_now();
    if old.state(now) != TokenState::Active {
        return Err(AccessError::BadRequest(format!("access token {} is {}", old.id, old.state(now).as_str())));
    }
    if old.owner.kind == OwnerKind::User && !owns(&who.identity, &old) {
        return Err(AccessError::Forbidden("only its owner rotates a personal token (admins may revoke it)".into()));
    }
    let lifetime = expires_in.unwrap_or(Duration::from_secs(old.expires.saturating_sub(old.created).max(60)));
    let expires = check_expiry(state, lifetime.min(state.settings.access_tokens.max_lifetime))?;
    check_ceiling(state, login, &old.owner, &old.scope, ip)?;
    let hasher =
        state.access_hasher.as_ref().ok_or_else(|| AccessError::Forbidden("access tokens are disabled".into()))?;
    let secret = new_secret();
    let record = TokenRecord {
        id: new_id(),
        hmac: hasher.hash(&secret),
        created_by: who.identity.username.clone(),
        created: now,
        expires,
        last_used: None,
        revoked: None,
        rotated_to: None,
        ..old.clone()
    };
    let ends = now + grace.as_secs();
    if !state.access_tokens.rotate(&old.id, ends, record.clone()).await.map_err(store)? {
        return Err(AccessError::NotFound(format!("no access token {:?}", old.id)));
    }
    tracing::info!(token = %old.id, new = %record.id, grace = grace.as_secs(), "access token rotated");
    Ok(Created { record, secret })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_owners_are_named_group_colon_name() {
        let o =
            Owner { kind: OwnerKind::Group, name: "ci".into(), provider: String::new(), account: None, session: None };
        assert_eq!(o.label(), "group:ci");
    }
}

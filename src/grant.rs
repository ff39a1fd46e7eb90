//! The grant step: a login x requested scopes -> policy -> a signed access token (and a refresh token when
//! one was asked for and the identity may have one). Pure of HTTP: the handlers parse and authenticate
//! (`crate::authn`), this builds the policy's view of the request, decides and signs, and the handlers write
//! the answer and the audit line from what it returns.

use std::net::IpAddr;
use std::sync::Arc;

use crate::app::AppState;
use crate::authn::{Login, Outage};
use crate::identity::{Failure, Identity, RequestContext, SESSION_CLAIM};
use crate::policy::Explanation;
use crate::scope::Scope;
use crate::token::keys::SignError;
use crate::token::refresh::Links;
use crate::token::AccessEntry;

/// What the client asked for besides the scopes.
#[derive(Debug, Clone, Copy)]
pub struct Ask {
    /// A refresh token is wanted (`offline_token=true`, `access_type=offline`, a device login).
    pub offline: bool,
    /// Put the granted scopes in the body as `scope` (the OAuth2 answer to POST).
    pub scope_in_body: bool,
    /// A token exchange (RFC 8693): the answer says what kind of token it issued.
    pub exchange: bool,
}

/// What was decided and signed.
#[derive(Debug)]
pub struct Grant {
    /// The token response body (JSON).
    pub body: Vec<u8>,
    /// The granted scopes, in the scope syntax.
    pub granted: Vec<String>,
    /// Rules that granted or denied any requested action.
    pub rules: Vec<String>,
    /// True when every requested action was granted.
    pub fully_granted: bool,
    pub refresh_token_issued: bool,
    /// The access token's id.
    pub jti: String,
}

/// Why no token could be issued although the request was in order.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// The session store (or the provider keeping a login session) cannot be reached: 503.
    #[error("{1}")]
    Unavailable(Outage, String),
    /// Signing failed: 500.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// Encoding the response failed: 500.
    #[error("{0}")]
    Internal(String),
}

/// Take the login session id out of an identity: it travels in the identity only to reach the refresh
/// token, and the policy never sees it. Only identities that carry one are copied (the cache's copy keeps
/// it for the next request).
fn take_session(identity: &mut Arc<Identity>) -> Option<String> {
    if identity.claims.contains_key(SESSION_CLAIM) {
        Arc::make_mut(identity).claims.remove(SESSION_CLAIM).and_then(|v| v.as_str().map(String::from))
    } else {
        None
    }
}

/// The policy's view of a request: who (without the login session id, returned apart), how they proved
/// it, from where, for which registry.
pub fn context(login: Login, client_ip: IpAddr, service: &str) -> (RequestContext, Option<String>) {
    let Login { mut identity, method, .. } = login;
    let sid = take_session(&mut identity);
    (RequestContext { identity, auth_method: method, client_ip, service: service.to_string() }, sid)
}

/// Authorize every scope for `login`, sign the access token, and issue a refresh token when asked for.
pub async fn grant(
    state: &AppState,
    login: Login,
    client_ip: IpAddr,
    service: &str,
    scopes: &[Scope],
    ask: Ask,
) -> Result<Grant, GrantError> {
    let (ctx, sid) = context(login, client_ip, service);
    let policy = state.policy.get();
    let mut access = Vec::with_capacity(scopes.len());
    let mut rules: Vec<String> = Vec::new();
    let mut fully_granted = true;
    for scope in scopes {
        let decision = policy.authorize(&ctx, scope);
        fully_granted &= decision.granted.len() >= scope.actions.len();
        for r in decision.allowed_by.iter().chain(decision.denied_by.iter()) {
            if !rules.contains(r) {
                rules.push(r.clone());
            }
        }
        if !decision.granted.is_empty() {
            access.push(AccessEntry {
                rtype: scope.rtype.as_str().to_string(),
                name: scope.name.clone(),
                actions: decision.granted.iter().map(|a| a.as_str().to_string()).collect(),
            });
        }
    }
    let issued = state.issuer.issue(&ctx.identity.username, service, &access)?;
    // An identity with an end of its own (a workload token's exp) gets no refresh token that could outlive it:
    // the workload logs in again with its next token.
    let refreshable = !ctx.identity.is_anonymous() && ctx.identity.expires_at.is_none();
    let refresh_token = match (&state.refresh, ask.offline && refreshable) {
        (Some(r), true) => {
            if let Some(sid) = &sid {
                let provider = &ctx.identity.provider;
                state.chain.keep_session(provider, sid).await.map_err(|e| {
                    let outage = match e.failure {
                        Failure::Busy(_) => Outage::Busy,
                        _ => Outage::of_provider(e.provider.as_deref()),
                    };
                    GrantError::Unavailable(outage, e.to_string())
                })?;
            }
            let epoch =
                state.revocations.epoch().await.map_err(|e| GrantError::Unavailable(Outage::State, e.to_string()))?;
            let links = Links { sid, epoch, account: ctx.identity.account.clone() };
            Some(r.issue_for_session(&ctx.identity.username, &ctx.identity.provider, service, links)?.0)
        }
        _ => None,
    };
    let granted: Vec<String> = access.iter().map(AccessEntry::text).collect();
    let scope = ask.scope_in_body.then(|| granted.join(" "));
    let body = token_body(
        &issued.token,
        issued.expires_in,
        &issued.issued_at,
        refresh_token.as_deref(),
        scope.as_deref(),
        ask.exchange,
    )
    .map_err(|e| GrantError::Internal(e.to_string()))?;
    Ok(Grant { body, granted, rules, fully_granted, refresh_token_issued: refresh_token.is_some(), jti: issued.jti })
}

/// What the policy says of each scope for one request, explained (`/whoami`), and what that grants.
pub struct Explained {
    pub explanations: Vec<Explanation>,
    /// The granted scopes, in the scope syntax.
    pub granted: Vec<String>,
    /// Rules that granted or denied any requested action.
    pub rules: Vec<String>,
    /// True when every requested action is granted.
    pub fully_granted: bool,
}

/// Explain the policy's decision on every scope for `ctx`: the same decisions as [`grant`], with the
/// reasons, and nothing signed.
pub fn explain(state: &AppState, ctx: &RequestContext, scopes: &[Scope]) -> Explained {
    let policy = state.policy.get();
    let explanations: Vec<Explanation> = scopes.iter().map(|s| policy.explain(ctx, s)).collect();
    let fully_granted = explanations.iter().zip(scopes).all(|(e, s)| e.granted.len() >= s.actions.len());
    let granted = explanations
        .iter()
        .zip(scopes)
        .filter(|(e, _)| !e.granted.is_empty())
        .map(|(e, s)| {
            let actions: Vec<&str> = e.granted.iter().map(|a| a.as_str()).collect();
            format!("{}:{}:{}", s.rtype.as_str(), s.name, actions.join(","))
        })
        .collect();
    let mut rules: Vec<String> = Vec::new();
    for a in explanations.iter().flat_map(|e| &e.actions) {
        for r in a.allowed_by.iter().chain(&a.denied_by) {
            if !rules.contains(r) {
                rules.push(r.clone());
            }
        }
    }
    Explained { explanations, granted, rules, fully_granted }
}

/// The token response body: `token` for docker's protocol and `access_token` for OAuth2 clients (the same
/// value), `expires_in`, `issued_at`, and the refresh token and (POST) granted `scope` when there are any; a
/// token exchange adds `issued_token_type` and `token_type` (RFC 8693 section 2.2.1).
/// The access token is base64url segments joined by dots, which JSON never escapes, so it is copied as it is
/// rather than scanned byte by byte twice (that scan was 5% of a warm request, BENCHMARKS.md section 5).
fn token_body(
    token: &str,
    expires_in: u64,
    issued_at: &str,
    refresh_token: Option<&str>,
    scope: Option<&str>,
    exchange: bool,
) -> serde_json::Result<Vec<u8>> {
    debug_assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)), "not a compact JWS");
    let mut buf =
        Vec::with_capacity(2 * token.len() + 128 + refresh_token.map_or(0, str::len) + scope.map_or(0, str::len));
    for name in ["{\"token\":\"", "\",\"access_token\":\""] {
        buf.extend_from_slice(name.as_bytes());
        buf.extend_from_slice(token.as_bytes());
    }
    {
        use std::io::Write as _;
        // Writing into a Vec cannot fail.
        let _ = write!(buf, "\",\"expires_in\":{expires_in},\"issued_at\":");
    }
    serde_json::to_writer(&mut buf, issued_at)?;
    if let Some(rt) = refresh_token {
        buf.extend_from_slice(b",\"refresh_token\":");
        serde_json::to_writer(&mut buf, rt)?;
    }
    if let Some(scope) = scope {
        buf.extend_from_slice(b",\"scope\":");
        serde_json::to_writer(&mut buf, scope)?;
    }
    if exchange {
        buf.extend_from_slice(
            b",\"issued_token_type\":\"urn:ietf:params:oauth:token-type:access_token\",\"token_type\":\"Bearer\"",
        );
    }
    buf.push(b'}');
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_body_is_json_with_every_field_and_escapes_what_callers_chose() {
        let body = token_body(
            "aGVhZA.Y2xhaW1z.c2ln-_",
            300,
            "2026-11-29T12:00:00Z",
            Some("tgr_x"),
            Some("repository:\"a\\b:pull"),
            false,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"token": "aGVhZA.Y2xhaW1z.c2ln-_", "access_token": "aGVhZA.Y2xhaW1z.c2ln-_",
                "expires_in": 300, "issued_at": "2026-11-29T12:00:00Z", "refresh_token": "tgr_x",
                "scope": "repository:\"a\\b:pull"})
        );
        let bare: serde_json::Value =
            serde_json::from_slice(&token_body("a.b.c", 60, "t", None, None, false).unwrap()).unwrap();
        assert_eq!(bare.as_object().unwrap().len(), 4, "no refresh_token or scope keys when there are none: {bare}");
    }
}

//! The grant step: a login x requested scopes -> policy -> a signed access token (and a refresh token when
//! one was asked for and the identity may have one). Pure of HTTP: the handlers parse and authenticate
//! (`crate::authn`), this builds the policy's view of the request, decides and signs, and the handlers write
//! the answer and the audit line from what it returns.

use std::net::IpAddr;
use std::sync::Arc;

use crate::app::AppState;
use crate::authn::{Login, Outage};
use crate::identity::{Failure, Identity, RequestContext, SESSION_CLAIM};
use crate::policy::{Explanation, Glob};
use crate::scope::{Action, ResourceType, Scope};
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
    // An access token's login is cut to the token's scope (validated at creation; an entry that no longer
    // parses grants nothing).
    let ceiling = login.token.as_ref().map(|t| TokenScope::parse_lenient(&t.scope));
    let auth_time = login.auth_time;
    let (ctx, sid) = context(login, client_ip, service);
    let policy = state.policy.get();
    let mut access = Vec::with_capacity(scopes.len());
    let mut rules: Vec<String> = Vec::new();
    let mut fully_granted = true;
    for scope in scopes {
        let mut decision = policy.authorize(&ctx, scope);
        if let Some(ceiling) = &ceiling {
            decision.granted.retain(|a| ceiling.allows(scope, *a));
        }
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
    // Nor does an access token's: it is the durable credential, and never more than it.
    let refreshable = !ctx.identity.is_anonymous()
        && ctx.identity.expires_at.is_none()
        && ctx.auth_method != crate::identity::AuthMethod::AccessToken;
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
            let links = Links { sid, epoch, account: ctx.identity.account.clone(), auth_time };
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

/// An access token's scope: entries in the rules' syntax, `type:pattern:actions`, where the pattern is a
/// resource glob of the rules (`payments/**`) and the actions are `pull`, `push`, `delete` or `*`.
#[derive(Debug, Clone)]
pub struct TokenScope {
    entries: Vec<ScopeEntry>,
}

#[derive(Debug, Clone)]
struct ScopeEntry {
    rtype: ResourceType,
    glob: Glob,
    actions: Vec<Action>,
}

/// Why a scope entry is not valid; names the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope entry {entry:?}: {why}")]
pub struct ScopeEntryError {
    pub entry: String,
    pub why: String,
}

impl ScopeEntry {
    fn parse(text: &str) -> Result<ScopeEntry, ScopeEntryError> {
        let bad = |why: &str| ScopeEntryError { entry: crate::support::clip(text, 200).into_owned(), why: why.into() };
        if text.len() > crate::scope::MAX_SCOPE_LEN || text.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
            return Err(bad("too long, or has a space, control or non-ASCII character"));
        }
        let (Some(first), Some(last)) = (text.find(':'), text.rfind(':')) else {
            return Err(bad("not of the form type:pattern:actions (repository:team/**:pull,push)"));
        };
        if first == last {
            return Err(bad("not of the form type:pattern:actions (repository:team/**:pull,push)"));
        }
        let rtype =
            ResourceType::parse(&text[..first]).ok_or_else(|| bad("the type must be repository or registry"))?;
        let glob = Glob::parse(&text[first + 1..last]).map_err(|e| bad(&format!("pattern: {e}")))?;
        if rtype == ResourceType::Registry && glob.source() != "catalog" {
            return Err(bad("the only registry resource is catalog"));
        }
        let mut actions = Vec::new();
        for a in text[last + 1..].split(',') {
            let a = Action::parse(a).ok_or_else(|| bad("actions are pull, push, delete or *"))?;
            if a == Action::All {
                actions.extend(Action::CONCRETE);
            }
            if !actions.contains(&a) {
                actions.push(a);
            }
        }
        if Action::CONCRETE.iter().all(|c| actions.contains(c)) && !actions.contains(&Action::All) {
            actions.push(Action::All);
        }
        Ok(ScopeEntry { rtype, glob, actions })
    }
}

impl TokenScope {
    /// Parse every entry; the first invalid one is the error. At least one entry, at most 50.
    pub fn parse(entries: &[String]) -> Result<TokenScope, ScopeEntryError> {
        if entries.is_empty() || entries.len() > 50 {
            let why = "a token needs between 1 and 50 scope entries".to_string();
            return Err(ScopeEntryError { entry: String::new(), why });
        }
        Ok(TokenScope { entries: entries.iter().map(|e| ScopeEntry::parse(e)).collect::<Result<_, _>>()? })
    }

    /// The entries that parse (a stored token's; they were checked when it was created).
    pub fn parse_lenient(entries: &[String]) -> TokenScope {
        TokenScope { entries: entries.iter().filter_map(|e| ScopeEntry::parse(e).ok()).collect() }
    }

    /// Whether some entry allows `action` on the resource of `scope`.
    pub fn allows(&self, scope: &Scope, action: Action) -> bool {
        self.entries
            .iter()
            .any(|e| e.rtype == scope.rtype && e.actions.contains(&action) && e.glob.matches(&scope.name))
    }

    /// The first entry (its text, as given) whose actions the rules do not grant `ctx` on a sample name of
    /// its pattern: what a token may not be created with. The check at creation is a guard for the user;
    /// what holds on every use is the grant step's cut to what the rules give the owner then.
    pub fn first_beyond(
        &self,
        texts: &[String],
        policy: &crate::policy::Policy,
        ctx: &RequestContext,
    ) -> Option<String> {
        for (entry, text) in self.entries.iter().zip(texts) {
            let concrete: Vec<Action> = entry.actions.iter().copied().filter(|a| *a != Action::All).collect();
            let probe = Scope { rtype: entry.rtype, class: None, name: entry.glob.sample(), actions: concrete.clone() };
            let granted = policy.authorize(ctx, &probe).granted;
            if !concrete.iter().all(|a| granted.contains(a)) {
                return Some(text.clone());
            }
        }
        None
    }
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

/// Rules listed as not applying in one scope's explanation for a user (`/whoami`), at most. A rules file
/// generated from a directory has tens of thousands of rules, and listing every one that did not apply
/// would make each scope of a `/whoami` cost every rule's evaluation and megabytes of answer, for anyone
/// who can log in. The rules that decided are always named; `not_applied_omitted` counts the unlisted.
pub const EXPLAINED_MISSES_MAX: usize = 100;

/// Explain the policy's decision on every scope for `ctx`: the same decisions as [`grant`], with the
/// reasons (at most [`EXPLAINED_MISSES_MAX`] rules that did not apply per scope), and nothing signed.
pub fn explain(state: &AppState, ctx: &RequestContext, scopes: &[Scope]) -> Explained {
    let policy = state.policy.get();
    let explanations: Vec<Explanation> =
        scopes.iter().map(|s| policy.explain_bounded(ctx, s, EXPLAINED_MISSES_MAX)).collect();
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

/// Cut an explanation to an access token's scope, as [`grant`] cuts the grant: `/whoami` with a token says
/// what the token gets, not what its owner would.
pub fn cut_to_token(explained: &mut Explained, token_scope: &[String], scopes: &[Scope]) {
    let ceiling = TokenScope::parse_lenient(token_scope);
    for (e, s) in explained.explanations.iter_mut().zip(scopes) {
        e.granted.retain(|a| ceiling.allows(s, *a));
        for a in e.actions.iter_mut().filter(|a| a.granted && !ceiling.allows(s, a.action)) {
            a.granted = false;
            a.note = Some("the rules grant it, but the access token's scope does not name it".into());
        }
    }
    let ex = &explained.explanations;
    explained.fully_granted = ex.iter().zip(scopes).all(|(e, s)| e.granted.len() >= s.actions.len());
    explained.granted = ex
        .iter()
        .zip(scopes)
        .filter(|(e, _)| !e.granted.is_empty())
        .map(|(e, s)| crate::scope::scope_text(s.rtype.as_str(), &s.name, e.granted.iter().map(|a| a.as_str())))
        .collect();
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
    fn token_scope_entries_parse_in_the_rules_syntax_and_name_the_bad_one() {
        let ok = |v: &[&str]| TokenScope::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let s = ok(&["repository:payments/**:pull,push", "registry:catalog:*"]).unwrap();
        let scope = |t: &str| Scope::parse(t).unwrap();
        assert!(s.allows(&scope("repository:payments/api:pull"), Action::Push));
        assert!(!s.allows(&scope("repository:payments/api:pull"), Action::Delete));
        assert!(!s.allows(&scope("repository:payments:pull"), Action::Pull), "** needs a segment");
        assert!(!s.allows(&scope("repository:prod/api:pull"), Action::Pull));
        assert!(s.allows(&scope("registry:catalog:*"), Action::All));
        let e = ok(&["repository:a/**:pull", "repository:b/**:fly"]).unwrap_err();
        assert_eq!(e.entry, "repository:b/**:fly");
        for bad in
            ["repository:a/**", "repo:a:pull", "repository:{x}/**:pull", "registry:other:*", "repository:a b:pull"]
        {
            assert!(ok(&[bad]).is_err(), "{bad}");
        }
        assert!(ok(&[]).is_err());
    }

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

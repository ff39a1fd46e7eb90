//! Login sessions of OIDC users: every login stores one (the group snapshot and, when the IdP issued one,
//! its refresh token) in the shared session store, and the tollgate refresh token carries its id. A
//! refresh token coming back re-reads the groups once the snapshot is older than the identity cache TTL.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openidconnect::OAuth2TokenResponse as _;
use serde::{Deserialize, Serialize};

use super::claims::identity;
use super::idp::{Discovered, Idp, TokenResponse};
use crate::config::oidc::OidcSettings;
use crate::identity::SessionsEnded;
use crate::identity::{Failure, Identity, SESSION_CLAIM};
use crate::store::sessions::{hashed_key, SessionStore};
use crate::support::random::random_id;
use crate::support::time::unix_now;

/// A stored login: the group snapshot and, when the IdP issued one, its refresh token (a secret: this
/// struct has no Debug and is only ever written to the session store).
#[derive(Clone, Serialize, Deserialize)]
struct Session {
    provider: String,
    username: String,
    groups: Vec<String>,
    claims: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idp_refresh_token: Option<String>,
    /// When the user logged in (Unix seconds).
    created_at: u64,
    /// When the groups were last read from the IdP.
    checked_at: u64,
    /// The IdP's subject (see `Identity::account`).
    #[serde(default)]
    account: Option<String>,
    /// The IdP's own session id (the ID token's `sid`): a back-channel logout names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idp_sid: Option<String>,
}

/// The index entry from an IdP session id or subject to the user (keys hashed: the values come from the IdP).
fn idp_key(kind: &str, provider: &str, id: &str) -> String {
    hashed_key(&format!("oidc-{kind}:{provider}"), id)
}

/// What a back-channel logout of an IdP session leaves in the shared store: sessions of tollgate that
/// came from it and were opened at or before `at_ms` are refused from then on.
#[derive(Serialize, Deserialize)]
struct Ended {
    at_ms: u64,
}

/// How long an unlinked session outlives the identity cache entry that carries its id.
pub(super) const ORPHAN_GRACE_SECS: u64 = 60;

pub(super) fn session_key(sid: &str) -> String {
    format!("oidc-session:{sid}")
}

/// The sessions of one provider.
pub(super) struct Sessions {
    provider: String,
    store: Arc<dyn SessionStore>,
    /// Groups are re-read from the IdP when the snapshot is older than this (the identity cache TTL).
    recheck_after: Duration,
    max_group_age: Duration,
    session_lifetime: Duration,
}

impl Sessions {
    /// Sessions of provider `cfg` in `store`.
    pub(super) fn new(cfg: &OidcSettings, store: Arc<dyn SessionStore>, recheck_after: Duration) -> Sessions {
        let times = cfg.times;
        Sessions {
            provider: cfg.name.clone(),
            store,
            recheck_after,
            max_group_age: times.max_group_age,
            session_lifetime: times.session_lifetime,
        }
    }

    /// Store a new session for a login and return the identity carrying its id.
    pub(super) async fn open(
        &self,
        mut identity: Identity,
        tokens: &TokenResponse,
        idp_sid: Option<String>,
    ) -> Result<Identity, Failure> {
        let now = unix_now();
        // Who an IdP session or subject is, for a back-channel logout that names only one of them.
        let index_until = now + self.session_lifetime.as_secs();
        let user = serde_json::json!({"username": identity.username});
        for (kind, id) in [("sid", idp_sid.as_deref()), ("sub", identity.account.as_deref())] {
            if let Some(id) = id {
                let key = idp_key(kind, &self.provider, id);
                self.store
                    .put(&key, user.clone(), index_until)
                    .await
                    .map_err(|e| Failure::unavailable(e.to_string()))?;
            }
        }
        let idp_refresh_token = tokens.refresh_token().map(|t| t.secret().clone());
        let session = Session {
            provider: self.provider.clone(),
            username: identity.username.clone(),
            groups: identity.groups.clone(),
            claims: identity.claims.clone(),
            idp_refresh_token,
            created_at: now,
            checked_at: now,
            account: identity.account.clone(),
            idp_sid,
        };
        let sid = random_id(18);
        // Most logins never get a refresh token (a ctr pull, a CI job): their session only needs to outlive
        // the identity cache entry that carries its id. `keep_session` extends it when a token links it.
        self.save(&sid, &session, now + self.recheck_after.as_secs() + ORPHAN_GRACE_SECS).await?;
        identity.claims.insert(SESSION_CLAIM.into(), serde_json::Value::String(sid));
        Ok(identity)
    }

    async fn save(&self, sid: &str, s: &Session, expires_at: u64) -> Result<(), Failure> {
        let value = serde_json::to_value(s).map_err(|e| Failure::unavailable(format!("session: {e}")))?;
        self.store.put(&session_key(sid), value, expires_at).await.map_err(|e| Failure::unavailable(e.to_string()))
    }

    /// Tokens from a grant → an identity with a session.
    pub(super) async fn login(
        &self,
        idp: &Idp,
        cfg: &OidcSettings,
        d: &Arc<Discovered>,
        tokens: &TokenResponse,
    ) -> Result<Identity, Failure> {
        let claims = idp.read_claims(d, tokens).await?;
        let identity = identity(cfg, &claims)?;
        let idp_sid = claims.get("sid").and_then(|s| s.as_str()).filter(|s| !s.is_empty()).map(String::from);
        self.open(identity, tokens, idp_sid).await
    }

    /// A back-channel logout: the IdP ended its session `sid` (every tollgate session that came from it is
    /// refused from now on, on every replica, by a mark in the shared store), or, without `sid`, every
    /// session of its subject `sub` (the caller refuses the user's refresh tokens). Returns the user it was,
    /// when tollgate knows them.
    pub(super) async fn end_idp_session(&self, sid: Option<&str>, sub: Option<&str>) -> Result<SessionsEnded, Failure> {
        let unavailable = |e: crate::store::error::StoreError| Failure::unavailable(e.to_string());
        let mut usernames = Vec::new();
        for (kind, id) in [("sid", sid), ("sub", sub)] {
            let Some(id) = id else { continue };
            let found = self.store.get(&idp_key(kind, &self.provider, id)).await.map_err(unavailable)?;
            if let Some(name) = found.as_ref().and_then(|v| v["username"].as_str()) {
                if !usernames.iter().any(|u| u == name) {
                    usernames.push(name.to_string());
                }
            }
        }
        let mut sessions = 0;
        if let Some(sid) = sid {
            let ended = serde_json::to_value(Ended { at_ms: crate::support::time::unix_now_ms() })
                .map_err(|e| Failure::unavailable(e.to_string()))?;
            let until = unix_now() + self.session_lifetime.as_secs();
            self.store.put(&idp_key("ended", &self.provider, sid), ended, until).await.map_err(unavailable)?;
            sessions = 1;
        }
        Ok(SessionsEnded { usernames, sessions })
    }

    /// Whether the IdP ended (back-channel logout) the IdP session this tollgate session came from.
    async fn ended_at_idp(&self, s: &Session) -> Result<bool, Failure> {
        let Some(idp_sid) = &s.idp_sid else { return Ok(false) };
        let key = idp_key("ended", &self.provider, idp_sid);
        let found = self.store.get(&key).await.map_err(|e| Failure::unavailable(e.to_string()))?;
        Ok(found.and_then(|v| serde_json::from_value::<Ended>(v).ok()).is_some_and(|e| s.created_at * 1000 <= e.at_ms))
    }

    /// The account behind a refresh token linked to session `sid`: the snapshot while it is fresh, else
    /// the groups read again with the IdP refresh token (an IdP refusal ends the session).
    pub(super) async fn recheck(
        &self,
        idp: &Idp,
        cfg: &OidcSettings,
        username: &str,
        sid: &str,
    ) -> Result<Identity, Failure> {
        let key = session_key(sid);
        let stored = self.store.get(&key).await.map_err(|e| Failure::unavailable(e.to_string()))?;
        let Some(mut session) = stored.and_then(|v| serde_json::from_value::<Session>(v).ok()) else {
            return Err(Failure::refused("the login session has ended; log in again"));
        };
        if session.username != username || session.provider != self.provider {
            return Err(Failure::refused("the session belongs to another user"));
        }
        if self.ended_at_idp(&session).await? {
            let _ = self.store.remove(&key).await;
            return Err(Failure::refused("the IdP ended this login session (back-channel logout); log in again"));
        }
        let now = unix_now();
        if now < session.checked_at + self.recheck_after.as_secs() {
            return Ok(self.identity_of(&session, sid));
        }
        let Some(rt) = session.idp_refresh_token.clone() else {
            // No IdP refresh token: the snapshot from the login is all there is, up to max_group_age.
            if now >= session.created_at + self.max_group_age.as_secs() {
                return Err(Failure::refused("the group snapshot is older than max_group_age; log in again"));
            }
            return Ok(self.identity_of(&session, sid));
        };
        let d = idp.discovered().await?;
        let tokens =
            match idp.token_request(&d, &[("grant_type", "refresh_token"), ("refresh_token", rt.as_str())]).await {
                Ok(t) => t,
                Err(Failure::Refused(code)) => {
                    let _ = self.store.remove(&key).await;
                    return Err(Failure::Refused(format!("the IdP refused the session's refresh token ({code})")));
                }
                Err(e) => return Err(e),
            };
        let claims = idp.read_claims(&d, &tokens).await?;
        let fresh = identity(cfg, &claims)?;
        if fresh.username != username {
            return Err(Failure::refused("the IdP now names this session's user differently"));
        }
        session.groups = fresh.groups;
        session.claims = fresh.claims;
        session.checked_at = now;
        if let Some(new_rt) = tokens.refresh_token() {
            // Rotating IdPs (Keycloak can) invalidate the old one.
            session.idp_refresh_token = Some(new_rt.secret().clone());
        }
        self.save(sid, &session, self.linked_expiry(&session)).await?;
        Ok(self.identity_of(&session, sid))
    }

    /// How long a session is kept once a refresh token refers to it.
    fn linked_expiry(&self, s: &Session) -> u64 {
        match s.idp_refresh_token {
            Some(_) => unix_now() + self.session_lifetime.as_secs(),
            None => s.created_at + self.max_group_age.as_secs(),
        }
    }

    /// A refresh token now links session `sid`: keep it as long as such a token may need it.
    pub(super) async fn keep(&self, sid: &str) -> Result<(), Failure> {
        let stored = self.store.get(&session_key(sid)).await.map_err(|e| Failure::unavailable(e.to_string()))?;
        match stored.and_then(|v| serde_json::from_value::<Session>(v).ok()) {
            Some(s) => self.save(sid, &s, self.linked_expiry(&s)).await,
            // Its refresh token will be refused on first use, with a message to log in again.
            None => {
                tracing::warn!(provider = %self.provider, "a refresh token was issued for an ended login session");
                Ok(())
            }
        }
    }

    fn identity_of(&self, s: &Session, sid: &str) -> Identity {
        let mut claims = s.claims.clone();
        claims.insert(SESSION_CLAIM.into(), serde_json::Value::String(sid.to_string()));
        Identity {
            username: s.username.clone(),
            provider: self.provider.clone(),
            groups: s.groups.clone(),
            claims,
            account: s.account.clone(),
            expires_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn a_login_session_lives_long_only_once_a_refresh_token_links_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::store::sessions::FileSessionStore::new(dir.path().join("s.json")));
        let cfg = crate::config::oidc::settings_from_yaml(
            "name: kc\nissuer: http://127.0.0.1:9/realms/test\nclient_id: tollgate\n",
        )
        .unwrap();
        let idp = Idp::new(&cfg, Duration::from_secs(1)).unwrap();
        let p = Sessions::new(&cfg, store, Duration::from_secs(60));
        let expiry = |sid: &str| {
            let file: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.path().join("s.json")).unwrap()).unwrap();
            file["entries"][session_key(sid)]["expires_at"].as_u64().unwrap()
        };
        let with_rt: TokenResponse =
            serde_json::from_value(json!({"access_token": "at", "token_type": "Bearer", "refresh_token": "idp-rt"}))
                .unwrap();
        let identity = Identity { username: "carol".into(), provider: "kc".into(), ..Default::default() };
        let opened = p.open(identity, &with_rt, Some("idp-session-1".into())).await.unwrap();
        let sid = opened.claims[SESSION_CLAIM].as_str().unwrap().to_string();
        let now = unix_now();
        assert!(expiry(&sid) <= now + 60 + ORPHAN_GRACE_SECS, "an unlinked session outlives only the cache entry");
        p.keep(&sid).await.unwrap();
        assert!(expiry(&sid) >= now + 89 * 86400, "linked to a refresh token, it is kept for session_lifetime");
        let text = std::fs::read_to_string(dir.path().join("s.json")).unwrap();
        assert!(text.contains("idp-rt"), "the IdP refresh token is stored (owner-only file)");
        assert_eq!(p.recheck(&idp, &cfg, "carol", &sid).await.unwrap().username, "carol");
        assert!(matches!(p.recheck(&idp, &cfg, "mallory", &sid).await, Err(Failure::Refused(_))));

        // The IdP ends its session: the user is found by the IdP's session id, and the session is refused.
        let ended = p.end_idp_session(Some("idp-session-1"), None).await.unwrap();
        assert_eq!(ended.usernames, vec!["carol".to_string()]);
        let e = p.recheck(&idp, &cfg, "carol", &sid).await.unwrap_err();
        assert!(e.to_string().contains("back-channel logout"), "{e}");
        let other = p.end_idp_session(Some("unknown-session"), None).await.unwrap();
        assert!(other.usernames.is_empty(), "an IdP session tollgate never saw names nobody");
    }
}

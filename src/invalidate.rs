//! Invalidation: the one path by which access ends when it ends at its source.
//!
//! Every signal (the `/invalidate` endpoint and `tollgate invalidate`, an IdP's back-channel logout, and the
//! directory watchers) calls [`Invalidator::invalidate`] with a [`Subject`] (an account, an IdP session or a
//! group), the moment it changed, and its source. That:
//! 1. records what must outlive any cache in the shared store: an account's refresh tokens issued at or
//!    before the moment are refused (`Revocation::User`), and an IdP session is marked ended (its tollgate
//!    sessions are refused); a replica that missed every message still refuses them;
//! 2. drops the matching cached logins and re-checks on this replica (a group: every cached identity in
//!    it), so the next login or refresh asks the provider again;
//! 3. tells every other replica to do the same: with `state.store: redis` through a Redis Stream
//!    (`crate::store::inval_stream`), read by [`listen`] on each replica. A replica that lost its stream
//!    connection, or finds a sequence number missing, drops its whole cache: a missed message never leaves
//!    a stale grant. With the local store there is one replica and step 3 is nothing.
//!
//! Each call writes one audit line (target `tollgate::audit`, message `invalidation`) and counts
//! `tollgate_invalidations_total{source,outcome}`; receivers record the propagation lag.

pub mod ssf;
mod subject;

pub use subject::Subject;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::identity::chain::Chain;
use crate::identity::{Failure, Forget, MAX_USERNAME_LEN};
use crate::store::access_tokens::{revoke_tokens_of, AccessTokenStore};
use crate::store::inval_stream::{self, StreamEvent, StreamReader};
use crate::store::redis::Redis;
use crate::store::revocation::{Revocation, RevocationStore};
use crate::support::random::random_id;
use crate::support::time::unix_now_ms;

/// Invalidations by `source` and `outcome` (`ok`, `invalid`, `unavailable`, `fanout_failed`).
pub const INVALIDATIONS: &str = "tollgate_invalidations_total";
/// Seconds from an invalidation on one replica to its arrival on another, observed by the receiver.
pub const PROPAGATION: &str = "tollgate_invalidation_propagation_seconds";
/// Whole identity caches dropped because messages may have been missed, by `reason` (`reconnected`,
/// `trimmed`, `disconnected`).
pub const FULL_DROPS: &str = "tollgate_invalidation_full_drops_total";
/// 1 while this replica reads the invalidation stream, 0 while it cannot (only with `store: redis`).
pub const STREAM_UP: &str = "tollgate_invalidation_stream_up";
/// Failed reads of the invalidation stream.
pub const STREAM_ERRORS: &str = "tollgate_invalidation_stream_errors_total";

/// Export the series the alert rules watch from the start (at zero), so that an alert can tell "none
/// yet" from "not exported".
pub fn register_metrics() {
    for source in ["api", "cli", "backchannel_logout"] {
        metrics::counter!(INVALIDATIONS, "source" => source, "outcome" => "fanout_failed").increment(0);
    }
    metrics::counter!(STREAM_ERRORS).increment(0);
}

/// The longest group name accepted.
pub const MAX_GROUP_LEN: usize = 256;
/// How far in the future an invalidation's moment may lie (clock skew between the caller and us).
pub const MAX_FUTURE_MS: u64 = 60_000;

/// Where an invalidation came from (a metric label and the audit line's `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cli,
    Api,
    BackchannelLogout,
    /// A directory watcher (OpenLDAP syncrepl, Active Directory notification or uSNChanged polling).
    LdapWatch,
    Ssf,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cli => "cli",
            Source::Api => "api",
            Source::BackchannelLogout => "backchannel_logout",
            Source::LdapWatch => "ldap_watch",
            Source::Ssf => "ssf",
        }
    }

    pub fn parse(s: &str) -> Option<Source> {
        [Source::Cli, Source::Api, Source::BackchannelLogout, Source::LdapWatch, Source::Ssf]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// What one invalidation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub subject: String,
    pub as_of_ms: u64,
    pub source: &'static str,
    /// The users it touched (for a group: none by name; each replica drops the group's cached members).
    pub users: Vec<String>,
    /// Whether refresh tokens of `users` issued up to `as_of_ms` are refused from now on.
    pub refresh_tokens_refused: bool,
    /// IdP sessions marked ended.
    pub sessions_ended: usize,
    /// Personal access tokens of `users` revoked (with `refresh_tokens_refused`).
    pub access_tokens_revoked: usize,
    /// Cached entries dropped on this replica.
    pub dropped_here: usize,
    /// `redis` (every replica was told) or `local` (one replica: nothing to tell).
    pub fanout: &'static str,
}

/// Why an invalidation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request names nothing that can be invalidated; nothing was changed.
    #[error("{0}")]
    Invalid(String),
    /// The shared store could not record it; nothing is promised. Safe to retry.
    #[error("the shared store is unavailable: {0}")]
    Unavailable(String),
    /// Recorded, and dropped on this replica, but the other replicas could not be told (they refuse the
    /// refresh tokens, but may serve cached logins until their cache expires). Safe to retry.
    #[error("recorded, but the other replicas could not be told: {0}")]
    Fanout(String),
}

impl Error {
    fn label(&self) -> &'static str {
        match self {
            Error::Invalid(_) => "invalid",
            Error::Unavailable(_) => "unavailable",
            Error::Fanout(_) => "fanout_failed",
        }
    }
}

/// The message other replicas read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Message {
    /// The process that sent it (it has applied it already).
    origin: String,
    sent_ms: u64,
    as_of_ms: u64,
    source: String,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
}

/// This process's id on the stream.
fn origin() -> &'static str {
    static ORIGIN: OnceLock<String> = OnceLock::new();
    ORIGIN.get_or_init(|| random_id(12))
}

/// The invalidation path of one server state (rebuilt with it on reload).
pub struct Invalidator {
    chain: Chain,
    revocations: Arc<dyn RevocationStore>,
    /// Personal access tokens: an account invalidation revokes its owner's.
    access_tokens: Arc<dyn AccessTokenStore>,
    redis: Option<Arc<Redis>>,
    stream_length: u64,
    /// The Shared Signals transmitters trusted (`invalidation.transmitters`).
    pub transmitters: ssf::Receivers,
}

impl Invalidator {
    pub fn new(
        chain: Chain,
        revocations: Arc<dyn RevocationStore>,
        access_tokens: Arc<dyn AccessTokenStore>,
        redis: Option<Arc<Redis>>,
        stream_length: u64,
    ) -> Invalidator {
        Invalidator { chain, revocations, access_tokens, redis, stream_length, transmitters: ssf::Receivers::default() }
    }

    /// The same, trusting these Shared Signals transmitters.
    pub fn with_transmitters(mut self, transmitters: ssf::Receivers) -> Invalidator {
        self.transmitters = transmitters;
        self
    }

    /// Invalidate `subject` as of `as_of_ms` (Unix milliseconds; None: now), for `source`.
    pub async fn invalidate(&self, subject: Subject, as_of_ms: Option<u64>, source: Source) -> Result<Report, Error> {
        let described = subject.describe();
        let now = unix_now_ms();
        let as_of = as_of_ms.unwrap_or(now);
        let result = self.run(&subject, as_of, now, source).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.label(),
        };
        metrics::counter!(INVALIDATIONS, "source" => source.as_str(), "outcome" => outcome).increment(1);
        let (users, dropped, refused) = match &result {
            Ok(r) => (serde_json::to_string(&r.users).unwrap_or_default(), r.dropped_here, r.refresh_tokens_refused),
            Err(_) => (String::from("[]"), 0, false),
        };
        let error = result.as_ref().err().map(ToString::to_string).unwrap_or_default();
        tracing::info!(
            target: "tollgate::audit",
            source = source.as_str(),
            outcome,
            subject = %described,
            as_of_ms = as_of,
            users = %users,
            dropped_here = dropped,
            refresh_tokens_refused = refused,
            error = %error,
            "invalidation"
        );
        result
    }

    async fn run(&self, subject: &Subject, as_of: u64, now: u64, source: Source) -> Result<Report, Error> {
        if as_of > now + MAX_FUTURE_MS {
            return Err(Error::Invalid(format!("as_of_ms is more than {MAX_FUTURE_MS} ms in the future")));
        }
        let mut report = Report {
            subject: subject.describe(),
            as_of_ms: as_of,
            source: source.as_str(),
            users: Vec::new(),
            refresh_tokens_refused: false,
            sessions_ended: 0,
            access_tokens_revoked: 0,
            dropped_here: 0,
            fanout: if self.redis.is_some() { "redis" } else { "local" },
        };
        let mut groups = Vec::new();
        match subject {
            Subject::Account { provider, username } | Subject::Membership { provider, username } => {
                check_name("username", username, MAX_USERNAME_LEN)?;
                if let Some(p) = provider {
                    if self.chain.provider(p).is_none() {
                        return Err(Error::Invalid(format!("no provider is named {p:?}")));
                    }
                }
                report.users.push(username.clone());
                report.refresh_tokens_refused = matches!(subject, Subject::Account { .. });
            }
            Subject::Group { name } => {
                check_name("group", name, MAX_GROUP_LEN)?;
                groups.push(name.clone());
            }
            Subject::Session { provider, sid, sub } => {
                let logout = self
                    .chain
                    .provider(provider)
                    .and_then(|p| p.backchannel_logout())
                    .ok_or_else(|| Error::Invalid(format!("no OIDC provider is named {provider:?}")))?;
                if sid.is_none() && sub.is_none() {
                    return Err(Error::Invalid("a session is named by sid or sub".into()));
                }
                let ended = logout.end_sessions(sid.as_deref(), sub.as_deref()).await.map_err(|f| match f {
                    Failure::Refused(m) => Error::Invalid(m),
                    f @ (Failure::Unavailable(_) | Failure::Busy(_)) => Error::Unavailable(f.message().to_string()),
                })?;
                report.users = ended.usernames;
                report.sessions_ended = ended.sessions;
                // A subject without a session: every session of the user ends, so every refresh token.
                report.refresh_tokens_refused = sid.is_none() && !report.users.is_empty();
            }
        }
        if report.refresh_tokens_refused {
            for username in &report.users {
                let revocation = Revocation::User { username: username.clone(), before_ms: as_of };
                self.revocations.revoke(revocation).await.map_err(|e| Error::Unavailable(e.to_string()))?;
                // Their personal access tokens too: a token is a credential of the account it ended.
                let ended = revoke_tokens_of(self.access_tokens.as_ref(), username, as_of / 1000)
                    .await
                    .map_err(|e| Error::Unavailable(e.to_string()))?;
                report.access_tokens_revoked += ended.len();
            }
        }
        report.dropped_here = self.forget(&report.users, &groups).await;
        if let Some(redis) = &self.redis {
            let message = Message {
                origin: origin().to_string(),
                sent_ms: unix_now_ms(),
                as_of_ms: as_of,
                source: source.as_str().to_string(),
                users: report.users.clone(),
                groups,
            };
            let payload = serde_json::to_string(&message).map_err(|e| Error::Fanout(e.to_string()))?;
            inval_stream::publish(redis, &payload, self.stream_length)
                .await
                .map_err(|e| Error::Fanout(e.to_string()))?;
        }
        Ok(report)
    }

    /// Drop the cached identities of `users` and of members of `groups` here; returns how many.
    async fn forget(&self, users: &[String], groups: &[String]) -> usize {
        let mut n = 0;
        for p in self.chain.providers() {
            for u in users {
                n += p.forget(&Forget::User(u.clone())).await;
            }
            for g in groups {
                n += p.forget(&Forget::Group(g.clone())).await;
            }
        }
        n
    }

    /// Drop every cached identity here: messages may have been missed (`reason` is the metric label).
    pub async fn forget_all(&self, reason: &'static str) -> usize {
        metrics::counter!(FULL_DROPS, "reason" => reason).increment(1);
        let mut n = 0;
        for p in self.chain.providers() {
            n += p.forget(&Forget::All).await;
        }
        tracing::warn!(reason, dropped = n, "invalidations may have been missed: every cached identity dropped");
        n
    }

    /// Apply what another replica sent.
    async fn receive(&self, payload: &str) {
        let message: Message = match serde_json::from_str(payload) {
            Ok(m) => m,
            Err(e) => {
                // Unreadable (a newer version's message?): be safe.
                tracing::warn!(error = %e, "an invalidation message could not be read");
                self.forget_all("unreadable").await;
                return;
            }
        };
        if message.origin == origin() {
            return;
        }
        let lag_ms = unix_now_ms().saturating_sub(message.sent_ms);
        metrics::histogram!(PROPAGATION).record(lag_ms as f64 / 1000.0);
        let dropped = self.forget(&message.users, &message.groups).await;
        tracing::debug!(source = %message.source, dropped, lag_ms, "invalidation received");
    }
}

fn check_name(what: &str, value: &str, max: usize) -> Result<(), Error> {
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(Error::Invalid(format!("{what}: 1 to {max} characters, no control characters")));
    }
    Ok(())
}

/// Read the invalidation stream for as long as the process runs, applying each message to the state in
/// force (`current`, called per message: a reload brings a new one). A lost connection drops every
/// cached identity at once and again when it is made again; reads resume with a backoff of 100 ms to 2 s.
pub async fn listen(redis: Arc<Redis>, current: impl Fn() -> Arc<Invalidator> + Send + 'static) {
    let mut reader = StreamReader::new(redis, Duration::from_secs(5));
    let mut backoff = Duration::from_millis(100);
    let mut down = false;
    metrics::gauge!(STREAM_UP).set(0.0);
    loop {
        match reader.next().await {
            Ok(events) => {
                if down {
                    tracing::info!("invalidation stream readable again");
                }
                down = false;
                backoff = Duration::from_millis(100);
                metrics::gauge!(STREAM_UP).set(1.0);
                for event in events {
                    let inv = current();
                    match event {
                        StreamEvent::Gap { reason } => {
                            inv.forget_all(reason).await;
                        }
                        StreamEvent::Message { payload, .. } => inv.receive(&payload).await,
                    }
                }
            }
            Err(e) => {
                metrics::counter!(STREAM_ERRORS).increment(1);
                metrics::gauge!(STREAM_UP).set(0.0);
                if !down {
                    tracing::warn!(error = %e, "invalidation stream unreadable; dropping cached identities");
                    current().forget_all("disconnected").await;
                }
                down = true;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_round_trip_and_subjects_are_described_without_control_characters() {
        for s in ["cli", "api", "backchannel_logout", "ldap_watch", "ssf"] {
            assert_eq!(Source::parse(s).map(Source::as_str), Some(s));
        }
        assert_eq!(Source::parse("other"), None);
        let s = Subject::Session { provider: "kc".into(), sid: Some("abc".into()), sub: None };
        assert_eq!(s.describe(), "session at kc sid=abc");
        assert!(check_name("username", "a\nb", 10).is_err());
        assert!(check_name("username", "", 10).is_err());
        assert!(check_name("group", "devs", 10).is_ok());
    }

    #[tokio::test]
    async fn an_account_is_refused_its_refresh_tokens_and_a_future_moment_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::store::revocation::FileStore::new(dir.path().join("r.json")));
        let file = crate::store::access_tokens::FileAccessTokens::new(dir.path().join("t.json"));
        let tokens: Arc<dyn AccessTokenStore> = Arc::new(Arc::new(file));
        // alice's token made before the moment, one made after it, and bob's.
        for (id, owner, created) in [("before", "alice", 0), ("after", "alice", 5), ("bobs", "bob", 0)] {
            let owner = crate::token::access::Owner {
                kind: crate::token::access::OwnerKind::User,
                name: owner.into(),
                provider: "local".into(),
                account: None,
                session: None,
            };
            let record = crate::token::access::TokenRecord {
                id: id.into(),
                hmac: format!("hmac-{id}"),
                name: id.into(),
                owner,
                scope: vec![],
                created_by: "x".into(),
                created,
                expires: u64::MAX / 2,
                last_used: None,
                revoked: None,
                rotated_to: None,
            };
            tokens.insert(record).await.unwrap();
        }
        let inv = Invalidator::new(Chain::new(Vec::new()), store.clone(), tokens.clone(), None, 100);
        let subject = Subject::Account { provider: None, username: "alice".into() };
        let r = inv.invalidate(subject.clone(), Some(1_000), Source::Cli).await.unwrap();
        assert!(r.refresh_tokens_refused && r.fanout == "local");
        assert_eq!(store.current().unwrap().users_ms.get("alice"), Some(&1_000));
        assert_eq!(r.access_tokens_revoked, 1, "alice's token made before the moment, not the one after");
        let now = unix_now_ms() / 1000;
        let mut active: Vec<String> = tokens
            .list()
            .await
            .unwrap()
            .into_iter()
            .filter(|t| t.state(now) == crate::token::access::TokenState::Active)
            .map(|t| t.id)
            .collect();
        active.sort();
        assert_eq!(active, ["after", "bobs"]);
        let e = inv.invalidate(subject, Some(unix_now_ms() + 3_600_000), Source::Api).await.unwrap_err();
        assert!(matches!(e, Error::Invalid(ref m) if m.contains("future")), "{e}");
        // A membership change keeps the tokens: only the cached identity goes.
        let moved = Subject::Membership { provider: None, username: "bob".into() };
        let r = inv.invalidate(moved, None, Source::LdapWatch).await.unwrap();
        assert!(!r.refresh_tokens_refused && r.users == ["bob"]);
        assert_eq!(store.current().unwrap().users_ms.get("bob"), None);
        assert_eq!(r.access_tokens_revoked, 0, "a membership change leaves tokens to their owner's re-check");
        let unknown = Subject::Account { provider: Some("nope".into()), username: "alice".into() };
        assert!(matches!(inv.invalidate(unknown, None, Source::Api).await, Err(Error::Invalid(_))));
    }
}

//! A Shared Signals (OpenID SSF 1.0) receiver, push delivery (RFC 8935): security event tokens (RFC 8417)
//! from configured transmitters, each trusted like an issuer (its keys, its `iss`, our audience).
//!
//! Events acted on, each through [`super::Invalidator`]:
//! - CAEP `session-revoked`, `credential-change`; RISC `account-disabled`, `account-purged`,
//!   `credential-compromise`: the account ([`super::Subject::Account`]): cached logins dropped on every
//!   replica, refresh tokens issued until now refused;
//! - CAEP `token-claims-change`: the account's claims changed ([`super::Subject::Membership`]): cached
//!   identity dropped and read again, tokens kept;
//! - the SSF `verification` event: accepted and logged (its `state`), as the transmitter expects.
//!
//! Any other event, and an event whose subject names no username tollgate can read (see
//! `username_from`), is accepted (202: the transmitter must not retry it) and logged, changing nothing. A
//! token that does not verify is refused with 400 and the RFC 8935 error code (`invalid_key`,
//! `invalid_issuer`, `invalid_audience`, `invalid_request`), changing nothing.
//!
//! The subject is read from the token's `sub_id` (SSF 1.0) or the event's own `subject` (earlier CAEP and
//! RISC drafts), as an RFC 9493 subject identifier (`email`, `iss_sub`, `opaque`, or `complex` with a
//! `user` member).

use std::collections::HashMap;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Map, Value};

use super::subject::Subject;
use crate::config::invalidation::{Transmitter, UsernameFrom};

pub const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
pub const CREDENTIAL_CHANGE: &str = "https://schemas.openid.net/secevent/caep/event-type/credential-change";
pub const TOKEN_CLAIMS_CHANGE: &str = "https://schemas.openid.net/secevent/caep/event-type/token-claims-change";
pub const ACCOUNT_DISABLED: &str = "https://schemas.openid.net/secevent/risc/event-type/account-disabled";
pub const ACCOUNT_PURGED: &str = "https://schemas.openid.net/secevent/risc/event-type/account-purged";
pub const CREDENTIAL_COMPROMISE: &str = "https://schemas.openid.net/secevent/risc/event-type/credential-compromise";
pub const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";

/// The longest token read (bytes).
pub const MAX_SET_LEN: usize = 16 * 1024;
/// How old (by `iat`) a token may be; its `jti` is remembered this long, so no replay outlives the memory.
pub const MAX_AGE_SECS: u64 = 86_400;
/// Clock skew allowed for `iat` in the future.
const LEEWAY_SECS: u64 = 60;

/// Why a token was refused: the RFC 8935 error code and a description naming the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetError {
    pub code: &'static str,
    pub description: String,
}

fn refuse(code: &'static str, description: impl Into<String>) -> SetError {
    SetError { code, description: description.into() }
}

/// What one event asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Invalidate {
        event: &'static str,
        subject: Subject,
    },
    Verification {
        state: Option<String>,
    },
    /// Accepted, nothing done: an event tollgate does not act on, or a subject it cannot name.
    Ignored {
        event: String,
        why: String,
    },
}

/// A verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub jti: String,
    pub actions: Vec<Action>,
}

/// One configured transmitter and its keys.
pub struct Receiver {
    cfg: Transmitter,
    keys: JwkSet,
}

/// The transmitters by name.
#[derive(Default)]
pub struct Receivers(HashMap<String, Receiver>);

impl Receivers {
    /// Read each transmitter's JWKS file; every problem names the transmitter and the file.
    pub fn load(transmitters: &[Transmitter]) -> Result<Receivers, Vec<String>> {
        let mut out = HashMap::new();
        let mut errors = Vec::new();
        for t in transmitters {
            let read = std::fs::read(&t.jwks_file)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<JwkSet>(&b).map_err(|e| format!("not a JWKS: {e}")));
            match read {
                Ok(keys) if !keys.keys.is_empty() => {
                    out.insert(t.name.clone(), Receiver { cfg: t.clone(), keys });
                }
                Ok(_) => {
                    errors.push(format!("invalidation.transmitters {}: {}: no keys", t.name, t.jwks_file.display()))
                }
                Err(e) => errors.push(format!("invalidation.transmitters {}: {}: {e}", t.name, t.jwks_file.display())),
            }
        }
        if errors.is_empty() {
            Ok(Receivers(out))
        } else {
            Err(errors)
        }
    }

    pub fn get(&self, name: &str) -> Option<&Receiver> {
        self.0.get(name)
    }
}

impl Receiver {
    /// Verify a security event token and read what its events ask for.
    pub fn verify(&self, token: &str, now: u64) -> Result<Delivery, SetError> {
        if token.len() > MAX_SET_LEN {
            return Err(refuse("invalid_request", format!("the token is longer than {MAX_SET_LEN} bytes")));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| refuse("invalid_request", format!("not a signed JWT ({e})")))?;
        if header.typ.as_deref().is_some_and(|t| !t.eq_ignore_ascii_case("secevent+jwt")) {
            return Err(refuse("invalid_request", "typ is not secevent+jwt"));
        }
        if !crate::identity::SIGNED_EVENT_ALGS.contains(&header.alg) {
            return Err(refuse("invalid_key", format!("algorithm {:?} is not accepted", header.alg)));
        }
        let candidates: Vec<_> = self
            .keys
            .keys
            .iter()
            .filter(|k| header.kid.as_deref().is_none_or(|kid| k.common.key_id.as_deref() == Some(kid)))
            .collect();
        let [jwk] = candidates.as_slice() else {
            return Err(refuse("invalid_key", "signed with a key the transmitter's JWKS does not hold (kid)"));
        };
        let key =
            DecodingKey::from_jwk(jwk).map_err(|e| refuse("invalid_key", format!("the transmitter's key: {e}")))?;
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[self.cfg.issuer.as_str()]);
        v.set_audience(&[self.cfg.audience.as_str()]);
        v.set_required_spec_claims(&["iss", "aud", "iat"]);
        v.validate_exp = false;
        v.leeway = LEEWAY_SECS;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => refuse("invalid_key", "bad signature"),
                ErrorKind::InvalidIssuer => refuse("invalid_issuer", format!("iss is not {:?}", self.cfg.issuer)),
                ErrorKind::InvalidAudience => refuse("invalid_audience", format!("aud is not {:?}", self.cfg.audience)),
                ErrorKind::MissingRequiredClaim(c) => refuse("invalid_request", format!("no {c} claim")),
                _ => refuse("invalid_request", format!("does not verify: {e}")),
            })?
            .claims;
        read_claims(&self.cfg, &claims, now)
    }
}

/// The events of verified claims, as actions.
fn read_claims(cfg: &Transmitter, claims: &Map<String, Value>, now: u64) -> Result<Delivery, SetError> {
    let iat =
        claims.get("iat").and_then(Value::as_u64).ok_or_else(|| refuse("invalid_request", "iat is not a number"))?;
    if iat > now + LEEWAY_SECS {
        return Err(refuse("invalid_request", "iat is in the future"));
    }
    if iat + MAX_AGE_SECS < now {
        return Err(refuse("invalid_request", format!("iat is more than {MAX_AGE_SECS}s ago")));
    }
    if let Some(exp) = claims.get("exp").and_then(Value::as_u64) {
        if exp + LEEWAY_SECS < now {
            return Err(refuse("invalid_request", "expired (exp)"));
        }
    }
    let jti = match claims.get("jti") {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 512 => s.clone(),
        _ => return Err(refuse("invalid_request", "no jti (a string of 1 to 512 characters)")),
    };
    let events = match claims.get("events") {
        Some(Value::Object(e)) if !e.is_empty() => e,
        _ => return Err(refuse("invalid_request", "events is not an object with at least one event")),
    };
    let top_subject = claims.get("sub_id");
    let mut actions = Vec::new();
    for (uri, payload) in events {
        let known = [
            SESSION_REVOKED,
            CREDENTIAL_CHANGE,
            TOKEN_CLAIMS_CHANGE,
            ACCOUNT_DISABLED,
            ACCOUNT_PURGED,
            CREDENTIAL_COMPROMISE,
        ]
        .into_iter()
        .find(|k| k == uri);
        if uri == VERIFICATION {
            let state = payload.get("state").and_then(Value::as_str).map(|s| crate::support::clip(s, 200).into_owned());
            actions.push(Action::Verification { state });
            continue;
        }
        let Some(event) = known else {
            actions.push(Action::Ignored {
                event: crate::support::clip(uri, 200).into_owned(),
                why: "not an event tollgate acts on".into(),
            });
            continue;
        };
        let subject = top_subject.or_else(|| payload.get("subject"));
        match subject.and_then(|s| username(cfg.username_from, s)) {
            Some(username) if username.len() <= crate::identity::MAX_USERNAME_LEN => {
                let provider = cfg.provider.clone();
                let subject = if event == TOKEN_CLAIMS_CHANGE {
                    Subject::Membership { provider, username }
                } else {
                    Subject::Account { provider, username }
                };
                actions.push(Action::Invalidate { event, subject });
            }
            _ => actions.push(Action::Ignored {
                event: event.to_string(),
                why: format!("the subject names no username (username_from: {:?})", cfg.username_from),
            }),
        }
    }
    Ok(Delivery { jti, actions })
}

/// The username an RFC 9493 subject identifier names, read as `from` says.
fn username(from: UsernameFrom, subject: &Value) -> Option<String> {
    let s = subject.as_object()?;
    let format = s.get("format").and_then(Value::as_str).unwrap_or("");
    if format == "complex" || (format.is_empty() && s.contains_key("user")) {
        return username(from, s.get("user")?);
    }
    let text = |k: &str| s.get(k).and_then(Value::as_str).filter(|v| !v.is_empty()).map(String::from);
    match (from, format) {
        (UsernameFrom::Email, "email") => text("email"),
        (UsernameFrom::EmailLocalPart, "email") => text("email")?.split_once('@').map(|(l, _)| l.to_string()),
        (UsernameFrom::Sub, "iss_sub") => text("sub"),
        (UsernameFrom::Opaque, "opaque") => text("id"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(from: UsernameFrom) -> Transmitter {
        Transmitter {
            name: "idp".into(),
            issuer: "https://idp.example".into(),
            audience: "https://tollgate.example".into(),
            jwks_file: "x".into(),
            username_from: from,
            provider: None,
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn events_become_actions_and_unknown_ones_change_nothing() {
        let now = 1_800_000_000;
        let c = claims(json!({"iat": now, "jti": "1", "sub_id": {"format": "email", "email": "alice@example.com"},
            "events": {ACCOUNT_DISABLED: {}, TOKEN_CLAIMS_CHANGE: {}, VERIFICATION: {"state": "s1"},
                       "https://example.com/other": {}}}));
        let d = read_claims(&cfg(UsernameFrom::EmailLocalPart), &c, now).unwrap();
        let alice = |m: bool| {
            if m {
                Subject::Membership { provider: None, username: "alice".into() }
            } else {
                Subject::Account { provider: None, username: "alice".into() }
            }
        };
        assert!(d.actions.contains(&Action::Invalidate { event: ACCOUNT_DISABLED, subject: alice(false) }));
        assert!(d.actions.contains(&Action::Invalidate { event: TOKEN_CLAIMS_CHANGE, subject: alice(true) }));
        assert!(d.actions.contains(&Action::Verification { state: Some("s1".into()) }));
        assert!(d.actions.iter().any(|a| matches!(a, Action::Ignored { event, .. } if event.contains("other"))));
        // A subject without what username_from reads: accepted, nothing done.
        let d = read_claims(&cfg(UsernameFrom::Sub), &c, now).unwrap();
        assert!(!d.actions.iter().any(|a| matches!(a, Action::Invalidate { .. })), "{d:?}");
        // The subject inside the event (older drafts), complex subjects.
        let c = claims(json!({"iat": now, "jti": "2", "events": {SESSION_REVOKED: {"subject":
            {"format": "complex", "user": {"format": "iss_sub", "iss": "i", "sub": "bob"}}}}}));
        let d = read_claims(&cfg(UsernameFrom::Sub), &c, now).unwrap();
        assert_eq!(
            d.actions,
            [Action::Invalidate {
                event: SESSION_REVOKED,
                subject: Subject::Account { provider: None, username: "bob".into() }
            }]
        );
        for (bad, word) in [
            (json!({"iat": now, "events": {ACCOUNT_DISABLED: {}}}), "jti"),
            (json!({"iat": now, "jti": "3", "events": {}}), "events"),
            (json!({"iat": now - 2 * MAX_AGE_SECS, "jti": "4", "events": {VERIFICATION: {}}}), "ago"),
        ] {
            let e = read_claims(&cfg(UsernameFrom::Email), &claims(bad), now).unwrap_err();
            assert!(e.code == "invalid_request" && e.description.contains(word), "{e:?}");
        }
    }
}

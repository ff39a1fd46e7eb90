//! OpenID Connect Back-Channel Logout 1.0: verifying a logout token the IdP posts when a session ends.
//!
//! A logout token is a JWT signed with the IdP's keys (the JWKS discovery found; refetched at most every
//! 10 s for an unknown `kid`, so made-up key ids cannot make us hammer the IdP). It must name this IdP
//! (`iss`) and tollgate's client (`aud`), be recent (`iat` within [`MAX_AGE`], not in the future beyond
//! [`LEEWAY_SECS`]) and unexpired (`exp`), carry the back-channel logout event, a `sub` or a `sid`, a `jti`,
//! and no `nonce` (so an ID token cannot pass for one). Every refusal names the problem. Only asymmetric
//! algorithms are accepted: an HMAC "signed" with a public key proves nothing.

use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::idp::{Discovered, Idp};
use crate::identity::{Failure, LogoutRequest};
use crate::support::time::unix_now;

/// The event a logout token must carry.
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// How old (by `iat`) a logout token may be.
pub const MAX_AGE: Duration = Duration::from_secs(300);
/// Clock skew allowed for `iat` in the future and `exp` in the past.
pub const LEEWAY_SECS: u64 = 60;
/// The longest logout token read (bytes); real ones are well under 2 KiB.
pub const MAX_TOKEN_LEN: usize = 8192;
/// The longest `sub`, `sid` and `jti` accepted.
const MAX_ID_LEN: usize = 512;

fn refused(why: impl std::fmt::Display) -> Failure {
    Failure::Refused(format!("logout_token: {why}"))
}

/// The key the token names, from the JWKS (refetched once, rate-limited, when the `kid` is unknown).
async fn key_for(idp: &Idp, d: &Discovered, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, Failure> {
    let find = |d: &Discovered| -> Result<Option<DecodingKey>, Failure> {
        let set: JwkSet = serde_json::to_value(&d.jwks)
            .and_then(serde_json::from_value)
            .map_err(|e| Failure::unavailable(format!("the IdP's JWKS: {e}")))?;
        let candidates: Vec<_> = set
            .keys
            .iter()
            .filter(|k| kid.is_none_or(|kid| k.common.key_id.as_deref() == Some(kid)))
            .filter(|k| k.common.key_algorithm.is_none_or(|a| a.to_string() == format!("{alg:?}")))
            .collect();
        match candidates.as_slice() {
            [one] => DecodingKey::from_jwk(one).map(Some).map_err(|e| refused(format!("the IdP's key: {e}"))),
            [] => Ok(None),
            _ => Err(refused("names no key id (kid) and the IdP has several keys")),
        }
    };
    if let Some(k) = find(d)? {
        return Ok(k);
    }
    match idp.refetch_jwks(d).await? {
        Some(fresh) => find(&fresh)?.ok_or_else(|| refused("signed with a key the IdP does not publish")),
        None => Err(refused("signed with a key the IdP does not publish")),
    }
}

/// Verify `token` as a logout token from `idp`.
pub(super) async fn verify(idp: &Idp, token: &str) -> Result<LogoutRequest, Failure> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(refused(format!("longer than {MAX_TOKEN_LEN} bytes")));
    }
    let header = jsonwebtoken::decode_header(token).map_err(|e| refused(format!("not a signed JWT ({e})")))?;
    if !crate::identity::SIGNED_EVENT_ALGS.contains(&header.alg) {
        return Err(refused(format!("algorithm {:?} is not accepted (asymmetric signatures only)", header.alg)));
    }
    let d = idp.discovered().await?;
    let key = key_for(idp, &d, header.kid.as_deref(), header.alg).await?;
    let mut v = Validation::new(header.alg);
    v.set_issuer(&[idp.issuer.as_str()]);
    v.set_audience(&[idp.client_id.as_str()]);
    v.set_required_spec_claims(&["iss", "aud", "iat", "exp"]);
    v.leeway = LEEWAY_SECS;
    let claims = match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key, &v) {
        Ok(data) => data.claims,
        Err(e) => {
            return Err(refused(match e.kind() {
                ErrorKind::InvalidSignature => "bad signature".to_string(),
                ErrorKind::InvalidAudience => format!("wrong audience (aud is not {:?})", idp.client_id),
                ErrorKind::InvalidIssuer => format!("wrong issuer (iss is not {:?})", idp.issuer),
                ErrorKind::ExpiredSignature => "expired (exp)".to_string(),
                ErrorKind::ImmatureSignature => "not valid yet (nbf)".to_string(),
                ErrorKind::MissingRequiredClaim(c) => format!("no {c} claim"),
                _ => format!("does not verify: {e}"),
            }))
        }
    };
    check_claims(&claims, unix_now())
}

/// The claims a verified signature vouches for, checked as the spec says.
fn check_claims(claims: &serde_json::Map<String, serde_json::Value>, now: u64) -> Result<LogoutRequest, Failure> {
    let iat = claims.get("iat").and_then(|v| v.as_u64()).ok_or_else(|| refused("iat is not a number"))?;
    if iat > now + LEEWAY_SECS {
        return Err(refused("iat is in the future"));
    }
    if iat + MAX_AGE.as_secs() < now {
        return Err(refused(format!("iat is more than {}s ago", MAX_AGE.as_secs())));
    }
    let exp = claims.get("exp").and_then(|v| v.as_u64()).ok_or_else(|| refused("exp is not a number"))?;
    let event = claims.get("events").and_then(|e| e.as_object()).and_then(|e| e.get(BACKCHANNEL_LOGOUT_EVENT));
    if !event.is_some_and(|e| e.is_object()) {
        return Err(refused(format!("events has no {BACKCHANNEL_LOGOUT_EVENT} member (an object)")));
    }
    if claims.contains_key("nonce") {
        return Err(refused("carries a nonce (an ID token is not a logout token)"));
    }
    let text = |k: &str| -> Result<Option<String>, Failure> {
        match claims.get(k) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) if !s.is_empty() && s.len() <= MAX_ID_LEN => Ok(Some(s.clone())),
            Some(_) => Err(refused(format!("{k} is not a string of 1 to {MAX_ID_LEN} characters"))),
        }
    };
    let (sub, sid) = (text("sub")?, text("sid")?);
    if sub.is_none() && sid.is_none() {
        return Err(refused("has neither sub nor sid"));
    }
    let jti = text("jti")?.ok_or_else(|| refused("has no jti"))?;
    Ok(LogoutRequest { sub, sid, jti, exp: exp.max(now) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().unwrap().clone()
    }

    fn good(now: u64) -> serde_json::Value {
        json!({"iss": "i", "aud": "c", "iat": now, "exp": now + 120, "jti": "j1", "sid": "s1",
               "events": {BACKCHANNEL_LOGOUT_EVENT: {}}})
    }

    #[test]
    fn each_claim_the_spec_requires_is_checked_and_named() {
        let now = 1_800_000_000;
        let ok = check_claims(&map(good(now)), now).unwrap();
        assert_eq!((ok.sid.as_deref(), ok.sub, ok.jti.as_str()), (Some("s1"), None, "j1"));
        type Change = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: Vec<(&str, Change)> = vec![
            ("neither sub nor sid", Box::new(|v| drop(v.as_object_mut().unwrap().remove("sid")))),
            ("nonce", Box::new(|v| v["nonce"] = json!("n"))),
            ("events", Box::new(|v| v["events"] = json!({"http://example.test/other": {}}))),
            ("events", Box::new(|v| v["events"] = json!({BACKCHANNEL_LOGOUT_EVENT: "yes"}))),
            ("no jti", Box::new(|v| drop(v.as_object_mut().unwrap().remove("jti")))),
            ("in the future", Box::new(move |v| v["iat"] = json!(now + 3600))),
            ("ago", Box::new(move |v| v["iat"] = json!(now - 3600))),
            ("sub is not a string", Box::new(|v| v["sub"] = json!(42))),
        ];
        for (word, change) in cases {
            let mut v = good(now);
            change(&mut v);
            let e = check_claims(&map(v), now).unwrap_err();
            assert!(matches!(&e, Failure::Refused(m) if m.contains(word)), "{word}: {e}");
        }
    }
}

//! Workload identities: a CI job or a pod logs in with the signed JWT its platform gave it (GitHub Actions,
//! GitLab CI, a Kubernetes service account, SPIFFE), and no stored secret.
//!
//! Each trusted issuer is one provider entry (`type: workload`, `crate::config::workload`). A token is
//! accepted only when all of these hold:
//! - its header names an allowed asymmetric algorithm (never `none`, never HS*) and no `crit` parameter;
//!   the `jku`, `x5u`, `jwk` and `x5c` headers are ignored: only the issuer's own JWKS says which keys count;
//! - its signature verifies with one of the issuer's keys (`keys.rs`);
//! - `iss` is exactly the configured issuer, `aud` (a string or a list) contains the configured audience;
//! - `exp` is in the future and `nbf`, if any, in the past, within `leeway`; `iat` is present and not in the
//!   future, and `exp - iat` is at most `max_lifetime`;
//! - every `required_claims` entry has one of its values.
//!
//! The identity is then built from the claims: the username from a template, groups from a claim path
//! and/or fixed groups, and every verified claim kept for the rules. It carries `expires_at = exp`: no
//! cache entry serves it later, and it gets no refresh token (a workload logs in again with its next JWT).
//!
//! The chain sends a password here only when it is a JWT whose (unverified) `iss` is this provider's issuer
//! ([`jwt_issuer`]), and never sends a JWT anywhere else: a job's token is not tried as an LDAP password,
//! and neither is a JWT with `alg: none`, no signature or no `iss`.

mod keys;

use std::collections::BTreeMap;
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use secrecy::{ExposeSecret as _, SecretString};

use super::{claim_at, claim_strings, claim_text, Failure, Identity, Outcome, Provider, MAX_USERNAME_LEN};
use crate::config::workload::{Piece, Workload};
use crate::support::BoxFuture;
pub use keys::{parse_jwks, KeyStore};

/// What a JWT says about itself before anything is verified: only used to pick the provider that will
/// verify it, and to key the failed-login limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peek {
    pub iss: String,
    pub sub: String,
}

/// The unverified `iss` (and `sub`) of a password that has the shape of a JWT: three dot-separated parts
/// (five for an encrypted one) whose first decodes (base64url) to a JSON object. None for anything else.
///
/// The test is deliberately loose: whatever looks like a JWT is one, with whatever `alg` (`none` too), an
/// empty signature, or no `iss` at all (then `iss` is empty, which no provider trusts). Such a password is
/// never tried against LDAP or the accounts file: a job's token sent to the wrong place must not become a
/// directory bind or a hash check, and a forged one must not spend a password budget.
pub fn jwt_issuer(password: &str) -> Option<Peek> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use std::borrow::Cow;
    // Typed views that skip every other member without building a map: this runs on every password
    // login, cached ones included.
    #[derive(serde::Deserialize)]
    struct Head {}
    #[derive(serde::Deserialize, Default)]
    struct Body<'a> {
        #[serde(borrow)]
        iss: Option<Cow<'a, str>>,
        #[serde(borrow)]
        sub: Option<Cow<'a, str>>,
    }
    let parts = password.split('.').count();
    if parts != 3 && parts != 5 {
        return None;
    }
    let mut parts = password.split('.');
    let (header, payload) = (parts.next()?, parts.next()?);
    let header = URL_SAFE_NO_PAD.decode(header.trim_end_matches('=')).ok()?;
    if header.first() != Some(&b'{') {
        return None;
    }
    serde_json::from_slice::<Head>(&header).ok()?;
    // The payload of an encrypted or mangled token is no JSON: still a JWT, with no issuer anyone trusts.
    let payload = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).unwrap_or_default();
    let body: Body<'_> = serde_json::from_slice(&payload).unwrap_or_default();
    let cut = |s: Cow<'_, str>| crate::support::clip(&s, 200).into_owned();
    Some(Peek { iss: body.iss.map(cut).unwrap_or_default(), sub: body.sub.map(cut).unwrap_or_default() })
}

pub struct WorkloadProvider {
    cfg: Workload,
    keys: Arc<KeyStore>,
    /// One validation per allowed algorithm: the JWT crate refuses a validation listing algorithms of
    /// another family than the key's.
    validations: Vec<(Algorithm, Validation)>,
}

impl WorkloadProvider {
    pub fn new(cfg: &Workload) -> Result<WorkloadProvider, String> {
        let keys = Arc::new(KeyStore::new(cfg)?);
        let validations = cfg
            .algorithms
            .iter()
            .map(|&alg| {
                let mut v = Validation::new(alg);
                v.leeway = cfg.leeway.as_secs();
                v.validate_exp = true;
                v.validate_nbf = true;
                v.validate_aud = true;
                v.set_audience(&[&cfg.audience]);
                v.set_issuer(&[&cfg.issuer]);
                v.set_required_spec_claims(&["exp", "iss", "aud"]);
                (alg, v)
            })
            .collect();
        Ok(WorkloadProvider { cfg: cfg.clone(), keys, validations })
    }

    /// JWKS fetches made so far.
    pub fn fetches(&self) -> u64 {
        self.keys.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `check-config --probe`: fetch the issuer's keys now and say how many are usable.
    pub async fn check(&self) -> Vec<super::Check> {
        vec![self.keys.check().await]
    }

    /// Verify `token` and build its identity.
    async fn verify(&self, token: &str) -> Result<Identity, Failure> {
        let refuse = |r: String| Err(Failure::Refused(r));
        let header = match jsonwebtoken::decode_header(token) {
            Ok(h) => h,
            Err(e) => return refuse(format!("not a signed JWT: {e}")),
        };
        if header.crit.is_some() || header.enc.is_some() || header.zip.is_some() {
            return refuse("the token's header has crit, enc or zip, which tollgate does not accept".into());
        }
        let Some((_, validation)) = self.validations.iter().find(|(alg, _)| *alg == header.alg) else {
            return refuse(format!("algorithm {:?} is not allowed for this issuer", header.alg));
        };
        let candidates = self.keys.find(header.kid.as_deref(), header.alg).await?;
        if self.keys.stale() {
            let keys = Arc::clone(&self.keys);
            tokio::spawn(async move { keys.refresh().await });
        }
        let mut claims = None;
        for key in &candidates {
            match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key.key, validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => continue,
                Err(e) => return refuse(describe(e.kind(), &self.cfg)),
            }
        }
        let Some(claims) = claims else {
            return refuse("the signature does not verify with the issuer's keys".into());
        };
        self.identity(claims)
    }

    /// The identity of verified claims, after the checks the JWT crate does not make.
    fn identity(&self, claims: serde_json::Map<String, serde_json::Value>) -> Result<Identity, Failure> {
        let cfg = &self.cfg;
        let now = crate::support::time::unix_now();
        let leeway = cfg.leeway.as_secs();
        let number = |k: &str| claims.get(k).and_then(serde_json::Value::as_u64);
        let exp = number("exp").ok_or_else(|| Failure::refused("exp is not a whole number of seconds"))?;
        let iat = number("iat").ok_or_else(|| Failure::refused("no iat: the token's lifetime cannot be bounded"))?;
        if iat > now + leeway {
            return Err(Failure::Refused(format!("iat is {}s in the future", iat - now)));
        }
        if exp.saturating_sub(iat) > cfg.max_lifetime.as_secs() {
            return Err(Failure::Refused(format!(
                "the token lives {}s (exp - iat), more than max_lifetime {}s",
                exp.saturating_sub(iat),
                cfg.max_lifetime.as_secs()
            )));
        }
        for (path, values) in &cfg.required {
            let have = claim_at(&claims, path).and_then(claim_text);
            if !have.as_deref().is_some_and(|h| values.iter().any(|v| v == h)) {
                return Err(Failure::Refused(match have {
                    Some(h) => format!("required claim {path} is {h:?}, not one of {values:?}"),
                    None => format!("required claim {path} is missing"),
                }));
            }
        }
        let mut username = String::new();
        for piece in &cfg.username {
            match piece {
                Piece::Text(t) => username.push_str(t),
                Piece::Claim(path) => match claim_at(&claims, path).and_then(claim_text) {
                    Some(v) if !v.is_empty() => username.push_str(&v),
                    _ => {
                        return Err(Failure::Refused(format!(
                            "the username template needs claim {path}, which the token lacks"
                        )))
                    }
                },
            }
        }
        if username.len() > MAX_USERNAME_LEN {
            return Err(Failure::Refused(format!(
                "the username the template makes is longer than {MAX_USERNAME_LEN} bytes"
            )));
        }
        let mut groups = cfg.fixed_groups.clone();
        if let Some(path) = &cfg.groups_claim {
            for g in claim_strings(&claims, path) {
                if !g.is_empty() && !groups.contains(&g) {
                    groups.push(g);
                }
            }
        }
        let account = claims.get("sub").and_then(|s| s.as_str()).map(String::from);
        let claims: BTreeMap<String, serde_json::Value> = claims.into_iter().collect();
        Ok(Identity { username, provider: cfg.name.clone(), groups, claims, account, expires_at: Some(exp) })
    }
}

/// A refusal from the JWT crate in words that name the claim.
fn describe(kind: &ErrorKind, cfg: &Workload) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired (exp)".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidAudience => format!("aud does not contain {:?}", cfg.audience),
        ErrorKind::InvalidIssuer => format!("iss is not {:?}", cfg.issuer),
        ErrorKind::MissingRequiredClaim(c) => format!("the token has no {c}"),
        ErrorKind::InvalidAlgorithm => "the algorithm does not fit the issuer's key".into(),
        ErrorKind::InvalidClaimFormat(c) => format!("claim {c} is malformed"),
        other => format!("the token is invalid: {other:?}"),
    }
}

impl Provider for WorkloadProvider {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn authenticate<'a>(
        &'a self,
        _username: &'a str,
        password: &'a SecretString,
    ) -> BoxFuture<'a, Result<Outcome, Failure>> {
        Box::pin(async move { Ok(Outcome::Authenticated(Arc::new(self.verify(password.expose_secret()).await?))) })
    }

    fn recheck<'a>(&'a self, _username: &'a str) -> BoxFuture<'a, Result<Identity, Failure>> {
        Box::pin(async { Err(Failure::refused("workload identities have no refresh tokens")) })
    }

    fn probe(&self) -> BoxFuture<'_, Result<(), Failure>> {
        Box::pin(self.keys.ready())
    }

    fn workload_issuer(&self) -> Option<&str> {
        Some(&self.cfg.issuer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &serde_json::Value) -> String {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine as _;
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn anything_shaped_like_a_jwt_is_one_and_names_its_issuer_if_any() {
        let h = b64(&serde_json::json!({"alg": "RS256"}));
        let p = b64(&serde_json::json!({"iss": "https://ci.example", "sub": "x"}));
        let peek = |iss: &str, sub: &str| Some(Peek { iss: iss.into(), sub: sub.into() });
        assert_eq!(jwt_issuer(&format!("{h}.{p}.sig")), peek("https://ci.example", "x"));
        let none = b64(&serde_json::json!({"alg": "none"}));
        assert_eq!(jwt_issuer(&format!("{none}.{p}.")), peek("https://ci.example", "x"), "alg none, no signature");
        assert_eq!(jwt_issuer(&format!("{h}.{}.sig", b64(&serde_json::json!({"sub": "y"})))), peek("", "y"));
        assert_eq!(jwt_issuer(&format!("{h}.{}.sig", b64(&serde_json::json!({"iss": 7})))), peek("", ""));
        assert_eq!(
            jwt_issuer(&format!("{}.{p}.sig", b64(&serde_json::json!({"typ": "JWT"})))),
            peek("https://ci.example", "x")
        );
        assert_eq!(jwt_issuer(&format!("{h}.garbage.x.y.z")), peek("", ""), "an encrypted token");
        for not_jwt in [
            "hunter2".to_string(),
            "a.b.c".to_string(),
            format!("{h}.{p}"),
            format!("{h}.{p}.sig.extra"),
            "tgr_abc.def.ghi".to_string(),
            "correct.horse.battery".to_string(),
        ] {
            assert_eq!(jwt_issuer(&not_jwt), None, "{not_jwt}");
        }
    }
}

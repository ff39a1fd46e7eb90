//! Talking to the IdP: discovery, the JWKS (refetched on an unknown `kid`, at a bounded rate), ID-token
//! verification, the token endpoint and userinfo. Everything here answers in the IdP's terms; turning
//! claims into an identity and keeping sessions are the other files' jobs.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClientAuthMethod, CoreGenderClaim, CoreGrantType,
    CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm,
    CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType, CoreTokenType,
};
use openidconnect::url;
use openidconnect::{
    AdditionalClaims, AdditionalProviderMetadata, ClaimsVerificationError, ClientId, ClientSecret,
    DeviceAuthorizationUrl, EmptyExtraDeviceAuthorizationFields, EmptyExtraTokenFields, IdTokenFields, IdTokenVerifier,
    IssuerUrl, JsonWebKeySet, JsonWebKeySetUrl, Nonce, OAuth2TokenResponse as _, ProviderMetadata,
    SignatureVerificationError, StandardTokenResponse,
};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use crate::config::oidc::{id_token_alg, ClaimsSource, OidcSettings};
use crate::identity::Failure;

/// Claims besides the standard ones (groups, realm_access, groups_direct, …), kept as raw JSON so any claim
/// path can be read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct ExtraClaims {
    #[serde(flatten, default)]
    rest: serde_json::Map<String, serde_json::Value>,
}
impl AdditionalClaims for ExtraClaims {}

/// Discovery documents list the device endpoint outside the OIDC core fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct DeviceMetadata {
    #[serde(default)]
    device_authorization_endpoint: Option<DeviceAuthorizationUrl>,
}
impl AdditionalProviderMetadata for DeviceMetadata {}

pub(super) type Metadata = ProviderMetadata<
    DeviceMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;
pub(super) type TokenFields = IdTokenFields<
    ExtraClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
pub(super) type TokenResponse = StandardTokenResponse<TokenFields, CoreTokenType>;
pub(super) type DeviceResponse = openidconnect::DeviceAuthorizationResponse<EmptyExtraDeviceAuthorizationFields>;

/// What discovery found, plus the current JWKS.
pub(super) struct Discovered {
    pub(super) token_url: url::Url,
    pub(super) userinfo_url: Option<url::Url>,
    pub(super) device_url: Option<url::Url>,
    pub(super) jwks_url: JsonWebKeySetUrl,
    pub(super) jwks: JsonWebKeySet<CoreJsonWebKey>,
}

/// One IdP as tollgate's client sees it: its HTTP client, credentials and what discovery found.
pub(super) struct Idp {
    pub(super) name: String,
    pub(super) issuer: String,
    pub(super) client_id: String,
    pub(super) secret: Option<SecretString>,
    pub(super) http: reqwest::Client,
    device_authorization_endpoint: Option<String>,
    claims_source: ClaimsSource,
    discovered: RwLock<Option<Arc<Discovered>>>,
    last_jwks_fetch: Mutex<Option<Instant>>,
    algs: Vec<CoreJwsSigningAlgorithm>,
}

impl Idp {
    /// The client for `cfg`: reads the client secret and CA files. No network here.
    pub(super) fn new(cfg: &OidcSettings, timeout: Duration) -> Result<Idp, String> {
        let name = cfg.name.clone();
        let secret = match &cfg.client_secret_file {
            Some(f) => {
                let s = std::fs::read_to_string(f).map_err(|e| format!("providers {name}: {}: {e}", f.display()))?;
                Some(SecretString::from(s.trim().to_string()))
            }
            None => None,
        };
        // IdP redirects are never followed: a token endpoint that redirects would leak the password form.
        let http = crate::identity::http_client(&name, timeout, cfg.ca_file.as_deref())?;
        let algs = match &cfg.id_token_algs {
            Some(list) => list.iter().filter_map(|a| id_token_alg(a)).collect(),
            None => vec![
                CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
                CoreJwsSigningAlgorithm::EcdsaP256Sha256,
                CoreJwsSigningAlgorithm::RsaSsaPssSha256,
                CoreJwsSigningAlgorithm::EdDsa,
            ],
        };
        Ok(Idp {
            name,
            issuer: cfg.issuer.clone(),
            client_id: cfg.client_id.clone(),
            secret,
            http,
            device_authorization_endpoint: cfg.device_authorization_endpoint.clone(),
            claims_source: cfg.claims_source.unwrap_or_default(),
            discovered: RwLock::new(None),
            last_jwks_fetch: Mutex::new(None),
            algs,
        })
    }

    /// Client credentials on a request to the IdP: Basic for a confidential client, else `client_id` in
    /// the form.
    pub(super) fn authenticated<'a>(
        &'a self,
        req: reqwest::RequestBuilder,
        body: &mut Vec<(&'a str, &'a str)>,
    ) -> reqwest::RequestBuilder {
        match &self.secret {
            // RFC 6749 2.3.1: id and secret are form-encoded before Basic encoding.
            Some(s) => {
                let enc = |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
                req.basic_auth(enc(&self.client_id), Some(enc(s.expose_secret())))
            }
            None => {
                body.push(("client_id", &self.client_id));
                req
            }
        }
    }

    fn issuer_url(&self) -> Result<IssuerUrl, Failure> {
        IssuerUrl::new(self.issuer.clone()).map_err(|e| Failure::unavailable(format!("issuer URL: {e}")))
    }

    /// Discovery and the JWKS, fetched once and kept.
    pub(super) async fn discovered(&self) -> Result<Arc<Discovered>, Failure> {
        if let Some(d) = self.discovered.read().ok().and_then(|d| d.clone()) {
            return Ok(d);
        }
        let meta = Metadata::discover_async(self.issuer_url()?, &self.http)
            .await
            .map_err(|e| Failure::unavailable(format!("discovery at {}: {}", self.issuer, error_chain(&e))))?;
        let token_url = meta
            .token_endpoint()
            .map(|u| u.url().clone())
            .ok_or_else(|| Failure::unavailable("the discovery document lists no token_endpoint"))?;
        let device_url = match &self.device_authorization_endpoint {
            Some(u) => url::Url::parse(u).ok(),
            None => meta.additional_metadata().device_authorization_endpoint.as_ref().map(|u| u.url().clone()),
        };
        let d = Arc::new(Discovered {
            token_url,
            userinfo_url: meta.userinfo_endpoint().map(|u| u.url().clone()),
            device_url,
            jwks_url: meta.jwks_uri().clone(),
            jwks: meta.jwks().clone(),
        });
        if let Ok(mut slot) = self.discovered.write() {
            *slot = Some(d.clone());
        }
        Ok(d)
    }

    /// Fetch the JWKS again (the IdP rotated its keys), at most once every 10 s so that tokens with made-up
    /// key ids cannot make us hammer the IdP.
    pub(super) async fn refetch_jwks(&self, d: &Discovered) -> Result<Option<Arc<Discovered>>, Failure> {
        {
            let Ok(mut last) = self.last_jwks_fetch.lock() else { return Ok(None) };
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
                return Ok(None);
            }
            *last = Some(Instant::now());
        }
        let jwks = JsonWebKeySet::fetch_async(&d.jwks_url, &self.http)
            .await
            .map_err(|e| Failure::unavailable(format!("JWKS at {}: {}", d.jwks_url.url(), error_chain(&e))))?;
        tracing::info!(provider = %self.name, keys = jwks.keys().len(), "IdP signing keys refetched (unknown kid)");
        let fresh = Arc::new(Discovered {
            token_url: d.token_url.clone(),
            userinfo_url: d.userinfo_url.clone(),
            device_url: d.device_url.clone(),
            jwks_url: d.jwks_url.clone(),
            jwks,
        });
        if let Ok(mut slot) = self.discovered.write() {
            *slot = Some(fresh.clone());
        }
        Ok(Some(fresh))
    }

    pub(super) fn verifier<'a>(
        &self,
        jwks: &JsonWebKeySet<CoreJsonWebKey>,
    ) -> Result<IdTokenVerifier<'a, CoreJsonWebKey>, Failure> {
        let client_id = ClientId::new(self.client_id.clone());
        let issuer = self.issuer_url()?;
        let v = match &self.secret {
            Some(s) => IdTokenVerifier::new_confidential_client(
                client_id,
                ClientSecret::new(s.expose_secret().to_string()),
                issuer,
                jwks.clone(),
            ),
            None => IdTokenVerifier::new_public_client(client_id, issuer, jwks.clone()),
        };
        Ok(v.set_allowed_algs(self.algs.clone()))
    }

    /// Verify the ID token of a token response and return its claims as JSON. A token that must be refused
    /// (wrong audience, issuer, expired, bad signature, disallowed algorithm) is [`Failure::Refused`].
    pub(super) async fn verify_id_token(
        &self,
        d: &Arc<Discovered>,
        tokens: &TokenResponse,
    ) -> Result<serde_json::Map<String, serde_json::Value>, Failure> {
        let Some(id_token) = tokens.extra_fields().id_token() else {
            return Err(Failure::refused("the IdP sent no ID token"));
        };
        // The password and device grants carry no nonce (there is no authorization request to bind one to).
        let no_nonce = |_: Option<&Nonce>| Ok(());
        let result = id_token.claims(&self.verifier(&d.jwks)?, no_nonce).cloned();
        let claims = match result {
            Err(ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey)) => {
                match self.refetch_jwks(d).await? {
                    Some(fresh) => id_token.claims(&self.verifier(&fresh.jwks)?, no_nonce).cloned(),
                    None => return Err(Failure::refused("ID token signed with an unknown key")),
                }
            }
            other => other,
        };
        match claims {
            Ok(c) => match serde_json::to_value(&c) {
                Ok(serde_json::Value::Object(map)) => Ok(map),
                _ => Err(Failure::unavailable("ID token claims are not a JSON object")),
            },
            Err(e) => Err(Failure::Refused(format!("ID token refused: {}", error_chain(&e)))),
        }
    }

    /// POST a grant to the token endpoint with tollgate's client credentials. A 4xx answer is
    /// [`Failure::Refused`] with the IdP's OAuth2 `error` code as the reason (empty when the body has none,
    /// as Glewlwyd's), for the caller to read or to put in words.
    pub(super) async fn token_request(&self, d: &Discovered, form: &[(&str, &str)]) -> Result<TokenResponse, Failure> {
        let req = self.http.post(d.token_url.clone()).header(reqwest::header::ACCEPT, "application/json");
        let mut body: Vec<(&str, &str)> = form.to_vec();
        let req = self.authenticated(req, &mut body);
        let resp = req.form(&body).send().await.map_err(|e| Failure::Unavailable(error_chain(&e)))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| Failure::Unavailable(error_chain(&e)))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                Failure::Unavailable(format!("token endpoint answered {status} with an unreadable body: {e}"))
            });
        }
        if status.is_client_error() {
            let code = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_default();
            return Err(Failure::Refused(code));
        }
        Err(Failure::Unavailable(format!("token endpoint answered {status}")))
    }

    pub(super) async fn userinfo(
        &self,
        d: &Discovered,
        access_token: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, Failure> {
        let url = d.userinfo_url.clone().ok_or_else(|| Failure::unavailable("the IdP has no userinfo endpoint"))?;
        let resp = self
            .http
            .get(url)
            .bearer_auth(access_token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| Failure::Unavailable(error_chain(&e)))?;
        let status = resp.status();
        if status.is_client_error() {
            return Err(Failure::Refused(format!("userinfo answered {status}")));
        }
        if !status.is_success() {
            return Err(Failure::Unavailable(format!("userinfo answered {status}")));
        }
        resp.json().await.map_err(|e| Failure::Unavailable(format!("userinfo is not a JSON object: {e}")))
    }

    /// Username, groups and claims from a token response: the verified ID token, plus userinfo when
    /// configured or when there is no ID token (refresh responses of some IdPs).
    pub(super) async fn read_claims(
        &self,
        d: &Arc<Discovered>,
        tokens: &TokenResponse,
    ) -> Result<serde_json::Map<String, serde_json::Value>, Failure> {
        let mut claims = serde_json::Map::new();
        if tokens.extra_fields().id_token().is_some() {
            claims = self.verify_id_token(d, tokens).await?;
        }
        let use_userinfo = self.claims_source == ClaimsSource::Userinfo || claims.is_empty();
        if use_userinfo {
            let info = self.userinfo(d, tokens.access_token().secret()).await?;
            if claims.get("sub").is_some_and(|s| Some(s) != info.get("sub")) {
                return Err(Failure::refused("userinfo is about a different subject than the ID token"));
            }
            claims.extend(info);
        }
        Ok(claims)
    }
}

pub(super) use crate::support::error_chain;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::time::unix_now;
    use serde_json::json;

    // The bad-ID-token cases use a hand-signed token and an in-memory JWKS (a FAKE IdP): a certified
    // provider cannot be made to sign a token for another audience or issuer, an expired one, or one with a
    // broken signature on demand. Everything else runs against real providers in tests/it/oidc.rs.
    const ISSUER: &str = "http://127.0.0.1:9/realms/test";

    fn signing_key(kid: &str) -> (rcgen::KeyPair, serde_json::Value) {
        use base64::Engine as _;
        let kp = rcgen::KeyPair::generate().unwrap();
        let raw = kp.public_key_raw().to_vec();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
                         "kid": kid, "use": "sig", "alg": "ES256"});
        (kp, jwk)
    }

    fn sign(kp: &rcgen::KeyPair, kid: &str, claims: &serde_json::Value) -> String {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some(kid.into());
        let key = jsonwebtoken::EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap();
        jsonwebtoken::encode(&h, claims, &key).unwrap()
    }

    fn provider(jwk: serde_json::Value) -> (Idp, Arc<Discovered>) {
        let cfg =
            crate::config::oidc::settings_from_yaml(&format!("name: kc\nissuer: {ISSUER}\nclient_id: tollgate\n"))
                .unwrap();
        let p = Idp::new(&cfg, Duration::from_secs(10)).unwrap();
        let d = Arc::new(Discovered {
            token_url: url::Url::parse("http://127.0.0.1:9/token").unwrap(),
            userinfo_url: None,
            device_url: None,
            jwks_url: JsonWebKeySetUrl::new("http://127.0.0.1:9/jwks".into()).unwrap(),
            jwks: serde_json::from_value(json!({"keys": [jwk]})).unwrap(),
        });
        (p, d)
    }

    fn response(id_token: &str) -> TokenResponse {
        serde_json::from_value(json!({"access_token": "at", "token_type": "Bearer", "id_token": id_token})).unwrap()
    }

    #[tokio::test]
    async fn id_tokens_with_a_wrong_audience_issuer_expiry_or_signature_are_refused() {
        let (kp, jwk) = signing_key("k1");
        let (other, _) = signing_key("k1");
        let (p, d) = provider(jwk);
        let now = unix_now();
        let good = json!({"iss": ISSUER, "aud": "tollgate", "sub": "u1", "exp": now + 300, "iat": now,
                          "preferred_username": "carol", "realm_access": {"roles": ["team-payments"]}});
        let claims = p.verify_id_token(&d, &response(&sign(&kp, "k1", &good))).await.unwrap();
        assert_eq!(claims["realm_access"]["roles"][0], "team-payments", "custom claims survive verification");

        let mut cases = Vec::new();
        let mut c = good.clone();
        c["aud"] = json!("another-client");
        cases.push(("wrong audience", sign(&kp, "k1", &c), "audience"));
        let mut c = good.clone();
        c["iss"] = json!("http://127.0.0.1:9/realms/evil");
        cases.push(("wrong issuer", sign(&kp, "k1", &c), "issuer"));
        let mut c = good.clone();
        c["exp"] = json!(now - 600);
        c["iat"] = json!(now - 900);
        cases.push(("expired", sign(&kp, "k1", &c), "expired"));
        cases.push(("bad signature", sign(&other, "k1", &good), "signature"));
        let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        hs.kid = Some("k1".into());
        let hs256 =
            jsonwebtoken::encode(&hs, &good, &jsonwebtoken::EncodingKey::from_secret(b"guessable").unwrap()).unwrap();
        cases.push(("an algorithm not allowed", hs256, "algorithm"));
        for (what, token, want) in cases {
            let reason = match p.verify_id_token(&d, &response(&token)).await {
                Err(Failure::Refused(reason)) => reason,
                other => panic!("{what}: {other:?}"),
            };
            assert!(reason.to_lowercase().contains(want), "{what}: {reason}");
        }
    }

    #[tokio::test]
    async fn an_unknown_kid_makes_the_jwks_be_fetched_again() {
        let (kp, jwk) = signing_key("k1");
        let (p, d) = provider(jwk);
        let now = unix_now();
        let c = json!({"iss": ISSUER, "aud": "tollgate", "sub": "u1", "exp": now + 300, "iat": now});
        // The JWKS URL is unreachable here, so the refetch shows up as "unavailable" (503), not a refusal:
        // a rotated key at a flaky IdP must not log users out.
        let err = p.verify_id_token(&d, &response(&sign(&kp, "rotated", &c))).await.expect_err("refetch attempted");
        assert!(matches!(&err, Failure::Unavailable(m) if m.contains("JWKS")), "{err}");
        // A second unknown kid within 10 s does not hammer the IdP: refused without a fetch.
        let err = p.verify_id_token(&d, &response(&sign(&kp, "other", &c))).await.unwrap_err();
        assert!(matches!(&err, Failure::Refused(r) if r.contains("unknown key")), "{err}");
    }

    /// A compact JWS with any header, signed by `kp` (or unsigned when `kp` is None: `alg: none`).
    fn forge(header: serde_json::Value, claims: &serde_json::Value, kp: Option<&rcgen::KeyPair>) -> String {
        use base64::Engine as _;
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let sig = match kp {
            None => Vec::new(),
            Some(kp) => {
                let key = jsonwebtoken::EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap();
                let signed =
                    jsonwebtoken::crypto::sign(input.as_bytes(), &key, jsonwebtoken::Algorithm::ES256).unwrap();
                base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signed).unwrap()
            }
        };
        format!("{input}.{}", b64(&sig))
    }

    #[tokio::test]
    async fn forged_id_tokens_are_refused_none_hs256_with_the_public_key_a_foreign_key_and_key_headers() {
        let (kp, jwk) = signing_key("k1");
        let (attacker, attacker_jwk) = signing_key("k1");
        let (p, d) = provider(jwk.clone());
        let now = unix_now();
        let claims = json!({"iss": ISSUER, "aud": "tollgate", "sub": "u1", "exp": now + 300, "iat": now,
                            "preferred_username": "mallory"});
        assert!(p.verify_id_token(&d, &response(&sign(&kp, "k1", &claims))).await.is_ok());
        // A listener where the attacker's key set would be fetched from: it must never be asked.
        let trap = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        trap.set_nonblocking(true).unwrap();
        let jku = format!("http://{}/jwks.json", trap.local_addr().unwrap());

        let mut cases: Vec<(&str, String)> = Vec::new();
        cases.push(("alg none", forge(json!({"alg": "none", "kid": "k1"}), &claims, None)));
        cases.push(("alg none, no kid", forge(json!({"alg": "none"}), &claims, None)));
        // HS256 keyed with the IdP's own public key, as PEM and as the raw point: the classic key confusion.
        for (label, secret) in [
            ("HS256 keyed with the public key PEM", kp.public_key_pem().into_bytes()),
            ("HS256 keyed with the public key bytes", kp.public_key_raw().to_vec()),
            ("HS256 keyed with the JWK text", jwk.to_string().into_bytes()),
        ] {
            let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
            h.kid = Some("k1".into());
            let key = jsonwebtoken::EncodingKey::from_secret(&secret).unwrap();
            cases.push((label, jsonwebtoken::encode(&h, &claims, &key).unwrap()));
        }
        cases.push(("the IdP's kid, signed by another key", sign(&attacker, "k1", &claims)));
        let embedded = [
            ("jwk header carrying the attacker's key", json!({"alg": "ES256", "kid": "k1", "jwk": attacker_jwk})),
            ("jwk header, no kid", json!({"alg": "ES256", "jwk": attacker_jwk})),
            ("jku header pointing at the attacker's keys", json!({"alg": "ES256", "kid": "evil", "jku": jku})),
            ("x5u header pointing at the attacker's certificate", json!({"alg": "ES256", "kid": "evil2", "x5u": jku})),
        ];
        for (label, header) in embedded {
            cases.push((label, forge(header, &claims, Some(&attacker))));
        }
        for (what, token) in cases {
            match p.verify_id_token(&d, &response(&token)).await {
                Err(Failure::Refused(reason)) => println!("refused {what}: {reason}"),
                // An unknown kid may try the IdP's own JWKS URL (unreachable here): still no identity.
                Err(Failure::Unavailable(m)) => println!("refused {what} (IdP key set unreachable): {m}"),
                Err(Failure::Busy(_)) => println!("refused {what}: busy"),
                Ok(c) => panic!("{what} was accepted: {c:?}"),
            }
        }
        assert!(trap.accept().is_err(), "the jku / x5u URL was fetched");
    }
}

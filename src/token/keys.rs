//! Signing keys: loading, generation, key ids, the JWKS and the JWT signer.
//!
//! Keys are parsed once at load; signing a token is one ECDSA (or RSA) operation over a precomputed header
//! and the claims. Several keys may be loaded: one signs, all are published, so a rotation is "add the new
//! key, publish, switch the active one, remove the old one later" with no downtime.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::der;
use crate::config::token::{HeaderMode, KidFormat};
use crate::config::Settings;
use crate::support::fs::{create_parent, write_private, write_replacing, FileError};

/// The JWS algorithm of a key, decided by the key itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    ES256,
    RS256,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::ES256 => "ES256",
            Algorithm::RS256 => "RS256",
        }
    }
}

/// A token could not be signed: the key failed to sign, or the claims failed to encode. The request gets a
/// 500 (the detail is logged, never sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("{0} signing failed")]
    Key(&'static str),
    #[error("encoding the claims failed: {0}")]
    Encode(String),
}

/// Problems loading or generating a key. Each names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("key generation failed: {0}")]
    Generate(String),
}

enum Signer {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// One loaded key with everything derived from it.
pub struct SigningKey {
    pub alg: Algorithm,
    pub kid: String,
    /// Both key ids, so a registry-config block can name whichever the operator's registry needs.
    pub libtrust_kid: String,
    pub thumbprint: String,
    /// Certificate chain, leaf first, DER.
    pub chain: Vec<Vec<u8>>,
    /// notAfter of the leaf certificate, Unix seconds.
    pub not_after: Option<i64>,
    /// The public JWK, including `kid`, `alg` and `use`.
    pub jwk: serde_json::Value,
    pub key_path: PathBuf,
    /// The base64url header of tokens signed with this key, computed once.
    header_b64: String,
    signer: Signer,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

/// The libtrust key id of a DER SubjectPublicKeyInfo.
pub fn libtrust_kid(spki_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, spki_der);
    let encoded = base32_nopad(&digest.as_ref()[..30]);
    let groups: Vec<&str> = (0..encoded.len()).step_by(4).map(|i| &encoded[i..(i + 4).min(encoded.len())]).collect();
    groups.join(":")
}

fn base32_nopad(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(data.len() * 8 / 5 + 1);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in data {
        buffer = (buffer << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// RFC 7638 thumbprint of an EC P-256 key given its affine coordinates.
pub fn ec_thumbprint(x: &[u8], y: &[u8]) -> String {
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(x),
        URL_SAFE_NO_PAD.encode(y)
    );
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()))
}

/// RFC 7638 thumbprint of an RSA key given its modulus and exponent (big-endian, no leading zeros).
pub fn rsa_thumbprint(n: &[u8], e: &[u8]) -> String {
    let canonical =
        format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, URL_SAFE_NO_PAD.encode(e), URL_SAFE_NO_PAD.encode(n));
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()))
}

impl SigningKey {
    /// Load a private key (PKCS#8 PEM for EC or RSA, or PKCS#1 PEM for RSA) and, optionally, its certificate
    /// chain (PEM, leaf first). The certificate must hold the same public key.
    pub fn load(key_path: &Path, cert_path: Option<&Path>, kid_format: KidFormat) -> Result<SigningKey, KeyError> {
        let key_pem = std::fs::read_to_string(key_path)
            .map_err(|source| KeyError::Read { path: key_path.to_path_buf(), source })?;
        let chain = match cert_path {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).map_err(|source| KeyError::Read { path: p.to_path_buf(), source })?;
                parse_cert_chain(&text).map_err(|message| KeyError::Invalid { path: p.to_path_buf(), message })?
            }
            None => Vec::new(),
        };
        let key = Self::from_pem(&key_pem, chain, kid_format)
            .map_err(|message| KeyError::Invalid { path: key_path.to_path_buf(), message })?;
        Ok(SigningKey { key_path: key_path.to_path_buf(), ..key })
    }

    /// Build a key from PEM text and an already parsed chain. Errors are plain messages for the caller to
    /// prefix with the file name.
    pub fn from_pem(key_pem: &str, chain: Vec<Vec<u8>>, kid_format: KidFormat) -> Result<SigningKey, String> {
        let blocks = pem::parse_many(key_pem).map_err(|e| format!("not a PEM file: {e}"))?;
        let block = blocks
            .iter()
            .find(|b| b.tag().ends_with("PRIVATE KEY"))
            .ok_or("no PRIVATE KEY block found; expected a PKCS#8 (BEGIN PRIVATE KEY) or PKCS#1 RSA key")?;
        let rng = SystemRandom::new();
        let signer = match block.tag() {
            "PRIVATE KEY" => {
                if let Ok(k) =
                    EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, block.contents(), &rng)
                {
                    Signer::Ec(k)
                } else if let Ok(k) = RsaKeyPair::from_pkcs8(block.contents()) {
                    Signer::Rsa(k)
                } else {
                    return Err("unsupported PKCS#8 key: use an EC P-256 key (ES256) or an RSA key of at least \
                                2048 bits (RS256)"
                        .into());
                }
            }
            "RSA PRIVATE KEY" => Signer::Rsa(
                RsaKeyPair::from_der(block.contents()).map_err(|e| format!("invalid RSA private key: {e}"))?,
            ),
            "EC PRIVATE KEY" => {
                return Err("SEC1 EC keys are not supported; convert with \
                            `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8`"
                    .into())
            }
            other => return Err(format!("unsupported PEM block {other:?}")),
        };
        let (alg, spki, jwk_base, thumbprint) = match &signer {
            Signer::Ec(k) => {
                let point = k.public_key().as_ref();
                let (x, y) = (&point[1..33], &point[33..65]);
                let jwk = json!({"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)});
                (Algorithm::ES256, der::ec_p256_spki(point), jwk, ec_thumbprint(x, y))
            }
            Signer::Rsa(k) => {
                if k.public().modulus_len() < 256 {
                    return Err("RSA keys must have at least 2048 bits".into());
                }
                let parts: ring::rsa::PublicKeyComponents<Vec<u8>> = k.public().into();
                let strip = |v: Vec<u8>| v.into_iter().skip_while(|b| *b == 0).collect::<Vec<u8>>();
                let (n, e) = (strip(parts.n), strip(parts.e));
                let jwk = json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(&n), "e": URL_SAFE_NO_PAD.encode(&e)});
                (Algorithm::RS256, der::rsa_spki(k.public().as_ref()), jwk, rsa_thumbprint(&n, &e))
            }
        };
        let mut not_after = None;
        if let Some(leaf) = chain.first() {
            let info = der::cert_info(leaf).ok_or("the certificate could not be parsed")?;
            if info.spki != spki.as_slice() {
                return Err("the certificate does not hold this key's public key (cert_file and key_file do not \
                            belong together)"
                    .into());
            }
            not_after = info.not_after;
        }
        let libtrust = libtrust_kid(&spki);
        let kid = match kid_format {
            KidFormat::Libtrust => libtrust.clone(),
            KidFormat::Rfc7638 => thumbprint.clone(),
        };
        let mut jwk = jwk_base;
        jwk["kid"] = json!(kid);
        jwk["alg"] = json!(alg.as_str());
        jwk["use"] = json!("sig");
        if !chain.is_empty() {
            jwk["x5c"] = json!(chain.iter().map(|c| STANDARD.encode(c)).collect::<Vec<_>>());
        }
        Ok(SigningKey {
            alg,
            kid,
            libtrust_kid: libtrust,
            thumbprint,
            chain,
            not_after,
            jwk,
            key_path: PathBuf::new(),
            header_b64: String::new(),
            signer,
        })
    }

    /// Precompute the token header for a header mode.
    pub fn with_header(mut self, mode: HeaderMode) -> Result<SigningKey, String> {
        let mut header = json!({"typ": "JWT", "alg": self.alg.as_str(), "kid": self.kid});
        if mode == HeaderMode::X5c {
            if self.chain.is_empty() {
                return Err("header mode x5c needs a certificate: set cert_file, or use header: kid".into());
            }
            header["x5c"] = json!(self.chain.iter().map(|c| STANDARD.encode(c)).collect::<Vec<_>>());
        }
        self.header_b64 = URL_SAFE_NO_PAD.encode(header.to_string());
        Ok(self)
    }

    /// Sign claims (already serialized JSON) into a compact JWS. ECDSA signatures are the fixed 64-byte r‖s
    /// form that JWS requires (registry 2.8 rejects DER signatures).
    pub fn sign(&self, claims_json: &[u8]) -> Result<String, SignError> {
        let mut out = String::with_capacity(self.header_b64.len() + claims_json.len() * 4 / 3 + 100);
        out.push_str(&self.header_b64);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(claims_json, &mut out);
        let rng = SystemRandom::new();
        let sig = match &self.signer {
            Signer::Ec(k) => k.sign(&rng, out.as_bytes()).map_err(|_| SignError::Key("ECDSA"))?.as_ref().to_vec(),
            Signer::Rsa(k) => {
                let mut sig = vec![0u8; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, out.as_bytes(), &mut sig)
                    .map_err(|_| SignError::Key("RSA"))?;
                sig
            }
        };
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(sig, &mut out);
        Ok(out)
    }

    /// The leaf certificate as PEM, for the registry's rootcertbundle.
    pub fn cert_pem(&self) -> Option<String> {
        self.chain.first().map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der.clone())))
    }
}

/// Parse a PEM certificate chain, leaf first.
pub fn parse_cert_chain(text: &str) -> Result<Vec<Vec<u8>>, String> {
    let blocks = pem::parse_many(text).map_err(|e| format!("not a PEM file: {e}"))?;
    let chain: Vec<Vec<u8>> =
        blocks.into_iter().filter(|b| b.tag() == "CERTIFICATE").map(|b| b.into_contents()).collect();
    if chain.is_empty() {
        return Err("no CERTIFICATE block found".into());
    }
    Ok(chain)
}

/// Generate an EC P-256 key and a self-signed certificate, written as `<base>.key` (PKCS#8, mode 0600) and
/// `<base>.crt`. Used on first start when no key is configured.
pub fn generate_key_files(key_path: &Path, cert_path: &Path, common_name: &str) -> Result<(), KeyError> {
    let (key_pem, cert_pem) = generate_key_pem(common_name)?;
    create_parent(key_path)?;
    write_private(key_path, key_pem.as_bytes())?;
    create_parent(cert_path)?;
    Ok(write_replacing(cert_path, cert_pem.as_bytes())?)
}

/// A new P-256 key and its self-signed certificate (valid 2020-2099), as PEM.
fn generate_key_pem(common_name: &str) -> Result<(String, String), KeyError> {
    let key_pair =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| KeyError::Generate(e.to_string()))?;
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| KeyError::Generate(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2099, 12, 31);
    let cert = params.self_signed(&key_pair).map_err(|e| KeyError::Generate(e.to_string()))?;
    Ok((key_pair.serialize_pem(), cert.pem()))
}

/// Load the configured keys, or the generated default key (creating it on first start).
pub fn load_keys(settings: &Settings) -> Result<KeySet, String> {
    load_keys_with(settings, true).map(|(keys, _)| keys)
}

/// [`load_keys`], or with `create` false (`check-config`) nothing written: a default key that does not
/// exist yet is made in memory only, and the note says that `serve` would create it.
pub fn load_keys_with(settings: &Settings, create: bool) -> Result<(KeySet, Option<String>), String> {
    let mut loaded = Vec::new();
    let mut active = 0;
    let mut note = None;
    if settings.token.keys.is_empty() {
        let (key, cert) = settings.default_key_paths();
        let k = if key.exists() {
            SigningKey::load(&key, Some(&cert), settings.token.kid_format).map_err(|e| e.to_string())?
        } else if create {
            generate_key_files(&key, &cert, "tollgate token signer").map_err(|e| e.to_string())?;
            tracing::warn!(key = %key.display(), cert = %cert.display(),
                "generated a new signing key; run `tollgate registry-config` to print the registry settings that trust it");
            SigningKey::load(&key, Some(&cert), settings.token.kid_format).map_err(|e| e.to_string())?
        } else {
            note = Some(format!(
                "no signing key yet: `serve` creates {} and {} on first start (checked with a key made in memory)",
                key.display(),
                cert.display()
            ));
            let (key_pem, cert_pem) = generate_key_pem("tollgate token signer").map_err(|e| e.to_string())?;
            SigningKey::from_pem(&key_pem, parse_cert_chain(&cert_pem)?, settings.token.kid_format)?
        };
        loaded.push(k.with_header(settings.token.header_mode).map_err(|e| format!("{}: {e}", key.display()))?);
    } else {
        for (i, ks) in settings.token.keys.iter().enumerate() {
            let k = SigningKey::load(&ks.key_file, ks.cert_file.as_deref(), settings.token.kid_format)
                .map_err(|e| format!("token.keys[{i}]: {e}"))?;
            loaded.push(k.with_header(settings.token.header_mode).map_err(|e| format!("token.keys[{i}]: {e}"))?);
            if ks.active {
                active = i;
            }
        }
    }
    Ok((KeySet::new(loaded, active)?, note))
}

/// All loaded keys; the active one signs, all are published.
#[derive(Debug)]
pub struct KeySet {
    keys: Vec<SigningKey>,
    active: usize,
}

impl KeySet {
    pub fn new(keys: Vec<SigningKey>, active: usize) -> Result<KeySet, String> {
        if active >= keys.len() {
            return Err("no active signing key".into());
        }
        Ok(KeySet { keys, active })
    }

    pub fn active(&self) -> &SigningKey {
        &self.keys[self.active]
    }

    pub fn keys(&self) -> &[SigningKey] {
        &self.keys
    }

    /// The JWKS document: every loaded key, active first.
    pub fn jwks(&self) -> serde_json::Value {
        let mut keys = vec![self.active().jwk.clone()];
        keys.extend(self.keys.iter().enumerate().filter(|(i, _)| *i != self.active).map(|(_, k)| k.jwk.clone()));
        json!({ "keys": keys })
    }

    /// The root certificate bundle for the registry: the leaf certificate of every key that has one.
    pub fn cert_bundle(&self) -> String {
        self.keys.iter().filter_map(|k| k.cert_pem()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_thumbprint_matches_the_rfc_example() {
        // RFC 7638 section 3.1.
        let n = URL_SAFE_NO_PAD
            .decode(
                "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiF\
V4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zg\
dAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-\
kEgU8awapJzKnqDKgw",
            )
            .unwrap();
        assert_eq!(rsa_thumbprint(&n, &[1, 0, 1]), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn libtrust_kid_has_twelve_groups_of_four() {
        let kid = libtrust_kid(b"any spki bytes");
        let groups: Vec<&str> = kid.split(':').collect();
        assert_eq!(groups.len(), 12, "{kid}");
        assert!(groups
            .iter()
            .all(|g| g.len() == 4 && g.bytes().all(|c| c.is_ascii_uppercase() || (b'2'..=b'7').contains(&c))));
    }

    #[test]
    fn base32_matches_rfc4648_vectors() {
        assert_eq!(base32_nopad(b"f"), "MY");
        assert_eq!(base32_nopad(b"fooba"), "MZXW6YTB");
        assert_eq!(base32_nopad(b"foobar"), "MZXW6YTBOI");
    }

    #[test]
    fn generated_key_loads_signs_and_matches_its_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (k, c) = (dir.path().join("s.key"), dir.path().join("s.crt"));
        generate_key_files(&k, &c, "tollgate test").unwrap();
        let key = SigningKey::load(&k, Some(&c), KidFormat::Libtrust).unwrap().with_header(HeaderMode::X5c).unwrap();
        assert_eq!(key.alg, Algorithm::ES256);
        assert!(key.not_after.unwrap() > 4_000_000_000);
        let token = key.sign(br#"{"sub":"x"}"#).unwrap();
        let sig = URL_SAFE_NO_PAD.decode(token.rsplit('.').next().unwrap()).unwrap();
        assert_eq!(sig.len(), 64, "ES256 signatures are raw r||s");
        // The signature verifies with an independent implementation.
        let x5c = key.jwk["x5c"][0].as_str().unwrap();
        let pem = format!("-----BEGIN CERTIFICATE-----\n{x5c}\n-----END CERTIFICATE-----\n");
        let dk = jsonwebtoken::DecodingKey::from_ec_pem(pem.as_bytes()).ok();
        let dk = dk.unwrap_or_else(|| {
            jsonwebtoken::DecodingKey::from_ec_components(
                key.jwk["x"].as_str().unwrap(),
                key.jwk["y"].as_str().unwrap(),
            )
            .unwrap()
        });
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        v.required_spec_claims.clear();
        v.validate_exp = false;
        jsonwebtoken::decode::<serde_json::Value>(&token, &dk, &v).unwrap();
    }

    #[test]
    fn mismatched_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        generate_key_files(&p("a.key"), &p("a.crt"), "a").unwrap();
        generate_key_files(&p("b.key"), &p("b.crt"), "b").unwrap();
        let err = SigningKey::load(&p("a.key"), Some(&p("b.crt")), KidFormat::Libtrust).unwrap_err().to_string();
        assert!(err.contains("do not belong together"), "{err}");
    }

    #[test]
    fn sec1_keys_get_a_conversion_hint() {
        let err = SigningKey::from_pem(
            "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
            vec![],
            KidFormat::Libtrust,
        )
        .unwrap_err();
        assert!(err.contains("openssl pkcs8 -topk8"), "{err}");
    }
}

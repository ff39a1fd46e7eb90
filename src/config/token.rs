//! The `token:` section: what tokens say (issuer, services, lifetime), and the keys that sign them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::{duration_or, resolve};
use super::problem::Problem;

/// How the `kid` header is computed, which decides which registry versions accept a token by kid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KidFormat {
    /// docker/libtrust key id: SHA-256 of the DER SubjectPublicKeyInfo, first 240 bits, base32 without
    /// padding, in twelve groups of four joined by `:`. Registry 2.x matches this against its rootcertbundle.
    #[default]
    Libtrust,
    /// The RFC 7638 JWK thumbprint (SHA-256, base64url without padding), which registry v3 computes for the
    /// keys of its rootcertbundle and JWKS.
    Rfc7638,
}

/// Which key-identifying headers a token carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HeaderMode {
    /// `x5c` (the certificate chain, standard base64 DER) plus `kid`: both registry 2.8 and v3 verify the chain
    /// against their rootcertbundle. Needs a certificate for the key.
    #[default]
    X5c,
    /// `kid` only: the registry must already know the key (rootcertbundle, or `jwks` on v3).
    Kid,
}

/// `token:` as written in the config.
#[derive(Debug, Default, Deserialize)]
pub struct RawToken {
    /// REQUIRED. The `iss` claim; the registry's `auth.token.issuer` must equal it.
    issuer: Option<String>,
    /// REQUIRED. The registry service names tokens may be issued for (the `aud` claim); the registry's
    /// `auth.token.service`. Requests for any other service get a 400.
    services: Option<Vec<String>>,
    /// Access token lifetime. Default: 5m. At least 60s (clients need time to use it).
    #[serde(default, deserialize_with = "super::check::duration")]
    lifetime: Option<String>,
    /// How long past `exp` the registry still accepts a token (distribution 2.x and 3.x: a fixed 60 s, for
    /// clock skew). The JWT's `exp` is set this much earlier, so the registry stops accepting a token
    /// `lifetime` after it was issued: access removed at the source ends within `lifetime`, not a minute
    /// later. Clients still get `expires_in: lifetime`. Default: 0s (exp = issued + lifetime). At most
    /// `lifetime`.
    #[serde(default, deserialize_with = "super::check::duration")]
    registry_leeway: Option<String>,
    /// libtrust (registry 2.x) or rfc7638 (registry v3). Default: libtrust.
    kid_format: Option<KidFormat>,
    /// x5c (certificate chain + kid; default) or kid (kid only).
    header: Option<HeaderMode>,
    /// Signing keys. Default: one EC key generated in data_dir on first start.
    #[serde(default)]
    keys: Vec<RawKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    /// REQUIRED. PKCS#8 PEM (EC P-256 or RSA) or PKCS#1 PEM (RSA).
    key_file: PathBuf,
    /// The key's certificate chain (PEM, leaf first). Required for header mode x5c.
    cert_file: Option<PathBuf>,
    /// Exactly one key signs; the others are only published. Default: the first key.
    #[serde(default)]
    active: bool,
}

/// A key to load.
#[derive(Debug, Clone)]
pub struct KeySettings {
    pub key_file: PathBuf,
    pub cert_file: Option<PathBuf>,
    pub active: bool,
}

/// The validated `token:` section.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub issuer: String,
    pub services: Vec<String>,
    pub lifetime: Duration,
    /// Subtracted from `exp` (see the raw field).
    pub registry_leeway: Duration,
    pub kid_format: KidFormat,
    pub header_mode: HeaderMode,
    /// Empty: generate/use data_dir/signing.key.
    pub keys: Vec<KeySettings>,
}

/// Validate `token:`, resolving the key paths against `base`.
pub fn validate(raw: RawToken, base: &Path, problems: &mut Vec<Problem>) -> TokenSettings {
    let issuer = raw.issuer.unwrap_or_default();
    if issuer.trim().is_empty() {
        problems.push(Problem::new("token.issuer", "required; set it to the registry's auth.token.issuer"));
    }
    let services = raw.services.unwrap_or_default();
    if services.is_empty() {
        problems.push(Problem::new("token.services", "required; list the registry's auth.token.service name(s)"));
    }
    for (i, s) in services.iter().enumerate() {
        if s.is_empty() || s.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
            problems.push(Problem::new(
                format!("token.services[{i}]"),
                format!("{s:?} must be non-empty printable ASCII without spaces"),
            ));
        }
    }
    let lifetime = duration_or(raw.lifetime.as_deref(), "token.lifetime", Duration::from_secs(300), problems);
    if lifetime < Duration::from_secs(60) || lifetime > Duration::from_secs(24 * 3600) {
        problems.push(Problem::new("token.lifetime", "must be between 60s and 24h (clients need at least a minute)"));
    }
    let registry_leeway =
        duration_or(raw.registry_leeway.as_deref(), "token.registry_leeway", Duration::ZERO, problems);
    if registry_leeway > lifetime {
        problems.push(Problem::new(
            "token.registry_leeway",
            format!("must not exceed token.lifetime ({}s)", lifetime.as_secs()),
        ));
    }
    let header_mode = raw.header.unwrap_or_default();
    let keys: Vec<KeySettings> = raw
        .keys
        .into_iter()
        .map(|k| KeySettings {
            key_file: resolve(base, &k.key_file),
            cert_file: k.cert_file.map(|c| resolve(base, &c)),
            active: k.active,
        })
        .collect();
    let active = keys.iter().filter(|k| k.active).count();
    if active > 1 {
        problems.push(Problem::new("token.keys", "more than one key has active: true; exactly one key signs"));
    }
    if header_mode == HeaderMode::X5c {
        for (i, k) in keys.iter().enumerate() {
            if k.cert_file.is_none() {
                problems.push(Problem::new(
                    format!("token.keys[{i}].cert_file"),
                    "required with token.header x5c (or set header: kid)",
                ));
            }
        }
    }
    TokenSettings {
        issuer,
        services,
        lifetime,
        registry_leeway,
        kid_format: raw.kid_format.unwrap_or_default(),
        header_mode,
        keys,
    }
}

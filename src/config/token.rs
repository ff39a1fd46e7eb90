//! The choices of the `token:` section that the signing keys are built with.

use serde::{Deserialize, Serialize};

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

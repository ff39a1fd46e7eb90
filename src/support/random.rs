//! Random values from the operating system's CSPRNG: every secret and id tollgate makes comes from here.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SecureRandom as _;

/// Fill `buf` from the operating system's CSPRNG.
///
/// `SystemRandom` fails only when the operating system has no entropy source at all. A zeroed secret would
/// be worse than a crash, and nothing else (TLS, key generation) works on such a machine either, so this is
/// the one place in the crate that aborts on a runtime failure.
pub fn fill(buf: &mut [u8]) {
    #[allow(clippy::expect_used)]
    ring::rand::SystemRandom::new().fill(buf).expect("the operating system random number generator failed");
}

/// `n` random bytes, base64url without padding.
pub fn random_id(n: usize) -> String {
    let mut buf = vec![0u8; n];
    fill(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_unique_and_url_safe() {
        let a = random_id(16);
        let b = random_id(16);
        assert_ne!(a, b);
        assert_eq!(a.len(), 22);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }
}

//! The few DER operations the key code needs: walk a certificate to its SubjectPublicKeyInfo and its
//! notAfter, and wrap an RSA public key in a SubjectPublicKeyInfo.
//!
//! A full X.509 parser would be a large dependency for two fields; certificates here are ones the operator
//! configured or we generated, and a malformed one only fails key loading with a message.

/// One DER element: tag, the whole encoding, and the content.
struct Tlv<'a> {
    tag: u8,
    whole: &'a [u8],
    content: &'a [u8],
}

fn read_tlv(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let tag = *input.first()?;
    let first_len = *input.get(1)?;
    let (len, header) = if first_len < 0x80 {
        (first_len as usize, 2)
    } else {
        let n = (first_len & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *input.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    if end > input.len() {
        return None;
    }
    Some((Tlv { tag, whole: &input[..end], content: &input[header..end] }, &input[end..]))
}

/// The parts of a certificate the signer needs.
pub struct CertInfo<'a> {
    /// The DER SubjectPublicKeyInfo, hashed for the libtrust key id and compared with the private key.
    pub spki: &'a [u8],
    /// notAfter as Unix seconds.
    pub not_after: Option<i64>,
}

/// Walk `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version?, serial, signature, issuer,
/// validity, subject, subjectPublicKeyInfo, ... }, ... }`.
pub fn cert_info(cert: &[u8]) -> Option<CertInfo<'_>> {
    let (certificate, _) = read_tlv(cert)?;
    if certificate.tag != 0x30 {
        return None;
    }
    let (tbs, _) = read_tlv(certificate.content)?;
    if tbs.tag != 0x30 {
        return None;
    }
    let mut rest = tbs.content;
    let (first, after) = read_tlv(rest)?;
    if first.tag == 0xa0 {
        rest = after; // explicit version
    }
    let (_serial, r) = read_tlv(rest)?;
    let (_sig, r) = read_tlv(r)?;
    let (_issuer, r) = read_tlv(r)?;
    let (validity, r) = read_tlv(r)?;
    let (_subject, r) = read_tlv(r)?;
    let (spki, _) = read_tlv(r)?;
    if spki.tag != 0x30 {
        return None;
    }
    let (_not_before, v) = read_tlv(validity.content)?;
    let (not_after, _) = read_tlv(v)?;
    Some(CertInfo { spki: spki.whole, not_after: parse_time(not_after.tag, not_after.content) })
}

/// UTCTime (YYMMDDHHMMSSZ) or GeneralizedTime (YYYYMMDDHHMMSSZ) to Unix seconds.
fn parse_time(tag: u8, s: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(s).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 if s.len() == 12 => {
            let yy: i64 = s[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
        }
        0x18 if s.len() == 14 => (s[..4].parse().ok()?, &s[4..]),
        _ => return None,
    };
    let num = |i: usize| rest.get(i..i + 2)?.parse::<i64>().ok();
    let (month, day, h, m, sec) = (num(0)?, num(2)?, num(4)?, num(6)?, num(8)?);
    Some(days_from_civil(year, month, day) * 86400 + h * 3600 + m * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    push_len(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

/// SubjectPublicKeyInfo for a P-256 public point (65 bytes, uncompressed).
pub fn ec_p256_spki(point: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier { id-ecPublicKey, prime256v1 }
    const ALG: &[u8] = &[
        0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d,
        0x03, 0x01, 0x07,
    ];
    let mut bits = vec![0u8];
    bits.extend_from_slice(point);
    let mut content = ALG.to_vec();
    content.extend(tlv(0x03, &bits));
    tlv(0x30, &content)
}

/// SubjectPublicKeyInfo for an RSA public key given as a DER RSAPublicKey.
pub fn rsa_spki(rsa_public_key: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier { rsaEncryption, NULL }
    const ALG: &[u8] = &[0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];
    let mut bits = vec![0u8];
    bits.extend_from_slice(rsa_public_key);
    let mut content = ALG.to_vec();
    content.extend(tlv(0x03, &bits));
    tlv(0x30, &content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_convert_to_unix_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11017);
        assert_eq!(days_from_civil(2026, 11, 29), 20786);
    }

    #[test]
    fn utc_and_generalized_times_parse() {
        assert_eq!(parse_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(parse_time(0x18, b"20261129120000Z"), Some(20786 * 86400 + 12 * 3600));
        assert_eq!(parse_time(0x17, b"garbage"), None);
    }

    #[test]
    fn truncated_der_is_refused_not_panicking() {
        assert!(cert_info(&[]).is_none());
        assert!(cert_info(&[0x30, 0x82, 0xff]).is_none());
        assert!(cert_info(&[0x30, 0x03, 0x30, 0x01]).is_none());
    }
}

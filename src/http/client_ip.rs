//! Who is calling: the peer address, or the address a trusted proxy says it forwarded for.
//!
//! `X-Forwarded-For` is believed only when the TCP peer is a configured trusted proxy (Traefik, nginx);
//! otherwise anybody could pick the address the rate limiter and the policy's `client_network` see. The
//! header is read right to left, skipping trusted hops, so a client cannot prepend a forged entry: the
//! first untrusted address is the one a trusted proxy actually saw.
//!
//! Entries are read as real proxies write them: `192.0.2.7`, `192.0.2.7:5123`, `[2001:db8::7]:5123`,
//! `[2001:db8::7]`, optionally quoted. An entry that is no address (`unknown`, an obfuscated identifier, a
//! typo in a proxy's template) is logged (once a minute) and counted in
//! `tollgate_forwarded_for_unparsed_total`, and the client is given an address of its own derived from the
//! entry (in the discard-only prefix `100::/64`, RFC 6666), never the proxy's: with the proxy's address,
//! every client behind it would share one failed-login budget and one person's typos would lock all out.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap};
use ipnet::IpNet;

/// Whether `ip` is one of `proxies` (the connection caps exempt them too, `server::conn`).
pub fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    let ip = canonical(ip);
    proxies.iter().any(|n| n.contains(&ip))
}

/// IPv4-mapped IPv6 peers (dual-stack listeners) compare as the IPv4 address they are.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The client address for a request with these extensions (the connection's peer) and headers.
pub fn resolve(ext: &Extensions, headers: &HeaderMap, proxies: &[IpNet]) -> IpAddr {
    let peer = ext.get::<ConnectInfo<SocketAddr>>().map(|c| canonical(c.0.ip()));
    let peer = peer.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    from_forwarded(peer, headers, proxies)
}

/// The client address of a request head.
pub fn of_request(head: &axum::http::request::Parts, proxies: &[IpNet]) -> IpAddr {
    resolve(&head.extensions, &head.headers, proxies)
}

fn from_forwarded(peer: IpAddr, headers: &HeaderMap, proxies: &[IpNet]) -> IpAddr {
    if proxies.is_empty() || !trusted(peer, proxies) {
        return peer;
    }
    // Several X-Forwarded-For headers are one list, in order.
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match parse_hop(hop) {
            Some(ip) => {
                client = canonical(ip);
                if !trusted(client, proxies) {
                    return client;
                }
            }
            // A trusted proxy wrote something that is no address: the client is unknown, but it is not the
            // proxy (whose address all its clients share).
            None => return unparsed(hop),
        }
    }
    client
}

/// One `X-Forwarded-For` entry as proxies write it: an address, with or without a port (`[v6]:port`),
/// optionally quoted.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim().trim_matches('"');
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = hop.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    if let Some(v6) = hop.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    // `192.0.2.7:port` with something other than a number as the port (`192.0.2.7:_hidden`).
    match hop.rsplit_once(':') {
        Some((ip, _)) if !ip.contains(':') => ip.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        _ => None,
    }
}

/// The address of a client whose entry could not be read: one per distinct entry, in `100::/64`.
fn unparsed(hop: &str) -> IpAddr {
    let kind = if hop.eq_ignore_ascii_case("unknown") { "unknown" } else { "malformed" };
    metrics::counter!(crate::telemetry::FORWARDED_UNPARSED, "kind" => kind).increment(1);
    static LAST_WARNING: AtomicU64 = AtomicU64::new(0);
    let now = crate::support::time::unix_now();
    let last = LAST_WARNING.load(Ordering::Relaxed);
    if now >= last + 60 && LAST_WARNING.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        let entry = crate::support::clip(hop, 100);
        tracing::warn!(entry = %entry, kind, "a trusted proxy's X-Forwarded-For entry is not an address; the client gets an address of its own (100::/64)");
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, hop.as_bytes());
    let mut low = [0u8; 8];
    low.copy_from_slice(&digest.as_ref()[..8]);
    IpAddr::V6(Ipv6Addr::from((0x0100u128 << 112) | u128::from(u64::from_be_bytes(low))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies_and_read_right_to_left() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "127.0.0.1/32".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let cases: &[(&str, &[&str], &str)] = &[
            // untrusted peer: header ignored
            ("203.0.113.9", &["198.51.100.1"], "203.0.113.9"),
            // trusted peer, one hop
            ("10.0.0.2", &["198.51.100.1"], "198.51.100.1"),
            // the client forged a left entry; the proxy appended the real one
            ("10.0.0.2", &["1.2.3.4, 198.51.100.1"], "198.51.100.1"),
            // two trusted proxies in a row
            ("127.0.0.1", &["198.51.100.1, 10.1.1.1"], "198.51.100.1"),
            // repeated headers are one list
            ("127.0.0.1", &["1.2.3.4", "198.51.100.7"], "198.51.100.7"),
            // what proxies write: ports, bracketed IPv6, quotes
            ("10.0.0.2", &["198.51.100.1:5123"], "198.51.100.1"),
            ("10.0.0.2", &["[2001:db8::7]:5123"], "2001:db8::7"),
            ("10.0.0.2", &["[2001:db8::7]"], "2001:db8::7"),
            ("10.0.0.2", &["\"198.51.100.1:80\""], "198.51.100.1"),
            ("10.0.0.2", &["198.51.100.1:_hidden"], "198.51.100.1"),
            ("10.0.0.2", &["1.2.3.4, 198.51.100.9:443, 10.0.0.3:80"], "198.51.100.9"),
            // a client's garbage left of a real entry is never reached
            ("10.0.0.2", &["evil, 198.51.100.1"], "198.51.100.1"),
            // trusted peer without a header
            ("10.0.0.2", &[], "10.0.0.2"),
            // IPv4-mapped peer counts as the IPv4 address
            ("::ffff:10.0.0.2", &["198.51.100.3"], "198.51.100.3"),
        ];
        for (peer, headers, want) in cases {
            let got = from_forwarded(canonical(ip(peer)), &xff(headers), &proxies);
            assert_eq!(got, ip(want), "peer {peer} with {headers:?}");
        }
        assert_eq!(from_forwarded(ip("10.0.0.2"), &xff(&["198.51.100.1"]), &[]), ip("10.0.0.2"), "no proxies");
        // An entry a trusted proxy wrote that is no address: never the proxy's address, one per entry.
        let unknown = from_forwarded(ip("10.0.0.2"), &xff(&["unknown"]), &proxies);
        let garbage = from_forwarded(ip("10.0.0.2"), &xff(&["evil, 10.9.9.9"]), &proxies);
        for got in [unknown, garbage] {
            assert!(matches!(got, IpAddr::V6(v6) if v6.segments()[..4] == [0x100, 0, 0, 0]), "{got}");
        }
        assert_ne!(unknown, garbage);
        assert_eq!(unknown, from_forwarded(ip("127.0.0.1"), &xff(&["unknown"]), &proxies), "stable");
    }
}

//! Who is calling: the peer address, or the address a trusted proxy says it forwarded for.
//!
//! `X-Forwarded-For` is believed only when the TCP peer is a configured trusted proxy (Traefik, nginx);
//! otherwise anybody could pick the address the rate limiter and the policy's `client_network` see. The
//! header is read right to left, skipping trusted hops, so a client cannot prepend a forged entry: the
//! first untrusted address is the one a trusted proxy actually saw.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

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
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = canonical(ip);
                if !trusted(client, proxies) {
                    return client;
                }
            }
            // Garbage from further left cannot be trusted: the last good hop is the answer.
            Err(_) => return client,
        }
    }
    client
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
            // garbage stops the walk at the last good hop
            ("10.0.0.2", &["evil, 10.9.9.9"], "10.9.9.9"),
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
    }
}
